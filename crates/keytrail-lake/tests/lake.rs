//! Transactions against a real directory: commit, merge, abort, recovery, conflicts.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use keytrail_lake::files::read_file;
use keytrail_lake::{Lake, LakeError, ObjectRecord, Transaction};
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

/// A run begun on `lake` that has written `lines` (records of 2024-01-01) as one batch.
fn run_writing(lake: &Lake, lines: &[String]) -> Transaction {
    let t = lake.begin(FilterSpec::all()).expect("begin");
    t.write(Table::Events, DAY, &[batch(lines)]).expect("write");
    t
}

/// A run begun on `lake` that has written one event (`AKIAA`, 2024-01-01T09:00:00Z, `e1`).
fn run_of_one_event(lake: &Lake) -> Transaction {
    run_writing(lake, &[event("AKIAA", "2024-01-01T09:00:00Z", "e1")])
}

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

    let t = run_writing(
        &lake,
        &[
            event("AKIAB", "2024-01-01T10:00:00Z", "e2"),
            event("AKIAA", "2024-01-01T09:00:00Z", "e1"),
        ],
    );
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
    let t = run_writing(&lake, &[event("AKIAA", "2024-01-01T11:00:00Z", "e3")]);
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

    // The merged day's record holds its keys' first and last event and its key range.
    let snap = lake.snapshot().expect("snapshot");
    let daily: Vec<_> = snap.table_files(Table::KeyDaily).collect();
    assert_eq!(daily.len(), 1);
    let s = daily[0].record.stats.clone().expect("key_daily stats");
    let ms = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .expect("time")
            .timestamp_millis()
    };
    assert_eq!(
        (s.min_time, s.max_time),
        (ms("2024-01-01T09:00:00Z"), ms("2024-01-01T11:00:00Z"))
    );
    assert_eq!(
        (s.min_key.as_deref(), s.max_key.as_deref()),
        (Some("AKIAA"), Some("AKIAB"))
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
    let t = run_of_one_event(&lake);
    t.abort().expect("abort");

    // A run that dies (its lock released without a commit) is discarded by the next one.
    let t = run_of_one_event(&lake);
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
    let t = run_of_one_event(&lake);
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

/// Rows of every live file of `table`, as `(key, event id)`, sorted.
fn rows_of(lake: &Lake, table: Table) -> Vec<(Option<String>, Option<String>)> {
    let snap = lake.snapshot().expect("snapshot");
    let mut out = Vec::new();
    for f in snap.table_files(table) {
        for b in read_file(&snap.path(&f.record.path)).expect("read") {
            let k = b
                .column_by_name("accesskeyid")
                .expect("k")
                .as_string::<i32>();
            let id = b.column_by_name("eventid").expect("id").as_string::<i32>();
            for i in 0..b.num_rows() {
                out.push((
                    k.is_valid(i).then(|| k.value(i).to_owned()),
                    id.is_valid(i).then(|| id.value(i).to_owned()),
                ));
            }
        }
    }
    out.sort();
    out
}

/// Three runs writing the same day: one file per run (its pieces as row groups), each indexed.
fn three_runs(lake: &Lake) {
    for run in 0..3 {
        let t = lake.begin(FilterSpec::all()).expect("begin");
        for piece in 0..2 {
            let lines: Vec<String> = (0..5)
                .map(|i| {
                    event(
                        &format!("AKIA{}", (b'A' + i as u8) as char),
                        &format!("2024-01-01T{:02}:{piece}{run}:00Z", 10 + i),
                        &format!("r{run}p{piece}e{i}"),
                    )
                })
                .collect();
            t.write(Table::Events, DAY, &[batch(&lines)])
                .expect("write");
        }
        t.commit(vec![object(&format!("o{run}"), &format!("h{run}"))])
            .expect("commit");
    }
}

#[test]
fn a_files_commit_record_counts_its_key_changes() {
    let dir = tempfile::tempdir().expect("tmp");
    let lake = Lake::create(dir.path()).expect("lake");
    let t = lake.begin(FilterSpec::all()).expect("begin");
    let change = r#"{"eventTime":"2024-01-01T10:00:00Z","eventID":"u1","eventSource":"iam.amazonaws.com","eventName":"UpdateAccessKey","userIdentity":{"type":"IAMUser","accessKeyId":"AKIAA"},"requestParameters":{"accessKeyId":"AKIAB","status":"Inactive","userName":"bob"}}"#;
    let lines = [
        event("AKIAA", "2024-01-01T09:00:00Z", "l1"),
        change.to_owned(),
        event("AKIAC", "2024-01-01T11:00:00Z", "l2"),
    ];
    t.write(Table::Events, DAY, &[batch(&lines)])
        .expect("write");
    let quiet = [event("AKIAA", "2024-01-02T09:00:00Z", "l3")];
    t.write(Table::Events, DAY + 1, &[batch(&quiet)])
        .expect("write");
    t.commit(vec![object("o", "h")]).expect("commit");
    let snap = lake.snapshot().expect("snapshot");
    let mut counts: Vec<(i32, Option<u64>)> = snap
        .table_files(Table::Events)
        .map(|f| (f.day, f.record.stats.as_ref().and_then(|s| s.key_changes)))
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, [(DAY, Some(1)), (DAY + 1, Some(0))]);
}

#[test]
fn a_runs_day_is_one_file_and_the_key_index_finds_each_keys_rows() {
    use keytrail_lake::Relation;
    let dir = tempfile::tempdir().expect("tmp");
    let lake = Lake::create(dir.path()).expect("lake");
    three_runs(&lake);
    let snap = lake.snapshot().expect("snapshot");
    let files: Vec<_> = snap.table_files(Table::Events).collect();
    assert_eq!(files.len(), 3, "one file per run and day");
    assert!(files.iter().all(|f| f.indexed && f.record.rows == 10));
    let stats = files[0].record.stats.as_ref().expect("stats");
    assert_eq!(
        (stats.min_key.as_deref(), stats.max_key.as_deref()),
        (Some("AKIAA"), Some("AKIAE"))
    );
    assert_eq!(stats.key_changes, Some(0));
    assert_eq!(snap.index_files.len(), 3);
    // AKIAC: one run of rows per row group (two pieces) per file.
    let found = snap.lookup(&["AKIAC"], Relation::Held).expect("lookup");
    assert_eq!(found.len(), 6);
    assert!(found.iter().all(|e| e.rows == 1));
    assert!(
        snap.lookup(&["AKIAZ"], Relation::Any)
            .expect("lookup")
            .is_empty()
    );
    // The entries point at the rows that hold the key.
    for e in &found {
        let b = &read_file(&snap.path(&e.file)).expect("read")[0];
        let k = b
            .column_by_name("accesskeyid")
            .expect("k")
            .as_string::<i32>();
        assert_eq!(k.value(e.first_row as usize), "AKIAC");
    }
    assert!(lake.verify().expect("verify").problems.is_empty());
}

#[test]
fn compaction_merges_each_day_keeps_every_row_and_one_index() {
    use keytrail_lake::Relation;
    let dir = tempfile::tempdir().expect("tmp");
    let lake = Lake::create(dir.path()).expect("lake");
    three_runs(&lake);
    let before = rows_of(&lake, Table::Events);
    let kd_before = key_daily_events(&lake);
    // A reader that planned with the old files still reads them after the compaction.
    let old = lake.snapshot().expect("snapshot");
    let r = keytrail_lake::compact::compact(dir.path()).expect("compact");
    assert_eq!(
        (r.partitions, r.files_in, r.files_out, r.rows, r.index_files),
        (1, 3, 1, 30, 3)
    );
    assert_eq!(rows_of(&lake, Table::Events), before);
    assert_eq!(key_daily_events(&lake), kd_before, "key_daily untouched");
    let snap = lake.snapshot().expect("snapshot");
    assert_eq!(snap.table_files(Table::Events).count(), 1);
    assert_eq!(snap.index_files.len(), 1);
    let f = snap.table_files(Table::Events).next().expect("file");
    // Fully sorted now: AKIAC's six rows are one run.
    let found = snap.lookup(&["AKIAC"], Relation::Held).expect("lookup");
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].file.as_str(), found[0].rows),
        (f.record.path.as_str(), 6)
    );
    assert!(lake.verify().expect("verify").problems.is_empty());
    for f in old.table_files(Table::Events) {
        assert!(!old.path(&f.record.path).exists(), "gone from the table");
        let retired = dir
            .path()
            .join("_keytrail/retired")
            .read_dir()
            .expect("retired")
            .map(|e| e.expect("e").path().join(&f.record.path))
            .any(|p| p.exists());
        assert!(retired, "kept for readers: {}", f.record.path);
    }
    // Nothing left to do.
    let again = keytrail_lake::compact::compact(dir.path()).expect("compact");
    assert_eq!((again.partitions, again.files_in), (0, 0));
}

#[test]
fn two_rewrites_of_the_same_files_cannot_both_commit() {
    let dir = tempfile::tempdir().expect("tmp");
    let lake = Lake::create(dir.path()).expect("lake");
    three_runs(&lake);
    let snap = lake.snapshot().expect("snapshot");
    let first = snap
        .table_files(Table::Events)
        .next()
        .expect("file")
        .record
        .path
        .clone();
    let a = lake
        .begin_rewrite(keytrail_lake::KeyDailyMode::Keep)
        .expect("a");
    let b = lake
        .begin_rewrite(keytrail_lake::KeyDailyMode::Keep)
        .expect("b");
    for t in [&a, &b] {
        let rows = read_file(&snap.path(&first)).expect("read");
        t.write(Table::Events, DAY, &rows).expect("write");
        t.replace(&first);
    }
    a.commit(Vec::new()).expect("a commits");
    let err = b.commit(Vec::new()).expect_err("b is refused");
    assert!(
        matches!(err, LakeError::Superseded { count: 1, .. }),
        "{err}"
    );
    assert_eq!(rows_of(&lake, Table::Events).len(), 30, "no row twice");
}

/// A lake as schema version 1 wrote it: the fact columns absent from every events file, no
/// key index, commit records and `lake.json` of version 1. Three days of events.
fn v1_lake(root: &std::path::Path) -> Vec<(Option<String>, Option<String>)> {
    use parquet::arrow::ArrowWriter;
    use parquet::file::metadata::KeyValue;
    use parquet::file::properties::WriterProperties;
    let lake = Lake::create(root).expect("lake");
    for day in 0..3 {
        let t = lake.begin(FilterSpec::all()).expect("begin");
        let lines: Vec<String> = (0..4)
            .map(|i| {
                event(
                    &format!("AKIA{i}"),
                    &format!("2024-01-0{}T0{i}:00:00Z", day + 1),
                    &format!("d{day}e{i}"),
                )
            })
            .collect();
        t.write(Table::Events, DAY + day, &[batch(&lines)])
            .expect("write");
        t.commit(vec![object(&format!("v1-{day}"), &format!("v1h{day}"))])
            .expect("commit");
    }
    let rows = rows_of(&lake, Table::Events);
    let facts: Vec<String> = keytrail_model::schema::fact_fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let snap = lake.snapshot().expect("snapshot");
    for f in snap.table_files(Table::Events) {
        let path = snap.path(&f.record.path);
        let batches = read_file(&path).expect("read");
        let keep: Vec<usize> = (0..batches[0].num_columns())
            .filter(|i| !facts.contains(batches[0].schema().field(*i).name()))
            .collect();
        let props = WriterProperties::builder()
            .set_key_value_metadata(Some(vec![KeyValue::new(
                "keytrail.schema_version".to_owned(),
                "1".to_owned(),
            )]))
            .build();
        let schema = std::sync::Arc::new(batches[0].schema().project(&keep).expect("project"));
        let mut w = ArrowWriter::try_new(
            std::fs::File::create(&path).expect("create"),
            std::sync::Arc::new(arrow::datatypes::Schema::new(schema.fields().clone())),
            Some(props),
        )
        .expect("writer");
        for b in &batches {
            let b = b.project(&keep).expect("project");
            let b = RecordBatch::try_new(
                std::sync::Arc::new(arrow::datatypes::Schema::new(schema.fields().clone())),
                b.columns().to_vec(),
            )
            .expect("batch");
            w.write(&b).expect("write");
        }
        w.close().expect("close");
    }
    let manifest = root.join("_keytrail/manifest");
    for e in std::fs::read_dir(&manifest).expect("manifest") {
        let p = e.expect("e").path();
        let mut c: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&p).expect("read")).expect("json");
        c["schema_version"] = serde_json::json!(1);
        let files: Vec<serde_json::Value> = c["files"]
            .as_array()
            .expect("files")
            .iter()
            .filter(|f| f["table"] != "key_index")
            .map(|f| {
                let mut f = f.clone();
                if let Some(o) = f.as_object_mut() {
                    o.remove("stats");
                }
                let size = std::fs::metadata(root.join(f["path"].as_str().expect("path")))
                    .expect("file")
                    .len();
                f["bytes"] = serde_json::json!(size);
                f
            })
            .collect();
        c["files"] = serde_json::json!(files);
        std::fs::write(&p, serde_json::to_vec_pretty(&c).expect("json")).expect("write");
    }
    let _ = std::fs::remove_dir_all(root.join("_keytrail/index"));
    let info = root.join("_keytrail/lake.json");
    let mut i: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&info).expect("read")).expect("json");
    i["schema_version"] = serde_json::json!(1);
    std::fs::write(&info, serde_json::to_vec(&i).expect("json")).expect("write");
    rows
}

fn check_upgraded(root: &std::path::Path, want: &[(Option<String>, Option<String>)]) {
    let lake = Lake::open(root).expect("version 2 now");
    assert_eq!(rows_of(&lake, Table::Events), want);
    let snap = lake.snapshot().expect("snapshot");
    assert_eq!(snap.table_files(Table::Events).count(), 3);
    assert!(snap.table_files(Table::Events).all(|f| f.indexed));
    for f in snap.table_files(Table::Events) {
        let b = &read_file(&snap.path(&f.record.path)).expect("read")[0];
        let denied = b
            .column_by_name("denied")
            .expect("the denied fact")
            .as_boolean();
        assert_eq!(denied.true_count(), 0);
    }
    let v = lake.verify().expect("verify");
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert_eq!(v.rows.get("events"), Some(&12));
    assert_eq!(v.rows.get("key_daily"), Some(&12));
}

#[test]
fn an_old_lake_is_refused_until_upgraded_exactly_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let want = v1_lake(dir.path());
    let err = Lake::open(dir.path()).expect_err("version 1").to_string();
    assert!(
        err.contains("schema version 1") && err.contains("keytrail lake upgrade"),
        "{err}"
    );
    let r = keytrail_lake::upgrade::upgrade(dir.path(), |_| {}).expect("upgrade");
    assert_eq!(
        (r.from_version, r.to_version, r.days, r.files, r.rows),
        (1, 2, 3, 3, 12)
    );
    check_upgraded(dir.path(), &want);
    let again = keytrail_lake::upgrade::upgrade(dir.path(), |_| {}).expect("again");
    assert_eq!((again.from_version, again.days), (2, 0));
}

/// Run by [`an_upgrade_killed_at_any_point_finishes_on_the_next_run`] in a child process,
/// which `KEYTRAIL_CRASH_AT` aborts.
#[test]
fn upgrade_child() {
    if let Ok(root) = std::env::var("KEYTRAIL_TEST_UPGRADE_CHILD") {
        let _ = keytrail_lake::upgrade::upgrade(std::path::Path::new(&root), |_| {});
    }
}

#[test]
fn an_upgrade_killed_at_any_point_finishes_on_the_next_run() {
    for point in ["before-commit", "after-commit", "mid-publish"] {
        let dir = tempfile::tempdir().expect("tmp");
        let want = v1_lake(dir.path());
        let out = std::process::Command::new(std::env::current_exe().expect("exe"))
            .args(["--exact", "upgrade_child", "--nocapture"])
            .env("KEYTRAIL_TEST_UPGRADE_CHILD", dir.path())
            .env("KEYTRAIL_CRASH_AT", point)
            .output()
            .expect("child");
        assert!(!out.status.success(), "{point}: the child was killed");
        assert!(Lake::open(dir.path()).is_err(), "{point}: still version 1");
        let r = keytrail_lake::upgrade::upgrade(dir.path(), |_| {}).expect("upgrade");
        assert_eq!(r.from_version, 1, "{point}");
        check_upgraded(dir.path(), &want);
    }
}

#[test]
fn a_run_over_more_days_than_open_files_closes_the_oldest_and_keeps_every_row() {
    use keytrail_lake::MAX_OPEN_FILES;
    let dir = tempfile::tempdir().expect("tmp");
    let lake = Lake::create(dir.path()).expect("lake");
    let t = lake.begin(FilterSpec::all()).expect("begin");
    let days = MAX_OPEN_FILES as i32 + 8;
    let date = |d: i32| {
        chrono::DateTime::from_timestamp(i64::from(DAY + d) * 86_400, 0)
            .expect("date")
            .format("%Y-%m-%dT10:00:00Z")
            .to_string()
    };
    // Each day once, in order, then the first day again: its file was closed by then.
    let mut writes: Vec<(i32, String)> = (0..days).map(|d| (d, format!("d{d}-a"))).collect();
    writes.push((0, "d0-late".to_owned()));
    for (d, id) in writes {
        let line = event("AKIAA", &date(d), &id);
        t.write(Table::Events, DAY + d, &[batch(&[line])])
            .expect("write");
    }
    t.commit(vec![object("o", "h")]).expect("commit");

    let snap = lake.snapshot().expect("snapshot");
    let files: Vec<_> = snap.table_files(Table::Events).collect();
    // One file per day, and a second for the first day, whose rows came after it was closed.
    assert_eq!(files.len(), days as usize + 1);
    let first: Vec<_> = files
        .iter()
        .filter(|f| f.record.path.contains(&format!("date={}", &date(0)[..10])))
        .collect();
    assert_eq!(first.len(), 2, "{first:?}");
    let rows = rows_of(&lake, Table::Events);
    assert_eq!(rows.len(), days as usize + 1);
    assert!(rows.contains(&(Some("AKIAA".into()), Some("d0-late".into()))));
    // key_daily counts every row of the day, whichever file holds it.
    let kd = key_daily_events(&lake);
    assert_eq!(kd, vec![("AKIAA".to_owned(), 2)]);
    assert!(lake.verify().expect("verify").problems.is_empty());
}

fn staged_event_files(root: &std::path::Path) -> usize {
    fn walk(dir: &std::path::Path, n: &mut usize) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, n);
            } else if p.extension().is_some_and(|x| x == "parquet")
                && p.to_string_lossy().contains("events/date=")
            {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(&root.join("_keytrail/staging"), &mut n);
    n
}

#[test]
fn a_scope_adopted_joins_the_run_and_one_dropped_leaves_nothing() {
    use keytrail_lake::Relation;
    use std::sync::Arc;
    let dir = tempfile::tempdir().expect("tmp");
    let lake = Lake::create(dir.path()).expect("lake");
    let t = Arc::new(run_of_one_event(&lake));
    let kept = t.scope();
    kept.write(
        Table::Events,
        DAY,
        &[batch(&[event("AKIAB", "2024-01-01T10:00:00Z", "e2")])],
    )
    .expect("write");
    let dropped = t.scope();
    dropped
        .write(
            Table::Events,
            DAY,
            &[batch(&[
                event("AKIAC", "2024-01-01T11:00:00Z", "e3"),
                event("AKIAA", "2024-01-01T12:00:00Z", "e4"),
            ])],
        )
        .expect("write");
    assert_eq!(staged_event_files(dir.path()), 3);
    drop(dropped);
    assert_eq!(staged_event_files(dir.path()), 2);
    t.adopt(kept).expect("adopt");
    let t = Arc::try_unwrap(t).map_err(|_| "shared").expect("one owner");
    let c = t
        .commit(vec![object("a", "h1"), object("b", "h2")])
        .expect("commit")
        .expect("some");
    assert_eq!(c.files.iter().filter(|f| f.table == "events").count(), 2);
    assert_eq!(
        key_daily_events(&lake),
        [("AKIAA".into(), 1), ("AKIAB".into(), 1)]
    );
    let v = lake.verify().expect("verify");
    assert_eq!(v.problems, Vec::<String>::new());
    assert_eq!(v.rows.get("events"), Some(&2));
    let snap = lake.snapshot().expect("snapshot");
    assert_eq!(
        snap.lookup(&["AKIAB"], Relation::Held)
            .expect("lookup")
            .len(),
        1
    );
    assert!(
        snap.lookup(&["AKIAC"], Relation::Any)
            .expect("lookup")
            .is_empty()
    );
    assert!(
        !dir.path()
            .join("_keytrail/staging")
            .read_dir()
            .expect("staging")
            .any(|_| true)
    );
}

/// A new lake holding `lines` as one day's events, committed: its directory (to outlive the
/// rest), its snapshot, and its one events file, opened.
fn one_events_file(
    lines: &[String],
) -> (tempfile::TempDir, keytrail_lake::Snapshot, std::fs::File) {
    let dir = tempfile::tempdir().expect("tmp");
    let lake = Lake::create(dir.path()).expect("lake");
    run_writing(&lake, lines)
        .commit(vec![object("o", "h")])
        .expect("commit");
    let snap = lake.snapshot().expect("snapshot");
    let files: Vec<_> = snap.table_files(Table::Events).collect();
    assert_eq!(files.len(), 1);
    let file = std::fs::File::open(snap.path(&files[0].record.path)).expect("open");
    (dir, snap, file)
}

#[test]
fn long_text_columns_are_zstd_and_the_others_snappy() {
    use parquet::basic::Compression;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let lines: Vec<String> = (0..50)
        .map(|i| {
            format!(
                r#"{{"eventTime":"2024-01-01T00:00:{:02}Z","eventID":"e{i:03}","eventName":"GetObject","userAgent":"aws-cli/2.{i}","requestParameters":{{"bucketName":"b{i}"}},"userIdentity":{{"type":"IAMUser","accessKeyId":"AKIA{:04}"}}}}"#,
                i % 60,
                i % 7,
            )
        })
        .collect();
    let (_dir, _snap, file) = one_events_file(&lines);
    let reader = SerializedFileReader::new(file).expect("reader");
    let rg = reader.metadata().row_group(0);
    let codec = |name: &str| {
        rg.columns()
            .iter()
            .find(|c| c.column_path().string() == name)
            .map(|c| c.compression())
            .expect("column")
    };
    for name in ["requestparameters", "eventid", "useragent"] {
        assert!(
            matches!(codec(name), Compression::ZSTD(_)),
            "{name}: {:?}",
            codec(name)
        );
    }
    for name in ["accesskeyid", "eventname", "eventtime"] {
        assert_eq!(codec(name), Compression::SNAPPY, "{name}");
    }
}

#[test]
fn a_keys_rows_lie_on_few_pages_of_the_large_columns() {
    use keytrail_lake::Relation;
    use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
    // 30 keys of 200 events each, every event with about 200 bytes of request parameters.
    let lines: Vec<String> = (0..6000)
        .map(|i| {
            format!(
                r#"{{"eventTime":"2024-01-01T{:02}:{:02}:{:02}Z","eventID":"e{i:05}","eventName":"GetObject","requestParameters":{{"bucketName":"bucket-{}","key":"{}"}},"userIdentity":{{"type":"IAMUser","accessKeyId":"AKIA{:04}"}}}}"#,
                i / 3600 % 24,
                i / 60 % 60,
                i % 60,
                i % 97,
                "x".repeat(150 + i % 50),
                i % 30,
            )
        })
        .collect();
    let (_dir, snap, file) = one_events_file(&lines);
    let meta = ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Required)
        .parse_and_finish(&file)
        .expect("metadata");
    let leaf = |name: &str| {
        meta.file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .position(|c| c.path().string() == name)
            .expect("column")
    };
    let offsets = meta.offset_index().expect("offset index");
    // Every page of a column as file-wide row ranges `[start, end)`.
    let pages = |name: &str| {
        let mut out = Vec::new();
        let mut base = 0u64;
        for (rg, cols) in meta.row_groups().iter().zip(offsets) {
            let locs = cols[leaf(name)].page_locations();
            let rows = rg.num_rows() as u64;
            for (i, p) in locs.iter().enumerate() {
                let end = locs.get(i + 1).map_or(rows, |n| n.first_row_index as u64);
                out.push((base + p.first_row_index as u64, base + end));
            }
            base += rows;
        }
        out
    };
    let request = pages("requestparameters");
    assert!(
        request.len() >= 5,
        "1.3 MB of request parameters in pages of at most 64 KiB (cut at 1,024-row batches): {} page(s)",
        request.len()
    );
    assert!(request.iter().all(|(a, b)| b - a <= 1024), "{request:?}");
    // A small column is cut by rows: pages of at most 2,048.
    let names = pages("eventname");
    assert!(
        names.len() >= 3 && names.iter().all(|(a, b)| b - a <= 2048),
        "{names:?}"
    );

    // One key's rows (the index says where) are on at most two of those pages.
    let found = snap.lookup(&["AKIA0007"], Relation::Held).expect("lookup");
    assert_eq!(found.iter().map(|e| e.rows).sum::<u64>(), 200);
    let touched = request
        .iter()
        .filter(|(start, end)| {
            found
                .iter()
                .any(|e| e.first_row < *end && e.first_row + e.rows > *start)
        })
        .count();
    assert!(
        (1..=2).contains(&touched),
        "{touched} of {} pages",
        request.len()
    );
}

#[test]
fn verify_names_a_record_whose_time_range_is_not_its_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let lake = Lake::create(dir.path()).expect("lake");
    let t = run_of_one_event(&lake);
    t.commit(vec![object("a", "h1")]).expect("commit");
    assert!(lake.verify().expect("verify").problems.is_empty());
    // Readers answer the lake's time range from these records: one that lies is named.
    let manifest = dir.path().join("_keytrail/manifest");
    let record = std::fs::read_dir(&manifest)
        .expect("manifest")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a commit record");
    let text = std::fs::read_to_string(&record).expect("read");
    let nine = "1704099600000"; // 2024-01-01T09:00:00Z
    assert_eq!(
        text.matches(&format!("\"max_time\": {nine}")).count(),
        2,
        "{text}"
    );
    std::fs::write(
        &record,
        text.replace(
            &format!("\"max_time\": {nine}"),
            "\"max_time\": 1704103200000",
        ),
    )
    .expect("write");
    let mut problems = lake.verify().expect("verify").problems;
    problems.sort();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with("events/date=2024-01-01/"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("key_daily/date=2024-01-01/"),
        "{problems:?}"
    );
    for p in &problems {
        assert!(
            p.ends_with(
                "its time range is 1704099600000 to 1704099600000 (ms since the epoch), \
                 the manifest recorded 1704099600000 to 1704103200000"
            ),
            "{p}"
        );
    }
}
