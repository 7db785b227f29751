//! keytrail's benchmark package: the synthetic CloudTrail generator and helpers shared by the
//! bench binary (`keytrail-bench`).

pub mod follow;
pub mod s3serve;
pub mod synth;

/// Peak resident set size of this process so far (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
