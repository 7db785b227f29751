//! The keytrail lake: Hive-partitioned Parquet tables (`events`, `insights`, `key_daily`) in
//! THE schema of `keytrail-model`, a manifest of every object read, and commits that make each
//! run's rows appear exactly once, even when a run is killed half-way.

pub mod compact;
pub mod ddl;
mod error;
pub mod files;
pub mod index;
pub mod key_daily;
mod lake;
pub mod listing;
pub mod manifest;
mod snapshot;
pub mod upgrade;

pub use ddl::{DdlError, DdlOptions, Engine, Extent};
pub use error::LakeError;
pub use index::{FileStats, IndexEntry, Relation};
pub use key_daily::KeyDaily;
pub use lake::{
    KeyDailyMode, Lake, MAX_OPEN_FILES, Piece, Recovery, Scope, Transaction, Verification,
    crash_point, rel_to_path,
};
pub use manifest::{
    Commit, FileRecord, Manifest, ManifestIndex, ObjectRecord, SourceVersion, write_atomic,
};
pub use snapshot::{DataFile, Snapshot};
