//! The keytrail query engine: Apache DataFusion over a keytrail lake, using what the lake knows
//! of itself so a question opens only the files, and reads only the rows, that can answer it.
//!
//! - [`LakeSession`]: a DataFusion session whose `events`, `insights` and `key_daily` tables are
//!   [`LakeTable`]s: their files come from the manifest (never from listing directories), are
//!   pruned by day and by each file's time and key range, and, for a key or key set, by the
//!   lake's key index down to the rows that hold the keys.
//! - [`rows`]: results as Rust structs through one typed reader, collected or streamed.
//! - [`window`]: time windows and key sets as typed predicates ([`keyset`]: a set of thousands
//!   of keys as one expression).
//!
//! - [`LakeLocation`]: a lake directory, or a lake in S3 read in place through `object_store`
//!   (the manifest, the key index and the data files fetched with range requests, every request
//!   counted: [`IoStats`]).
//!
//! Investigation, detections and reports stand on this crate; rendering is the CLI's.

mod compact;
mod counting;
mod error;
pub mod json;
pub mod keyset;
mod location;
pub mod prune;
mod remote;
pub mod rows;
mod session;
mod storage;
mod store;
mod table;
pub mod window;

pub use counting::{IoStats, ObjectIo};
pub use error::EngineError;
pub use location::{LakeLocation, S3Access, S3Location, StoreLocation};
pub use session::{DEFAULT_MEMORY_LIMIT, LakeSession, SessionOptions, block_on};
pub use table::LakeTable;

/// The object store crate the engine reads remote lakes with, for dependants that build a
/// [`StoreLocation`].
pub use object_store;

/// The DataFusion and Arrow this crate is built on, for dependants.
pub use arrow;
pub use datafusion;

/// Run one SQL statement over the lake at `lake` and collect its result.
pub fn sql(
    lake: impl Into<LakeLocation>,
    sql: &str,
    opts: &SessionOptions,
) -> Result<(arrow::datatypes::SchemaRef, Vec<arrow::array::RecordBatch>), EngineError> {
    block_on(opts.threads, async {
        let session = LakeSession::open(lake, opts).await?;
        let df = session.sql(sql).await?;
        let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        Ok::<_, EngineError>((schema, batches))
    })
}

/// Check the lake at `lake` against its manifest (`keytrail lake verify`). A lake directory:
/// every live file present with the rows its commit recorded (from its footer) and no file the
/// manifest does not know. A lake in S3: one listing of its prefix, every live file present
/// with the size its commit recorded, and no unknown data file under the table prefixes.
pub fn verify(lake: impl Into<LakeLocation>) -> Result<keytrail_lake::Verification, EngineError> {
    let location = lake.into();
    match remote::RemoteLake::new(&location)? {
        None => {
            let dir = location
                .dir()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default();
            Ok(keytrail_lake::Lake::open(dir)?.verify()?)
        }
        Some(remote) => block_on(2, remote.verify()),
    }
}
