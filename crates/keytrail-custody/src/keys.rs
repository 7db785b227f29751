//! CloudTrail's public keys, from a saved `aws cloudtrail list-public-keys` answer.
//!
//! ```json
//! { "PublicKeyList": [ { "Value": "MIIBCgKCAQEA...", "ValidityStartTime": "2024-11-01T00:00:00+00:00",
//!                        "ValidityEndTime": "2024-12-01T00:00:00+00:00",
//!                        "Fingerprint": "8eba5db5bea9b640d1e7fba4f3e1f1d6" } ] }
//! ```
//!
//! `Value` is the base64 of the DER public key; CloudTrail documents it as PKCS#1
//! (`RSAPublicKey`), and a `SubjectPublicKeyInfo` is accepted too. The times are ISO 8601 text
//! (AWS CLI v2) or seconds since the epoch (the API's own JSON, AWS CLI v1). A digest names its
//! key by `digestPublicKeyFingerprint`; keytrail looks the fingerprint up in the file (it does
//! not recompute fingerprints) and requires the digest's end time to fall in the key's window.

use std::collections::HashMap;
use std::path::Path;

use rsa::PublicKey;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use serde::Deserialize;

use crate::digest::parse_time;
use crate::error::CustodyError;

/// One key and the time it signed digests.
#[derive(Clone, Debug)]
pub struct KeyEntry {
    pub fingerprint: String,
    pub key: PublicKey,
    /// UTC ms; `None`: open.
    pub valid_from: Option<i64>,
    pub valid_until: Option<i64>,
}

/// The keys of one or more saved `list-public-keys` answers, by fingerprint.
#[derive(Clone, Debug, Default)]
pub struct PublicKeys {
    by_fingerprint: HashMap<String, Vec<KeyEntry>>,
}

/// What a lookup found.
#[derive(Debug)]
pub enum KeyLookup<'a> {
    Found(&'a KeyEntry),
    /// Keys with the fingerprint exist, but none was valid at the time.
    OutOfWindow(&'a KeyEntry),
    Unknown,
}

#[derive(Deserialize)]
struct ListPublicKeys {
    #[serde(rename = "PublicKeyList")]
    public_key_list: Vec<RawKey>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Answer {
    List(ListPublicKeys),
    Bare(Vec<RawKey>),
}

#[derive(Deserialize)]
struct RawKey {
    #[serde(rename = "Value")]
    value: String,
    #[serde(rename = "ValidityStartTime", default)]
    valid_from: Option<serde_json::Value>,
    #[serde(rename = "ValidityEndTime", default)]
    valid_until: Option<serde_json::Value>,
    #[serde(rename = "Fingerprint")]
    fingerprint: String,
}

/// A time as the AWS CLI prints it: ISO 8601 text or epoch seconds.
fn key_time(v: &serde_json::Value) -> Result<Option<i64>, String> {
    match v {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => parse_time(s)
            .or_else(|| {
                // `2024-11-01 00:00:00+00:00` (Python's str of a datetime)
                parse_time(&s.replacen(' ', "T", 1))
            })
            .map(Some)
            .ok_or_else(|| format!("`{s}` is not a time")),
        serde_json::Value::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(|f| Some((f * 1000.0).round() as i64))
            .ok_or_else(|| format!("`{n}` is not a time")),
        other => Err(format!("`{other}` is not a time")),
    }
}

/// Decode an RSA public key: DER PKCS#1 `RSAPublicKey` or `SubjectPublicKeyInfo`.
pub fn decode_key(der: &[u8]) -> Result<PublicKey, String> {
    PublicKey::from_pkcs1_der(der)
        .or_else(|_| PublicKey::from_public_key_der(der))
        .map_err(|e| format!("not an RSA public key (PKCS#1 or SubjectPublicKeyInfo DER): {e}"))
}

impl PublicKeys {
    /// Parse the JSON of `aws cloudtrail list-public-keys` (or a bare array of its entries).
    pub fn parse(bytes: &[u8]) -> Result<PublicKeys, String> {
        let answer: Answer = serde_json::from_slice(bytes).map_err(|e| {
            format!("not the JSON of `aws cloudtrail list-public-keys` ({{\"PublicKeyList\": [...]}}): {e}")
        })?;
        let raw = match answer {
            Answer::List(l) => l.public_key_list,
            Answer::Bare(v) => v,
        };
        let mut keys = PublicKeys::default();
        for (i, r) in raw.into_iter().enumerate() {
            let at = |e: String| format!("PublicKeyList[{i}] ({}): {e}", r.fingerprint);
            let text: String = r.value.chars().filter(|c| !c.is_whitespace()).collect();
            let der = data_encoding::BASE64
                .decode(text.as_bytes())
                .map_err(|e| at(format!("`Value` is not base64: {e}")))?;
            let key = decode_key(&der).map_err(at)?;
            let valid_from = r
                .valid_from
                .as_ref()
                .map(key_time)
                .transpose()
                .map_err(|e| at(format!("ValidityStartTime: {e}")))?
                .flatten();
            let valid_until = r
                .valid_until
                .as_ref()
                .map(key_time)
                .transpose()
                .map_err(|e| at(format!("ValidityEndTime: {e}")))?
                .flatten();
            keys.insert(KeyEntry {
                fingerprint: r.fingerprint.to_ascii_lowercase(),
                key,
                valid_from,
                valid_until,
            });
        }
        Ok(keys)
    }

    /// Read and parse a saved answer.
    pub fn load(path: &Path) -> Result<PublicKeys, CustodyError> {
        let bytes = std::fs::read(path).map_err(|source| CustodyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        PublicKeys::parse(&bytes).map_err(|reason| CustodyError::PublicKeys {
            path: path.to_path_buf(),
            reason,
        })
    }

    pub fn insert(&mut self, entry: KeyEntry) {
        self.by_fingerprint
            .entry(entry.fingerprint.clone())
            .or_default()
            .push(entry);
    }

    /// Add the keys of another answer (several regions, several periods).
    pub fn extend(&mut self, other: PublicKeys) {
        for (_, entries) in other.by_fingerprint {
            for e in entries {
                self.insert(e);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_fingerprint.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_fingerprint.is_empty()
    }

    /// The key with this fingerprint that was valid at `at` (UTC ms).
    pub fn lookup(&self, fingerprint: &str, at: i64) -> KeyLookup<'_> {
        let Some(entries) = self.by_fingerprint.get(&fingerprint.to_ascii_lowercase()) else {
            return KeyLookup::Unknown;
        };
        let valid = |e: &&KeyEntry| {
            e.valid_from.is_none_or(|f| at >= f) && e.valid_until.is_none_or(|u| at <= u)
        };
        match entries.iter().find(valid) {
            Some(e) => KeyLookup::Found(e),
            None => match entries.first() {
                Some(e) => KeyLookup::OutOfWindow(e),
                None => KeyLookup::Unknown,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use rsa::pkcs8::EncodePublicKey;

    use super::*;
    use crate::testkit::TestKey;

    #[test]
    fn saved_answers_in_every_shape() {
        let k = TestKey::generate(1024, "keys test");
        let spki =
            data_encoding::BASE64.encode(k.public().to_public_key_der().expect("spki").as_bytes());
        // AWS CLI v2 (ISO 8601 with an offset), v1 (epoch seconds), an open end, SPKI.
        let text = format!(
            r#"{{"PublicKeyList": [
                {{"Value": "{v}", "ValidityStartTime": "2024-11-01T00:00:00+00:00",
                  "ValidityEndTime": "2024-12-01T00:00:00+00:00", "Fingerprint": "AA11"}},
                {{"Value": "{v}", "ValidityStartTime": 1733011200.0,
                  "ValidityEndTime": 1735689600, "Fingerprint": "bb22"}},
                {{"Value": "{spki}", "ValidityStartTime": "2025-01-01T00:00:00Z",
                  "ValidityEndTime": null, "Fingerprint": "cc33"}}
            ]}}"#,
            v = k.value()
        );
        let keys = PublicKeys::parse(text.as_bytes()).expect("keys");
        assert_eq!(keys.len(), 3);
        let nov = 1_732_924_800_000; // 2024-11-30
        assert!(matches!(keys.lookup("aa11", nov), KeyLookup::Found(_)));
        assert!(matches!(keys.lookup("AA11", nov), KeyLookup::Found(_)));
        assert!(matches!(
            keys.lookup("bb22", nov),
            KeyLookup::OutOfWindow(_)
        ));
        assert!(matches!(
            keys.lookup("bb22", 1_733_097_600_000),
            KeyLookup::Found(_)
        ));
        assert!(matches!(
            keys.lookup("cc33", 4_000_000_000_000),
            KeyLookup::Found(_)
        ));
        assert!(matches!(keys.lookup("dd44", nov), KeyLookup::Unknown));
        // A bare array of entries.
        let bare = format!(r#"[{{"Value": "{}", "Fingerprint": "x"}}]"#, k.value());
        assert_eq!(PublicKeys::parse(bare.as_bytes()).expect("bare").len(), 1);
    }

    #[test]
    fn bad_answers_say_what_is_wrong() {
        for (text, want) in [
            ("{", "not the JSON"),
            (
                r#"{"PublicKeyList": [{"Value": "@@", "Fingerprint": "f"}]}"#,
                "not base64",
            ),
            (
                r#"{"PublicKeyList": [{"Value": "AAAA", "Fingerprint": "f"}]}"#,
                "not an RSA public key",
            ),
            (
                r#"{"PublicKeyList": [{"Fingerprint": "f"}]}"#,
                "not the JSON",
            ),
        ] {
            let e = PublicKeys::parse(text.as_bytes()).expect_err(text);
            assert!(e.contains(want), "{text}: {e}");
        }
        let k = TestKey::generate(1024, "keys test");
        let bad_time = format!(
            r#"{{"PublicKeyList": [{{"Value": "{}", "ValidityStartTime": "soon", "Fingerprint": "f"}}]}}"#,
            k.value()
        );
        let e = PublicKeys::parse(bad_time.as_bytes()).expect_err("time");
        assert!(e.contains("ValidityStartTime") && e.contains("soon"), "{e}");
    }
}
