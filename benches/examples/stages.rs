#![allow(clippy::print_stdout, clippy::unwrap_used)] // a measuring tool
//! Per-stage cost of ingest on one core: `cargo run --release -p keytrail-benches --example
//! stages -- DIR` (DIR from `keytrail-bench gen`). Reads the first 200 files of DIR.

use std::time::{Duration, Instant};

use keytrail_ingest::decode::{decompress, split};
use keytrail_model::{EventBatchBuilder, Table};

fn main() {
    let dir = std::env::args().nth(1).expect("usage: stages DIR");
    let mut files = Vec::new();
    let mut stack = vec![std::path::PathBuf::from(dir)];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).expect("read_dir") {
            let e = e.expect("entry").path();
            if e.is_dir() {
                stack.push(e)
            } else {
                files.push(e)
            }
        }
    }
    files.sort();
    files.truncate(200);
    let (mut td, mut ts, mut tb) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut buf = Vec::new();
    let mut all = Vec::new();
    for f in &files {
        let raw = std::fs::read(f).expect("read");
        let t = Instant::now();
        decompress(&raw, &mut buf, 1 << 30).expect("gzip");
        td += t.elapsed();
        bytes += buf.len() as u64;
        let t = Instant::now();
        let s = split(&buf, 1 << 20).expect("json");
        ts += t.elapsed();
        let t = Instant::now();
        let mut b = EventBatchBuilder::with_capacity(Table::Events, s.records.len());
        for (_, e) in &s.records {
            b.append(e.as_ref().expect("event"), "x");
        }
        let batch = b.finish().expect("batch");
        tb += t.elapsed();
        n += batch.num_rows() as u64;
        if n < 2000 {
            println!(
                "batch of {} rows: {} bytes in memory ({} per row); {} bytes JSON/row",
                batch.num_rows(),
                batch.get_array_memory_size(),
                batch.get_array_memory_size() / batch.num_rows(),
                buf.len() / batch.num_rows()
            );
        }
        all.push(batch);
    }
    let per = |d: Duration| d.as_secs_f64() * 1e9 / n as f64;
    println!(
        "{n} events, {:.0} B/event; ns/event: decompress {:.0}, parse+decode {:.0}, build {:.0}",
        bytes as f64 / n as f64,
        per(td),
        per(ts),
        per(tb)
    );
    let t = Instant::now();
    let order = keytrail_lake::files::sorted_order(&all).expect("order");
    let torder = t.elapsed();
    let path = std::env::temp_dir().join("keytrail-stages.parquet");
    let t = Instant::now();
    let w = keytrail_lake::files::write_sorted(&path, Table::Events, &all, "stages", |_| Ok(()))
        .expect("write");
    let tw = t.elapsed();
    let _ = std::fs::remove_file(&path);
    println!(
        "sort order {:.0} ns/event; sorted write (order + interleave + parquet) {:.0} ns/event, {} bytes; {} order entries",
        per(torder),
        per(tw),
        w.bytes,
        order.len()
    );
}
