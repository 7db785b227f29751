//! What CloudTrail's object names say, read before any byte of the objects.
//!
//! CloudTrail delivers
//!
//! ```text
//! [prefix/]AWSLogs/[o-id/]<account>/CloudTrail/<region>/YYYY/MM/DD/
//!     <account>_CloudTrail_<region>_<YYYYMMDDTHHmmZ>_<unique>.json.gz
//! [prefix/]AWSLogs/[o-id/]<account>/CloudTrail-Digest/<region>/YYYY/MM/DD/
//!     <account>_CloudTrail-Digest_<region>_<trail>_<home region>_<YYYYMMDDTHHmmssZ>.json.gz
//! ```
//!
//! Objects are matched by the part of their key from `AWSLogs/` on (a copy may sit under any
//! directory or bucket prefix) and, failing that, by their file name, which CloudTrail makes
//! unique.

use chrono::NaiveDateTime;

/// The name of the file holding a digest's S3 user metadata in a copy without metadata: the
/// digest's own name followed by this suffix (see `docs/custody.md`).
pub const SIDECAR_SUFFIX: &str = ".metadata.json";

/// What an object is, by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A log file (`<account>_CloudTrail_<region>_...`).
    Log,
    /// A digest file (`<account>_CloudTrail-Digest_<region>_...`).
    Digest,
    /// A saved copy of a digest's S3 metadata (`<digest name>.metadata.json`).
    Sidecar,
    /// Anything else (Insights files, other files): not checked.
    Other,
}

/// The last path segment.
pub fn file_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// The part of a key or path from CloudTrail's `AWSLogs/` folder on; the whole key when it
/// has no such folder.
pub fn trail_key(key: &str) -> &str {
    let mut at = None;
    let mut from = 0;
    while let Some(i) = key[from..].find("AWSLogs/") {
        let i = from + i;
        if i == 0 || key.as_bytes()[i - 1] == b'/' {
            at = Some(i);
        }
        from = i + 1;
    }
    at.map_or(key, |i| &key[i..])
}

/// Whether the name ends like a CloudTrail JSON object (gzipped, or gunzipped by the user).
fn json_name(name: &str) -> bool {
    name.ends_with(".json.gz") || name.ends_with(".json")
}

/// Classify an object by its file name.
pub fn classify(key: &str) -> Kind {
    let name = file_name(key);
    if name.contains("_CloudTrail-Digest_") {
        if name.ends_with(SIDECAR_SUFFIX) {
            Kind::Sidecar
        } else if json_name(name) {
            Kind::Digest
        } else {
            Kind::Other
        }
    } else if name.contains("_CloudTrail_") && json_name(name) {
        Kind::Log
    } else {
        Kind::Other
    }
}

/// The account and region a log or digest file name names (`<account>_CloudTrail[-Digest]_<region>_...`).
pub fn account_region(key: &str) -> Option<(&str, &str)> {
    let mut parts = file_name(key).splitn(4, '_');
    let account = parts.next()?;
    let kind = parts.next()?;
    let region = parts.next()?;
    (matches!(kind, "CloudTrail" | "CloudTrail-Digest") && !region.is_empty())
        .then_some((account, region))
}

fn parse_utc(text: &str, format: &str) -> Option<i64> {
    NaiveDateTime::parse_from_str(text, format)
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

/// The delivery time in a log file's name (`..._20241130T0805Z_...`), UTC ms.
pub fn log_time(key: &str) -> Option<i64> {
    file_name(key).split('_').find_map(|part| {
        let b = part.as_bytes();
        let shaped = b.len() == 14
            && b[..8].iter().all(u8::is_ascii_digit)
            && b[8] == b'T'
            && b[9..13].iter().all(u8::is_ascii_digit)
            && b[13] == b'Z';
        if shaped {
            parse_utc(part, "%Y%m%dT%H%MZ")
        } else {
            None
        }
    })
}

/// The end time in a digest file's name (`..._20241130T080131Z.json.gz`), UTC ms.
pub fn digest_time(key: &str) -> Option<i64> {
    let name = file_name(key);
    let stem = name
        .strip_suffix(".json.gz")
        .or_else(|| name.strip_suffix(".json"))?;
    let (_, time) = stem.rsplit_once('_')?;
    if time.len() != 16 {
        return None;
    }
    parse_utc(time, "%Y%m%dT%H%M%SZ")
}

/// The chain a digest belongs to: its name without the time (account, region, trail and home
/// region), within its folder.
pub fn digest_stream(key: &str) -> String {
    let tk = trail_key(key);
    let name = file_name(tk);
    let folder = &tk[..tk.len() - name.len()];
    // Without the day folders: a chain crosses midnight.
    let folder = folder
        .split_once("/CloudTrail-Digest/")
        .map_or(folder, |(before, _)| before);
    let stem = name
        .strip_suffix(".json.gz")
        .or_else(|| name.strip_suffix(".json"))
        .unwrap_or(name);
    let stem = stem.rsplit_once('_').map_or(stem, |(s, _)| s);
    format!("{folder}|{stem}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "trail/AWSLogs/111122223333/CloudTrail/us-east-1/2024/11/30/111122223333_CloudTrail_us-east-1_20241130T0805Z_AbCdEfGhIjKlMnOp.json.gz";
    const DIGEST: &str = "/copy/AWSLogs/o-a1b2c3d4e5/111122223333/CloudTrail-Digest/us-east-1/2024/11/30/111122223333_CloudTrail-Digest_us-east-1_my_trail_us-east-1_20241130T080131Z.json.gz";

    #[test]
    fn names() {
        assert_eq!(classify(LOG), Kind::Log);
        assert_eq!(classify(DIGEST), Kind::Digest);
        assert_eq!(
            classify(&format!("{DIGEST}{SIDECAR_SUFFIX}")),
            Kind::Sidecar
        );
        assert_eq!(
            classify(
                "AWSLogs/1/CloudTrail-Insight/us-east-1/2024/11/30/1_CloudTrail-Insight_us-east-1_20241130T0805Z_x.json.gz"
            ),
            Kind::Other
        );
        assert_eq!(classify("README.md"), Kind::Other);
        assert_eq!(
            trail_key(LOG),
            "AWSLogs/111122223333/CloudTrail/us-east-1/2024/11/30/111122223333_CloudTrail_us-east-1_20241130T0805Z_AbCdEfGhIjKlMnOp.json.gz"
        );
        assert_eq!(trail_key("x/NotAWSLogs/y"), "x/NotAWSLogs/y");
        assert_eq!(account_region(LOG), Some(("111122223333", "us-east-1")));
        assert_eq!(account_region(DIGEST), Some(("111122223333", "us-east-1")));
        assert_eq!(log_time(LOG), Some(1_732_953_900_000));
        assert_eq!(digest_time(DIGEST), Some(1_732_953_691_000));
        assert_eq!(
            digest_stream(DIGEST),
            "AWSLogs/o-a1b2c3d4e5/111122223333|111122223333_CloudTrail-Digest_us-east-1_my_trail_us-east-1"
        );
        assert_eq!(digest_time("x_20241130T0805Z.json.gz"), None);
    }
}
