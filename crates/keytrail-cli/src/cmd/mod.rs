//! One module per subcommand: validate flags into typed options, call the library, print.

pub mod alternatives;
pub mod ddl;
pub mod detect;
pub mod follow;
pub mod ingest;
pub mod investigate;
pub mod key_info;
pub mod lake;
pub mod location;
pub mod report;
pub mod rules;
pub mod sql;
pub mod verify_logs;
