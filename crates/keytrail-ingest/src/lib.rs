//! keytrail ingestion: CloudTrail objects from local files (and S3) → the Parquet lake.
//!
//! [`ingest`] is the one entry point the CLI calls: it finds the objects, skips what the lake
//! already holds, decodes the rest in parallel, writes Parquet through a bounded buffer, and
//! commits the run to the lake's manifest. Its [`RunSummary`] accounts for every object and
//! every record.

#[cfg(feature = "run")]
pub mod custody;
pub mod decode;
mod error;
pub mod pipeline;
pub mod process;
#[cfg(feature = "run")]
mod run;
#[cfg(feature = "run")]
pub mod s3;
#[cfg(feature = "run")]
pub mod s3access;
#[cfg(feature = "run")]
pub mod s3lake;
pub mod shard;
pub mod source;
pub mod split;
pub mod stream;
pub mod summary;
mod writer;

pub use error::{IngestError, ObjectError};
pub use pipeline::{Decider, Done, content_hash};
pub use process::{Limits, SkippedRecord};
pub use shard::{Shard, ShardError, ShardSource};
pub use source::{Location, ObjectRef};
pub use summary::{EventCounts, Failure, NoProgress, Progress, RunSummary, SkipReason};

#[cfg(feature = "run")]
pub use run::{IngestOptions, Input, ingest};
