//! keytrail-query's integration tests, in one binary: each test file linked on its own would
//! link DataFusion again (minutes of CI per file).

mod detect_alternatives;
mod detect_detectors;
mod detect_rules;
mod investigate;
mod report;
mod session;
