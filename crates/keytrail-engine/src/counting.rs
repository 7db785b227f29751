//! The object store a session reads a remote lake through: the S3 (or other) store, with
//!
//! - every request and every byte received counted, per object, so a test, `keytrail sql
//!   --stats` or the benchmark can say what a question cost ([`IoStats`]);
//! - a data file of the snapshot that is not at its place yet read from where its run staged
//!   it (`_keytrail/staging/<run>/<path>`): a run that committed but is still copying its files
//!   into place is read as committed, as a local lake's reader would after its recovery;
//! - a data file of the snapshot that is gone (a commit published since the snapshot replaced
//!   it: ingest replaces a day's `key_daily` file) named as such, with what to do.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use serde::Serialize;

/// What was fetched from a remote lake.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IoStats {
    /// Requests as the reader made them: GETs (whole objects and byte ranges) and listings
    /// (one per listing; S3 answers 1,000 keys a page). Retries of a failed request are
    /// object_store's and are not counted again.
    pub requests: u64,
    /// Bytes of the bodies received.
    pub bytes: u64,
    /// Per object, by its path relative to the lake's root.
    pub objects: BTreeMap<String, ObjectIo>,
}

/// Requests to one object and the bytes they received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ObjectIo {
    pub requests: u64,
    pub bytes: u64,
}

impl IoStats {
    /// The objects read under `prefix` (e.g. `events/`), with what they cost.
    pub fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a ObjectIo)> {
        self.objects
            .iter()
            .filter(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), v))
    }

    /// Requests and bytes of the objects under `prefix`.
    pub fn total_under(&self, prefix: &str) -> ObjectIo {
        self.under(prefix)
            .fold(ObjectIo::default(), |acc, (_, o)| ObjectIo {
                requests: acc.requests + o.requests,
                bytes: acc.bytes + o.bytes,
            })
    }
}

/// Counts, stands in staged copies, names vanished files. See the module's documentation.
pub(crate) struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    /// The lake's root in the store.
    root: Path,
    /// How messages name the lake (`s3://bucket/prefix`).
    name: String,
    /// Each file of the snapshot, and where its run staged it.
    staged: OnceLock<HashMap<Path, Path>>,
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

impl CountingStore {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, root: Path, name: String) -> CountingStore {
        CountingStore {
            inner,
            root,
            name,
            staged: OnceLock::new(),
            stats: Arc::new(Mutex::new(IoStats::default())),
        }
    }

    /// The snapshot's files and their staged copies (set once, when the snapshot is taken).
    pub(crate) fn set_staged(&self, staged: HashMap<Path, Path>) {
        let _ = self.staged.set(staged);
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

    /// The error for a file of the snapshot that is in neither its place nor its staging.
    fn gone(&self, location: &Path, e: object_store::Error) -> object_store::Error {
        let ours = self.staged.get().is_some_and(|m| m.contains_key(location));
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

impl fmt::Debug for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountingStore({})", self.name)
    }
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
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
            Err(object_store::Error::NotFound { .. })
                if self.staged.get().is_some_and(|m| m.contains_key(location)) =>
            {
                let Some(copy) = self.staged.get().and_then(|m| m.get(location)) else {
                    return self.inner.get_opts(location, options).await;
                };
                tracing::debug!(%location, "not in place yet: reading its staged copy");
                self.count_request(location);
                self.inner
                    .get_opts(copy, options)
                    .await
                    .map_err(|e| self.gone(location, e))
            }
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
        if let Some(p) = prefix {
            self.count_request(p);
        } else {
            self.count_request(&self.root);
        }
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
