#![allow(clippy::print_stdout, clippy::unwrap_used)] // a measuring tool
//! What `keytrail follow --findings` spends per commit: `cargo run --release -p
//! keytrail-benches --example fresh -- LAKE [AFTER]` finds what the commits after AFTER (default:
//! all but the last) raise, with the bundled rules and the detectors, and logs each phase's
//! time (`KEYTRAIL_LOG`, default `debug`). With `FRESH_FINDINGS=FILE`, each finding raised is
//! appended to FILE as one JSON line (`id`, `rule`, `key`, `principal`, `first`: its first
//! event).

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let lake = std::path::PathBuf::from(args.next().expect("usage: fresh LAKE [AFTER]"));
    let filter = std::env::var("KEYTRAIL_LOG").unwrap_or_else(|_| "debug".to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let last = keytrail_lake::Lake::open(&lake)
        .unwrap()
        .snapshot()
        .unwrap()
        .seq;
    let after = args
        .next()
        .map_or(last.saturating_sub(1), |a| a.parse().unwrap());
    let detection = keytrail_follow::Detection {
        rules: keytrail_detect::RuleSet::bundled().unwrap(),
        threads: 2,
        ..keytrail_follow::Detection::default()
    };
    let started = Instant::now();
    let fresh = keytrail_follow::fresh::fresh(&lake, after, &detection).unwrap();
    if let Ok(file) = std::env::var("FRESH_FINDINGS") {
        use std::io::Write;
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .unwrap();
        for r in &fresh.findings {
            let line = serde_json::json!({
                "id": r.id,
                "rule": r.finding.rule,
                "key": r.finding.key,
                "principal": r.finding.principal,
                "first": r.finding.events.first(),
            });
            writeln!(out, "{line}").unwrap();
        }
    }
    println!(
        "commits {after}..{}: {} events, {} touched keys, {} findings in {:.2} s",
        fresh.upto,
        fresh.events,
        fresh.touched,
        fresh.findings.len(),
        started.elapsed().as_secs_f64()
    );
}
