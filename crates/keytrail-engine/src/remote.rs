//! A lake in S3 (or any object store), read in place through `object_store`, the crate
//! DataFusion reads with:
//!
//! - the manifest: `_keytrail/lake.json` and every commit record under `_keytrail/manifest/`
//!   (one listing, then the records fetched concurrently), parsed by the lake crate into the
//!   same [`Manifest`] and [`Snapshot`] a local lake gives, so the tables are planned and pruned
//!   exactly as for a local lake;
//! - data files: DataFusion reads them from the store registered under the bucket's URL, with
//!   range requests (the footer, the page index, the pages of the selected rows);
//! - the key index: each live index file's footer (fetched once per session), then only the
//!   row groups whose key range can hold the keys and whose bloom filter does not rule them
//!   out, with the parquet crate's async reader, and read by the lake crate's parser;
//! - `lake verify`: one listing of the lake's prefix against the manifest.
//!
//! Requests go through [`LakeStore`] (counted, staged copies of committed runs, vanished
//! files named) over object_store's `LimitStore` (at most `concurrency` requests in flight),
//! over the S3 client with object_store's retries (exponential backoff on throttling, 5xx and
//! broken connections).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};

use datafusion::execution::object_store::ObjectStoreUrl;
use futures::FutureExt;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use keytrail_lake::index::{entries_of, row_groups_for_keys};
use keytrail_lake::listing::{staged_path, verify_listing};
use keytrail_lake::{IndexEntry, Lake, LakeError, Manifest, Relation, Snapshot, Verification};
use keytrail_model::Table;
use object_store::aws::AmazonS3Builder;
use object_store::limit::LimitStore;
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use crate::counting::IoStats;
use crate::error::EngineError;
use crate::location::{LakeLocation, S3Location};
use crate::store::LakeStore;

/// Bytes fetched from the end of an index file to read its footer in one request.
const INDEX_FOOTER_HINT: usize = 64 * 1024;
/// Past this many keys, a lookup reads every row group whose key range holds one of them
/// rather than first asking each row group's bloom filter (one request each) about each key.
const BLOOM_MAX_KEYS: usize = 64;

/// A lake under a prefix of an object store.
pub(crate) struct RemoteLake {
    /// `s3://bucket/prefix`, for messages.
    name: String,
    url: ObjectStoreUrl,
    root: Path,
    store: Arc<LakeStore>,
    concurrency: usize,
    /// Footers of the key index files, by path relative to the root.
    footers: Mutex<HashMap<String, ArrowReaderMetadata>>,
}

impl std::fmt::Debug for RemoteLake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteLake({})", self.name)
    }
}

fn parse_root(prefix: &str, name: &str) -> Result<Path, EngineError> {
    Path::parse(prefix.trim_matches('/')).map_err(|e| EngineError::Remote {
        object: name.to_owned(),
        source: e.into(),
    })
}

/// The S3 client for `loc`: explicit credentials provider, region and endpoint; retries with
/// backoff.
fn s3_store(loc: &S3Location) -> Result<Arc<dyn ObjectStore>, EngineError> {
    let a = &loc.access;
    let mut options = ClientOptions::new()
        .with_timeout(a.timeout)
        .with_connect_timeout(a.timeout.min(std::time::Duration::from_secs(10)));
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(&loc.bucket)
        .with_region(&a.region)
        .with_credentials(Arc::clone(&a.credentials))
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: a.max_retries,
            retry_timeout: a.retry_timeout,
        });
    if let Some(endpoint) = &a.endpoint {
        b = b
            .with_endpoint(endpoint)
            .with_virtual_hosted_style_request(false);
        if endpoint.starts_with("http://") {
            options = options.with_allow_http(true);
        }
    }
    let store = b
        .with_client_options(options)
        .build()
        .map_err(|e| EngineError::Remote {
            object: format!("s3://{}", loc.bucket),
            source: e,
        })?;
    Ok(Arc::new(LimitStore::new(store, a.concurrency.max(1))))
}

impl RemoteLake {
    /// The remote lake at `location`; `None` for a lake directory.
    pub(crate) fn new(location: &LakeLocation) -> Result<Option<RemoteLake>, EngineError> {
        let (store, url, prefix, name, concurrency) = match location {
            LakeLocation::Dir(_) => return Ok(None),
            LakeLocation::S3(s3) => {
                let url = ObjectStoreUrl::parse(format!("s3://{}", s3.bucket))?;
                (
                    s3_store(s3)?,
                    url,
                    s3.prefix.clone(),
                    location.to_string(),
                    s3.access.concurrency,
                )
            }
            LakeLocation::Store(s) => (
                Arc::clone(&s.store),
                s.url.clone(),
                s.prefix.clone(),
                s.name.clone(),
                32,
            ),
        };
        let root = parse_root(&prefix, &name)?;
        Ok(Some(RemoteLake {
            store: Arc::new(LakeStore::remote(store, root.clone(), name.clone())),
            name,
            url,
            root,
            concurrency: concurrency.max(1),
            footers: Mutex::new(HashMap::new()),
        }))
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn url(&self) -> &ObjectStoreUrl {
        &self.url
    }

    /// The store DataFusion reads the data files through.
    pub(crate) fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store) as Arc<dyn ObjectStore>
    }

    pub(crate) fn stats(&self) -> IoStats {
        self.store.stats()
    }

    /// The object path of `rel` (a path relative to the lake root, as the manifest has it).
    pub(crate) fn path(&self, rel: &str) -> Result<Path, EngineError> {
        let full = if self.root.as_ref().is_empty() {
            rel.to_owned()
        } else {
            format!("{}/{rel}", self.root)
        };
        Path::parse(full).map_err(|e| EngineError::Remote {
            object: self.object(rel),
            source: e.into(),
        })
    }

    /// `s3://bucket/prefix/rel`, for messages.
    fn object(&self, rel: &str) -> String {
        format!("{}/{rel}", self.name.trim_end_matches('/'))
    }

    fn remote_error(&self, rel: &str) -> impl Fn(object_store::Error) -> EngineError + '_ {
        let object = self.object(rel);
        move |source| EngineError::Remote {
            object: object.clone(),
            source,
        }
    }

    /// The bytes of the object at `rel`; `None` when there is none.
    async fn get(&self, rel: &str) -> Result<Option<Vec<u8>>, EngineError> {
        let path = self.path(rel)?;
        match self.store.get(&path).await {
            Ok(r) => Ok(Some(
                r.bytes().await.map_err(self.remote_error(rel))?.to_vec(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.remote_error(rel)(e)),
        }
    }

    /// Every object under `rel` (a folder relative to the root): path relative to the root,
    /// and size.
    async fn list(&self, rel: Option<&str>) -> Result<BTreeMap<String, u64>, EngineError> {
        let prefix = match rel {
            Some(r) => self.path(r)?,
            None => self.root.clone(),
        };
        let metas: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(self.remote_error(rel.unwrap_or("")))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let rel: Vec<String> = m
                    .location
                    .prefix_match(&self.root)?
                    .map(|p| p.as_ref().to_owned())
                    .collect();
                Some((rel.join("/"), m.size))
            })
            .collect())
    }

    /// The lake's commits: `lake.json` checked (a keytrail lake of this schema version), then
    /// every commit record, fetched `concurrency` at a time.
    pub(crate) async fn manifest(&self) -> Result<Manifest, EngineError> {
        let info_rel = "_keytrail/lake.json";
        let Some(info) = self.get(info_rel).await? else {
            return Err(LakeError::NotALake {
                path: PathBuf::from(&self.name),
                reason: "no _keytrail/lake.json; `keytrail ingest ... --lake s3://...` creates one"
                    .into(),
            }
            .into());
        };
        Lake::check_info(
            &info,
            FsPath::new(&self.object(info_rel)),
            FsPath::new(&self.name),
        )?;
        let records: Vec<String> = self
            .list(Some("_keytrail/manifest"))
            .await?
            .into_keys()
            .filter(|rel| {
                let name = rel.rsplit('/').next().unwrap_or("");
                name.ends_with(".json") && !name.starts_with('.')
            })
            .collect();
        let commits = futures::stream::iter(records)
            .map(|rel| async move {
                let bytes = self.get(&rel).await?.ok_or_else(|| EngineError::Remote {
                    object: self.object(&rel),
                    source: object_store::Error::Generic {
                        store: "keytrail",
                        source: "the commit record was listed but could not be read".into(),
                    },
                })?;
                Ok::<_, EngineError>(Manifest::parse_commit(
                    &bytes,
                    FsPath::new(&self.object(&rel)),
                )?)
            })
            .buffer_unordered(self.concurrency)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(Manifest::from_commits(commits))
    }

    /// The snapshot of `manifest`; the store learns its files and their staged copies.
    pub(crate) fn snapshot(&self, manifest: &Manifest) -> Result<Snapshot, EngineError> {
        let snapshot = Snapshot::from_manifest(PathBuf::from(&self.name), manifest)?;
        let live: HashSet<&str> = manifest
            .live_files()
            .into_iter()
            .map(|f| f.path.as_str())
            .collect();
        let mut staged = HashMap::new();
        for c in manifest.commits() {
            for f in &c.files {
                if live.contains(f.path.as_str()) {
                    staged.insert(
                        self.path(&f.path)?,
                        self.path(&staged_path(&c.run_id, &f.path))?,
                    );
                }
            }
        }
        self.store.set_staged(staged);
        Ok(snapshot)
    }

    /// The footer of the index file `rel` of `bytes` bytes (fetched once per session).
    async fn index_footer(
        &self,
        rel: &str,
        bytes: u64,
    ) -> Result<ArrowReaderMetadata, EngineError> {
        if let Some(m) = self.footers.lock().ok().and_then(|f| f.get(rel).cloned()) {
            return Ok(m);
        }
        let mut reader = ObjectReader::new(self.store(), self.path(rel)?, bytes);
        let meta = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new())
            .await
            .map_err(|e| LakeError::parquet(self.object(rel), e))?;
        if let Ok(mut f) = self.footers.lock() {
            f.insert(rel.to_owned(), meta.clone());
        }
        Ok(meta)
    }

    /// The entries of one index file for `sorted` keys.
    async fn lookup_file(
        &self,
        rel: &str,
        bytes: u64,
        sorted: &[&str],
        relation: Relation,
    ) -> Result<Vec<IndexEntry>, EngineError> {
        let meta = self.index_footer(rel, bytes).await?;
        let groups = row_groups_for_keys(meta.metadata(), sorted);
        let mut out = Vec::new();
        if groups.is_empty() {
            return Ok(out);
        }
        let parquet_error = |e| LakeError::parquet(self.object(rel), e);
        let reader = ObjectReader::new(self.store(), self.path(rel)?, bytes);
        let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, meta);
        let mut kept = Vec::with_capacity(groups.len());
        for g in groups {
            if sorted.len() <= BLOOM_MAX_KEYS
                && let Some(bloom) = builder
                    .get_row_group_column_bloom_filter(g, 0)
                    .await
                    .map_err(parquet_error)?
                && !sorted.iter().any(|k| bloom.check(*k))
            {
                continue;
            }
            kept.push(g);
        }
        if kept.is_empty() {
            return Ok(out);
        }
        let mut stream = builder
            .with_row_groups(kept)
            .with_batch_size(32 * 1024)
            .build()
            .map_err(parquet_error)?;
        let wanted: HashSet<&str> = sorted.iter().copied().collect();
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(parquet_error)?;
            entries_of(&batch, &wanted, relation, &mut out)
                .map_err(|e| LakeError::arrow(self.object(rel), e))?;
        }
        Ok(out)
    }

    /// Where `keys` are in the snapshot's indexed `events` files (entries of files no longer
    /// live are left out): [`Snapshot::lookup`] for a lake in an object store.
    pub(crate) async fn lookup(
        &self,
        snapshot: &Snapshot,
        keys: &[&str],
        relation: Relation,
    ) -> Result<Vec<IndexEntry>, EngineError> {
        let mut sorted: Vec<&str> = keys.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.is_empty() {
            return Ok(Vec::new());
        }
        let sorted = &sorted;
        let files: Vec<(String, u64)> = snapshot
            .index
            .iter()
            .map(|f| (f.path.clone(), f.bytes))
            .collect();
        let found: Vec<Vec<IndexEntry>> = futures::stream::iter(files)
            .map(
                |(rel, bytes)| async move { self.lookup_file(&rel, bytes, sorted, relation).await },
            )
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        let live: HashSet<&str> = snapshot
            .table_files(Table::Events)
            .map(|f| f.record.path.as_str())
            .collect();
        let mut out: Vec<IndexEntry> = found.into_iter().flatten().collect();
        out.retain(|e| live.contains(e.file.as_str()));
        out.sort_unstable();
        Ok(out)
    }

    /// `lake verify` for a lake in an object store: one listing of its prefix against its
    /// manifest (every live file present with its recorded size, no unknown data file).
    pub(crate) async fn verify(&self) -> Result<Verification, EngineError> {
        let manifest = self.manifest().await?;
        let objects = self.list(None).await?;
        Ok(verify_listing(&manifest, &objects))
    }
}

/// A Parquet file of known size in an object store, for the parquet crate's async reader: its
/// footer read with one request of [`INDEX_FOOTER_HINT`] bytes from its end (two when the
/// footer is larger), its row groups with range requests.
struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

impl ObjectReader {
    fn new(store: Arc<dyn ObjectStore>, path: Path, size: u64) -> ObjectReader {
        ObjectReader { store, path, size }
    }
}

fn parquet_io(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(parquet_io)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(parquet_io)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .with_prefetch_hint(Some(INDEX_FOOTER_HINT))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}
