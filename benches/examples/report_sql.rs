#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used)] // a measuring tool
//! A report's statement, timed in DataFusion, and written in DuckDB's dialect for
//! `benches/scripts/duckdb_report.py` (`benches/report.sh` and `benches/query.sh` run both).
//!
//! `cargo run --release -p keytrail-benches --example report_sql -- LAKE AS_OF SINCE RUNS THREADS OUT.sql [REPORT]`
//!
//! REPORT is `last-used` (the default; activity counted from SINCE), `unused` or `rotation`
//! (with the CLI's defaults: 90 days, a 7-day grace, a 90-day maximum age; SINCE is not used,
//! their window is the 90 days before AS_OF). The reports are the lake-only ones (no
//! inventory). Each run opens a fresh session (the manifest and file listing are part of the
//! cost, as in `keytrail report`), plans and runs the statement, and collects every row.
//! OUT.sql is the DuckDB statement: the report's tables as CTEs of its query. Prints
//! one line per run: `datafusion run N: S seconds, R rows`. With `KEYTRAIL_EXPLAIN` set, each run's
//! query (after its tables) is an `EXPLAIN ANALYZE`, and its plan is printed with its metrics.

use std::time::Instant;

use keytrail_engine::{EngineError, LakeSession, SessionOptions, block_on};
use keytrail_model::time::{Bound, now_millis, parse_time_bound};
use keytrail_report::ReportKind;
use keytrail_report::sql::{Dialect, KindFilter};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if !(7..=8).contains(&a.len()) {
        eprintln!(
            "usage: report_sql LAKE AS_OF SINCE RUNS THREADS OUT.sql [last-used|unused|rotation]"
        );
        std::process::exit(2);
    }
    let lake = std::path::PathBuf::from(&a[1]);
    let as_of = parse_time_bound(&a[2], Bound::Start, now_millis()).unwrap();
    let since = parse_time_bound(&a[3], Bound::Start, as_of).unwrap();
    let runs: usize = a[4].parse().unwrap();
    let threads: usize = a[5].parse().unwrap();
    let kind = match a.get(7).map_or("last-used", String::as_str) {
        "last-used" => ReportKind::LastUsed {
            since,
            kinds: KindFilter::All,
        },
        "unused" => ReportKind::Unused { days: 90, grace: 7 },
        "rotation" => ReportKind::Rotation { max_age: 90 },
        other => {
            eprintln!("unknown report {other:?}: last-used, unused or rotation");
            std::process::exit(2);
        }
    };
    let w = kind.window(as_of);
    std::fs::write(&a[6], kind.script(&w, false, Dialect::DuckDb).text()).unwrap();
    let mut script = kind.script(&w, false, Dialect::DataFusion);
    let explain = std::env::var_os("KEYTRAIL_EXPLAIN").is_some();
    if explain {
        script.query = format!("EXPLAIN ANALYZE {}", script.query);
    }
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
            let batches = keytrail_report::execute(&session, &script)
                .await
                .map_err(|e| EngineError::Invalid(e.to_string()))?
                .batches;
            if explain {
                let text = keytrail_engine::arrow::util::pretty::pretty_format_batches(&batches)
                    .map_err(|e| EngineError::Invalid(e.to_string()))?;
                println!("{text}");
            }
            Ok::<_, EngineError>(batches.iter().map(|b| b.num_rows()).sum::<usize>())
        })
        .unwrap();
        println!(
            "datafusion run {run}: {:.3} seconds, {rows} rows",
            start.elapsed().as_secs_f64()
        );
    }
}
