//! Where objects come from, and how their names are read before their bytes.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::error::IngestError;

/// Where an object lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    Local(PathBuf),
    S3 { bucket: String, key: String },
}

/// An object to read: a local file or an S3 object, with what is known of it before reading.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    pub location: Location,
    pub size: u64,
    /// Modification time (UTC ms).
    pub modified: Option<i64>,
    /// S3 ETag without quotes.
    pub etag: Option<String>,
}

impl ObjectRef {
    /// The stable identity used in the manifest: `file:///abs/path` or `s3://bucket/key`.
    pub fn uri(&self) -> String {
        match &self.location {
            Location::Local(p) => format!("file://{}", p.display()),
            Location::S3 { bucket, key } => format!("s3://{bucket}/{key}"),
        }
    }

    /// How the object is named to users and in the `sourceobject` column.
    pub fn display(&self) -> String {
        match &self.location {
            Location::Local(p) => p.display().to_string(),
            Location::S3 { bucket, key } => format!("s3://{bucket}/{key}"),
        }
    }

    /// The last path segment.
    pub fn file_name(&self) -> &str {
        match &self.location {
            Location::Local(p) => p.file_name().and_then(|n| n.to_str()).unwrap_or(""),
            Location::S3 { key, .. } => key.rsplit('/').next().unwrap_or(key),
        }
    }

    fn path_text(&self) -> std::borrow::Cow<'_, str> {
        match &self.location {
            Location::Local(p) => p.to_string_lossy(),
            Location::S3 { key, .. } => std::borrow::Cow::Borrowed(key.as_str()),
        }
    }

    /// What the name says the object is.
    pub fn name_kind(&self) -> NameKind {
        classify_name(&self.path_text())
    }
}

/// What an object's name says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    /// A CloudTrail digest file (`CloudTrail-Digest/` or `_CloudTrail-Digest_`): integrity
    /// records, not events.
    Digest,
    /// A CloudTrail Insights file.
    Insight,
    /// Anything else.
    Log,
}

/// Classify an object by its path or key.
pub fn classify_name(path: &str) -> NameKind {
    if path.contains("CloudTrail-Digest") {
        NameKind::Digest
    } else if path.contains("CloudTrail-Insight") {
        NameKind::Insight
    } else {
        NameKind::Log
    }
}

/// The delivery time CloudTrail writes into an object's name
/// (`<account>_CloudTrail_<region>_20241130T0805Z_<id>.json.gz` → `20241130T0805Z`).
pub fn delivery_time(name: &str) -> Option<&str> {
    name.split('_').find(|part| {
        let b = part.as_bytes();
        b.len() == 14
            && b[..8].iter().all(u8::is_ascii_digit)
            && b[8] == b'T'
            && b[9..13].iter().all(u8::is_ascii_digit)
            && b[13] == b'Z'
    })
}

/// File names taken when walking a directory; files named on the command line are read
/// whatever their name.
pub fn looks_like_log(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let base = name.strip_suffix(".gz").unwrap_or(&name);
    base.ends_with(".json")
        || base.ends_with(".jsonl")
        || base.ends_with(".ndjson")
        || name.ends_with(".gz")
}

/// The result of looking at the paths a user named.
#[derive(Debug, Default)]
pub struct Discovery {
    pub objects: Vec<ObjectRef>,
    /// Files passed over while walking directories because their names are not log names,
    /// so the summary can account for them.
    pub not_logs: Vec<PathBuf>,
}

fn modified_ms(meta: &fs::Metadata) -> Option<i64> {
    let t = meta.modified().ok()?;
    let d = t.duration_since(UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

fn local_object(path: PathBuf, meta: &fs::Metadata) -> ObjectRef {
    ObjectRef {
        location: Location::Local(path),
        size: meta.len(),
        modified: modified_ms(meta),
        etag: None,
    }
}

/// Find the objects under local paths: files as they are, directories walked recursively
/// (hidden entries skipped), in a stable order.
pub fn discover_local(paths: &[PathBuf]) -> Result<Discovery, IngestError> {
    let mut out = Discovery::default();
    for given in paths {
        let path = fs::canonicalize(given).map_err(|e| IngestError::Input {
            path: given.clone(),
            source: e,
        })?;
        let meta = fs::metadata(&path).map_err(|e| IngestError::Input {
            path: given.clone(),
            source: e,
        })?;
        if meta.is_file() {
            out.objects.push(local_object(path, &meta));
            continue;
        }
        let walker = walkdir::WalkDir::new(&path)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
        for entry in walker {
            let entry = entry.map_err(|e| IngestError::Input {
                path: e.path().map_or_else(|| path.clone(), Path::to_path_buf),
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("walk failed")),
            })?;
            if !entry.file_type().is_file() {
                continue;
            }
            let name = entry.file_name().to_string_lossy();
            if !looks_like_log(&name) {
                out.not_logs.push(entry.path().to_path_buf());
                continue;
            }
            let meta = entry.metadata().map_err(|e| IngestError::Input {
                path: entry.path().to_path_buf(),
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("stat failed")),
            })?;
            out.objects
                .push(local_object(entry.path().to_path_buf(), &meta));
        }
    }
    // The same file named twice (or reached through two paths) is one object.
    let mut seen = std::collections::HashSet::new();
    out.objects.retain(|o| seen.insert(o.location.clone()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for (name, kind) in [
            (
                "AWSLogs/1/CloudTrail-Digest/us-east-1/2024/01/01/1_CloudTrail-Digest_us-east-1_x_20240101T0000Z.json.gz",
                NameKind::Digest,
            ),
            (
                "AWSLogs/1/CloudTrail-Insight/us-east-1/2024/01/01/1_CloudTrail-Insight_us-east-1_20240101T0000Z_x.json.gz",
                NameKind::Insight,
            ),
            (
                "AWSLogs/1/CloudTrail/us-east-1/2024/01/01/1_CloudTrail_us-east-1_20240101T0000Z_x.json.gz",
                NameKind::Log,
            ),
        ] {
            assert_eq!(classify_name(name), kind, "{name}");
        }
        for yes in ["a.json", "a.json.gz", "A.JSONL", "x.ndjson.gz", "blob.gz"] {
            assert!(looks_like_log(yes), "{yes}");
        }
        assert_eq!(
            delivery_time("111122223333_CloudTrail_us-east-1_20241130T0805Z_AbCdEf.json.gz"),
            Some("20241130T0805Z")
        );
        assert_eq!(
            delivery_time("aws.persistence.iam-backdoor-user.json"),
            None
        );
        for no in ["README.md", "LICENSE", "a.parquet", ".DS_Store"] {
            assert!(!looks_like_log(no), "{no}");
        }
    }
}
