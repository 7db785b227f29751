#![allow(clippy::print_stdout)] // a measuring tool: its output is the measurement
//! Time `verify` over a synthetic local trail: `cargo run --release -p keytrail-custody
//! --example verify_bench -- [HOURS] [FILES_PER_HOUR] [EVENTS_PER_FILE] [WORKERS]`.
//! Prints the trail's size and the validation's time and throughput (uncompressed bytes hashed).

use std::time::Instant;

use keytrail_custody::testkit::{TestKey, Trail, TrailSpec, public_keys_json};
use keytrail_custody::{LocalStore, ObjectStore, PublicKeys, VerifyOptions, verify};

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let (hours, files, events, workers) = (arg(1, 24), arg(2, 12), arg(3, 2000), arg(4, 2));
    let key = TestKey::generate(2048, "bench");
    let spec = TrailSpec {
        hours,
        files_per_hour: files,
        events_per_file: events,
        ..TrailSpec::default()
    };
    let t = Instant::now();
    let trail = Trail::build(spec.clone(), &key);
    let stored: usize = trail.objects.iter().map(|o| o.bytes.len()).sum();
    let dir = tempfile::tempdir().expect("tmp");
    trail.write_to(dir.path(), false).expect("write");
    let built = t.elapsed();
    let keys = PublicKeys::parse(
        public_keys_json(&[(&key, spec.start - 86_400_000, spec.start + 400 * 86_400_000)])
            .as_bytes(),
    )
    .expect("keys");
    let opts = VerifyOptions {
        keys: Some(keys),
        workers,
        ..VerifyOptions::default()
    };
    let store = LocalStore::new(dir.path());
    let t = Instant::now();
    let report = verify(&[&store as &dyn ObjectStore], &opts).expect("verify");
    let took = t.elapsed().as_secs_f64();
    let content: u64 = trail
        .logs()
        .map(|l| keytrail_custody::testkit::gunzip(&l.bytes).len() as u64)
        .sum();
    println!(
        "{} digests, {} log files, {:.1} MB stored, {:.1} MB uncompressed (built in {:.1}s)",
        report.digests,
        report.log_files,
        stored as f64 / 1e6,
        content as f64 / 1e6,
        built.as_secs_f64()
    );
    println!(
        "verify: {took:.2}s with {workers} workers, {:.0} MB/s uncompressed, {:.0} log files/s; passed {} ({} warnings)",
        content as f64 / 1e6 / took,
        report.log_files as f64 / took,
        report.passed,
        report.warnings
    );
}
