//! Helpers: run the binary, make temp trees, read a lake back.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow::array::{Array, AsArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// The repository's `testdata/`.
pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

/// A `keytrail` command.
pub fn keytrail() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keytrail"));
    c.env_remove("KEYTRAIL_CRASH_AT").env_remove("KEYTRAIL_LOG");
    // `--shard auto` reads these: a test run inside a Kubernetes Job or an AWS Batch job must
    // not see its own scheduler's.
    for var in [
        "JOB_COMPLETION_INDEX",
        "KEYTRAIL_SHARD_COUNT",
        "AWS_BATCH_JOB_ARRAY_INDEX",
        "AWS_BATCH_JOB_ARRAY_SIZE",
    ] {
        c.env_remove(var);
    }
    c
}

/// Run a command; return its output.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("keytrail runs")
}

/// Run and insist on an exit status.
pub fn run_code(cmd: &mut Command, code: i32) -> Output {
    let out = run(cmd);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `keytrail ingest PATHS --lake LAKE --json ARGS` and the parsed summary.
pub fn ingest_json(paths: &[&Path], lake: &Path, args: &[&str], code: i32) -> serde_json::Value {
    let mut cmd = keytrail();
    cmd.arg("ingest")
        .args(paths)
        .arg("--lake")
        .arg(lake)
        .arg("--json")
        .args(args);
    let out = run_code(&mut cmd, code);
    serde_json::from_slice(&out.stdout).expect("summary is JSON")
}

/// Every Parquet file of a table.
pub fn table_files(lake: &Path, table: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(parts) = fs::read_dir(lake.join(table)) else {
        return out;
    };
    for p in parts {
        let p = p.expect("partition").path();
        for f in fs::read_dir(&p).expect("files") {
            let f = f.expect("file").path();
            if f.extension().is_some_and(|e| e == "parquet") {
                out.push(f);
            }
        }
    }
    out.sort();
    out
}

/// One row of the events table, the columns the tests look at.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Row {
    pub key: Option<String>,
    pub time: i64,
    pub event_id: Option<String>,
    pub event_name: Option<String>,
    pub partition: String,
}

/// All rows of a table, sorted.
pub fn rows(lake: &Path, table: &str) -> Vec<Row> {
    let mut out = Vec::new();
    for f in table_files(lake, table) {
        let partition = f
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let reader = ParquetRecordBatchReaderBuilder::try_new(fs::File::open(&f).expect("open"))
            .expect("parquet")
            .build()
            .expect("reader");
        for b in reader {
            let b = b.expect("batch");
            let key = b
                .column_by_name("accesskeyid")
                .expect("key")
                .as_string::<i32>();
            let time = b
                .column_by_name("eventtime")
                .expect("time")
                .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
            let id = b.column_by_name("eventid").expect("id").as_string::<i32>();
            let name = b
                .column_by_name("eventname")
                .expect("name")
                .as_string::<i32>();
            let s = |a: &arrow::array::StringArray, i: usize| {
                a.is_valid(i).then(|| a.value(i).to_owned())
            };
            for i in 0..b.num_rows() {
                out.push(Row {
                    key: s(key, i),
                    time: time.value(i),
                    event_id: s(id, i),
                    event_name: s(name, i),
                    partition: partition.clone(),
                });
            }
        }
    }
    out.sort();
    out
}

/// Events per access key (`None`: events made without a key).
pub fn per_key(rows: &[Row]) -> BTreeMap<Option<String>, usize> {
    let mut m = BTreeMap::new();
    for r in rows {
        *m.entry(r.key.clone()).or_default() += 1;
    }
    m
}

/// Copy a file or a directory tree.
pub fn copy_tree(from: &Path, to: &Path) {
    if from.is_file() {
        fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        fs::copy(from, to).expect("copy");
        return;
    }
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        copy_tree(&e.path(), &to.join(e.file_name()));
    }
}

/// Check the summary's two identities: objects and records add up.
pub fn assert_balanced(s: &serde_json::Value) {
    let o = &s["objects"];
    let skipped: u64 = o["skipped"]
        .as_object()
        .expect("skipped")
        .values()
        .map(|v| v.as_u64().expect("n"))
        .sum();
    assert_eq!(
        o["seen"].as_u64(),
        Some(o["read"].as_u64().expect("read") + skipped + o["failed"].as_u64().expect("failed")),
        "objects add up: {o}"
    );
    let e = &s["events"];
    let n = |k: &str| e[k].as_u64().expect("count");
    assert_eq!(
        n("read"),
        n("written") + n("insights") + n("filtered") + n("already_written") + n("skipped"),
        "records add up: {e}"
    );
}

/// Every row of a table as one line of text (partition, then every column), sorted: for
/// comparing whole tables.
pub fn table_text(lake: &Path, table: &str) -> Vec<String> {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let mut out = Vec::new();
    for f in table_files(lake, table) {
        let partition = f
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let reader = ParquetRecordBatchReaderBuilder::try_new(fs::File::open(&f).expect("open"))
            .expect("parquet")
            .build()
            .expect("reader");
        for b in reader {
            let b = b.expect("batch");
            let fmts: Vec<_> = b
                .columns()
                .iter()
                .map(|c| {
                    ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default()).expect("fmt")
                })
                .collect();
            for i in 0..b.num_rows() {
                let mut line = partition.clone();
                for f in &fmts {
                    line.push('|');
                    line.push_str(&f.value(i).to_string());
                }
                out.push(line);
            }
        }
    }
    out.sort();
    out
}
