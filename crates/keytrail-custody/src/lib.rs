//! Chain of custody: CloudTrail log-file integrity validation, offline.
//!
//! CloudTrail's hourly digest files list the SHA-256 of every log file delivered in the hour
//! and chain to the digest before them; each digest is signed (SHA256withRSA) with a key
//! CloudTrail publishes. [`verify`] checks a trail or a copy of it — a local directory, an S3
//! bucket, any [`ObjectStore`] — against those records without calling AWS: the hashes of the
//! uncompressed log files, the chain, and the signatures with public keys saved from
//! `aws cloudtrail list-public-keys`. Its [`Report`] names every digest and log file with a
//! status. `docs/custody.md` says what this proves and what it cannot.

pub mod coverage;
pub mod digest;
mod error;
pub mod hash;
pub mod keys;
pub mod layout;
pub mod report;
pub mod store;
pub mod testkit;
mod verify;

pub use coverage::{Coverage, SourceCoverage, source_coverage};
pub use digest::{Digest, LogFileEntry, ParsedDigest};
pub use error::{CustodyError, ReadError};
pub use keys::PublicKeys;
pub use report::{Count, Level, Report, Row, Status, Subject, Time};
pub use store::{LocalStore, Metadata, ObjectStore, Scope, StoredObject};
pub use verify::{VerifyOptions, verify};
