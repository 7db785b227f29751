//! The manifest: one JSON commit record per run that changed the lake, under
//! `_keytrail/manifest/`. It is the lake's memory of what it holds: which objects were read
//! (and under which filter), which files each run added, which files it replaced.
//! `docs/exactly-once.md` explains how it keeps ingestion exactly-once.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use keytrail_model::FilterSpec;
use serde::{Deserialize, Serialize};

use crate::error::{IoContext, LakeError};

/// Version of the commit record format.
pub const COMMIT_FORMAT: u32 = 1;

/// One object (file or S3 object) a run read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// `file:///absolute/path` or `s3://bucket/key`.
    pub source: String,
    /// Size in bytes as stored (compressed).
    pub size: u64,
    /// Modification time (UTC ms) of a local file, or S3's `LastModified`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<i64>,
    /// S3 ETag, quotes removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// xxh3-128 of the stored bytes, as `xxh3:<32 hex digits>`.
    pub content_hash: String,
    /// Records found in the object.
    pub events: u64,
    /// Rows written to `events`.
    pub written: u64,
    /// Rows written to `insights`.
    #[serde(default)]
    pub insights: u64,
    /// Records the run's filter left out.
    #[serde(default)]
    pub filtered: u64,
    /// Records an earlier run over the same content had already written.
    #[serde(default)]
    pub already_written: u64,
    /// Records that could not be read (each counted in the run summary with its reason).
    #[serde(default)]
    pub skipped: u64,
    /// With `ingest --verify-logs`: what the validation of CloudTrail's digest files said of
    /// the very bytes read (`valid`: covered by a valid digest chain; otherwise the status of
    /// `keytrail verify-logs`, `not-checked` or `changed-after-validation`). Absent: not
    /// validated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custody: Option<String>,
}

/// One file a run added to a table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub table: String,
    /// Path relative to the lake root, with `/` separators.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    /// Time and key range of an `events` file (commits since schema version 2) or of a
    /// `key_daily` file (its keys' first and last event; absent from records written before
    /// it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<crate::index::FileStats>,
    /// For a key index file: the `events` files it indexes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub covers: Vec<String>,
}

/// A run's commit: the moment its rows became part of the lake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub format: u32,
    /// Position in the lake's history, from 1.
    pub seq: u64,
    pub run_id: String,
    /// RFC 3339.
    pub committed_at: String,
    pub writer: String,
    pub schema_version: u32,
    /// The filter the run applied; objects below were read under it.
    #[serde(default)]
    pub filter: FilterSpec,
    pub objects: Vec<ObjectRecord>,
    pub files: Vec<FileRecord>,
    /// Files (relative paths) this commit supersedes; they are deleted once it is published.
    #[serde(default)]
    pub replaced: Vec<String>,
}

impl Commit {
    pub fn file_name(&self) -> String {
        commit_file_name(self.seq, &self.run_id)
    }
}

pub(crate) fn commit_file_name(seq: u64, run_id: &str) -> String {
    format!("{seq:010}-{run_id}.json")
}

/// All commits of a lake, in order.
#[derive(Clone, Debug, Default)]
pub struct Manifest {
    commits: Vec<Commit>,
}

impl Manifest {
    pub(crate) fn dir(root: &Path) -> PathBuf {
        root.join("_keytrail").join("manifest")
    }

    /// Read every commit record of the lake at `root`.
    pub fn load(root: &Path) -> Result<Manifest, LakeError> {
        let dir = Manifest::dir(root);
        let mut commits = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Manifest::default());
            }
            Err(e) => return Err(LakeError::io(&dir, e)),
        };
        for entry in entries {
            let entry = entry.at(&dir)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let path = entry.path();
            let text = fs::read(&path).at(&path)?;
            commits.push(Manifest::parse_commit(&text, &path)?);
        }
        commits.sort_by_key(|c| c.seq);
        Ok(Manifest { commits })
    }

    /// Parse one commit record (the bytes read from `path`, a file or an `s3://` URI), and
    /// refuse a format newer than this keytrail's.
    pub fn parse_commit(text: &[u8], path: &Path) -> Result<Commit, LakeError> {
        let commit: Commit = serde_json::from_slice(text).map_err(|e| LakeError::Manifest {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if commit.format > COMMIT_FORMAT {
            return Err(LakeError::Manifest {
                path: path.to_path_buf(),
                reason: format!(
                    "commit format {} is newer than this keytrail understands ({COMMIT_FORMAT})",
                    commit.format
                ),
            });
        }
        Ok(commit)
    }

    /// A manifest of these commits (for a lake whose records are not in a local directory:
    /// a lake in S3).
    pub fn from_commits(mut commits: Vec<Commit>) -> Manifest {
        commits.sort_by_key(|c| c.seq);
        Manifest { commits }
    }

    /// Refuse a commit of `objects` if a commit after `base_seq` (made while this run ran) read
    /// the same content.
    pub fn check_conflict(&self, base_seq: u64, objects: &[ObjectRecord]) -> Result<(), LakeError> {
        let ours: HashMap<&str, &str> = objects
            .iter()
            .map(|o| (o.content_hash.as_str(), o.source.as_str()))
            .collect();
        let clashes: Vec<&str> = self
            .commits
            .iter()
            .filter(|c| c.seq > base_seq)
            .flat_map(|c| c.objects.iter())
            .filter_map(|o| ours.get(o.content_hash.as_str()).copied())
            .collect();
        match clashes.first() {
            Some(first) => Err(LakeError::Conflict {
                count: clashes.len(),
                example: (*first).to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// Refuse a rewrite that supersedes files the lake no longer holds (another rewrite
    /// replaced them first): committing it would keep both rewrites' copies of their rows.
    pub fn check_live(&self, replaced: &[String]) -> Result<(), LakeError> {
        if replaced.is_empty() {
            return Ok(());
        }
        let live: std::collections::HashSet<&str> =
            self.live_files().iter().map(|f| f.path.as_str()).collect();
        let gone: Vec<&String> = replaced
            .iter()
            .filter(|r| !live.contains(r.as_str()))
            .collect();
        match gone.first() {
            Some(first) => Err(LakeError::Superseded {
                count: gone.len(),
                example: (*first).clone(),
            }),
            None => Ok(()),
        }
    }

    pub fn commits(&self) -> &[Commit] {
        &self.commits
    }

    pub fn last_seq(&self) -> u64 {
        self.commits.last().map_or(0, |c| c.seq)
    }

    pub fn commit_of(&self, run_id: &str) -> Option<&Commit> {
        self.commits.iter().find(|c| c.run_id == run_id)
    }

    /// The files the lake holds now (added and not replaced since), relative paths.
    pub fn live_files(&self) -> Vec<&FileRecord> {
        self.live_files_versioned()
            .into_iter()
            .map(|(f, _)| f)
            .collect()
    }

    /// The live files with the schema version of the commit that added each.
    pub fn live_files_versioned(&self) -> Vec<(&FileRecord, u32)> {
        let replaced: std::collections::HashSet<&str> = self
            .commits
            .iter()
            .flat_map(|c| c.replaced.iter().map(String::as_str))
            .collect();
        self.commits
            .iter()
            .flat_map(|c| c.files.iter().map(move |f| (f, c.schema_version)))
            .filter(|(f, _)| !replaced.contains(f.path.as_str()))
            .collect()
    }

    /// Lookup structures for deciding what to read.
    pub fn index(&self) -> ManifestIndex {
        let mut idx = ManifestIndex::default();
        for c in &self.commits {
            for o in &c.objects {
                idx.add(o, &c.filter);
            }
        }
        idx
    }
}

/// What the lake knows of one stored version of a source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceVersion {
    pub size: u64,
    pub modified: Option<i64>,
    pub etag: Option<String>,
    pub content_hash: String,
}

/// Fast lookups over the manifest.
#[derive(Clone, Debug, Default)]
pub struct ManifestIndex {
    by_source: HashMap<String, Vec<SourceVersion>>,
    by_hash: HashMap<String, (String, Vec<FilterSpec>)>,
}

impl ManifestIndex {
    pub fn add(&mut self, o: &ObjectRecord, filter: &FilterSpec) {
        let versions = self.by_source.entry(o.source.clone()).or_default();
        let v = SourceVersion {
            size: o.size,
            modified: o.modified,
            etag: o.etag.clone(),
            content_hash: o.content_hash.clone(),
        };
        if !versions.contains(&v) {
            versions.push(v);
        }
        let (_, filters) = self
            .by_hash
            .entry(o.content_hash.clone())
            .or_insert_with(|| (o.source.clone(), Vec::new()));
        if !filters.contains(filter) {
            filters.push(filter.clone());
        }
    }

    /// Versions of a source the lake has read.
    pub fn source(&self, source: &str) -> &[SourceVersion] {
        self.by_source.get(source).map_or(&[], Vec::as_slice)
    }

    /// The first source seen with this content, and the filters it was read under.
    pub fn content(&self, hash: &str) -> Option<(&str, &[FilterSpec])> {
        self.by_hash
            .get(hash)
            .map(|(s, f)| (s.as_str(), f.as_slice()))
    }

    pub fn objects(&self) -> usize {
        self.by_source.len()
    }
}

/// Write `bytes` to `path` so that it either appears whole or not at all: a temporary file in
/// the same directory, synced, renamed, and the directory synced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LakeError> {
    let dir = path
        .parent()
        .ok_or_else(|| LakeError::io(path, std::io::Error::other("no parent directory")))?;
    fs::create_dir_all(dir).at(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A name of its own per writer: two processes creating the same lake at once must not
    // write into, or rename away, each other's temporary file.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}-{n}.tmp", std::process::id()));
    {
        let mut f = fs::File::create(&tmp).at(&tmp)?;
        f.write_all(bytes).at(&tmp)?;
        f.sync_all().at(&tmp)?;
    }
    fs::rename(&tmp, path).at(path)?;
    sync_dir(dir)
}

/// Make a directory's entries (renames, creations) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LakeError> {
    #[cfg(unix)]
    {
        fs::File::open(dir).and_then(|d| d.sync_all()).at(dir)?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_without_custody_still_load_and_none_is_not_written() {
        let old = r#"{"source":"s3://b/k.json.gz","size":3,"content_hash":"xxh3:00","events":1,"written":1}"#;
        let r: ObjectRecord = serde_json::from_str(old).expect("old record");
        assert_eq!(r.custody, None);
        let text = serde_json::to_string(&r).expect("json");
        assert!(!text.contains("custody"), "{text}");
        let new = old.replace('}', r#","custody":"valid"}"#);
        let r: ObjectRecord = serde_json::from_str(&new).expect("new record");
        assert_eq!(r.custody.as_deref(), Some("valid"));
    }
}
