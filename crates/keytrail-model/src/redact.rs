//! Secrets never reach the lake.
//!
//! CloudTrail hides most secrets itself, but not all: `GetFederationToken` and `AssumeRole`
//! responses can carry a full `sessionToken`, presigned URLs carry `X-Amz-Security-Token`, and
//! hand-made exports carry anything. Key IDs are not secrets and are kept; secret access keys,
//! session tokens, passwords and private keys are replaced by [`REDACTED`].
//!
//! The check is two-level so the common case costs one pass of a case-insensitive multi-string
//! search: only text that contains a suspicious word or a session-token prefix is parsed and
//! walked.

use std::borrow::Cow;
use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde_json::Value;

/// What a secret is replaced with.
pub const REDACTED: &str = "REDACTED_BY_KEYTRAIL";

/// Object member names (compared without case) whose values are secrets.
const SECRET_MEMBERS: &[&str] = &[
    "sessiontoken",
    "secretaccesskey",
    "secretkey",
    "password",
    "newpassword",
    "oldpassword",
    "secretstring",
    "secretbinary",
    "privatekey",
    "keymaterial",
    "x-amz-security-token",
];

/// Base64 prefixes of AWS STS session tokens (protobuf headers of every token generation seen
/// in the wild). A run of base64 text starting with one of these is a token.
const TOKEN_PREFIXES: &[&str] = &[
    "IQoJb3JpZ2lu",
    "IgoJb3JpZ2lu",
    "AgoJb3JpZ2lu",
    "FwoGZXIvYXdz",
    "FQoGZXIvYXdz",
    "AQoDYXdz",
];

/// Shortest run of base64 after a token prefix that is taken for a token.
const MIN_TOKEN_LEN: usize = 64;

/// Any of these makes a text worth a closer look: the tail of every secret member name, in the
/// casings JSON writers use (camelCase, PascalCase, lower and upper case), and the token
/// prefixes. Matching is case-sensitive so the search runs on SIMD (Teddy) at several GB/s;
/// the closer look compares member names without case.
static SUSPICIOUS: LazyLock<AhoCorasick> = LazyLock::new(|| {
    let tails = [
        "essiontoken",
        "ecuritytoken",
        "ecurity-token",
        "ecretaccesskey",
        "ecretkey",
        "ecretstring",
        "ecretbinary",
        "assword",
        "rivatekey",
        "eymaterial",
    ];
    let mut needles: Vec<String> = Vec::new();
    for t in tails {
        needles.push(t.to_owned());
        needles.push(t.to_ascii_uppercase());
        // camelCase / PascalCase: every word after the first capitalised.
        let camel = t
            .replace("token", "Token")
            .replace("access", "Access")
            .replace("key", "Key")
            .replace("string", "String")
            .replace("binary", "Binary")
            .replace("material", "Material")
            .replace("-t", "-T");
        if camel != t {
            needles.push(camel);
        }
    }
    needles.extend(TOKEN_PREFIXES.iter().map(|p| (*p).to_owned()));
    build(&needles, false)
});

static TOKENS: LazyLock<AhoCorasick> = LazyLock::new(|| build(TOKEN_PREFIXES, false));

fn build<S: AsRef<[u8]>>(needles: &[S], nocase: bool) -> AhoCorasick {
    match AhoCorasickBuilder::new()
        .ascii_case_insensitive(nocase)
        .match_kind(MatchKind::LeftmostFirst)
        .build(needles)
    {
        Ok(ac) => ac,
        // The needles are constants; building cannot fail for them.
        Err(e) => panic!("redaction patterns do not build: {e}"),
    }
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'%')
}

/// Replace session tokens inside free text (user agents, error messages, URLs).
pub fn scrub_text(s: &str) -> Cow<'_, str> {
    let bytes = s.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    for m in TOKENS.find_iter(s) {
        if m.start() < copied {
            continue;
        }
        let mut end = m.end();
        while end < bytes.len() && is_token_char(bytes[end]) {
            end += 1;
        }
        if end - m.start() < MIN_TOKEN_LEN {
            continue;
        }
        let o = out.get_or_insert_with(|| String::with_capacity(s.len()));
        o.push_str(&s[copied..m.start()]);
        o.push_str(REDACTED);
        copied = end;
    }
    match out {
        None => Cow::Borrowed(s),
        Some(mut o) => {
            o.push_str(&s[copied..]);
            Cow::Owned(o)
        }
    }
}

/// Whether a text might hold a secret and needs the slow path.
pub fn is_suspicious(s: impl AsRef<[u8]>) -> bool {
    SUSPICIOUS.is_match(s.as_ref())
}

fn scrub_value(v: &mut Value) -> bool {
    match v {
        Value::String(s) => match scrub_text(s) {
            Cow::Borrowed(_) => false,
            Cow::Owned(o) => {
                *s = o;
                true
            }
        },
        Value::Array(items) => items.iter_mut().fold(false, |c, i| scrub_value(i) | c),
        Value::Object(map) => {
            let mut changed = false;
            for (k, val) in map.iter_mut() {
                let secret = SECRET_MEMBERS.iter().any(|m| k.eq_ignore_ascii_case(m));
                if secret && !val.is_null() && val.as_str() != Some(REDACTED) {
                    // CloudTrail's own placeholder is already harmless; keep it as written.
                    if val.as_str() != Some("HIDDEN_DUE_TO_SECURITY_REASONS") {
                        *val = Value::String(REDACTED.to_owned());
                        changed = true;
                    }
                } else {
                    changed |= scrub_value(val);
                }
            }
            changed
        }
        _ => false,
    }
}

/// Normalise and scrub one JSON value given as raw text: secrets are replaced, and text that
/// spans lines (pretty-printed input) is written compactly. Returns the input unchanged when
/// there is nothing to do.
pub fn scrub_json(raw: &str) -> Cow<'_, str> {
    let pretty = memchr::memchr(b'\n', raw.as_bytes()).is_some();
    if !pretty && !is_suspicious(raw) {
        return Cow::Borrowed(raw);
    }
    let Ok(mut v) = serde_json::from_str::<Value>(raw) else {
        // Raw values come from a validating parser, so this is not expected; if it happens,
        // give up the text rather than risk writing a secret.
        return Cow::Owned(format!("\"{REDACTED}\""));
    };
    let changed = scrub_value(&mut v);
    if !changed && !pretty {
        return Cow::Borrowed(raw);
    }
    match serde_json::to_string(&v) {
        Ok(s) => Cow::Owned(s),
        Err(_) => Cow::Owned(format!("\"{REDACTED}\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "IQoJb3JpZ2luX2VjEOH//////////wEaCXVzLWVhc3QtMSJIMEYCIQDzpomGZAmkp4RIzBo4RqVJGEmUNjyA7lHyt1aKfFh8IwIhANX6aS3XpNU319gOolVjEBkNLRmu9dyO8FqoDW5y+HL4Kq==";

    #[test]
    fn member_secrets_are_replaced_and_key_ids_kept() {
        let raw = format!(
            r#"{{"credentials":{{"accessKeyId":"ASIASTJKC5GCM7ZE6LUP","sessionToken":"{TOKEN}","SecretAccessKey":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY","expiration":"x"}}}}"#
        );
        let out = scrub_json(&raw);
        assert!(!out.contains(TOKEN));
        assert!(!out.contains("wJalrXUtnFEMI"));
        assert!(out.contains("ASIASTJKC5GCM7ZE6LUP"));
        assert_eq!(out.matches(REDACTED).count(), 2);
        // Key order is kept.
        assert!(out.find("accessKeyId") < out.find("sessionToken"));
    }

    #[test]
    fn tokens_in_strings_are_found_anywhere() {
        let raw = format!(r#"{{"url":"https://x/?X-Amz-Security-Token={TOKEN}&a=b"}}"#);
        let out = scrub_json(&raw);
        assert!(!out.contains("IQoJb3JpZ2lu"), "{out}");
        assert!(out.contains("&a=b"));
        let text = format!("agent {TOKEN} tail");
        assert_eq!(scrub_text(&text), format!("agent {REDACTED} tail"));
    }

    #[test]
    fn clean_text_is_borrowed() {
        let raw = r#"{"userName":"alice","policyArn":"arn:aws:iam::aws:policy/ReadOnlyAccess"}"#;
        assert!(matches!(scrub_json(raw), Cow::Borrowed(_)));
        // A suspicious word without a secret is looked at and left alone.
        let raw = r#"{"passwordLastUsed":"2024-01-01","tokenCode":null}"#;
        assert_eq!(scrub_json(raw), raw);
        assert!(matches!(
            scrub_text("aws-cli/2.0 IQoJb3JpZ2lu"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn every_secret_member_casing_is_suspicious() {
        for m in SECRET_MEMBERS {
            let pascal: String = m
                .split('-')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join("-");
            for variant in [m.to_string(), m.to_ascii_uppercase(), pascal] {
                let text = format!(r#"{{"{variant}":"x"}}"#);
                if variant.len() > 6 {
                    assert!(is_suspicious(&text), "{variant}");
                }
            }
        }
        for camel in [
            "sessionToken",
            "SessionToken",
            "secretAccessKey",
            "SecretAccessKey",
            "newPassword",
            "X-Amz-Security-Token",
            "privateKey",
            "keyMaterial",
            "SecretString",
        ] {
            assert!(is_suspicious(camel), "{camel}");
        }
        assert!(!is_suspicious(r#"{"userName":"alice","nextToken":"abc"}"#));
    }

    #[test]
    fn cloudtrail_placeholders_stay() {
        let raw = r#"{"password":"HIDDEN_DUE_TO_SECURITY_REASONS"}"#;
        assert_eq!(scrub_json(raw), raw);
    }

    #[test]
    fn pretty_text_is_compacted() {
        let raw = "{\n  \"a\": [1, 2],\n  \"b\": {\"c\": \"d\"}\n}";
        assert_eq!(scrub_json(raw), r#"{"a":[1,2],"b":{"c":"d"}}"#);
    }
}
