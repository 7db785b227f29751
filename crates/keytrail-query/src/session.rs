//! A DataFusion session over a lake: its tables registered as Hive-partitioned Parquet
//! listing tables, with THE schema of `keytrail-model` (not inferred), and the settings that
//! make the lake's layout pay off (statistics and bloom-filter pruning, filter pushdown).

use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::{SessionConfig, SessionContext};
use keytrail_lake::Lake;
use keytrail_model::Table;

use crate::error::QueryError;

/// How a session runs.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Threads for scanning and operators.
    pub threads: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            threads: std::thread::available_parallelism().map_or(2, usize::from),
        }
    }
}

/// A DataFusion session with the lake's tables (`events`, `insights`, `key_daily`).
pub struct LakeSession {
    ctx: SessionContext,
    lake: Lake,
}

impl LakeSession {
    /// Open the lake at `root` (finishing any run that was stopped half-way) and register its
    /// tables.
    pub async fn open(root: &Path, opts: &SessionOptions) -> Result<LakeSession, QueryError> {
        let lake = Lake::open(root)?;
        // A committed run whose files were not all published yet would make the tables lie.
        lake.recover()?;
        let mut config = SessionConfig::new()
            .with_target_partitions(opts.threads.max(1))
            .with_information_schema(true);
        let o = config.options_mut();
        o.execution.parquet.pushdown_filters = true;
        o.execution.parquet.reorder_filters = true;
        o.execution.parquet.bloom_filter_on_read = true;
        o.execution.parquet.pruning = true;
        o.sql_parser.enable_ident_normalization = true;
        let mut ctx = SessionContext::new_with_config(config);
        // json_get_str(requestparameters, 'userName') and friends, for the JSON columns.
        datafusion_functions_json::register_all(&mut ctx)?;
        for table in Table::ALL {
            register(&ctx, &lake, table).await?;
        }
        Ok(LakeSession { ctx, lake })
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// Run one SQL statement and collect its result.
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
        let df = self.ctx.sql(sql).await?;
        Ok(df.collect().await?)
    }
}

async fn register(ctx: &SessionContext, lake: &Lake, table: Table) -> Result<(), QueryError> {
    let dir = lake.table_dir(table);
    let schema = table.schema();
    let has_files = std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some());
    if !has_files {
        // No run wrote this table yet: an empty table with the same columns, so queries work.
        let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
        fields.push(Arc::new(arrow::datatypes::Field::new(
            "date",
            DataType::Date32,
            true,
        )));
        let schema = Arc::new(arrow::datatypes::Schema::new(fields));
        let empty = MemTable::try_new(schema, vec![vec![]])?;
        ctx.register_table(table.name(), Arc::new(empty))?;
        return Ok(());
    }
    let url = ListingTableUrl::parse(format!("{}/", dir.display()))?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(vec![("date".to_owned(), DataType::Date32)]);
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(schema);
    ctx.register_table(table.name(), Arc::new(ListingTable::try_new(config)?))?;
    Ok(())
}

/// Run `f` to completion on a runtime of `threads` workers: the library's synchronous edge,
/// so callers need not know DataFusion is async.
pub fn block_on<T>(
    threads: usize,
    f: impl std::future::Future<Output = Result<T, QueryError>>,
) -> Result<T, QueryError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("keytrail-query")
        .enable_time()
        .build()
        .map_err(QueryError::Runtime)?;
    rt.block_on(f)
}
