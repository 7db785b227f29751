//! keytrail's answers over the lake, computed by Apache DataFusion: SQL over the registered
//! tables, and (in the modules that follow) reports, investigation and detections.

pub mod detect;
mod error;
pub mod investigate;
pub mod output;
pub mod report;
pub mod session;

pub use error::QueryError;
pub use output::Format;
pub use session::{LakeSession, SessionOptions, block_on};

/// Re-export of the DataFusion this crate is built on.
pub use datafusion;

/// Run one SQL statement over the lake at `root`.
pub fn sql(
    root: &std::path::Path,
    sql: &str,
    opts: &SessionOptions,
) -> Result<(arrow::datatypes::SchemaRef, Vec<arrow::array::RecordBatch>), QueryError> {
    block_on(opts.threads, async {
        let session = LakeSession::open(root, opts).await?;
        let df = session.context().sql(sql).await?;
        let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        Ok((schema, batches))
    })
}
