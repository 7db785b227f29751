use datafusion::error::DataFusionError;
use keytrail_lake::LakeError;

/// What can go wrong answering a question over the lake.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error("query failed: {0}")]
    DataFusion(#[from] DataFusionError),
    #[error("reading query results as {type_name}: {source}")]
    Rows {
        type_name: &'static str,
        #[source]
        source: serde_arrow::Error,
    },
    #[error("cannot start the query runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("{0}")]
    Invalid(String),
    /// A request to the object store a remote lake is in failed.
    #[error("{object}: {source}")]
    Remote {
        object: String,
        #[source]
        source: object_store::Error,
    },
}

impl From<arrow::error::ArrowError> for EngineError {
    fn from(e: arrow::error::ArrowError) -> Self {
        EngineError::DataFusion(DataFusionError::ArrowError(Box::new(e), None))
    }
}
