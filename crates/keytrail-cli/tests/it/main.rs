//! keytrail's integration tests: the real binary against real directories. One test binary;
//! helpers in `util`, one module per area.

mod corrupt;
mod crash;
mod ingest;
mod key_info;
mod reader;
mod report;
mod util;
