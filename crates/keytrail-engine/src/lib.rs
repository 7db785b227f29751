//! The keytrail query engine: Apache DataFusion over a keytrail lake, using what the lake knows
//! of itself so a question opens only the files, and reads only the rows, that can answer it.
//!
//! - [`LakeSession`]: a DataFusion session whose `events`, `insights` and `key_daily` tables are
//!   [`LakeTable`]s: their files come from the manifest (never from listing directories), are
//!   pruned by day and by each file's time and key range, and, for a key or key set, by the
//!   lake's key index down to the rows that hold the keys.
//! - [`rows`]: results as Rust structs through one typed reader, collected or streamed.
//! - [`window`]: time windows as typed predicates.
//!
//! Investigation, detections and reports stand on this crate; rendering is the CLI's.

mod error;
pub mod json;
pub mod prune;
pub mod rows;
mod session;
mod store;
mod table;
pub mod window;

pub use error::EngineError;
pub use session::{LakeSession, SessionOptions, block_on};
pub use table::LakeTable;

/// The DataFusion and Arrow this crate is built on, for dependants.
pub use arrow;
pub use datafusion;

/// Run one SQL statement over the lake at `root` and collect its result.
pub fn sql(
    root: &std::path::Path,
    sql: &str,
    opts: &SessionOptions,
) -> Result<(arrow::datatypes::SchemaRef, Vec<arrow::array::RecordBatch>), EngineError> {
    block_on(opts.threads, async {
        let session = LakeSession::open(root, opts).await?;
        let df = session.sql(sql).await?;
        let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        Ok::<_, EngineError>((schema, batches))
    })
}
