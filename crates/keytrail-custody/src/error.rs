use std::path::PathBuf;

/// Errors that stop a validation: a store that cannot be listed, a public-key file that cannot
/// be read. Problems with single objects are never errors: they are rows of the report.
#[derive(Debug, thiserror::Error)]
pub enum CustodyError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{store}: cannot list: {reason}")]
    List { store: String, reason: String },
    #[error("{}: {reason}", path.display())]
    PublicKeys { path: PathBuf, reason: String },
    #[error("{0}")]
    Config(String),
}

/// Why one object could not be read. It becomes that object's row in the report, never a
/// failure of the run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The store holds no such object.
    #[error("not found")]
    NotFound,
    /// The store could not be read (I/O, network, permissions).
    #[error("cannot read: {0}")]
    Io(String),
    /// The bytes are not the gzip CloudTrail delivered (truncated, corrupt).
    #[error("gzip data is corrupt or truncated: {0}")]
    Gzip(String),
    /// More than the limit once decompressed (a decompression bomb, or a limit set too low).
    #[error("more than {limit} bytes once decompressed")]
    TooLarge { limit: u64 },
}

impl ReadError {
    /// From an I/O error of a store: `NotFound` stays `NotFound`.
    pub fn io(e: &std::io::Error) -> ReadError {
        if e.kind() == std::io::ErrorKind::NotFound {
            ReadError::NotFound
        } else {
            ReadError::Io(e.to_string())
        }
    }
}
