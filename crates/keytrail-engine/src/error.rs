use datafusion::error::DataFusionError;
use keytrail_lake::LakeError;

/// What can go wrong answering a question over the lake.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error("query failed: {0}")]
    DataFusion(DataFusionError),
    /// An operator that cannot spill to disk (an ordered aggregate, the build side of a join)
    /// needed more than the memory limit left it.
    #[error(
        "query failed: it needed more memory than --memory-limit leaves operators that cannot \
         spill to disk; raise --memory-limit ({0})"
    )]
    Memory(#[source] DataFusionError),
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

impl From<DataFusionError> for EngineError {
    fn from(e: DataFusionError) -> Self {
        if matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)) {
            EngineError::Memory(e)
        } else {
            EngineError::DataFusion(e)
        }
    }
}

impl From<arrow::error::ArrowError> for EngineError {
    fn from(e: arrow::error::ArrowError) -> Self {
        EngineError::DataFusion(DataFusionError::ArrowError(Box::new(e), None))
    }
}
