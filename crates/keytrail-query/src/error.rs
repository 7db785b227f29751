use std::path::PathBuf;

use datafusion::error::DataFusionError;
use keytrail_lake::LakeError;

/// What can go wrong answering a question over the lake.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Ingest(#[from] keytrail_ingest::IngestError),
    #[error("query failed: {0}")]
    DataFusion(#[from] DataFusionError),
    #[error("writing {format} output: {source}")]
    Output {
        format: &'static str,
        #[source]
        source: arrow::error::ArrowError,
    },
    #[error("{}: {reason}", path.display())]
    Input { path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error("cannot start the query runtime: {0}")]
    Runtime(#[source] std::io::Error),
}
