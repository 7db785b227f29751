//! One module per subcommand: validate flags into typed options, call the library, print.

pub mod ingest;
pub mod key_info;
pub mod lake;
pub mod report;
pub mod sql;
