//! A lake in S3 (`--lake s3://BUCKET/PREFIX`): the same layout as a local lake, written so
//! that readers of the table prefixes (Athena, Trino, Spark, DuckDB) never see a file of a run
//! that did not commit, and so that several writers can share one bucket.
//!
//! A run works in a local *working copy* of the lake: [`S3Lake::pull`] fetches `lake.json`
//! and every commit record (no data files; those the process read before are taken from its
//! [`CommitCache`]), so the run decides what to read exactly as it would against a local
//! lake, and commits there. [`S3Lake::push`] then publishes that commit:
//!
//! ```text
//! stage    upload the run's data files to PREFIX/_keytrail/staging/<run>/<table>/date=…/…
//!          (multipart above the part size); invisible under the table prefixes
//! merge    for each day the run touched, merge its key_daily rows with that day's published
//!          key_daily file(s) into one file; stage it
//! commit   PUT PREFIX/_keytrail/manifest/<seq>.json with `If-None-Match: *`    <- commit point
//!          (seq = last published + 1; a 412 means another writer took that number: read its
//!          record, refuse if it read the same content, else merge again with the next seq)
//! publish  copy each staged file to its place under the table prefix, delete what the commit
//!          replaced (older key_daily files), delete the staged copies
//! ```
//!
//! Recovery (at every pull): a staged run whose commit record exists is rolled forward (its
//! remaining staged files are copied into place; copying is idempotent); a staged run with no
//! record whose newest staged object is older than [`S3LakeOptions::stale_after`] is deleted.
//! Younger ones may belong to a live writer and are left alone. See `docs/s3.md`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures::{StreamExt, TryStreamExt};
use keytrail_lake::{
    Commit, FileRecord, KeyDaily, Lake, LakeError, Manifest, crash_point, rel_to_path,
};
use keytrail_model::Table;
use keytrail_model::time::parse_day;

use crate::error::IngestError;
use crate::s3::S3Uri;

const META: &str = "_keytrail";

/// How a lake in S3 is written.
#[derive(Clone, Debug)]
pub struct S3LakeOptions {
    /// Files larger than this are uploaded in parts of this size (S3's minimum is 5 MiB).
    pub part_size: usize,
    /// Uploads, copies and deletes in flight.
    pub concurrency: usize,
    /// A staged run without a commit record is deleted once its newest object is this old.
    pub stale_after: Duration,
    /// Commit attempts when other writers keep taking the next sequence number.
    pub commit_attempts: u32,
    /// The commit records already read, shared by every [`S3Lake`] made from these options
    /// or a clone of them.
    pub commit_cache: CommitCache,
}

impl Default for S3LakeOptions {
    fn default() -> Self {
        S3LakeOptions {
            part_size: 64 << 20,
            concurrency: 16,
            stale_after: Duration::from_secs(24 * 3600),
            commit_attempts: 50,
            commit_cache: CommitCache::default(),
        }
    }
}

/// The commit records a process has read from a lake in S3. A record never changes once
/// written and sequence numbers are taken in order, so a later read of the lake's commits
/// lists only the record names after the last one held and fetches only those: a follower
/// committing a batch at a time reads each record once, not the lake's whole history per
/// batch. Clones share the records. They are dropped when the lake read is another one
/// (another URI, or a `lake.json` with other content: the lake was made again).
#[derive(Clone, Default)]
pub struct CommitCache(Arc<Mutex<Cached>>);

#[derive(Default)]
struct Cached {
    lake: String,
    info: Vec<u8>,
    /// In sequence order.
    commits: Vec<Commit>,
}

impl std::fmt::Debug for CommitCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("CommitCache")
            .field("lake", &c.lake)
            .field("commits", &c.commits.len())
            .finish()
    }
}

impl CommitCache {
    /// The last sequence number held of the lake `lake` whose `lake.json` is `info`, after
    /// dropping what is held of another lake.
    fn last_of(&self, lake: &str, info: &[u8]) -> u64 {
        let mut c = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if c.lake != lake || c.info != info {
            *c = Cached {
                lake: lake.to_owned(),
                info: info.to_vec(),
                commits: Vec::new(),
            };
        }
        c.commits.last().map_or(0, |c| c.seq)
    }

    /// Add `newer` (records after the last one held when they were listed) and return every
    /// record held; `None` when another reader of these options moved the cache to another
    /// lake meanwhile (`newer` alone is then not the whole lake).
    fn extend(&self, lake: &str, info: &[u8], mut newer: Vec<Commit>) -> Option<Vec<Commit>> {
        newer.sort_by_key(|c| c.seq);
        let mut c = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if c.lake != lake || c.info != info {
            return None;
        }
        // Another reader of these options may have added some of them meanwhile.
        let last = c.commits.last().map_or(0, |c| c.seq);
        c.commits.extend(newer.into_iter().filter(|n| n.seq > last));
        Some(c.commits.clone())
    }
}

/// What a pull found and repaired.
#[derive(Clone, Debug, Default)]
pub struct Pulled {
    /// The lake's commits as published.
    pub manifest: Manifest,
    /// Whether this pull created the lake.
    pub created: bool,
    /// Committed runs whose publishing this pull finished.
    pub rolled_forward: Vec<String>,
    /// Staged runs that never committed, deleted.
    pub discarded: Vec<String>,
}

/// A keytrail lake under `s3://bucket/prefix`.
#[derive(Clone, Debug)]
pub struct S3Lake {
    client: Client,
    uri: S3Uri,
    opts: S3LakeOptions,
}

fn s3_error(object: String, what: &str, e: impl std::error::Error) -> IngestError {
    IngestError::Object {
        object,
        reason: format!("{what}: {}", DisplayErrorContext(e)),
    }
}

/// Percent-encode a key for `x-amz-copy-source` (everything but unreserved characters and `/`).
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `key_daily/date=YYYY-MM-DD/…` → the day.
fn key_daily_day(rel: &str) -> Option<i32> {
    let rest = rel.strip_prefix("key_daily/date=")?;
    parse_day(rest.split('/').next()?)
}

impl S3Lake {
    pub fn new(client: Client, uri: S3Uri, opts: S3LakeOptions) -> S3Lake {
        S3Lake { client, uri, opts }
    }

    pub fn uri(&self) -> &S3Uri {
        &self.uri
    }

    /// The object key of `rel` (a path relative to the lake root).
    fn key(&self, rel: &str) -> String {
        let p = self.uri.prefix.trim_end_matches('/');
        if p.is_empty() {
            rel.to_owned()
        } else {
            format!("{p}/{rel}")
        }
    }

    fn staged_key(&self, run: &str, rel: &str) -> String {
        self.key(&format!("{META}/staging/{run}/{rel}"))
    }

    fn commit_key(&self, seq: u64) -> String {
        self.key(&format!("{META}/manifest/{seq:010}.json"))
    }

    fn display(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.uri.bucket)
    }

    /// GET a whole object; `None` when it does not exist.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, IngestError> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.uri.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Ok(None);
            }
            Err(e) => return Err(s3_error(self.display(key), "cannot read", e)),
        };
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| s3_error(self.display(key), "cannot read the body", e))?;
        Ok(Some(bytes.to_vec()))
    }

    /// The bytes of `rel` (a path relative to the lake's root, e.g. a follower's state under
    /// `_keytrail/`); `None` when it does not exist.
    pub async fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, IngestError> {
        self.get(&self.key(rel)).await
    }

    /// Write `rel` whole, replacing what is there: one PUT, so a reader sees the old bytes
    /// or the new ones, never a part.
    pub async fn write(&self, rel: &str, bytes: Vec<u8>) -> Result<(), IngestError> {
        let key = self.key(rel);
        self.client
            .put_object()
            .bucket(&self.uri.bucket)
            .key(&key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| s3_error(self.display(&key), "cannot write", e))?;
        Ok(())
    }

    /// How messages name `rel`: `s3://bucket/prefix/rel`.
    pub fn name_of(&self, rel: &str) -> String {
        self.display(&self.key(rel))
    }

    /// PUT `bytes` only if `key` does not exist yet (`If-None-Match: *`). `Ok(false)` when it
    /// existed (412 Precondition Failed).
    async fn put_new(&self, key: &str, bytes: Vec<u8>) -> Result<bool, IngestError> {
        let sent = self
            .client
            .put_object()
            .bucket(&self.uri.bucket)
            .key(key)
            .body(ByteStream::from(bytes))
            .if_none_match("*")
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => Ok(false),
            Err(e) => Err(s3_error(self.display(key), "cannot write", e)),
        }
    }

    /// Upload a local file to `key` (streamed from disk by the SDK), in parts when it is
    /// larger than the part size.
    pub async fn upload(&self, path: &Path, key: &str) -> Result<(), IngestError> {
        let io_err = |e: std::io::Error| IngestError::Input {
            path: path.to_path_buf(),
            source: e,
        };
        let body_err = |e: aws_smithy_types::byte_stream::error::Error| IngestError::Input {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        };
        let size = std::fs::metadata(path).map_err(io_err)?.len();
        let bucket = &self.uri.bucket;
        let part = (self.opts.part_size as u64).max(1);
        if size <= part {
            let body = ByteStream::from_path(path).await.map_err(body_err)?;
            self.client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(body)
                .send()
                .await
                .map_err(|e| s3_error(self.display(key), "cannot write", e))?;
            return Ok(());
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error(self.display(key), "cannot start a multipart upload", e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_owned();
        let result = async {
            let mut parts = Vec::new();
            let mut offset = 0u64;
            let mut number = 1;
            while offset < size {
                let len = part.min(size - offset);
                let body = ByteStream::read_from()
                    .path(path)
                    .offset(offset)
                    .length(aws_smithy_types::byte_stream::Length::Exact(len))
                    .build()
                    .await
                    .map_err(body_err)?;
                let out = self
                    .client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| s3_error(self.display(key), "cannot upload a part", e))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_owned))
                        .build(),
                );
                offset += len;
                number += 1;
            }
            self.client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| {
                    s3_error(self.display(key), "cannot complete a multipart upload", e)
                })?;
            Ok::<(), IngestError>(())
        }
        .await;
        if result.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    /// Every object under `prefix` (key, last-modified seconds), all pages.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, i64)>, IngestError> {
        self.list_after(prefix, None).await
    }

    /// [`S3Lake::list`] of the keys after `start_after` (in S3's order: UTF-8 bytes).
    async fn list_after(
        &self,
        prefix: &str,
        start_after: Option<String>,
    ) -> Result<Vec<(String, i64)>, IngestError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.uri.bucket)
            .prefix(prefix)
            .set_start_after(start_after)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s3_error(self.display(prefix), "cannot list", e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.push((k.to_owned(), o.last_modified().map_or(0, |t| t.secs())));
                }
            }
        }
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), IngestError> {
        self.client
            .delete_object()
            .bucket(&self.uri.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error(self.display(key), "cannot delete", e))?;
        Ok(())
    }

    /// Copy `from` to `to` in the bucket. `Ok(false)` when `from` no longer exists.
    async fn copy(&self, from: &str, to: &str) -> Result<bool, IngestError> {
        let source = format!("{}/{}", self.uri.bucket, encode_key(from));
        match self
            .client
            .copy_object()
            .bucket(&self.uri.bucket)
            .key(to)
            .copy_source(source)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.raw_response().is_some_and(|r| r.status().as_u16() == 404)
                    || format!("{}", DisplayErrorContext(&e)).contains("NoSuchKey") =>
            {
                Ok(false)
            }
            Err(e) => Err(s3_error(self.display(to), "cannot copy into place", e)),
        }
    }

    async fn for_each<T, F, Fut>(&self, items: Vec<T>, f: F) -> Result<(), IngestError>
    where
        F: Fn(T) -> Fut,
        Fut: std::future::Future<Output = Result<(), IngestError>>,
    {
        futures::stream::iter(items)
            .map(f)
            .buffer_unordered(self.opts.concurrency.max(1))
            .try_collect::<()>()
            .await
    }

    /// The commit records after sequence number `after`. Their names are the number padded to
    /// ten digits, so the listing starts after `after`'s name.
    async fn commits(&self, after: u64) -> Result<Vec<Commit>, IngestError> {
        let prefix = self.key(&format!("{META}/manifest/"));
        let start_after = (after > 0).then(|| self.commit_key(after));
        let keys: Vec<String> = self
            .list_after(&prefix, start_after)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| {
                k.strip_prefix(&prefix)
                    .and_then(|n| n.strip_suffix(".json"))
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|seq| seq > after)
            })
            .collect();
        futures::stream::iter(keys)
            .map(|k| async move {
                let bytes = self.get(&k).await?.ok_or_else(|| IngestError::Object {
                    object: self.display(&k),
                    reason: "the commit record disappeared while it was read".into(),
                })?;
                // The lake crate's parser, which refuses a record of a newer format.
                Ok::<_, IngestError>(Manifest::parse_commit(
                    &bytes,
                    Path::new(&self.display(&k)),
                )?)
            })
            .buffer_unordered(self.opts.concurrency.max(1))
            .try_collect()
            .await
    }

    /// The lake's commits as published, read only: nothing is created, repaired or deleted.
    /// Fails when no lake is at the URI, or one of another schema version.
    pub async fn read_manifest(&self) -> Result<Manifest, IngestError> {
        let info_key = self.key(&format!("{META}/lake.json"));
        let root = PathBuf::from(self.uri.to_string());
        let info = self
            .get(&info_key)
            .await?
            .ok_or_else(|| LakeError::NotALake {
                path: root.clone(),
                reason: "no _keytrail/lake.json; `keytrail ingest ... --lake` creates one".into(),
            })?;
        Lake::check_info(&info, Path::new(&self.display(&info_key)), &root)?;
        Ok(Manifest::from_commits(self.published(&info).await?))
    }

    /// Every published commit record of the lake whose `lake.json` is `info`: those the
    /// options' [`CommitCache`] holds, and those after them, fetched and added to it.
    async fn published(&self, info: &[u8]) -> Result<Vec<Commit>, IngestError> {
        let lake = self.uri.to_string();
        let cache = &self.opts.commit_cache;
        let newer = self.commits(cache.last_of(&lake, info)).await?;
        match cache.extend(&lake, info, newer) {
            Some(all) => Ok(all),
            None => self.commits(0).await,
        }
    }

    /// Make `work` (an empty or missing directory) a working copy of the lake: its
    /// `lake.json` and commit records. The lake is created in the bucket if it does not exist.
    /// Dead runs' staged files are rolled forward or deleted first.
    pub async fn pull(&self, work: &Path) -> Result<Pulled, IngestError> {
        if work.exists()
            && std::fs::read_dir(work)
                .map_err(|e| IngestError::Input {
                    path: work.to_path_buf(),
                    source: e,
                })?
                .next()
                .is_some()
        {
            return Err(IngestError::Config(format!(
                "{}: the working copy of a lake in S3 must be an empty directory",
                work.display()
            )));
        }
        let mut pulled = Pulled::default();
        let info_key = self.key(&format!("{META}/lake.json"));
        let info_path = work.join(META).join("lake.json");
        let info = match self.get(&info_key).await? {
            Some(bytes) => bytes,
            None => {
                // A new lake: create it locally, then in the bucket unless someone beat us.
                Lake::create(work)?;
                let bytes = std::fs::read(&info_path).map_err(|e| LakeError::io(&info_path, e))?;
                if self.put_new(&info_key, bytes.clone()).await? {
                    pulled.created = true;
                    bytes
                } else {
                    self.get(&info_key).await?.unwrap_or(bytes)
                }
            }
        };
        std::fs::create_dir_all(work.join(META)).map_err(|e| LakeError::io(work, e))?;
        std::fs::write(&info_path, &info).map_err(|e| LakeError::io(&info_path, e))?;
        // Validates the format and schema version.
        Lake::open(work).map_err(|e| match e {
            LakeError::SchemaVersion {
                found, expected, ..
            } => LakeError::SchemaVersion {
                path: PathBuf::from(self.uri.to_string()),
                found,
                expected,
            },
            other => other,
        })?;

        let commits = self.published(&info).await?;
        let manifest_dir = work.join(META).join("manifest");
        std::fs::create_dir_all(&manifest_dir).map_err(|e| LakeError::io(&manifest_dir, e))?;
        for c in &commits {
            let path = manifest_dir.join(c.file_name());
            let text = serde_json::to_vec_pretty(c).map_err(|e| LakeError::Manifest {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            std::fs::write(&path, text).map_err(|e| LakeError::io(&path, e))?;
        }
        pulled.manifest = Manifest::from_commits(commits);
        self.recover(&mut pulled).await?;
        Ok(pulled)
    }

    /// Roll committed staged runs forward, delete stale uncommitted ones.
    async fn recover(&self, pulled: &mut Pulled) -> Result<(), IngestError> {
        let staging = self.key(&format!("{META}/staging/"));
        let mut runs: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
        for (key, modified) in self.list(&staging).await? {
            if let Some((run, _)) = key
                .strip_prefix(&staging)
                .and_then(|rest| rest.split_once('/'))
            {
                runs.entry(run.to_owned())
                    .or_default()
                    .push((key, modified));
            }
        }
        let now = chrono::Utc::now().timestamp();
        for (run, objects) in runs {
            if let Some(commit) = pulled.manifest.commit_of(&run).cloned() {
                tracing::warn!(run = %run, "finishing a committed run in the S3 lake");
                self.publish(&commit).await?;
                pulled.rolled_forward.push(run);
            } else {
                let newest = objects.iter().map(|(_, m)| *m).max().unwrap_or(0);
                if now - newest >= self.opts.stale_after.as_secs() as i64 {
                    tracing::warn!(run = %run, "deleting staged files of a run that never committed");
                    self.for_each(objects, |(k, _)| async move { self.delete(&k).await })
                        .await?;
                    pulled.discarded.push(run);
                }
            }
        }
        Ok(())
    }

    /// Copy a committed run's staged files into place, delete what it replaced and its staged
    /// copies. Idempotent.
    async fn publish(&self, commit: &Commit) -> Result<(), IngestError> {
        let run = commit.run_id.as_str();
        let mut first = true;
        for f in &commit.files {
            self.copy(&self.staged_key(run, &f.path), &self.key(&f.path))
                .await?;
            if std::mem::take(&mut first) {
                crash_point("s3-mid-publish");
            }
        }
        self.for_each(commit.replaced.clone(), |rel| async move {
            self.delete(&self.key(&rel)).await
        })
        .await?;
        self.for_each(commit.files.clone(), |f| async move {
            self.delete(&self.staged_key(run, &f.path)).await
        })
        .await
    }

    /// A published key_daily file's bytes: at its place, or still staged by its run. `None`
    /// when it is in neither (a newer commit replaced it, or it was lost).
    async fn get_published(&self, rel: &str, run: &str) -> Result<Option<Vec<u8>>, IngestError> {
        if let Some(b) = self.get(&self.key(rel)).await? {
            return Ok(Some(b));
        }
        self.get(&self.staged_key(run, rel)).await
    }

    /// Publish `local_commit`, the commit a run made in the working copy `work` that
    /// [`S3Lake::pull`] filled with `pulled`. Returns the commit as published.
    pub async fn push(
        &self,
        work: &Lake,
        local_commit: &Commit,
        pulled: Manifest,
    ) -> Result<Commit, IngestError> {
        let run = local_commit.run_id.clone();
        let root = work.root().to_path_buf();
        let (ours_kd, data): (Vec<FileRecord>, Vec<FileRecord>) = local_commit
            .files
            .iter()
            .cloned()
            .partition(|f| f.table == Table::KeyDaily.name());
        self.for_each(data.clone(), |f| {
            let (root, run) = (&root, &run);
            async move {
                self.upload(&rel_to_path(root, &f.path), &self.staged_key(run, &f.path))
                    .await
            }
        })
        .await?;

        // This run's own key_daily file per day (the working copy had no published ones),
        // read a day at a time when merging.
        let mut own: BTreeMap<i32, PathBuf> = BTreeMap::new();
        for f in &ours_kd {
            let day = key_daily_day(&f.path).ok_or_else(|| {
                IngestError::Config(format!("internal: unexpected key_daily path {}", f.path))
            })?;
            own.insert(day, rel_to_path(&root, &f.path));
        }
        let scratch = root.join(META).join("s3-merge");
        let base_seq = local_commit.seq - 1;
        let mut manifest = pulled;
        for attempt in 1..=self.opts.commit_attempts.max(1) {
            // Refuse if a run that committed since this one began read the same content.
            if let Err(err) = manifest.check_conflict(base_seq, &local_commit.objects) {
                self.discard(&run, &local_commit.files).await;
                return Err(err.into());
            }
            let merged = self
                .merge_key_daily(&own, &manifest, &run, &scratch)
                .await?;
            let (kd_files, replaced) = match merged {
                Ok(m) => m,
                Err(missing) => {
                    // Replaced by a commit this run has not seen yet, or lost.
                    if !self.read_newer(&mut manifest).await? {
                        self.discard(&run, &local_commit.files).await;
                        return Err(IngestError::Object {
                            object: self.display(&self.key(&missing)),
                            reason: "a key_daily file the lake's manifest lists is missing; nothing of this run was committed".into(),
                        });
                    }
                    continue;
                }
            };
            let mut files = data.clone();
            files.extend(kd_files);
            files.sort_by(|a, b| a.path.cmp(&b.path));
            let commit = Commit {
                seq: manifest.last_seq() + 1,
                committed_at: chrono::Utc::now().to_rfc3339(),
                files,
                replaced,
                ..local_commit.clone()
            };
            let text = serde_json::to_vec_pretty(&commit).map_err(|e| LakeError::Manifest {
                path: PathBuf::from(self.display(&self.commit_key(commit.seq))),
                reason: e.to_string(),
            })?;
            crash_point("s3-before-commit");
            let key = self.commit_key(commit.seq);
            if self.put_new(&key, text).await? || self.is_own_record(&key, &commit).await? {
                crash_point("s3-after-commit");
                // Committed: a failure from here on leaves work that the next run finishes.
                self.publish(&commit).await.map_err(|e| IngestError::Object {
                    object: self.uri.to_string(),
                    reason: format!(
                        "the run was committed (sequence {}), but copying its files into place failed; the next `keytrail ingest` into this lake finishes it: {e}",
                        commit.seq
                    ),
                })?;
                return Ok(commit);
            }
            tracing::info!(
                seq = commit.seq,
                attempt,
                "another writer committed first; merging again"
            );
            self.read_newer(&mut manifest).await?;
        }
        self.discard(&run, &local_commit.files).await;
        Err(IngestError::Object {
            object: self.uri.to_string(),
            reason: format!(
                "other writers took every sequence number for {} attempts; nothing of this run was committed",
                self.opts.commit_attempts
            ),
        })
    }

    /// Whether the commit record at `key` is `commit` itself: a PUT that S3 carried out but
    /// answered with an error (a 5xx, a connection lost on the way back) is retried by the
    /// SDK, and the retry's `If-None-Match: *` then fails against the run's own record. Taking
    /// that for another writer's commit would commit the run twice.
    async fn is_own_record(&self, key: &str, commit: &Commit) -> Result<bool, IngestError> {
        let Some(bytes) = self.get(key).await? else {
            return Ok(false);
        };
        Ok(serde_json::from_slice::<Commit>(&bytes)
            .is_ok_and(|c| c.run_id == commit.run_id && c.seq == commit.seq))
    }

    /// Add the commit records published after `manifest`'s last one; whether there were any.
    async fn read_newer(&self, manifest: &mut Manifest) -> Result<bool, IngestError> {
        let newer = self.commits(manifest.last_seq()).await?;
        if newer.is_empty() {
            return Ok(false);
        }
        let mut all = manifest.commits().to_vec();
        all.extend(newer);
        *manifest = Manifest::from_commits(all);
        Ok(true)
    }

    /// Merge this run's key_daily rows with each day's published file(s); stage the result.
    /// Returns the new files and the published ones they replace, or (inner `Err`) the path
    /// of a published file that is gone.
    #[allow(clippy::type_complexity)]
    async fn merge_key_daily(
        &self,
        own: &BTreeMap<i32, PathBuf>,
        manifest: &Manifest,
        run: &str,
        scratch: &Path,
    ) -> Result<Result<(Vec<FileRecord>, Vec<String>), String>, IngestError> {
        let adder: HashMap<&str, &str> = manifest
            .commits()
            .iter()
            .flat_map(|c| {
                c.files
                    .iter()
                    .map(move |f| (f.path.as_str(), c.run_id.as_str()))
            })
            .collect();
        let mut published: BTreeMap<i32, Vec<String>> = BTreeMap::new();
        let days: HashSet<i32> = own.keys().copied().collect();
        for f in manifest.live_files() {
            if f.table == Table::KeyDaily.name()
                && let Some(day) = key_daily_day(&f.path)
                && days.contains(&day)
            {
                published.entry(day).or_default().push(f.path.clone());
            }
        }
        let mut files = Vec::new();
        let mut replaced = Vec::new();
        let mut days: Vec<i32> = days.into_iter().collect();
        days.sort_unstable();
        // A day at a time: memory holds one day's keys.
        for day in days {
            let mut merged = KeyDaily::default();
            if let Some(path) = own.get(&day) {
                merged.add_file(day, path)?;
            }
            for rel in published.remove(&day).unwrap_or_default() {
                let Some(bytes) = self
                    .get_published(&rel, adder.get(rel.as_str()).copied().unwrap_or(""))
                    .await?
                else {
                    return Ok(Err(rel));
                };
                let tmp = rel_to_path(&scratch.join("published"), &rel);
                if let Some(parent) = tmp.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| LakeError::io(parent, e))?;
                }
                std::fs::write(&tmp, bytes).map_err(|e| LakeError::io(&tmp, e))?;
                merged.add_file(day, &tmp)?;
                replaced.push(rel);
            }
            let merged_root = scratch.join("merged");
            let record = merged.write_day(day, &merged_root, run)?;
            self.upload(
                &rel_to_path(&merged_root, &record.path),
                &self.staged_key(run, &record.path),
            )
            .await?;
            files.push(record);
        }
        Ok(Ok((files, replaced)))
    }

    /// Best effort: delete what a run that will not commit staged.
    async fn discard(&self, run: &str, files: &[FileRecord]) {
        let r = self
            .for_each(files.to_vec(), |f| async move {
                self.delete(&self.staged_key(run, &f.path)).await
            })
            .await;
        if let Err(e) = r {
            tracing::warn!("could not delete the staged files of run {run}: {e}");
        }
    }
}

/// [`S3Lake::read_manifest`] for synchronous callers: a runtime and a client of its own,
/// reached as `s3` says.
pub fn read_manifest(uri: &S3Uri, s3: &crate::s3::S3Options) -> Result<Manifest, IngestError> {
    let rt = crate::s3::runtime("keytrail-s3")?;
    rt.block_on(async {
        let client = crate::s3::connect(s3).await;
        S3Lake::new(client, uri.clone(), S3LakeOptions::default())
            .read_manifest()
            .await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_keys_are_percent_encoded() {
        assert_eq!(
            encode_key("lake/events/date=2024-01-02/part-x.parquet"),
            "lake/events/date%3D2024-01-02/part-x.parquet"
        );
        assert_eq!(encode_key("a b+c"), "a%20b%2Bc");
    }

    #[test]
    fn key_daily_paths_give_their_day() {
        assert_eq!(
            key_daily_day("key_daily/date=1970-01-02/part-r.parquet"),
            Some(1)
        );
        assert_eq!(key_daily_day("events/date=1970-01-02/part-r.parquet"), None);
    }
}
