use std::path::PathBuf;

use keytrail_lake::LakeError;

/// Why one object could not be read. The run goes on; the object is listed in the summary
/// with this reason, and it is not recorded in the manifest, so a later run tries it again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    #[error("cannot read: {0}")]
    Read(String),
    #[error("empty object (0 bytes)")]
    Empty,
    #[error("gzip data is corrupt or truncated: {0}")]
    Gzip(String),
    #[error(
        "a text that must be held whole (a document without an array of records) passes the limit of {limit} bytes (--max-object-size)"
    )]
    TooLarge { limit: usize },
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("`Records` is {found}, expected an array of events")]
    RecordsNotArray { found: &'static str },
    #[error("`Events` is {found}, expected the array `aws cloudtrail lookup-events` prints")]
    EventsNotArray { found: &'static str },
    #[error("the object changed while it was read")]
    Changed,
    #[error("objects and arrays nested more than {limit} levels deep outside any record")]
    TooDeep { limit: u32 },
    #[error("internal error while reading it (a bug in keytrail; please report it): {0}")]
    Panic(String),
}

impl ObjectError {
    /// A short, stable reason code for summaries.
    pub fn reason(&self) -> &'static str {
        match self {
            ObjectError::Read(_) => "read-error",
            ObjectError::Empty => "empty",
            ObjectError::Gzip(_) => "corrupt-gzip",
            ObjectError::TooLarge { .. } => "too-large",
            ObjectError::NotJson(_) => "not-json",
            ObjectError::RecordsNotArray { .. } => "records-not-array",
            ObjectError::EventsNotArray { .. } => "events-not-array",
            ObjectError::Changed => "changed-while-read",
            ObjectError::TooDeep { .. } => "too-deep",
            ObjectError::Panic(_) => "internal-error",
        }
    }
}

/// Errors that stop a run. Nothing of the run is committed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{}: {source}", path.display())]
    Input {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error("{0}")]
    Config(String),
    #[error("{object}: {reason}")]
    Object { object: String, reason: String },
    #[error("the run was cancelled")]
    Cancelled,
}
