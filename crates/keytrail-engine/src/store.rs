//! The object store a session reads its lake through: the local file system or the S3 (or
//! other) store, with
//!
//! - every request and every byte received counted, per object ([`IoStats`]);
//! - a data file of the snapshot that is not where the snapshot says read from where a commit
//!   put it: for a local lake, a file a later commit replaced (a compaction, an upgrade, a new
//!   day's `key_daily`) is found where that commit retired it, `_keytrail/retired/<run>/<path>`,
//!   so a query planned before it reads the files of its own snapshot to the end while every
//!   reader of the table directories sees each row once; for a remote lake, a file of a run
//!   that committed but is still copying its files into place is read from where the run
//!   staged it (`_keytrail/staging/<run>/<path>`), as a local lake's reader would after its
//!   recovery;
//! - a file of a remote snapshot that is gone (a commit published since the snapshot replaced
//!   it: ingest replaces a day's `key_daily` file) named as such, with what to do.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

use crate::counting::IoStats;

/// Where a file of the snapshot that is not at its place may be.
enum Fallback {
    /// A local lake's `_keytrail/retired` directory.
    Retired(PathBuf),
    /// A remote lake: each file of the snapshot and where its run staged it (set once, when
    /// the snapshot is taken).
    Staged(OnceLock<HashMap<Path, Path>>),
}

/// Counts, finds moved files, names vanished ones. See the module's documentation.
pub(crate) struct LakeStore {
    inner: Arc<dyn ObjectStore>,
    /// The lake's root in the store.
    root: Path,
    /// How messages name the lake (its directory, or `s3://bucket/prefix`).
    name: String,
    fallback: Fallback,
    stats: Arc<Mutex<IoStats>>,
}

fn lock(m: &Mutex<IoStats>) -> std::sync::MutexGuard<'_, IoStats> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why a file of the snapshot could not be found.
#[derive(Debug)]
struct Gone(String);

impl fmt::Display for Gone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Gone {}

impl LakeStore {
    /// A lake directory, with its `_keytrail/retired` directory.
    pub(crate) fn local(root: &std::path::Path, retired: PathBuf) -> Result<LakeStore> {
        Ok(LakeStore {
            inner: Arc::new(LocalFileSystem::new()),
            root: Path::from_absolute_path(root)?,
            name: root.display().to_string(),
            fallback: Fallback::Retired(retired),
            stats: Arc::default(),
        })
    }

    /// A lake at `root` in `inner`; [`LakeStore::set_staged`] says where staged copies are.
    pub(crate) fn remote(inner: Arc<dyn ObjectStore>, root: Path, name: String) -> LakeStore {
        LakeStore {
            inner,
            root,
            name,
            fallback: Fallback::Staged(OnceLock::new()),
            stats: Arc::default(),
        }
    }

    /// The snapshot's files and their staged copies (a remote lake; set once).
    pub(crate) fn set_staged(&self, staged: HashMap<Path, Path>) {
        if let Fallback::Staged(m) = &self.fallback {
            let _ = m.set(staged);
        }
    }

    pub(crate) fn stats(&self) -> IoStats {
        lock(&self.stats).clone()
    }

    /// `location` relative to the lake's root.
    fn rel(&self, location: &Path) -> String {
        match location.prefix_match(&self.root) {
            Some(parts) => parts
                .map(|p| p.as_ref().to_owned())
                .collect::<Vec<_>>()
                .join("/"),
            None => location.to_string(),
        }
    }

    fn count_request(&self, location: &Path) {
        let rel = self.rel(location);
        let mut s = lock(&self.stats);
        s.requests += 1;
        s.objects.entry(rel).or_default().requests += 1;
    }

    /// Where else `location` may be, if anywhere.
    fn moved_to(&self, location: &Path) -> Option<Path> {
        match &self.fallback {
            Fallback::Staged(m) => m.get()?.get(location).cloned(),
            Fallback::Retired(dir) => {
                let rel: Vec<String> = location
                    .prefix_match(&self.root)?
                    .map(|p| p.as_ref().to_owned())
                    .collect();
                for run in std::fs::read_dir(dir).ok()?.flatten() {
                    let candidate = rel.iter().fold(run.path(), |p, part| p.join(part));
                    if candidate.is_file() {
                        return Path::from_absolute_path(candidate).ok();
                    }
                }
                None
            }
        }
    }

    /// The error for a file of a remote snapshot that is in neither its place nor its staging.
    fn gone(&self, location: &Path, e: object_store::Error) -> object_store::Error {
        let ours = match &self.fallback {
            Fallback::Staged(m) => m.get().is_some_and(|m| m.contains_key(location)),
            Fallback::Retired(_) => false,
        };
        match e {
            object_store::Error::NotFound { path, .. } if ours => object_store::Error::NotFound {
                path,
                source: Box::new(Gone(format!(
                    "{}/{} is gone: a commit published after this query read the manifest \
                     replaced it (each ingest replaces the key_daily file of the days it adds \
                     to), or it was deleted; run the query again, and `keytrail lake verify` if \
                     it persists",
                    self.name,
                    self.rel(location)
                ))),
            },
            other => other,
        }
    }
}

impl fmt::Debug for LakeStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LakeStore({})", self.name)
    }
}

impl fmt::Display for LakeStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[async_trait]
impl ObjectStore for LakeStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.count_request(location);
        let got = match self.inner.get_opts(location, options.clone()).await {
            Err(e @ object_store::Error::NotFound { .. }) => match self.moved_to(location) {
                Some(copy) => {
                    tracing::debug!(%location, %copy, "not at its place: reading it where a commit put it");
                    self.count_request(location);
                    self.inner
                        .get_opts(&copy, options)
                        .await
                        .map_err(|e| self.gone(location, e))
                }
                None => Err(self.gone(location, e)),
            },
            other => other,
        };
        let mut got = got?;
        let rel = self.rel(location);
        match got.payload {
            GetResultPayload::Stream(stream) => {
                let stats = Arc::clone(&self.stats);
                got.payload = GetResultPayload::Stream(
                    stream
                        .inspect(move |chunk| {
                            if let Ok(bytes) = chunk {
                                let n = bytes.len() as u64;
                                let mut s = lock(&stats);
                                s.bytes += n;
                                s.objects.entry(rel.clone()).or_default().bytes += n;
                            }
                        })
                        .boxed(),
                );
            }
            #[allow(unreachable_patterns)]
            _ => {
                let n = got.range.end - got.range.start;
                let mut s = lock(&self.stats);
                s.bytes += n;
                s.objects.entry(rel).or_default().bytes += n;
            }
        }
        Ok(got)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.count_request(prefix.unwrap_or(&self.root));
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.count_request(prefix.unwrap_or(&self.root));
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
