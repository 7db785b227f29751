//! keytrail-engine's integration tests, in one binary.

mod prune;
mod remote;
mod session;
