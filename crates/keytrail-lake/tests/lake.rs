//! Transactions against a real directory: commit, merge, abort, recovery, conflicts.

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use keytrail_lake::files::read_file;
use keytrail_lake::{Lake, LakeError, ObjectRecord};
use keytrail_model::{EventBatchBuilder, FilterSpec, Table, decode_event};

fn batch(lines: &[String]) -> RecordBatch {
    let mut b = EventBatchBuilder::new(Table::Events);
    for l in lines {
        b.append(&decode_event(l).expect("event"), "test");
    }
    b.finish().expect("batch")
}

fn event(key: &str, time: &str, id: &str) -> String {
    format!(
        r#"{{"eventTime":"{time}","eventID":"{id}","eventName":"ListBuckets","userIdentity":{{"type":"IAMUser","accessKeyId":"{key}"}}}}"#
    )
}

fn object(name: &str, hash: &str) -> ObjectRecord {
    ObjectRecord {
        source: format!("file:///{name}"),
        size: 1,
        modified: None,
        etag: None,
        content_hash: hash.to_owned(),
        events: 1,
        written: 1,
        insights: 0,
        filtered: 0,
        already_written: 0,
        skipped: 0,
        custody: None,
    }
}

const DAY: i32 = 19723; // 2024-01-01

fn key_daily_events(lake: &Lake) -> Vec<(String, i64)> {
    let dir = lake.table_dir(Table::KeyDaily).join("date=2024-01-01");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("key_daily partition")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "one key_daily file per day: {files:?}");
    let mut out = Vec::new();
    for b in read_file(&files.remove(0)).expect("read") {
        let k = b.column(0).as_string::<i32>();
        let n = b
            .column_by_name("events")
            .expect("events")
            .as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            out.push((k.value(i).to_owned(), n.value(i)));
        }
    }
    out
}

#[test]
fn commit_publishes_files_and_key_daily_merges_across_runs() {
    let dir = tempfile::tempdir().expect("tmp");
    let lake = Lake::create(dir.path()).expect("lake");

    let t = lake.begin(FilterSpec::all()).expect("begin");
    t.write(
        Table::Events,
        DAY,
        &[batch(&[
            event("AKIAB", "2024-01-01T10:00:00Z", "e2"),
            event("AKIAA", "2024-01-01T09:00:00Z", "e1"),
        ])],
    )
    .expect("write");
    // Nothing is visible before the commit.
    assert!(!lake.table_dir(Table::Events).exists());
    let c = t
        .commit(vec![object("a", "h1")])
        .expect("commit")
        .expect("some");
    assert_eq!(c.seq, 1);
    assert_eq!(
        key_daily_events(&lake),
        [("AKIAA".into(), 1), ("AKIAB".into(), 1)]
    );

    // A second run adds events of the same day: key_daily is merged, not duplicated.
    let t = lake.begin(FilterSpec::all()).expect("begin");
    t.write(
        Table::Events,
        DAY,
        &[batch(&[event("AKIAA", "2024-01-01T11:00:00Z", "e3")])],
    )
    .expect("write");
    let c = t
        .commit(vec![object("b", "h2")])
        .expect("commit")
        .expect("some");
    assert_eq!(c.seq, 2);
    assert_eq!(c.replaced.len(), 1);
    assert_eq!(
        key_daily_events(&lake),
        [("AKIAA".into(), 2), ("AKIAB".into(), 1)]
    );

    let v = lake.verify().expect("verify");
    assert_eq!(v.problems, Vec::<String>::new());
    assert_eq!(v.rows.get("events"), Some(&3));
    assert_eq!(v.rows.get("key_daily"), Some(&2));
    assert_eq!(v.objects, 2);
    assert!(
        !dir.path()
            .join("_keytrail/staging")
            .read_dir()
            .expect("staging")
            .any(|_| true)
    );

    // Rows inside a file are ordered by key, then time.
    let events_dir = lake.table_dir(Table::Events).join("date=2024-01-01");
    let first = std::fs::read_dir(&events_dir)
        .expect("dir")
        .map(|e| e.expect("e").path())
        .min()
        .expect("file");
    let b = &read_file(&first).expect("read")[0];
    let keys: Vec<_> = b
        .column_by_name("accesskeyid")
        .expect("k")
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert_eq!(keys, ["AKIAA", "AKIAB"]);
}

#[test]
fn an_aborted_or_dead_run_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let lake = Lake::create(dir.path()).expect("lake");
    let t = lake.begin(FilterSpec::all()).expect("begin");
    t.write(
        Table::Events,
        DAY,
        &[batch(&[event("AKIAA", "2024-01-01T09:00:00Z", "e1")])],
    )
    .expect("write");
    t.abort().expect("abort");

    // A run that dies (its lock released without a commit) is discarded by the next one.
    let t = lake.begin(FilterSpec::all()).expect("begin");
    t.write(
        Table::Events,
        DAY,
        &[batch(&[event("AKIAA", "2024-01-01T09:00:00Z", "e1")])],
    )
    .expect("write");
    let dead = t.run_id().to_owned();
    std::mem::forget(t); // keeps the lock file handle open: still "alive"
    let r = lake.recover().expect("recover");
    assert!(r.discarded.is_empty(), "a live run is left alone");
    let v = lake.verify().expect("verify");
    assert_eq!(v.files, 0);
    assert!(v.problems.is_empty());
    assert!(dir.path().join("_keytrail/staging").join(&dead).exists());
}

#[test]
fn a_run_that_dropped_its_lock_is_discarded() {
    let dir = tempfile::tempdir().expect("tmp");
    let lake = Lake::create(dir.path()).expect("lake");
    let t = lake.begin(FilterSpec::all()).expect("begin");
    t.write(
        Table::Events,
        DAY,
        &[batch(&[event("AKIAA", "2024-01-01T09:00:00Z", "e1")])],
    )
    .expect("write");
    let dead = t.run_id().to_owned();
    drop(t); // like a killed process: the lock goes, the staged files stay
    let r = lake.recover().expect("recover");
    assert_eq!(r.discarded, [dead]);
    assert_eq!(lake.verify().expect("verify").files, 0);
}

#[test]
fn concurrent_runs_over_the_same_content_conflict() {
    let dir = tempfile::tempdir().expect("tmp");
    let lake = Lake::create(dir.path()).expect("lake");
    let a = lake.begin(FilterSpec::all()).expect("a");
    let b = lake.begin(FilterSpec::all()).expect("b");
    a.write(
        Table::Events,
        DAY,
        &[batch(&[event("AKIAA", "2024-01-01T09:00:00Z", "e1")])],
    )
    .expect("w");
    b.write(
        Table::Events,
        DAY,
        &[batch(&[event("AKIAA", "2024-01-01T09:00:00Z", "e1")])],
    )
    .expect("w");
    a.commit(vec![object("x", "same")]).expect("a commits");
    let err = b
        .commit(vec![object("y", "same")])
        .expect_err("b conflicts");
    assert!(matches!(err, LakeError::Conflict { count: 1, .. }), "{err}");
    let v = lake.verify().expect("verify");
    assert_eq!(v.rows.get("events"), Some(&1));
    assert!(v.problems.is_empty(), "{:?}", v.problems);
}

#[test]
fn opening_a_directory_that_is_not_a_lake_says_so() {
    let dir = tempfile::tempdir().expect("tmp");
    let err = Lake::open(dir.path()).expect_err("not a lake").to_string();
    assert!(err.contains("not a keytrail lake"), "{err}");
}
