//! The allocator of keytrail's binaries: `keytrail`, and `keytrail-bench`, which includes this
//! file so that its figures are `keytrail`'s. Not on MSVC, where jemalloc does not build.
//!
//! jemalloc gives freed memory back where glibc's per-thread heaps kept it: the ingest's peak
//! RSS is lower and it runs faster (docs/benchmarks.md). Its options are built in from
//! `.cargo/config.toml` (`JEMALLOC_SYS_WITH_MALLOC_CONF`).

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
