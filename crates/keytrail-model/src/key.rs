//! AWS access-key IDs and the other unique-ID prefixes IAM hands out.
//!
//! A key ID is not a secret (the secret access key and the session token are), so this type
//! prints freely. What it refuses is a string that cannot be an access key ID, with a message
//! that says why, so a responder who pasted the wrong thing at 3 a.m. sees it at once.

use std::fmt;
use std::str::FromStr;

/// The four-character prefixes of IAM unique IDs, as AWS documents them
/// ("IAM identifiers: unique identifiers").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdPrefix {
    /// `ABIA`: AWS STS service bearer token.
    Abia,
    /// `ACCA`: context-specific credential.
    Acca,
    /// `AGPA`: IAM user group.
    Agpa,
    /// `AIDA`: IAM user.
    Aida,
    /// `AIPA`: Amazon EC2 instance profile.
    Aipa,
    /// `AKIA`: long-term access key of an IAM user (or the root user).
    Akia,
    /// `ANPA`: managed policy.
    Anpa,
    /// `ANVA`: version in a managed policy.
    Anva,
    /// `APKA`: public key.
    Apka,
    /// `AROA`: IAM role.
    Aroa,
    /// `ASCA`: certificate.
    Asca,
    /// `ASIA`: temporary access key issued by AWS STS.
    Asia,
}

impl IdPrefix {
    pub const ALL: [IdPrefix; 12] = [
        IdPrefix::Abia,
        IdPrefix::Acca,
        IdPrefix::Agpa,
        IdPrefix::Aida,
        IdPrefix::Aipa,
        IdPrefix::Akia,
        IdPrefix::Anpa,
        IdPrefix::Anva,
        IdPrefix::Apka,
        IdPrefix::Aroa,
        IdPrefix::Asca,
        IdPrefix::Asia,
    ];

    /// The prefix of `id`, if it starts with a known one.
    pub fn of(id: &str) -> Option<IdPrefix> {
        let head = id.get(..4)?;
        IdPrefix::ALL.into_iter().find(|p| p.as_str() == head)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IdPrefix::Abia => "ABIA",
            IdPrefix::Acca => "ACCA",
            IdPrefix::Agpa => "AGPA",
            IdPrefix::Aida => "AIDA",
            IdPrefix::Aipa => "AIPA",
            IdPrefix::Akia => "AKIA",
            IdPrefix::Anpa => "ANPA",
            IdPrefix::Anva => "ANVA",
            IdPrefix::Apka => "APKA",
            IdPrefix::Aroa => "AROA",
            IdPrefix::Asca => "ASCA",
            IdPrefix::Asia => "ASIA",
        }
    }

    /// What AWS says the prefix identifies.
    pub fn description(self) -> &'static str {
        match self {
            IdPrefix::Abia => "AWS STS service bearer token",
            IdPrefix::Acca => "context-specific credential",
            IdPrefix::Agpa => "IAM user group",
            IdPrefix::Aida => "IAM user",
            IdPrefix::Aipa => "Amazon EC2 instance profile",
            IdPrefix::Akia => "long-term access key (IAM user or root user)",
            IdPrefix::Anpa => "managed policy",
            IdPrefix::Anva => "version in a managed policy",
            IdPrefix::Apka => "public key",
            IdPrefix::Aroa => "IAM role",
            IdPrefix::Asca => "certificate",
            IdPrefix::Asia => "temporary access key issued by AWS STS",
        }
    }

    /// The kind of credential, for prefixes that name an access key.
    pub fn key_kind(self) -> Option<KeyKind> {
        match self {
            IdPrefix::Akia => Some(KeyKind::LongTerm),
            IdPrefix::Asia => Some(KeyKind::Temporary),
            IdPrefix::Abia | IdPrefix::Acca => Some(KeyKind::Other),
            _ => None,
        }
    }
}

impl fmt::Display for IdPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an access key lives until someone deletes it or expires on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// `AKIA`: an IAM user's (or root's) key; valid until deactivated or deleted.
    LongTerm,
    /// `ASIA`: STS credentials; valid until they expire (minutes to 36 hours).
    Temporary,
    /// `ABIA`, `ACCA`: service bearer tokens and context-specific credentials.
    Other,
}

impl KeyKind {
    /// Classify any key-ID string found in a log, valid or not.
    pub fn of(id: &str) -> KeyKind {
        IdPrefix::of(id)
            .and_then(IdPrefix::key_kind)
            .unwrap_or(KeyKind::Other)
    }

    /// The stable name used in the lake (`key_daily.keykind`) and in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::LongTerm => "long-term",
            KeyKind::Temporary => "temporary",
            KeyKind::Other => "other",
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not an access key ID (or not an IAM unique ID).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyIdError {
    #[error("empty key ID")]
    Empty,
    #[error(
        "`{id}` is not a key ID: key IDs are upper case letters and digits (did you mean `{upper}`?)"
    )]
    LowerCase { id: String, upper: String },
    #[error(
        "`{id}` is not a key ID: it holds `{ch}`; key IDs are only upper case letters and digits"
    )]
    BadChar { id: String, ch: char },
    #[error("`{id}` is not a key ID: it has {len} characters, key IDs have 16 to 128 (usually 20)")]
    BadLength { id: String, len: usize },
    #[error("`{id}` does not start with a known IAM prefix (AKIA, ASIA, AIDA, AROA, ...)")]
    UnknownPrefix { id: String },
    #[error(
        "`{id}` is not an access key ID: {prefix} is the prefix of {what} IDs (access keys start with AKIA or ASIA)"
    )]
    NotAnAccessKey {
        id: String,
        prefix: IdPrefix,
        what: &'static str,
    },
}

/// Check the shape shared by every IAM unique ID and return its prefix.
fn check_unique_id(id: &str) -> Result<IdPrefix, KeyIdError> {
    if id.is_empty() {
        return Err(KeyIdError::Empty);
    }
    if let Some(ch) = id
        .chars()
        .find(|c| !(c.is_ascii_uppercase() || c.is_ascii_digit()))
    {
        if id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(KeyIdError::LowerCase {
                id: id.to_owned(),
                upper: id.to_ascii_uppercase(),
            });
        }
        return Err(KeyIdError::BadChar {
            id: id.to_owned(),
            ch,
        });
    }
    if !(16..=128).contains(&id.len()) {
        return Err(KeyIdError::BadLength {
            id: id.to_owned(),
            len: id.len(),
        });
    }
    IdPrefix::of(id).ok_or_else(|| KeyIdError::UnknownPrefix { id: id.to_owned() })
}

/// A validated IAM unique ID of any kind (`AKIA...`, `AROA...`, `AIDA...`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UniqueId {
    id: String,
    prefix: IdPrefix,
}

impl UniqueId {
    pub fn parse(s: &str) -> Result<UniqueId, KeyIdError> {
        let id = s.trim();
        let prefix = check_unique_id(id)?;
        Ok(UniqueId {
            id: id.to_owned(),
            prefix,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }

    pub fn prefix(&self) -> IdPrefix {
        self.prefix
    }

    /// The AWS account that owns the ID, decoded offline when the ID encodes it.
    pub fn account(&self) -> AccountDecode {
        decode_account(&self.id)
    }
}

impl fmt::Display for UniqueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl FromStr for UniqueId {
    type Err = KeyIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UniqueId::parse(s)
    }
}

/// A validated access key ID: `AKIA` (long-term), `ASIA` (temporary), `ABIA` or `ACCA`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccessKeyId(UniqueId);

impl AccessKeyId {
    pub fn parse(s: &str) -> Result<AccessKeyId, KeyIdError> {
        let id = UniqueId::parse(s)?;
        if id.prefix.key_kind().is_none() {
            return Err(KeyIdError::NotAnAccessKey {
                id: id.id,
                prefix: id.prefix,
                what: id.prefix.description(),
            });
        }
        Ok(AccessKeyId(id))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn prefix(&self) -> IdPrefix {
        self.0.prefix
    }

    pub fn kind(&self) -> KeyKind {
        self.0.prefix.key_kind().unwrap_or(KeyKind::Other)
    }

    pub fn account(&self) -> AccountDecode {
        self.0.account()
    }

    pub fn into_string(self) -> String {
        self.0.id
    }
}

impl fmt::Display for AccessKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AccessKeyId {
    type Err = KeyIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AccessKeyId::parse(s)
    }
}

/// The result of decoding the account ID embedded in a key ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountDecode {
    /// The 12-digit account ID.
    Account(String),
    /// The ID predates the encoding (fifth character `A`–`P`), so no account can be read from it.
    NotEncoded,
    /// The ID is not 20 characters of the base32 alphabet after its prefix.
    Malformed,
}

/// Decode the owning account from a key ID without calling AWS.
///
/// Newer IDs (fifth character in `Q`–`Z` or `2`–`7`) carry the account: base32-decode
/// characters 5 to 20 (alphabet `A`–`Z2`–`7`) to 10 bytes, read the first 6 bytes as a
/// big-endian integer `z`; the account is `(z & 0x7FFFFFFFFF80) >> 7`.
pub fn decode_account(id: &str) -> AccountDecode {
    if id.len() != 20 || !id.is_ascii() {
        return AccountDecode::Malformed;
    }
    let body = &id.as_bytes()[4..];
    match body[0] {
        b'Q'..=b'Z' | b'2'..=b'7' => {}
        b'A'..=b'P' => return AccountDecode::NotEncoded,
        _ => return AccountDecode::Malformed,
    }
    let Ok(bytes) = data_encoding::BASE32_NOPAD.decode(body) else {
        return AccountDecode::Malformed;
    };
    let mut z: u64 = 0;
    for b in &bytes[..6] {
        z = (z << 8) | u64::from(*b);
    }
    let account = (z & 0x7FFF_FFFF_FF80) >> 7;
    // 40 bits hold up to 1,099,511,627,775; an account ID has twelve digits. (Found by the
    // `key` fuzz target: such an ID decoded to a 13-digit "account".)
    if account >= 1_000_000_000_000 {
        return AccountDecode::Malformed;
    }
    AccountDecode::Account(format!("{account:012}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_that_decodes_past_twelve_digits_is_malformed() {
        // The fuzz finding (its first character was not even a prefix letter), and a valid
        // prefix with the same body.
        assert_eq!(
            decode_account("\u{1e}AB7777777777K7ABCEF"),
            AccountDecode::Malformed
        );
        assert_eq!(
            decode_account("AKIA7777777777K7ABCE"),
            AccountDecode::Malformed
        );
    }

    #[test]
    fn decodes_the_documented_account() {
        assert_eq!(
            decode_account("ASIAY34FZKBOKMUTVV7A"),
            AccountDecode::Account("609629065308".to_owned())
        );
    }

    #[test]
    fn old_keys_do_not_encode_an_account() {
        assert_eq!(
            decode_account("AKIAIOSFODNN7EXAMPLE"),
            AccountDecode::NotEncoded
        );
        assert_eq!(decode_account("AKIA123"), AccountDecode::Malformed);
        // `1`, `8`, `9`, `0` are not in the base32 alphabet.
        assert_eq!(
            decode_account("AKIA6V1GNZTT65XQH36M"),
            AccountDecode::Malformed
        );
    }

    #[test]
    fn access_key_ids_know_their_kind() {
        let k = AccessKeyId::parse(" AKIAIOSFODNN7EXAMPLE ").expect("valid");
        assert_eq!(k.as_str(), "AKIAIOSFODNN7EXAMPLE");
        assert_eq!(k.kind(), KeyKind::LongTerm);
        let k = AccessKeyId::parse("ASIAY34FZKBOKMUTVV7A").expect("valid");
        assert_eq!(k.kind(), KeyKind::Temporary);
        assert_eq!(KeyKind::of("ABIAXXXXXXXXXXXXXXXX"), KeyKind::Other);
        assert_eq!(KeyKind::of("garbage"), KeyKind::Other);
    }

    #[test]
    fn malformed_ids_are_refused_with_a_reason() {
        let cases = [
            ("", "empty key ID"),
            (
                "akiaiosfodnn7example",
                "did you mean `AKIAIOSFODNN7EXAMPLE`",
            ),
            ("AKIA-OSFODNN7EXAMPL", "it holds `-`"),
            ("AKIA12", "it has 6 characters"),
            (
                "XXXXIOSFODNN7EXAMPLE",
                "does not start with a known IAM prefix",
            ),
            (
                "AIDAIOSFODNN7EXAMPLE",
                "is not an access key ID: AIDA is the prefix of IAM user IDs",
            ),
        ];
        for (input, want) in cases {
            let err = AccessKeyId::parse(input).expect_err(input).to_string();
            assert!(err.contains(want), "{input}: {err}");
        }
        // Any unique ID is fine where any unique ID is asked for.
        assert_eq!(
            UniqueId::parse("AROAY34FZKBOKMUTVV7A")
                .expect("valid")
                .prefix(),
            IdPrefix::Aroa
        );
    }
}
