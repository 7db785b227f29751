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
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use keytrail_lake::{Lake, Snapshot};
use keytrail_model::Table;

use crate::error::EngineError;
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
    lake: Lake,
    snapshot: Arc<Snapshot>,
}

/// A session context with keytrail's settings and functions, and no tables.
pub fn context(opts: &SessionOptions) -> Result<SessionContext, EngineError> {
    let mut config = SessionConfig::new()
        .with_target_partitions(opts.threads.max(1))
        .with_information_schema(true);
    let o = config.options_mut();
    o.execution.parquet.pushdown_filters = true;
    o.execution.parquet.reorder_filters = true;
    o.execution.parquet.bloom_filter_on_read = true;
    o.execution.parquet.enable_page_index = true;
    o.execution.parquet.pruning = true;
    o.sql_parser.enable_ident_normalization = true;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(
            opts.memory_limit.max(16 << 20),
        )))
        .build_arc()?;
    let mut ctx = SessionContext::new_with_config_rt(config, runtime);
    // json_get_str(requestparameters, 'userName') and friends, for the JSON columns.
    datafusion_functions_json::register_all(&mut ctx)?;
    Ok(ctx)
}

impl LakeSession {
    /// Open the lake at `root` (finishing any run that was stopped half-way) and register its
    /// tables as of its last commit.
    pub async fn open(root: &Path, opts: &SessionOptions) -> Result<LakeSession, EngineError> {
        // Files are read by absolute path (an s3:// "path" is refused by the lake as it is).
        if root.to_string_lossy().starts_with("s3://") {
            Lake::open(root)?;
        }
        let root = std::path::absolute(root)
            .map_err(|e| EngineError::Lake(keytrail_lake::LakeError::io(root, e)))?;
        let lake = Lake::open(root)?;
        // A committed run whose files were not all published yet would make the tables lie.
        lake.recover()?;
        let snapshot = Arc::new(lake.snapshot()?);
        let ctx = context(opts)?;
        let store = crate::store::LakeStore::new(lake.root(), lake.retired_root())
            .map_err(|e| EngineError::DataFusion(e.into()))?;
        ctx.runtime_env().register_object_store(
            datafusion::execution::object_store::ObjectStoreUrl::local_filesystem().as_ref(),
            Arc::new(store),
        );
        for table in Table::ALL {
            ctx.register_table(
                table.name(),
                Arc::new(LakeTable::new(table, Arc::clone(&snapshot))),
            )?;
        }
        Ok(LakeSession {
            ctx,
            lake,
            snapshot,
        })
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
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

/// Run `f` to completion on a runtime of `threads` workers: the library's synchronous edge,
/// so callers need not know DataFusion is async.
pub fn block_on<T, E: From<EngineError>>(
    threads: usize,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("keytrail-query")
        .enable_time()
        .build()
        .map_err(|e| E::from(EngineError::Runtime(e)))?;
    rt.block_on(f)
}
