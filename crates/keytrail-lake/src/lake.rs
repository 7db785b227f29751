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

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use arrow::array::RecordBatch;
use keytrail_model::schema::{SCHEMA_VERSION, col};
use keytrail_model::time::{day_of, day_string, parse_day};
use keytrail_model::{FilterSpec, Table};
use serde::{Deserialize, Serialize};

use crate::error::{IoContext, LakeError};
use crate::files::{PartWriter, TARGET_FILE_BYTES, WRITER, footer_and_times};
use crate::index::{INDEX_DIR, INDEX_TABLE, IndexEntry, IndexSink};
use crate::key_daily::{KeyDaily, KeyDailySpill};
use crate::manifest::{
    COMMIT_FORMAT, Commit, FileRecord, Manifest, ObjectRecord, sync_dir, write_atomic,
};

const META_DIR: &str = "_keytrail";
/// Under `_keytrail/`: files replaced by a commit, kept for readers that still read them.
pub const RETIRED_DIR: &str = "retired";
/// How long replaced files are kept for readers that planned with them.
pub const RETIRED_KEEP: std::time::Duration = std::time::Duration::from_secs(3600);
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

/// Only `keytrail ingest` writes a lake in S3 (through a working copy), and the query engine
/// reads one through its object store; this type is a lake directory. Say so rather than
/// create a folder called `s3:`.
fn not_s3(root: &Path) -> Result<(), LakeError> {
    if root.to_string_lossy().starts_with("s3://") {
        return Err(LakeError::NotALake {
            path: root.to_path_buf(),
            reason: "a lake in S3 is written by `keytrail ingest` and read by the query \
                     commands and `keytrail lake verify|ddl`; this needs a lake directory \
                     (copy the lake with `aws s3 sync`, see docs/s3.md)"
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

    /// Open an existing lake written with the current schema version.
    pub fn open(root: impl Into<PathBuf>) -> Result<Lake, LakeError> {
        let (lake, found) = Lake::open_any_version(root)?;
        if found != SCHEMA_VERSION {
            return Err(LakeError::SchemaVersion {
                path: lake.root,
                found,
                expected: SCHEMA_VERSION,
            });
        }
        Ok(lake)
    }

    /// Open an existing lake whatever its schema version (for `keytrail lake upgrade`), and
    /// say which version it is.
    pub fn open_any_version(root: impl Into<PathBuf>) -> Result<(Lake, u32), LakeError> {
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
        let version = Lake::info_version(&text, &info_path)?;
        Ok((Lake { root }, version))
    }

    /// The schema version a lake's `_keytrail/lake.json` (the bytes read from `info_path`)
    /// declares, once it is known to be a keytrail lake's.
    pub fn info_version(text: &[u8], info_path: &Path) -> Result<u32, LakeError> {
        let info: LakeInfo = serde_json::from_slice(text).map_err(|e| LakeError::NotALake {
            path: info_path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if info.format != LAKE_FORMAT {
            return Err(LakeError::NotALake {
                path: info_path.to_path_buf(),
                reason: format!("format is {:?}", info.format),
            });
        }
        Ok(info.schema_version)
    }

    /// Check the bytes of a lake's `_keytrail/lake.json` (read from `info_path`, of the lake
    /// at `root`): a keytrail lake of this keytrail's schema version.
    pub fn check_info(text: &[u8], info_path: &Path, root: &Path) -> Result<(), LakeError> {
        let found = Lake::info_version(text, info_path)?;
        if found != SCHEMA_VERSION {
            return Err(LakeError::SchemaVersion {
                path: root.to_path_buf(),
                found,
                expected: SCHEMA_VERSION,
            });
        }
        Ok(())
    }

    /// Record in `_keytrail/lake.json` that every file of the lake is in schema `version`.
    pub(crate) fn set_schema_version(&self, version: u32) -> Result<(), LakeError> {
        let _lock = self.lock()?;
        let info_path = self.meta().join("lake.json");
        let text = fs::read(&info_path).at(&info_path)?;
        let mut info: LakeInfo =
            serde_json::from_slice(&text).map_err(|e| LakeError::NotALake {
                path: info_path.clone(),
                reason: e.to_string(),
            })?;
        info.schema_version = version;
        let text = serde_json::to_vec_pretty(&info).map_err(|e| LakeError::Manifest {
            path: info_path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&info_path, &text)
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

    /// Where replaced files wait for readers that may still be reading them.
    pub fn retired_root(&self) -> PathBuf {
        self.meta().join(RETIRED_DIR)
    }

    /// Delete the retired files of runs that committed more than `min_age` ago.
    fn vacuum_locked(&self, min_age: std::time::Duration) -> Result<usize, LakeError> {
        let dir = self.retired_root();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(LakeError::io(&dir, e)),
        };
        let mut removed = 0;
        for entry in entries {
            let path = entry.at(&dir)?.path();
            let old = fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= min_age);
            if old {
                fs::remove_dir_all(&path).at(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
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
        // Replaced files leave the tables at once (no reader of the directories sees a row
        // twice) but are kept under `_keytrail/retired/<run>/` for a while, where keytrail's
        // readers that planned with them still find them; `vacuum` deletes them later.
        for rel in &commit.replaced {
            let p = rel_to_path(&self.root, rel);
            let to = rel_to_path(&self.retired_root().join(&commit.run_id), rel);
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent).at(parent)?;
            }
            match fs::rename(&p, &to) {
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
        self.begin_with(filter, KeyDailyMode::Merge)
    }

    /// Start a run that rewrites files already in the lake (compaction, upgrade): the files it
    /// names with [`Transaction::replace`] are superseded by its own when it commits.
    pub fn begin_rewrite(&self, key_daily: KeyDailyMode) -> Result<Transaction, LakeError> {
        self.begin_with(FilterSpec::all(), key_daily)
    }

    fn begin_with(
        &self,
        filter: FilterSpec,
        key_daily_mode: KeyDailyMode,
    ) -> Result<Transaction, LakeError> {
        let _lock = self.lock()?;
        self.recover_locked()?;
        self.vacuum_locked(RETIRED_KEEP)?;
        let base_seq = self.manifest()?.last_seq();
        let run_id = new_run_id();
        let staging = self.staging_root().join(&run_id);
        fs::create_dir_all(&staging).at(&staging)?;
        let lock_path = staging.join(".lock");
        let run_lock = File::create(&lock_path).at(&lock_path)?;
        run_lock.lock().at(&lock_path)?;
        let index = IndexSink::new(staging.join(".index-spill"));
        let key_daily = KeyDailySpill::new(staging.join(".key_daily-spill"));
        Ok(Transaction {
            lake: self.clone(),
            run_id,
            staging,
            _run_lock: run_lock,
            filter,
            base_seq,
            next_file: AtomicU32::new(0),
            next_scope: AtomicU32::new(0),
            staged: Staged::new(index, key_daily),
            key_daily_mode,
            replaces: Mutex::new(Vec::new()),
            carried_covers: Mutex::new(Vec::new()),
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
            let times = match f.table.as_str() {
                "key_daily" => Some((col::FIRSTEVENTTIME, col::LASTEVENTTIME)),
                INDEX_TABLE => None,
                _ => Some((col::EVENTTIME, col::EVENTTIME)),
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
            if f.table != INDEX_TABLE && version != Some(SCHEMA_VERSION) {
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
            // Readers answer a time range from the record's statistics without opening the
            // file: they must be the file's.
            if let (Some(s), Some((lo, hi))) = (&f.stats, range)
                && (s.min_time, s.max_time) != (lo, hi)
            {
                v.problems.push(format!(
                    "{}: its time range is {} to {} (ms since the epoch), the manifest recorded {} to {}",
                    f.path, lo, hi, s.min_time, s.max_time
                ));
            }
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
        let index_dir = rel_to_path(&self.root, INDEX_DIR);
        if let Ok(entries) = fs::read_dir(&index_dir) {
            for e in entries {
                let name = e.at(&index_dir)?.file_name().to_string_lossy().into_owned();
                let rel = format!("{INDEX_DIR}/{name}");
                if name.ends_with(".parquet") && !known.contains(rel.as_str()) {
                    v.problems.push(format!("{rel}: not in the manifest"));
                }
            }
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
    next_scope: AtomicU32,
    /// What the run wrote outside of any [`Scope`].
    staged: Staged,
    key_daily_mode: KeyDailyMode,
    /// Published files this run supersedes (rewrites only).
    replaces: Mutex<Vec<String>>,
    /// Files left as they are whose index entries this run's index carries.
    carried_covers: Mutex<Vec<String>>,
}

/// What a run does to `key_daily` for the days it writes `events` of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyDailyMode {
    /// New events: merge their rows into each day's published `key_daily` (ingest).
    Merge,
    /// Every event of each day the run writes is rewritten by it: derive the day's
    /// `key_daily` from the run's rows alone, replacing the published file (upgrade).
    Rebuild,
    /// The same events in new files: leave `key_daily` as it is (compaction).
    Keep,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another writer thread poisons the lock; the data it guards (a list of
    // records) is still consistent, so keep going and let that panic surface on its own.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Rows written into staging: the files open for writing, those finished with the key index
/// entries of the `events` ones, and the `key_daily` rows derived from them. A transaction has
/// one; each [`Scope`] has its own until the transaction adopts it.
struct Staged {
    /// The file being written for each table and day.
    open: Mutex<OpenFiles>,
    /// Files finished so far.
    files: Mutex<Vec<FileRecord>>,
    index: Mutex<IndexSink>,
    /// `key_daily` rows (spilled to the staging directory past a bound).
    key_daily: Mutex<KeyDailySpill>,
}

impl Staged {
    fn new(index: IndexSink, key_daily: KeyDailySpill) -> Staged {
        Staged {
            open: Mutex::new(OpenFiles::default()),
            files: Mutex::new(Vec::new()),
            index: Mutex::new(index),
            key_daily: Mutex::new(key_daily),
        }
    }
}

/// The file a run is writing for one table and day (none between files).
type OpenSlot = Arc<Mutex<Slot>>;

#[derive(Default)]
struct Slot {
    writer: Option<PartWriter>,
    /// Closed to bound the open files and taken out of [`OpenFiles`]: whoever still holds it
    /// looks the partition up again.
    retired: bool,
}

/// Most data files a run (and each of its scopes) keeps open at once. Each open file holds
/// its write buffer, its Parquet metadata and its key index entries until it is closed, so a
/// run over many days would otherwise hold every day's; past this, the file written to least
/// recently is finished (a later row of its day starts a new file). Objects are read in
/// delivery-time order, so a day's writes come together and its file is done before it is
/// closed.
pub const MAX_OPEN_FILES: usize = 32;

/// The files a run has open, by table and day, with when each was last written to.
#[derive(Default)]
struct OpenFiles {
    slots: HashMap<(Table, i32), (OpenSlot, u64)>,
    clock: u64,
}

impl OpenFiles {
    /// The slot of `part` (a new one if needed), and, when that passes [`MAX_OPEN_FILES`],
    /// the writers of the least recently used slots, taken out to be closed.
    fn slot(&mut self, part: (Table, i32)) -> (OpenSlot, Vec<PartWriter>) {
        self.clock += 1;
        let clock = self.clock;
        let entry = self.slots.entry(part).or_default();
        entry.1 = clock;
        let slot = Arc::clone(&entry.0);
        let mut evicted = Vec::new();
        if self.slots.len() > MAX_OPEN_FILES {
            let mut by_age: Vec<((Table, i32), u64)> =
                self.slots.iter().map(|(k, (_, t))| (*k, *t)).collect();
            by_age.sort_unstable_by_key(|(_, t)| *t);
            for (k, _) in by_age {
                if self.slots.len() <= MAX_OPEN_FILES {
                    break;
                }
                if k == part {
                    continue;
                }
                // A slot being written to is skipped; it is recent anyway.
                let Some((old, _)) = self.slots.get(&k) else {
                    continue;
                };
                let Ok(mut guard) = old.try_lock() else {
                    continue;
                };
                guard.retired = true;
                if let Some(w) = guard.writer.take() {
                    evicted.push(w);
                }
                drop(guard);
                self.slots.remove(&k);
            }
        }
        (slot, evicted)
    }

    fn drain(&mut self) -> Vec<OpenSlot> {
        self.slots.drain().map(|(_, (s, _))| s).collect()
    }
}

fn close(into: &Staged, w: PartWriter) -> Result<(), LakeError> {
    let (record, entries) = w.finish()?;
    locked(&into.files).push(record);
    if !entries.is_empty() {
        locked(&into.index).extend(entries)?;
    }
    Ok(())
}

/// Finish every file of `staged` still open.
fn finish_open(staged: &Staged) -> Result<(), LakeError> {
    let slots = locked(&staged.open).drain();
    for slot in slots {
        if let Some(w) = locked(&slot).writer.take() {
            close(staged, w)?;
        }
    }
    Ok(())
}

/// Rows of a run kept apart until [`Transaction::adopt`] makes them the run's; dropped
/// unadopted, its files are deleted (and, should the process die first, they go with the
/// run's staging directory, as every uncommitted file does).
pub struct Scope {
    txn: Arc<Transaction>,
    staged: Staged,
    /// Where its `key_daily` and key index spills go.
    dir: PathBuf,
    adopted: bool,
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("dir", &self.dir)
            .field("files", &locked(&self.staged.files).len())
            .finish()
    }
}

impl Scope {
    /// [`Transaction::write`], into the scope's own files.
    pub fn write(
        &self,
        table: Table,
        day: i32,
        batches: &[RecordBatch],
    ) -> Result<Piece, LakeError> {
        self.txn.write_into(&self.staged, table, day, batches)
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if self.adopted {
            return;
        }
        let mut paths: Vec<PathBuf> = locked(&self.staged.files)
            .iter()
            .map(|f| rel_to_path(&self.txn.staging, &f.path))
            .collect();
        for slot in locked(&self.staged.open).drain() {
            if let Some(w) = locked(&slot).writer.take() {
                paths.push(w.path().to_owned());
            }
        }
        for path in paths {
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), "could not remove a dropped scope's file: {e}");
            }
        }
        if let Err(e) = fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.dir.display(), "could not remove a dropped scope's folder: {e}");
        }
    }
}

/// What one [`Transaction::write`] added.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Piece {
    pub rows: u64,
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

    /// Sort `batches` (all of `table`, all events of UTC day `day`) and add them to the run's
    /// file of that table and day, as one sorted row group: a day's rows of a run end in one
    /// file (a new one once it passes [`TARGET_FILE_BYTES`], or after it was closed to keep
    /// at most [`MAX_OPEN_FILES`] open).
    pub fn write(
        &self,
        table: Table,
        day: i32,
        batches: &[RecordBatch],
    ) -> Result<Piece, LakeError> {
        self.write_into(&self.staged, table, day, batches)
    }

    /// [`Transaction::write`] into `into` (the run's own files or a scope's).
    fn write_into(
        &self,
        into: &Staged,
        table: Table,
        day: i32,
        batches: &[RecordBatch],
    ) -> Result<Piece, LakeError> {
        let mut partial = KeyDaily::default();
        let derive = table == Table::Events && self.key_daily_mode != KeyDailyMode::Keep;
        let rows = self.with_writer(into, table, day, |writer| {
            writer.append_sorted(batches, |chunk| {
                if derive {
                    partial.add_events(day, chunk)?;
                }
                Ok(())
            })
        })?;
        if !partial.is_empty() {
            locked(&into.key_daily).merge(partial)?;
        }
        Ok(Piece { rows })
    }

    /// Add rows already in the lake's order (a merge of sorted files) to the run's file of that
    /// table and day, without ending its row group.
    pub fn append(&self, table: Table, day: i32, batch: &RecordBatch) -> Result<(), LakeError> {
        let mut partial = KeyDaily::default();
        let derive = table == Table::Events && self.key_daily_mode != KeyDailyMode::Keep;
        self.with_writer(&self.staged, table, day, |writer| {
            if derive {
                partial
                    .add_events(day, batch)
                    .map_err(|e| LakeError::arrow(Path::new(table.name()), e))?;
            }
            writer.push(batch)
        })?;
        if !partial.is_empty() {
            locked(&self.staged.key_daily).merge(partial)?;
        }
        Ok(())
    }

    /// Run `f` on the run's open file of `table` and `day` (opening one if needed); close the
    /// file once it passes [`TARGET_FILE_BYTES`].
    fn with_writer<T>(
        &self,
        into: &Staged,
        table: Table,
        day: i32,
        f: impl FnOnce(&mut PartWriter) -> Result<T, LakeError>,
    ) -> Result<T, LakeError> {
        loop {
            let (slot, evicted) = locked(&into.open).slot((table, day));
            for w in evicted {
                close(into, w)?;
            }
            let mut slot = locked(&slot);
            if slot.retired {
                // Closed between the look-up and the lock: look it up again.
                continue;
            }
            if slot.writer.is_none() {
                let n = self.next_file.fetch_add(1, Ordering::Relaxed);
                let rel = format!(
                    "{}/date={}/part-{}-{n:05}.parquet",
                    table.name(),
                    day_string(day),
                    self.run_id
                );
                let path = rel_to_path(&self.staging, &rel);
                slot.writer = Some(PartWriter::create(path, rel, table, &self.run_id)?);
            }
            let Some(writer) = slot.writer.as_mut() else {
                return Err(LakeError::io(
                    &self.staging,
                    std::io::Error::other("no open file"),
                ));
            };
            let out = f(writer)?;
            if writer.bytes_written() >= TARGET_FILE_BYTES
                && let Some(full) = slot.writer.take()
            {
                close(into, full)?;
            }
            return Ok(out);
        }
    }

    /// Index entries of files this rewrite leaves as they are, and those files: the commit's
    /// key index then covers the whole lake, and every older index file can be replaced.
    pub fn carry_index(
        &self,
        index_files: &[PathBuf],
        keep: impl Fn(&IndexEntry) -> bool,
        covers: Vec<String>,
    ) -> Result<(), LakeError> {
        locked(&self.staged.index).extend_from_files(index_files, keep)?;
        locked(&self.carried_covers).extend(covers);
        Ok(())
    }

    /// Finish every file still open and return the data files the run wrote (those of the
    /// scopes it adopted included).
    pub fn finish_files(&self) -> Result<Vec<FileRecord>, LakeError> {
        finish_open(&self.staged)?;
        Ok(locked(&self.staged.files).clone())
    }

    /// A scope of this run: rows written through it ([`Scope::write`]) go to files of its
    /// own, which become the run's when it is adopted ([`Transaction::adopt`]) and are
    /// deleted when it is dropped without being adopted. For what may still fail after its
    /// rows were written (an object read record by record).
    pub fn scope(self: &Arc<Self>) -> Scope {
        let n = self.next_scope.fetch_add(1, Ordering::Relaxed);
        let dir = self.staging.join(".scopes").join(n.to_string());
        Scope {
            staged: Staged::new(
                IndexSink::new(dir.join("index-spill")),
                KeyDailySpill::new(dir.join("key_daily-spill")),
            ),
            txn: Arc::clone(self),
            dir,
            adopted: false,
        }
    }

    /// Make everything `scope` wrote part of the run, as if written through the run itself.
    pub fn adopt(&self, mut scope: Scope) -> Result<(), LakeError> {
        finish_open(&scope.staged)?;
        scope.adopted = true;
        let files = std::mem::take(&mut *locked(&scope.staged.files));
        let index = std::mem::replace(
            &mut *locked(&scope.staged.index),
            IndexSink::new(scope.dir.join("index-spill")),
        );
        let key_daily = std::mem::replace(
            &mut *locked(&scope.staged.key_daily),
            KeyDailySpill::new(scope.dir.join("key_daily-spill")),
        );
        locked(&self.staged.files).extend(files);
        locked(&self.staged.index).absorb(index)?;
        locked(&self.staged.key_daily).absorb(key_daily)?;
        Ok(())
    }

    /// Record that this run supersedes the published file `rel` (relative to the lake root):
    /// it is removed from the tables when the run commits.
    pub fn replace(&self, rel: &str) {
        locked(&self.replaces).push(rel.to_owned());
    }

    /// Files written so far (finished ones).
    pub fn files(&self) -> Vec<FileRecord> {
        locked(&self.staged.files).clone()
    }

    /// Make the run's rows part of the lake, recording `objects` as read. Returns `None` when
    /// there was nothing to commit.
    pub fn commit(self, objects: Vec<ObjectRecord>) -> Result<Option<Commit>, LakeError> {
        self.finish_files()?;
        let mut files = std::mem::take(&mut *locked(&self.staged.files));
        if objects.is_empty() && files.is_empty() && locked(&self.replaces).is_empty() {
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

        // A rewrite must supersede files that are still live: another rewrite may have
        // replaced them while this one ran.
        let mut replaced = std::mem::take(&mut *locked(&self.replaces));
        if let Err(err) = manifest.check_live(&replaced) {
            self.abort()?;
            return Err(err);
        }

        // key_daily: merge this run's rows with each day's published file (or, for an
        // upgrade, replace it with the run's rows).
        let mut kd = locked(&self.staged.key_daily);
        for day in kd.days() {
            let mut merged = kd.take_day(day)?;
            for rel in self.lake.partition_files(Table::KeyDaily, day)? {
                if self.key_daily_mode == KeyDailyMode::Merge {
                    merged.add_file(day, &rel_to_path(&self.lake.root, &rel))?;
                }
                replaced.push(rel);
            }
            files.push(merged.write_day(day, &self.staging, &self.run_id)?);
        }
        drop(kd);
        // The key index of the run's `events` files.
        let index = std::mem::replace(
            &mut *locked(&self.staged.index),
            IndexSink::new(self.staging.join(".index-spill")),
        );
        let mut covers: Vec<String> = files
            .iter()
            .filter(|f| f.table == Table::Events.name())
            .map(|f| f.path.clone())
            .collect();
        covers.extend(std::mem::take(&mut *locked(&self.carried_covers)));
        covers.sort();
        if !covers.is_empty() {
            let rel = format!("{INDEX_DIR}/{}.parquet", self.run_id);
            let written = index.finish(&rel_to_path(&self.staging, &rel), &self.run_id)?;
            files.push(FileRecord {
                table: INDEX_TABLE.to_owned(),
                path: rel,
                rows: written.rows,
                bytes: written.bytes,
                stats: None,
                covers,
            });
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
