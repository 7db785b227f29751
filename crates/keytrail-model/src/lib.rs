//! The keytrail data model: CloudTrail records, IAM key IDs, times, and THE Arrow schema of
//! the lake. Every other keytrail crate reads and writes through these types, so the schema is
//! defined once, here, and versioned ([`schema::SCHEMA_VERSION`]).

pub mod batch;
pub mod event;
pub mod facts;
pub mod filter;
pub mod jsonscan;
pub mod key;
pub mod redact;
pub mod schema;
pub mod time;

pub use batch::EventBatchBuilder;
pub use event::{Event, EventError, EventFields, EventSeed, decode_event};
pub use facts::{EventView, Facts, KeyStatus, Minted, SourceClass};
pub use filter::{Difference, EventFilter, FilterSpec, Verdict};
pub use key::{AccessKeyId, AccountDecode, IdPrefix, KeyIdError, KeyKind, UniqueId};
pub use schema::{SCHEMA_VERSION, Table};
pub use time::{Millis, TimeWindow};

/// Re-export of the Arrow crate this model is built on (the version DataFusion uses), so
/// dependants name one Arrow.
pub use arrow;
