//! The lake read back by an independent reader: DuckDB (installed by `.ci/run` from PyPI)
//! counts events per key in the Parquet files and in the raw JSON, recomputes every `key_daily`
//! row and the Insights events from the raw JSON, and derives the fact columns from the raw JSON
//! itself; they must agree.

use std::process::Command;

use crate::util::*;

#[test]
fn duckdb_reads_the_lake_and_agrees_with_the_input() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let stratus = testdata().join("stratus");
    let otrf = testdata().join("otrf");
    ingest_json(&[&stratus, &otrf], &lake, &[], 0);
    let script = testdata().join("../scripts/independent_reader.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&lake)
        .arg(&stratus)
        .arg(&otrf)
        .output()
        .expect(
            "python3 runs (install the test requirements: pip install -r requirements-test.txt)",
        );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "independent reader failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("events 413"), "{text}");
    assert!(text.contains("keys 43 agree"), "{text}");
    // The fact columns agree with the same facts derived from the raw JSON in Python.
    assert!(
        text.contains(
            "facts agree: 413 events, 51 denied, 16 minted, 2 with a target key, 2 with a key status"
        ),
        "{text}"
    );
    assert!(text.contains("key_daily 42 rows agree"), "{text}");
}

/// The gzipped, delivery-shaped sample (digest and Insights files among its objects).
#[test]
fn duckdb_agrees_on_the_delivery_shaped_sample_key_daily_and_insights_included() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let sample = testdata().join("sample");
    ingest_json(&[&sample], &lake, &[], 0);
    let out = Command::new("python3")
        .arg(testdata().join("../scripts/independent_reader.py"))
        .arg(&lake)
        .arg(&sample)
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "independent reader failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("events 1279"), "{text}");
    assert!(text.contains("insights 1 agree"), "{text}");
    assert!(text.contains(" rows agree"), "{text}");
}
