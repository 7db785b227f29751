#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used)] // a measuring tool
//! The last-used report's statement, timed in DataFusion, and written in DuckDB's dialect for
//! `benches/scripts/duckdb_report.py` (`benches/report.sh` runs both).
//!
//! `cargo run --release -p keytrail-benches --example report_sql -- LAKE AS_OF SINCE RUNS THREADS OUT.sql`
//!
//! Each run opens a fresh session (the manifest and file listing are part of the cost, as in
//! `keytrail report`), plans and runs the statement, and collects every row. Prints the
//! rows, then one line per run: `datafusion run N: S seconds`.

use std::time::Instant;

use keytrail_engine::{EngineError, LakeSession, SessionOptions, block_on};
use keytrail_model::time::{Bound, now_millis, parse_time_bound};
use keytrail_report::sql::{Dialect, KindFilter, Window, last_used};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 7 {
        eprintln!("usage: report_sql LAKE AS_OF SINCE RUNS THREADS OUT.sql");
        std::process::exit(2);
    }
    let lake = std::path::PathBuf::from(&a[1]);
    let as_of = parse_time_bound(&a[2], Bound::Start, now_millis()).unwrap();
    let since = parse_time_bound(&a[3], Bound::Start, as_of).unwrap();
    let runs: usize = a[4].parse().unwrap();
    let threads: usize = a[5].parse().unwrap();
    let w = Window { since, as_of };
    std::fs::write(
        &a[6],
        last_used(&w, KindFilter::All, false, Dialect::DuckDb),
    )
    .unwrap();
    let statement = last_used(&w, KindFilter::All, false, Dialect::DataFusion);
    let opts = SessionOptions {
        threads,
        ..SessionOptions::default()
    };
    for run in 1..=runs {
        let start = Instant::now();
        let rows = block_on(threads, async {
            let session = LakeSession::open(&lake, &opts).await?;
            keytrail_report::prepare(&session)
                .await
                .map_err(|e| EngineError::Invalid(e.to_string()))?;
            let df = session.context().sql(&statement).await?;
            let batches = df.collect().await?;
            Ok::<_, EngineError>(batches.iter().map(|b| b.num_rows()).sum::<usize>())
        })
        .unwrap();
        println!(
            "datafusion run {run}: {:.3} seconds, {rows} rows",
            start.elapsed().as_secs_f64()
        );
    }
}
