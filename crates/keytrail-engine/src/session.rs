//! A DataFusion session over a lake: its tables are [`LakeTable`]s of one manifest snapshot,
//! with THE schema of `keytrail-model` (never inferred), Parquet filter pushdown, page index and
//! bloom filters on, and a memory limit that makes sorts and aggregations spill to disk rather
//! than grow without bound.

use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use keytrail_lake::{IndexEntry, Lake, Manifest, Relation, Snapshot};
use keytrail_model::Table;

use crate::compact::CompactSortInput;
use crate::counting::IoStats;
use crate::error::EngineError;
use crate::location::LakeLocation;
use crate::remote::RemoteLake;
use crate::storage::{Lookups, Storage};
use crate::table::LakeTable;

/// How a session runs.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Threads for scanning and operators.
    pub threads: usize,
    /// Memory for sorts, aggregations and joins before they spill to disk.
    pub memory_limit: usize,
}

/// Default memory for query operators. Sorts and hash aggregates spill to disk within it; the
/// operators that cannot spill (ordered aggregates such as the report's last API call, a
/// join's build side) share what the spilling ones leave: with 256 MiB, the last-used report
/// as of mid-day over a 10M-event, 348-day lake failed (`docs/benchmarks.md`).
pub const DEFAULT_MEMORY_LIMIT: usize = 1 << 30;

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            threads: std::thread::available_parallelism().map_or(2, usize::from),
            memory_limit: DEFAULT_MEMORY_LIMIT,
        }
    }
}

/// A DataFusion session with the lake's tables (`events`, `insights`, `key_daily`).
pub struct LakeSession {
    ctx: SessionContext,
    location: LakeLocation,
    /// The lake directory (none for a lake in an object store).
    lake: Option<Lake>,
    /// The lake in an object store (none for a lake directory).
    remote: Option<Arc<RemoteLake>>,
    manifest: Arc<Manifest>,
    snapshot: Arc<Snapshot>,
    storage: Storage,
    lookups: Arc<Lookups>,
}

/// Bytes read from the end of a data file in an object store to get its footer in one request
/// (DataFusion's default, 512 KiB, would fetch most of a small file to plan a one-key read).
const REMOTE_METADATA_HINT: usize = 64 * 1024;

/// A session context with keytrail's settings and functions, and no tables.
pub fn context(opts: &SessionOptions) -> Result<SessionContext, EngineError> {
    context_with(opts, None)
}

fn context_with(
    opts: &SessionOptions,
    metadata_hint: Option<usize>,
) -> Result<SessionContext, EngineError> {
    let mut config = SessionConfig::new()
        .with_target_partitions(opts.threads.max(1))
        .with_information_schema(true);
    let o = config.options_mut();
    o.execution.parquet.pushdown_filters = true;
    o.execution.parquet.reorder_filters = true;
    o.execution.parquet.bloom_filter_on_read = true;
    o.execution.parquet.enable_page_index = true;
    o.execution.parquet.pruning = true;
    if metadata_hint.is_some() {
        o.execution.parquet.metadata_size_hint = metadata_hint;
    }
    o.sql_parser.enable_ident_normalization = true;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(
            opts.memory_limit.max(16 << 20),
        )))
        .build_arc()?;
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(CompactSortInput))
        .build();
    let mut ctx = SessionContext::new_with_state(state);
    // json_get_str(requestparameters, 'userName') and friends, for the JSON columns.
    datafusion_functions_json::register_all(&mut ctx)?;
    Ok(ctx)
}

impl LakeSession {
    /// Open the lake at `lake` (a directory, or a lake in S3) and register its tables as of its
    /// last commit. A lake directory is first recovered (runs stopped half-way finished or
    /// cleaned up); a lake in S3 is only read: the files of a committed run that is still
    /// being published are read where the run staged them.
    pub async fn open(
        lake: impl Into<LakeLocation>,
        opts: &SessionOptions,
    ) -> Result<LakeSession, EngineError> {
        LakeSession::open_as_of(lake, None, opts).await
    }

    /// [`LakeSession::open`], as of `manifest` when it is given and the lake is in an object
    /// store: commits the caller has just read itself (its `lake.json` checked), which the
    /// session then does not fetch again, a request per commit record (a follower reads them
    /// to commit each batch). A lake directory's manifest is read from disk as `open` does.
    pub async fn open_as_of(
        lake: impl Into<LakeLocation>,
        manifest: Option<Manifest>,
        opts: &SessionOptions,
    ) -> Result<LakeSession, EngineError> {
        let location = lake.into();
        let Some(remote) = RemoteLake::new(&location)? else {
            let root = location.dir().map(Path::to_path_buf).unwrap_or_default();
            return LakeSession::open_dir(&root, location, opts);
        };
        let remote = Arc::new(remote);
        let manifest = match manifest {
            Some(m) => m,
            None => remote.manifest().await?,
        };
        let snapshot = Arc::new(remote.snapshot(&manifest)?);
        tracing::debug!(
            lake = remote.name(),
            commits = manifest.commits().len(),
            files = snapshot.files.len(),
            index_files = snapshot.index.len(),
            "opened a lake in an object store"
        );
        let ctx = context_with(opts, Some(REMOTE_METADATA_HINT))?;
        ctx.runtime_env()
            .register_object_store(remote.url().as_ref(), remote.store());
        let storage = Storage::Remote(Arc::clone(&remote));
        let lookups = Arc::new(Lookups::default());
        LakeSession::register(&ctx, &snapshot, &storage, &lookups)?;
        Ok(LakeSession {
            ctx,
            location,
            lake: None,
            remote: Some(remote),
            manifest: Arc::new(manifest),
            snapshot,
            storage,
            lookups,
        })
    }

    fn open_dir(
        root: &Path,
        location: LakeLocation,
        opts: &SessionOptions,
    ) -> Result<LakeSession, EngineError> {
        // Files are read by absolute path (an s3:// "path" is refused by the lake as it is).
        if root.to_string_lossy().starts_with("s3://") {
            Lake::open(root)?;
        }
        let root = std::path::absolute(root)
            .map_err(|e| EngineError::Lake(keytrail_lake::LakeError::io(root, e)))?;
        let lake = Lake::open(root)?;
        // A committed run whose files were not all published yet would make the tables lie.
        lake.recover()?;
        let manifest = lake.manifest()?;
        let snapshot = Arc::new(Snapshot::from_manifest(
            lake.root().to_path_buf(),
            &manifest,
        )?);
        let ctx = context(opts)?;
        let store = crate::store::LakeStore::local(lake.root(), lake.retired_root())
            .map_err(|e| EngineError::DataFusion(e.into()))?;
        ctx.runtime_env().register_object_store(
            datafusion::execution::object_store::ObjectStoreUrl::local_filesystem().as_ref(),
            Arc::new(store),
        );
        let lookups = Arc::new(Lookups::default());
        LakeSession::register(&ctx, &snapshot, &Storage::Local, &lookups)?;
        Ok(LakeSession {
            ctx,
            location,
            lake: Some(lake),
            remote: None,
            manifest: Arc::new(manifest),
            snapshot,
            storage: Storage::Local,
            lookups,
        })
    }

    fn register(
        ctx: &SessionContext,
        snapshot: &Arc<Snapshot>,
        storage: &Storage,
        lookups: &Arc<Lookups>,
    ) -> Result<(), EngineError> {
        for table in Table::ALL {
            ctx.register_table(
                table.name(),
                Arc::new(LakeTable::with_storage(
                    table,
                    Arc::clone(snapshot),
                    storage.clone(),
                    Arc::clone(lookups),
                )),
            )?;
        }
        Ok(())
    }

    /// Where the lake is.
    pub fn location(&self) -> &LakeLocation {
        &self.location
    }

    /// The lake directory; `None` for a lake in S3.
    pub fn lake(&self) -> Option<&Lake> {
        self.lake.as_ref()
    }

    /// The commits the session's snapshot was taken from.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// What the session fetched from a lake in S3 so far (`None` for a lake directory, whose
    /// reads are not counted).
    pub fn io_stats(&self) -> Option<IoStats> {
        self.remote.as_ref().map(|r| r.stats())
    }

    /// Where `keys` are in the snapshot's indexed `events` files, from the key index.
    pub async fn lookup(
        &self,
        keys: &[&str],
        relation: Relation,
    ) -> Result<Vec<IndexEntry>, EngineError> {
        let all = self
            .lookups
            .any(&self.storage, &self.snapshot, keys)
            .await?;
        Ok(all
            .iter()
            .filter(|e| relation.wants(e.named))
            .cloned()
            .collect())
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// `table` over `snapshot` (part of this session's snapshot), read from where this
    /// session reads its files: to register a table of some of the lake's files.
    pub fn table(&self, table: Table, snapshot: Arc<Snapshot>) -> LakeTable {
        LakeTable::with_storage(
            table,
            snapshot,
            self.storage.clone(),
            Arc::clone(&self.lookups),
        )
    }

    /// Plan one SQL statement.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame, EngineError> {
        Ok(self.ctx.sql(sql).await?)
    }

    /// Run one SQL statement and collect its result.
    pub async fn collect(&self, sql: &str) -> Result<Vec<RecordBatch>, EngineError> {
        Ok(self.ctx.sql(sql).await?.collect().await?)
    }

    /// Run one SQL statement; its schema, and its batches as they are computed.
    pub async fn stream(
        &self,
        sql: &str,
    ) -> Result<(SchemaRef, SendableRecordBatchStream), EngineError> {
        let df = self.ctx.sql(sql).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        Ok((schema, df.execute_stream().await?))
    }
}

/// What a session fetched from a lake in S3, logged at debug when it ends (every command, not
/// only `sql --stats`).
impl Drop for LakeSession {
    fn drop(&mut self) {
        if let Some(io) = self.io_stats() {
            tracing::debug!(
                lake = %self.location,
                requests = io.requests,
                bytes = io.bytes,
                objects = io.objects.len(),
                "fetched from the object store"
            );
        }
    }
}

/// Run `f` to completion on a runtime of `threads` workers: the library's synchronous edge,
/// so callers need not know DataFusion is async.
pub fn block_on<T, E: From<EngineError>>(
    threads: usize,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("keytrail-query")
        // I/O for a lake in an object store (HTTP), time for its retries' backoff.
        .enable_all()
        .build()
        .map_err(|e| E::from(EngineError::Runtime(e)))?;
    rt.block_on(f)
}
