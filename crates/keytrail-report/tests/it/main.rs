//! keytrail-report's integration tests.

mod report;
