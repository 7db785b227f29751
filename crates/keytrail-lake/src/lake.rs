//! A lake on a local file system and the transaction that adds to it.
//!
//! ```text
//! LAKE/
//!   events/date=YYYY-MM-DD/part-<run>-<n>.parquet     one row per event
//!   insights/date=YYYY-MM-DD/part-<run>-<n>.parquet   CloudTrail Insights events
//!   key_daily/date=YYYY-MM-DD/part-<run>.parquet      one row per key per day
//!   _keytrail/lake.json                               format marker and schema version
//!   _keytrail/manifest/<seq>-<run>.json               one commit record per run
//!   _keytrail/staging/<run>/...                       files of a run not yet published
//!   _keytrail/lock                                    held while committing or recovering
//! ```
//!
//! A run writes its files under its staging directory, then, holding the lake lock, writes its
//! commit record (the commit point) and renames the files into place. A run that dies before
//! its commit record leaves only a staging directory, which the next run deletes; one that dies
//! after it is finished (rolled forward) by the next run. See `docs/exactly-once.md`.

use std::collections::BTreeSet;
use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};

use arrow::array::RecordBatch;
use keytrail_model::schema::SCHEMA_VERSION;
use keytrail_model::time::{day_of, day_string, parse_day};
use keytrail_model::{FilterSpec, Table};
use serde::{Deserialize, Serialize};

use crate::error::{IoContext, LakeError};
use crate::files::{WRITER, footer_and_times, write_sorted};
use crate::key_daily::KeyDaily;
use crate::manifest::{
    COMMIT_FORMAT, Commit, FileRecord, Manifest, ObjectRecord, sync_dir, write_atomic,
};

const META_DIR: &str = "_keytrail";
const LAKE_FORMAT: &str = "keytrail-lake";

/// Contents of `_keytrail/lake.json`.
#[derive(Debug, Serialize, Deserialize)]
struct LakeInfo {
    format: String,
    schema_version: u32,
    created: String,
}

/// A keytrail lake rooted at a directory.
#[derive(Clone, Debug)]
pub struct Lake {
    root: PathBuf,
}

/// What recovery did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Runs that had committed but not finished publishing; their files are now in place.
    pub rolled_forward: Vec<String>,
    /// Runs that died before committing; their staged files were deleted.
    pub discarded: Vec<String>,
}

/// What `verify` found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub commits: usize,
    pub objects: usize,
    pub files: usize,
    /// Rows per table, from the files' footers.
    pub rows: std::collections::BTreeMap<String, u64>,
    /// Problems, one line each: missing files, row counts that differ, files the manifest
    /// does not know.
    pub problems: Vec<String>,
}

/// Fault injection for crash tests: when `KEYTRAIL_CRASH_AT` names this point, the process
/// aborts here, as a power cut would stop it.
#[doc(hidden)]
pub fn crash_point(name: &str) {
    static AT: LazyLock<Option<String>> = LazyLock::new(|| std::env::var("KEYTRAIL_CRASH_AT").ok());
    if AT.as_deref() == Some(name) {
        tracing::warn!(point = name, "KEYTRAIL_CRASH_AT: aborting the process");
        std::process::abort();
    }
}

/// The path of `rel` (a lake-relative path with `/` separators, as the manifest stores it)
/// under `root`.
pub fn rel_to_path(root: &Path, rel: &str) -> PathBuf {
    rel.split('/')
        .fold(root.to_path_buf(), |p, part| p.join(part))
}

fn new_run_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    let now = chrono::Utc::now();
    let noise = RandomState::new().hash_one((std::process::id(), now.timestamp_nanos_opt()));
    format!("{}-{:08x}", now.format("%Y%m%dT%H%M%S%.3fZ"), noise as u32).replace('.', "")
}

/// Only `keytrail ingest` writes a lake in S3 (through a working copy); everything else reads
/// and writes a directory. Say so rather than create a folder called `s3:`.
fn not_s3(root: &Path) -> Result<(), LakeError> {
    if root.to_string_lossy().starts_with("s3://") {
        return Err(LakeError::NotALake {
            path: root.to_path_buf(),
            reason: "only `keytrail ingest` writes a lake in S3; to query one, copy it to a \
                     directory (`aws s3 sync`) or use Athena over it (docs/s3.md)"
                .into(),
        });
    }
    Ok(())
}

/// The lake-wide lock, released on drop.
struct LakeLock {
    _file: File,
}

impl Lake {
    /// Open the lake at `root`, creating it if the directory holds no lake yet.
    pub fn create(root: impl Into<PathBuf>) -> Result<Lake, LakeError> {
        let root = root.into();
        not_s3(&root)?;
        let meta = root.join(META_DIR);
        fs::create_dir_all(&meta).at(&meta)?;
        let info_path = meta.join("lake.json");
        if !info_path.exists() {
            let info = LakeInfo {
                format: LAKE_FORMAT.to_owned(),
                schema_version: SCHEMA_VERSION,
                created: chrono::Utc::now().to_rfc3339(),
            };
            let text = serde_json::to_vec_pretty(&info).map_err(|e| LakeError::Manifest {
                path: info_path.clone(),
                reason: e.to_string(),
            })?;
            write_atomic(&info_path, &text)?;
        }
        Lake::open(root)
    }

    /// Open an existing lake.
    pub fn open(root: impl Into<PathBuf>) -> Result<Lake, LakeError> {
        let root = root.into();
        not_s3(&root)?;
        let info_path = root.join(META_DIR).join("lake.json");
        let text = match fs::read(&info_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LakeError::NotALake {
                    path: root,
                    reason: "no _keytrail/lake.json; create one with `keytrail ingest`".into(),
                });
            }
            Err(e) => return Err(LakeError::io(&info_path, e)),
        };
        let info: LakeInfo = serde_json::from_slice(&text).map_err(|e| LakeError::NotALake {
            path: info_path.clone(),
            reason: e.to_string(),
        })?;
        if info.format != LAKE_FORMAT {
            return Err(LakeError::NotALake {
                path: info_path,
                reason: format!("format is {:?}", info.format),
            });
        }
        if info.schema_version != SCHEMA_VERSION {
            return Err(LakeError::SchemaVersion {
                path: root,
                found: info.schema_version,
                expected: SCHEMA_VERSION,
            });
        }
        Ok(Lake { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of a table.
    pub fn table_dir(&self, table: Table) -> PathBuf {
        self.root.join(table.name())
    }

    fn meta(&self) -> PathBuf {
        self.root.join(META_DIR)
    }

    fn staging_root(&self) -> PathBuf {
        self.meta().join("staging")
    }

    pub fn manifest(&self) -> Result<Manifest, LakeError> {
        Manifest::load(&self.root)
    }

    fn lock(&self) -> Result<LakeLock, LakeError> {
        let path = self.meta().join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .at(&path)?;
        file.lock().at(&path)?;
        Ok(LakeLock { _file: file })
    }

    /// Finish what dead runs left: publish the files of runs that committed, delete the files
    /// of runs that did not. Runs still alive are left alone.
    pub fn recover(&self) -> Result<Recovery, LakeError> {
        let _lock = self.lock()?;
        self.recover_locked()
    }

    fn recover_locked(&self) -> Result<Recovery, LakeError> {
        let mut out = Recovery::default();
        let staging = self.staging_root();
        let entries = match fs::read_dir(&staging) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(LakeError::io(&staging, e)),
        };
        let mut manifest: Option<Manifest> = None;
        for entry in entries {
            let entry = entry.at(&staging)?;
            let dir = entry.path();
            if !dir.is_dir() {
                continue;
            }
            let run_id = entry.file_name().to_string_lossy().into_owned();
            let lock_path = dir.join(".lock");
            if let Ok(f) = File::options().write(true).open(&lock_path) {
                match f.try_lock() {
                    Ok(()) => {}
                    Err(TryLockError::WouldBlock) => continue, // alive
                    Err(TryLockError::Error(e)) => return Err(LakeError::io(&lock_path, e)),
                }
            }
            if manifest.is_none() {
                manifest = Some(self.manifest()?);
            }
            let committed = manifest
                .as_ref()
                .and_then(|m| m.commit_of(&run_id))
                .cloned();
            match committed {
                Some(commit) => {
                    tracing::info!(run = %run_id, "finishing a committed run");
                    self.publish(&commit, &dir)?;
                    out.rolled_forward.push(run_id);
                }
                None => {
                    tracing::info!(run = %run_id, "deleting files of a run that never committed");
                    fs::remove_dir_all(&dir).at(&dir)?;
                    out.discarded.push(run_id);
                }
            }
        }
        Ok(out)
    }

    /// Move a committed run's staged files into place, delete what it replaced, and remove its
    /// staging directory. Idempotent: safe to repeat after a crash half-way.
    fn publish(&self, commit: &Commit, staging: &Path) -> Result<(), LakeError> {
        let mut dirs = BTreeSet::new();
        for (i, f) in commit.files.iter().enumerate() {
            let src = rel_to_path(staging, &f.path);
            let dst = rel_to_path(&self.root, &f.path);
            if src.exists() {
                if let Some(parent) = dst.parent() {
                    fs::create_dir_all(parent).at(parent)?;
                    dirs.insert(parent.to_path_buf());
                }
                fs::rename(&src, &dst).at(&dst)?;
            }
            if i == 0 {
                crash_point("mid-publish");
            }
        }
        for d in &dirs {
            sync_dir(d)?;
        }
        for rel in &commit.replaced {
            let p = rel_to_path(&self.root, rel);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LakeError::io(&p, e)),
            }
        }
        if staging.exists() {
            fs::remove_dir_all(staging).at(staging)?;
        }
        Ok(())
    }

    /// Start a run that will write under `filter`.
    pub fn begin(&self, filter: FilterSpec) -> Result<Transaction, LakeError> {
        let _lock = self.lock()?;
        self.recover_locked()?;
        let base_seq = self.manifest()?.last_seq();
        let run_id = new_run_id();
        let staging = self.staging_root().join(&run_id);
        fs::create_dir_all(&staging).at(&staging)?;
        let lock_path = staging.join(".lock");
        let run_lock = File::create(&lock_path).at(&lock_path)?;
        run_lock.lock().at(&lock_path)?;
        Ok(Transaction {
            lake: self.clone(),
            run_id,
            staging,
            _run_lock: run_lock,
            filter,
            base_seq,
            next_file: AtomicU32::new(0),
            files: Mutex::new(Vec::new()),
            key_daily: Mutex::new(KeyDaily::default()),
        })
    }

    /// Files of a table partition on disk (published), relative to the root.
    fn partition_files(&self, table: Table, day: i32) -> Result<Vec<String>, LakeError> {
        let dir = self
            .table_dir(table)
            .join(format!("date={}", day_string(day)));
        let mut out = Vec::new();
        match fs::read_dir(&dir) {
            Ok(entries) => {
                for e in entries {
                    let e = e.at(&dir)?;
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.ends_with(".parquet") && !name.starts_with('.') {
                        out.push(format!("{}/date={}/{name}", table.name(), day_string(day)));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LakeError::io(&dir, e)),
        }
        out.sort();
        Ok(out)
    }

    /// Check the lake against its manifest: every live file present and readable, with the
    /// rows its commit recorded, in the partition of the days its rows hold; and nothing in
    /// the tables' directories the manifest does not know (other Parquet files, foreign files,
    /// folders that are not date partitions).
    pub fn verify(&self) -> Result<Verification, LakeError> {
        let _lock = self.lock()?;
        let manifest = self.manifest()?;
        let mut v = Verification {
            commits: manifest.commits().len(),
            objects: manifest.index().objects(),
            ..Verification::default()
        };
        let live = manifest.live_files();
        let known: BTreeSet<&str> = live.iter().map(|f| f.path.as_str()).collect();
        // Where the manifest puts each file name, to say when one was moved.
        let by_name: std::collections::BTreeMap<&str, &str> = live
            .iter()
            .filter_map(|f| f.path.rsplit('/').next().map(|n| (n, f.path.as_str())))
            .collect();
        for f in &live {
            let path = rel_to_path(&self.root, &f.path);
            if !path.exists() {
                v.problems.push(format!("{}: missing", f.path));
                continue;
            }
            let times: &[&str] = match f.table.as_str() {
                "key_daily" => &["firsteventtime", "lasteventtime"],
                _ => &["eventtime"],
            };
            let (rows, version, range) = match footer_and_times(&path, times) {
                Ok(x) => x,
                Err(e) => {
                    v.problems.push(format!(
                        "{}: not a readable Parquet file (truncated or overwritten?): {e}",
                        f.path
                    ));
                    continue;
                }
            };
            if rows != f.rows {
                v.problems.push(format!(
                    "{}: {rows} rows, the manifest recorded {}",
                    f.path, f.rows
                ));
            }
            if version != Some(SCHEMA_VERSION) {
                v.problems.push(format!(
                    "{}: schema version {version:?}, expected {SCHEMA_VERSION}",
                    f.path
                ));
            }
            let day = f
                .path
                .split('/')
                .find_map(|p| p.strip_prefix("date="))
                .and_then(parse_day);
            if let (Some(day), Some((lo, hi))) = (day, range) {
                let (first, last) = (day_of(lo), day_of(hi));
                if first != day || last != day {
                    v.problems.push(format!(
                        "{}: holds rows of {} to {}, not of its partition's day",
                        f.path,
                        day_string(first),
                        day_string(last)
                    ));
                }
            }
            *v.rows.entry(f.table.clone()).or_default() += rows;
            v.files += 1;
        }
        for table in Table::ALL {
            let dir = self.table_dir(table);
            let Ok(parts) = fs::read_dir(&dir) else {
                continue;
            };
            for part in parts {
                let part = part.at(&dir)?;
                let pname = part.file_name().to_string_lossy().into_owned();
                let is_day = pname.strip_prefix("date=").and_then(parse_day).is_some();
                if !is_day || !part.path().is_dir() {
                    v.problems
                        .push(format!("{}/{pname}: not a date partition", table.name()));
                    continue;
                }
                let pdir = part.path();
                let mut entries: Vec<String> = fs::read_dir(&pdir)
                    .at(&pdir)?
                    .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect::<Result<_, _>>()
                    .at(&pdir)?;
                entries.sort();
                for name in entries {
                    let rel = format!("{}/{pname}/{name}", table.name());
                    if known.contains(rel.as_str()) {
                        continue;
                    }
                    match by_name.get(name.as_str()) {
                        Some(at) => v.problems.push(format!(
                            "{rel}: not in the manifest, which has this file at {at} (moved to the wrong partition?)"
                        )),
                        None if name.ends_with(".parquet") => {
                            v.problems.push(format!("{rel}: not in the manifest"));
                        }
                        None => v.problems.push(format!(
                            "{rel}: a foreign file, not in the manifest"
                        )),
                    }
                }
            }
        }
        Ok(v)
    }
}

/// One run's changes to a lake, invisible until [`Transaction::commit`].
///
/// `write` may be called from several threads at once.
pub struct Transaction {
    lake: Lake,
    run_id: String,
    staging: PathBuf,
    _run_lock: File,
    filter: FilterSpec,
    base_seq: u64,
    next_file: AtomicU32,
    files: Mutex<Vec<FileRecord>>,
    key_daily: Mutex<KeyDaily>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another writer thread poisons the lock; the data it guards (a list of
    // records) is still consistent, so keep going and let that panic surface on its own.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Transaction {
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    pub fn filter(&self) -> &FilterSpec {
        &self.filter
    }

    /// Sort `batches` (all of `table`, all events of UTC day `day`) and write them as one
    /// staged Parquet file.
    pub fn write(
        &self,
        table: Table,
        day: i32,
        batches: &[RecordBatch],
    ) -> Result<FileRecord, LakeError> {
        let n = self.next_file.fetch_add(1, Ordering::Relaxed);
        let rel = format!(
            "{}/date={}/part-{}-{n:05}.parquet",
            table.name(),
            day_string(day),
            self.run_id
        );
        let path = rel_to_path(&self.staging, &rel);
        let mut partial = KeyDaily::default();
        let written = write_sorted(&path, table, batches, &self.run_id, |chunk| {
            if table == Table::Events {
                partial.add_events(day, chunk)?;
            }
            Ok(())
        })?;
        if !partial.is_empty() {
            locked(&self.key_daily).merge(partial);
        }
        let record = FileRecord {
            table: table.name().to_owned(),
            path: rel,
            rows: written.rows,
            bytes: written.bytes,
        };
        locked(&self.files).push(record.clone());
        Ok(record)
    }

    /// Files written so far.
    pub fn files(&self) -> Vec<FileRecord> {
        locked(&self.files).clone()
    }

    /// Make the run's rows part of the lake, recording `objects` as read. Returns `None` when
    /// there was nothing to commit.
    pub fn commit(self, objects: Vec<ObjectRecord>) -> Result<Option<Commit>, LakeError> {
        let mut files = std::mem::take(&mut *locked(&self.files));
        if objects.is_empty() && files.is_empty() {
            self.abort()?;
            return Ok(None);
        }
        crash_point("before-commit");
        let _lock = self.lake.lock()?;
        self.lake.recover_locked()?;
        let manifest = self.lake.manifest()?;

        // Another run may have read the same content since this one began.
        if let Err(err) = manifest.check_conflict(self.base_seq, &objects) {
            self.abort()?;
            return Err(err);
        }

        // key_daily: merge this run's rows with each day's published file.
        let mut replaced = Vec::new();
        let mut kd = std::mem::take(&mut *locked(&self.key_daily));
        let days: Vec<i32> = kd.days().collect();
        for day in days {
            let mut merged = kd.take_day(day);
            for rel in self.lake.partition_files(Table::KeyDaily, day)? {
                merged.add_file(day, &rel_to_path(&self.lake.root, &rel))?;
                replaced.push(rel);
            }
            files.push(merged.write_day(day, &self.staging, &self.run_id)?);
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));

        let commit = Commit {
            format: COMMIT_FORMAT,
            seq: manifest.last_seq() + 1,
            run_id: self.run_id.clone(),
            committed_at: chrono::Utc::now().to_rfc3339(),
            writer: WRITER.to_owned(),
            schema_version: SCHEMA_VERSION,
            filter: self.filter.clone(),
            objects,
            files,
            replaced,
        };
        let text = serde_json::to_vec_pretty(&commit).map_err(|e| LakeError::Manifest {
            path: Manifest::dir(&self.lake.root).join(commit.file_name()),
            reason: e.to_string(),
        })?;
        // The commit point.
        write_atomic(
            &Manifest::dir(&self.lake.root).join(commit.file_name()),
            &text,
        )?;
        crash_point("after-commit");
        self.lake.publish(&commit, &self.staging)?;
        Ok(Some(commit))
    }

    /// Drop everything the run wrote.
    pub fn abort(self) -> Result<(), LakeError> {
        if self.staging.exists() {
            fs::remove_dir_all(&self.staging).at(&self.staging)?;
        }
        Ok(())
    }
}
