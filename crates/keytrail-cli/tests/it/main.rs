//! keytrail's integration tests: the real binary against real directories. One test binary;
//! helpers in `util`, one module per area.

mod consistency;
mod corrupt;
mod crash;
mod custody;
mod ddl;
mod detect;
mod faults;
mod follow;
mod hostile;
mod ingest;
mod investigate;
mod key_info;
mod reader;
mod report;
mod s3;
mod s3query;
mod s3server;
mod shard;
mod sigma;
mod stream;
mod util;
