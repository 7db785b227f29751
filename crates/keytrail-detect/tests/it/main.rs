//! keytrail-detect's integration tests, in one binary (each test file linked on its own would
//! link DataFusion again).

mod alternatives;
mod detectors;
mod rules;
