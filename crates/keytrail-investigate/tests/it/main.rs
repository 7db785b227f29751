//! keytrail-investigate's integration tests.

mod investigate;
