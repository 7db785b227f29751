//! Where objects come from: a trait (list, read, user metadata) and its local-directory
//! implementation. The S3 implementation lives in `keytrail-ingest` (`custody::S3Store`),
//! beside the S3 client keytrail already has.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{CustodyError, ReadError};

/// An object a store listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    /// The key within the store: an S3 key, or a local file's absolute path with `/`.
    pub key: String,
    /// How the object is named to users: `s3://bucket/key` or the path (as keytrail's ingest
    /// names objects).
    pub display: String,
    /// Size as stored.
    pub size: u64,
}

/// S3 user metadata (`x-amz-meta-*`), names in lower case without the prefix.
pub type Metadata = BTreeMap<String, String>;

/// The part of the timeline a listing is asked for, so a store that can prune (S3's day
/// folders) lists only that. UTC ms; `None`: open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    pub since: Option<i64>,
    pub until: Option<i64>,
}

/// A place holding a trail, or a copy of one.
pub trait ObjectStore: Send + Sync {
    /// The store as the user named it (`s3://bucket/prefix`, a directory).
    fn name(&self) -> String;

    /// Every object of the store within `scope` (a store may list more; never less).
    fn list(&self, scope: &Scope) -> Result<Vec<StoredObject>, CustodyError>;

    /// Open an object to read its bytes as stored, in a stream.
    fn open(&self, object: &StoredObject) -> Result<Box<dyn Read + Send + '_>, ReadError>;

    /// The object's user metadata; `Ok(None)` when the store keeps none (a local copy: then a
    /// sidecar file is looked for).
    fn metadata(&self, object: &StoredObject) -> Result<Option<Metadata>, ReadError>;
}

/// A local copy of a trail: a directory (walked; hidden entries skipped) or one file.
#[derive(Clone, Debug)]
pub struct LocalStore {
    given: PathBuf,
}

impl LocalStore {
    pub fn new(path: impl Into<PathBuf>) -> LocalStore {
        LocalStore { given: path.into() }
    }
}

fn path_key(p: &Path) -> String {
    let s = p.to_string_lossy();
    if std::path::MAIN_SEPARATOR == '/' {
        s.into_owned()
    } else {
        s.replace(std::path::MAIN_SEPARATOR, "/")
    }
}

impl ObjectStore for LocalStore {
    fn name(&self) -> String {
        self.given.display().to_string()
    }

    fn list(&self, _scope: &Scope) -> Result<Vec<StoredObject>, CustodyError> {
        let io = |path: &Path, source| CustodyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let root = std::fs::canonicalize(&self.given).map_err(|e| io(&self.given, e))?;
        let mut out = Vec::new();
        let walker = walkdir::WalkDir::new(&root)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
        for entry in walker {
            let entry = entry.map_err(|e| {
                let path = e.path().map_or_else(|| root.clone(), Path::to_path_buf);
                io(
                    &path,
                    e.into_io_error()
                        .unwrap_or_else(|| std::io::Error::other("walk failed")),
                )
            })?;
            if !entry.file_type().is_file() {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            out.push(StoredObject {
                key: path_key(entry.path()),
                display: entry.path().display().to_string(),
                size,
            });
        }
        Ok(out)
    }

    fn open(&self, object: &StoredObject) -> Result<Box<dyn Read + Send + '_>, ReadError> {
        let f = std::fs::File::open(&object.key).map_err(|e| ReadError::io(&e))?;
        Ok(Box::new(f))
    }

    fn metadata(&self, _object: &StoredObject) -> Result<Option<Metadata>, ReadError> {
        Ok(None)
    }
}

/// Read a sidecar: the output of `aws s3api head-object` (`{"Metadata": {...}, ...}`), of
/// `head-object --query Metadata` (`{"signature": ..., "signature-algorithm": ...}`), or the
/// same with `x-amz-meta-` names.
pub fn parse_sidecar(bytes: &[u8]) -> Result<Metadata, String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let map = match v.get("Metadata") {
        Some(m) => m,
        None => &v,
    };
    let map = map
        .as_object()
        .ok_or_else(|| "expected a JSON object of metadata".to_owned())?;
    let mut out = Metadata::new();
    for (k, v) in map {
        let k = k.to_ascii_lowercase();
        let k = k.strip_prefix("x-amz-meta-").unwrap_or(&k).to_owned();
        if let Some(s) = v.as_str() {
            out.insert(k, s.to_owned());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecars_in_every_shape() {
        for text in [
            r#"{"AcceptRanges":"bytes","ContentLength":12,"Metadata":{"signature":"ab","signature-algorithm":"SHA256withRSA"}}"#,
            r#"{"signature":"ab","signature-algorithm":"SHA256withRSA"}"#,
            r#"{"x-amz-meta-signature":"ab","X-Amz-Meta-Signature-Algorithm":"SHA256withRSA"}"#,
        ] {
            let m = parse_sidecar(text.as_bytes()).expect(text);
            assert_eq!(m.get("signature").map(String::as_str), Some("ab"), "{text}");
            assert_eq!(
                m.get("signature-algorithm").map(String::as_str),
                Some("SHA256withRSA")
            );
        }
        assert!(parse_sidecar(b"[1]").is_err());
        assert!(parse_sidecar(b"{").is_err());
    }
}
