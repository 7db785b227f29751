//! CloudTrail digest files, as AWS documents them ("CloudTrail digest file structure").
//!
//! A digest is a gzipped JSON object delivered every hour for each region of a trail with log
//! file integrity validation on. It lists every log file delivered in its hour with the
//! SHA-256 of the file's **uncompressed** content, and chains to the digest before it with that
//! digest's SHA-256 and signature. The first digest of a chain has `null` in every
//! `previousDigest*` field. Its own signature is not in the file: CloudTrail stores it as the S3
//! object's user metadata (`x-amz-meta-signature`, hex; `x-amz-meta-signature-algorithm`,
//! `SHA256withRSA`).

use serde::{Deserialize, Deserializer};

/// The only hash algorithm CloudTrail uses for log files and the chain.
pub const HASH_ALGORITHM: &str = "SHA-256";
/// The only signature algorithm CloudTrail uses for digests.
pub const SIGNATURE_ALGORITHM: &str = "SHA256withRSA";

/// `Some(value)` when the member is present, even as `null`; `None` (through `default`) when it
/// is absent. CloudTrail writes `previousDigestSignature: null`; it never leaves it out.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// One digest file, member for member.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Digest {
    #[serde(rename = "awsAccountId", default)]
    pub aws_account_id: Option<String>,
    #[serde(rename = "digestStartTime")]
    pub digest_start_time: String,
    #[serde(rename = "digestEndTime")]
    pub digest_end_time: String,
    #[serde(rename = "digestS3Bucket")]
    pub digest_s3_bucket: String,
    #[serde(rename = "digestS3Object")]
    pub digest_s3_object: String,
    #[serde(rename = "digestPublicKeyFingerprint")]
    pub digest_public_key_fingerprint: String,
    #[serde(rename = "digestSignatureAlgorithm")]
    pub digest_signature_algorithm: String,
    #[serde(rename = "newestEventTime", default)]
    pub newest_event_time: Option<String>,
    #[serde(rename = "oldestEventTime", default)]
    pub oldest_event_time: Option<String>,
    #[serde(rename = "previousDigestS3Bucket", default)]
    pub previous_digest_s3_bucket: Option<String>,
    #[serde(rename = "previousDigestS3Object", default)]
    pub previous_digest_s3_object: Option<String>,
    #[serde(rename = "previousDigestHashValue", default)]
    pub previous_digest_hash_value: Option<String>,
    #[serde(rename = "previousDigestHashAlgorithm", default)]
    pub previous_digest_hash_algorithm: Option<String>,
    /// Present (`null` in the first digest of a chain); `None` only when the member is absent,
    /// which makes the digest invalid.
    #[serde(
        rename = "previousDigestSignature",
        default,
        deserialize_with = "present"
    )]
    pub previous_digest_signature: Option<Option<String>>,
    #[serde(rename = "logFiles")]
    pub log_files: Vec<LogFileEntry>,
}

/// One log file a digest lists.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct LogFileEntry {
    #[serde(rename = "s3Bucket")]
    pub s3_bucket: String,
    #[serde(rename = "s3Object")]
    pub s3_object: String,
    #[serde(rename = "hashValue")]
    pub hash_value: String,
    #[serde(rename = "hashAlgorithm")]
    pub hash_algorithm: String,
    #[serde(rename = "newestEventTime", default)]
    pub newest_event_time: Option<String>,
    #[serde(rename = "oldestEventTime", default)]
    pub oldest_event_time: Option<String>,
}

/// A digest that was read and whose times were understood.
#[derive(Clone, Debug)]
pub struct ParsedDigest {
    pub digest: Digest,
    /// `digestStartTime`, UTC ms.
    pub start: i64,
    /// `digestEndTime`, UTC ms.
    pub end: i64,
}

/// Why a digest file is not a digest CloudTrail could have written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestFormatError {
    #[error("not a digest file: {0}")]
    Json(String),
    #[error("`{member}` is missing")]
    Missing { member: &'static str },
    #[error("`{member}` is `{value}`, not a UTC time")]
    Time { member: &'static str, value: String },
    #[error("`{member}` is `{value}`; CloudTrail uses {expected}")]
    Algorithm {
        member: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("`previousDigestS3Object` is {0}, but `previousDigestHashValue` is not")]
    HalfChained(&'static str),
}

/// Parse a UTC time as CloudTrail writes them (`2024-11-30T08:01:31Z`).
pub fn parse_time(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.timestamp_millis())
}

impl ParsedDigest {
    /// Parse the uncompressed content of a digest file.
    pub fn parse(bytes: &[u8]) -> Result<ParsedDigest, DigestFormatError> {
        let digest: Digest =
            serde_json::from_slice(bytes).map_err(|e| DigestFormatError::Json(e.to_string()))?;
        if digest.previous_digest_signature.is_none() {
            return Err(DigestFormatError::Missing {
                member: "previousDigestSignature",
            });
        }
        let time = |member: &'static str, value: &str| {
            parse_time(value).ok_or_else(|| DigestFormatError::Time {
                member,
                value: value.to_owned(),
            })
        };
        let start = time("digestStartTime", &digest.digest_start_time)?;
        let end = time("digestEndTime", &digest.digest_end_time)?;
        if digest.digest_signature_algorithm != SIGNATURE_ALGORITHM {
            return Err(DigestFormatError::Algorithm {
                member: "digestSignatureAlgorithm",
                value: digest.digest_signature_algorithm.clone(),
                expected: SIGNATURE_ALGORITHM,
            });
        }
        match (
            &digest.previous_digest_s3_object,
            &digest.previous_digest_hash_value,
        ) {
            (Some(_), None) => return Err(DigestFormatError::HalfChained("set")),
            (None, Some(_)) => return Err(DigestFormatError::HalfChained("null")),
            _ => {}
        }
        if digest.previous_digest_s3_object.is_some()
            && digest.previous_digest_hash_algorithm.as_deref() != Some(HASH_ALGORITHM)
        {
            return Err(DigestFormatError::Algorithm {
                member: "previousDigestHashAlgorithm",
                value: digest
                    .previous_digest_hash_algorithm
                    .clone()
                    .unwrap_or_else(|| "null".into()),
                expected: HASH_ALGORITHM,
            });
        }
        Ok(ParsedDigest { digest, start, end })
    }

    /// The previous digest's signature as this digest records it (`None` for the first digest
    /// of a chain).
    pub fn previous_signature(&self) -> Option<&str> {
        self.digest
            .previous_digest_signature
            .as_ref()
            .and_then(|s| s.as_deref())
    }

    /// The text CloudTrail signs (AWS: "custom implementations of CloudTrail log file
    /// integrity validation"):
    ///
    /// ```text
    /// digestEndTime \n digestS3Bucket/digestS3Object \n hex(SHA-256(uncompressed digest)) \n previousDigestSignature
    /// ```
    ///
    /// with the text `null` for the first digest of a chain.
    pub fn signing_string(&self, sha256_hex: &str) -> String {
        let d = &self.digest;
        format!(
            "{}\n{}/{}\n{}\n{}",
            d.digest_end_time,
            d.digest_s3_bucket,
            d.digest_s3_object,
            sha256_hex,
            self.previous_signature().unwrap_or("null")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A first digest, shaped as AWS's documentation shows one.
    pub(crate) const FIRST: &str = r#"{
  "awsAccountId": "111122223333",
  "digestStartTime": "2015-08-17T14:01:31Z",
  "digestEndTime": "2015-08-17T15:01:31Z",
  "digestS3Bucket": "amzn-s3-demo-bucket",
  "digestS3Object": "AWSLogs/111122223333/CloudTrail-Digest/us-east-2/2015/08/17/111122223333_CloudTrail-Digest_us-east-2_your-trail-name_us-east-2_20150817T150131Z.json.gz",
  "digestPublicKeyFingerprint": "31e8b5433410dfb61a9dc45cc65b22ff",
  "digestSignatureAlgorithm": "SHA256withRSA",
  "newestEventTime": "2015-08-17T14:52:27Z",
  "oldestEventTime": "2015-08-17T14:42:27Z",
  "previousDigestS3Bucket": null,
  "previousDigestS3Object": null,
  "previousDigestHashValue": null,
  "previousDigestHashAlgorithm": null,
  "previousDigestSignature": null,
  "logFiles": [
    {
      "s3Bucket": "amzn-s3-demo-bucket",
      "s3Object": "AWSLogs/111122223333/CloudTrail/us-east-2/2015/08/17/111122223333_CloudTrail_us-east-2_20150817T1445Z_9nYN7gp2eWAJHIfT.json.gz",
      "hashValue": "9bb6196fc6b84d6f075a56548feca262bd99ba3c2de41b618e5b6e22c1fc71f6",
      "hashAlgorithm": "SHA-256",
      "newestEventTime": "2015-08-17T14:52:27Z",
      "oldestEventTime": "2015-08-17T14:42:27Z"
    }
  ]
}"#;

    #[test]
    fn the_documented_shape_parses_and_signs_as_documented() {
        let d = ParsedDigest::parse(FIRST.as_bytes()).expect("digest");
        assert_eq!(d.digest.log_files.len(), 1);
        assert_eq!(d.previous_signature(), None);
        assert_eq!(d.end - d.start, 3_600_000);
        assert_eq!(
            d.signing_string("abc"),
            "2015-08-17T15:01:31Z\namzn-s3-demo-bucket/AWSLogs/111122223333/CloudTrail-Digest/us-east-2/2015/08/17/111122223333_CloudTrail-Digest_us-east-2_your-trail-name_us-east-2_20150817T150131Z.json.gz\nabc\nnull"
        );
    }

    #[test]
    fn wrong_shapes_are_named() {
        let no_sig = FIRST.replace("  \"previousDigestSignature\": null,\n", "");
        assert_eq!(
            ParsedDigest::parse(no_sig.as_bytes()).err(),
            Some(DigestFormatError::Missing {
                member: "previousDigestSignature"
            })
        );
        let wrong_type = FIRST.replace("\"logFiles\": [", "\"logFiles\": 5, \"x\": [");
        let e = ParsedDigest::parse(wrong_type.as_bytes()).expect_err("wrong type");
        assert!(e.to_string().contains("invalid type"), "{e}");
        let bad_time = FIRST.replace("2015-08-17T15:01:31Z\"", "yesterday\"");
        assert!(matches!(
            ParsedDigest::parse(bad_time.as_bytes()),
            Err(DigestFormatError::Time {
                member: "digestEndTime",
                ..
            })
        ));
        let algo = FIRST.replace("SHA256withRSA", "SHA1withRSA");
        assert!(matches!(
            ParsedDigest::parse(algo.as_bytes()),
            Err(DigestFormatError::Algorithm { .. })
        ));
        for junk in [&b""[..], b"[]", b"{", b"\xff\xfe", b"null"] {
            assert!(ParsedDigest::parse(junk).is_err());
        }
    }
}
