use std::path::PathBuf;

use keytrail_detect::DetectError;
use keytrail_ingest::IngestError;
use keytrail_lake::LakeError;

/// What stops `keytrail follow`, or one of its batches.
///
/// At start every error stops the follower (exit status 2). Once it runs, an error of one
/// batch is logged and the batch is tried again after a pause: its messages are received
/// again, its objects are found in the manifest when they were committed.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("{0}")]
    Config(String),
    #[error("queue {queue}: {reason}")]
    Queue { queue: String, reason: String },
    #[error("{object}: {reason}")]
    S3 { object: String, reason: String },
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error("detecting over the new events: {0}")]
    Detect(#[from] DetectError),
    #[error("detecting over the new events: {0}")]
    Engine(#[from] keytrail_engine::EngineError),
    #[error("findings {}: {source}", path.display())]
    Findings {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Cursor { path: PathBuf, reason: String },
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
}
