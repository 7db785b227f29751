use std::io;
use std::path::{Path, PathBuf};

use arrow::error::ArrowError;
use parquet::errors::ParquetError;

/// Everything that can go wrong in the lake, each naming the file it happened to.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {source}", path.display())]
    Parquet {
        path: PathBuf,
        #[source]
        source: ParquetError,
    },
    #[error("{}: {source}", path.display())]
    Arrow {
        path: PathBuf,
        #[source]
        source: ArrowError,
    },
    #[error("{}: not a keytrail lake ({reason})", path.display())]
    NotALake { path: PathBuf, reason: String },
    #[error("{}: manifest entry is unreadable: {reason}", path.display())]
    Manifest { path: PathBuf, reason: String },
    #[error(
        "{}: the lake is in schema version {found}; this keytrail reads and writes version {expected}{}",
        path.display(),
        version_hint(path, *found, *expected)
    )]
    SchemaVersion {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error(
        "another run committed {count} of this run's objects while it ran (first: {example}); nothing of this run was committed: run it again to ingest what is still new"
    )]
    Conflict { count: usize, example: String },
    #[error(
        "another run rewrote or removed {count} of the files this run rewrites (first: {example}) while it ran; nothing of this run was committed: run it again"
    )]
    Superseded { count: usize, example: String },
}

fn version_hint(path: &Path, found: u32, expected: u32) -> String {
    if found < expected {
        format!(
            ": run `keytrail lake upgrade --lake {}` to rewrite it in place (exactly once; it can be stopped and run again)",
            path.display()
        )
    } else {
        ": use a newer keytrail".to_owned()
    }
}

impl LakeError {
    pub fn io(path: impl AsRef<Path>, source: io::Error) -> LakeError {
        LakeError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub fn parquet(path: impl AsRef<Path>, source: ParquetError) -> LakeError {
        LakeError::Parquet {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub fn arrow(path: impl AsRef<Path>, source: ArrowError) -> LakeError {
        LakeError::Arrow {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}

/// Attach a path to an I/O result.
pub(crate) trait IoContext<T> {
    fn at(self, path: &Path) -> Result<T, LakeError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T, LakeError> {
        self.map_err(|e| LakeError::io(path, e))
    }
}
