//! A run killed at any point, run again, ends with exactly the rows of a clean run.
//!
//! `KEYTRAIL_CRASH_AT` makes the process abort (as a power cut would stop it) at a named point
//! of the commit protocol: after the data files are staged but before the commit record
//! (`before-commit`), right after the commit record (`after-commit`), and after the first file
//! was published (`mid-publish`).

use std::path::Path;

use crate::util::*;

fn clean_rows(logs: &Path, tmp: &Path) -> (Vec<Row>, Vec<String>) {
    let clean = tmp.join("clean");
    ingest_json(&[logs], &clean, &[], 0);
    (rows(&clean, "events"), table_text(&clean, "key_daily"))
}

fn crash_then_rerun(point: &str) {
    crash_then_rerun_with(point, &[]);
}

fn crash_then_rerun_with(point: &str, args: &[&str]) {
    let tmp = tempfile::tempdir().expect("tmp");
    let logs = testdata().join("stratus");
    let lake = tmp.path().join("lake");
    let out = run(keytrail()
        .arg("ingest")
        .arg(&logs)
        .arg("--lake")
        .arg(&lake)
        .arg("--quiet")
        .args(args)
        .env("KEYTRAIL_CRASH_AT", point));
    assert!(!out.status.success(), "{point}: the run was killed");
    assert_eq!(
        out.status.code(),
        None,
        "{point}: killed by a signal, not exited"
    );

    // Whatever the lake looks like now, a rerun ends where a clean run does.
    let s = ingest_json(&[&logs], &lake, &[], 0);
    assert_balanced(&s);
    let (events, key_daily) = clean_rows(&logs, tmp.path());
    assert_eq!(rows(&lake, "events"), events, "{point}: events");
    assert_eq!(
        table_text(&lake, "key_daily"),
        key_daily,
        "{point}: key_daily"
    );
    let out = run_code(keytrail().args(["lake", "verify", "--lake"]).arg(&lake), 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok: every file matches the manifest"));
    // A third run adds nothing.
    let s = ingest_json(&[&logs], &lake, &[], 0);
    assert_eq!(s["objects"]["read"], 0);
}

#[test]
fn killed_before_the_commit_record() {
    crash_then_rerun("before-commit");
}

#[test]
fn killed_while_reading_an_object_record_by_record() {
    // Every object is read record by record, so the first stretch of the first one is
    // being written to its scope's staged files when the run dies.
    crash_then_rerun_with("mid-stream", &["--stream-above", "1", "--threads", "1"]);
}

#[test]
fn killed_right_after_the_commit_record() {
    crash_then_rerun("after-commit");
}

#[test]
fn killed_while_publishing_files() {
    crash_then_rerun("mid-publish");
}

#[test]
fn killed_before_commit_leaves_no_visible_rows() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let out = run(keytrail()
        .arg("ingest")
        .arg(testdata().join("stratus"))
        .arg("--lake")
        .arg(&lake)
        .arg("--quiet")
        .env("KEYTRAIL_CRASH_AT", "before-commit"));
    assert_eq!(out.status.code(), None);
    // Readers of the table directories see nothing of the dead run.
    assert!(table_files(&lake, "events").is_empty());
    let out = run_code(keytrail().args(["lake", "recover", "--lake"]).arg(&lake), 0);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("deleted the staged files of uncommitted run")
    );
}

/// The sample split in two sets of objects over the same days: us-east-1, and the rest.
fn two_halves(tmp: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let all = tmp.join("logs");
    copy_tree(&testdata().join("sample"), &all);
    let first = all.join("AWSLogs/111111111111/CloudTrail/us-east-1");
    assert!(first.is_dir());
    (first, all)
}

/// A lake that ingested the first half, then everything, without a crash.
fn clean_two_runs(first: &Path, all: &Path, tmp: &Path) -> (Vec<Row>, Vec<String>) {
    let clean = tmp.join("clean");
    ingest_json(&[first], &clean, &[], 0);
    ingest_json(&[all], &clean, &[], 0);
    (rows(&clean, "events"), table_text(&clean, "key_daily"))
}

fn killed(cmd: &mut std::process::Command, what: &str) {
    let out = run(cmd);
    assert_eq!(
        out.status.code(),
        None,
        "{what}: killed by a signal, not exited: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The second run into a lake that already holds its days is killed at `point`: its
/// `key_daily` merge replaces files of those days. Run again, the lake ends as two clean runs.
fn crash_a_later_run(point: &str) {
    let tmp = tempfile::tempdir().expect("tmp");
    let (first, all) = two_halves(tmp.path());
    let lake = tmp.path().join("lake");
    let s = ingest_json(&[&first], &lake, &[], 0);
    assert!(s["events"]["written"].as_u64().expect("n") > 0);
    let days_before = table_files(&lake, "key_daily").len();
    killed(
        keytrail()
            .arg("ingest")
            .arg(&all)
            .arg("--lake")
            .arg(&lake)
            .arg("--quiet")
            .env("KEYTRAIL_CRASH_AT", point),
        point,
    );
    let s = ingest_json(&[&all], &lake, &[], 0);
    assert_balanced(&s);
    let (events, key_daily) = clean_two_runs(&first, &all, tmp.path());
    assert_eq!(rows(&lake, "events"), events, "{point}: events");
    assert_eq!(
        table_text(&lake, "key_daily"),
        key_daily,
        "{point}: key_daily"
    );
    // One key_daily file per day: the replaced files are gone.
    let kd = table_files(&lake, "key_daily");
    let mut days: Vec<_> = kd.iter().map(|f| f.parent().expect("day")).collect();
    days.dedup();
    assert_eq!(days.len(), kd.len(), "{point}: one key_daily file per day");
    assert!(kd.len() >= days_before);
    run_code(keytrail().args(["lake", "verify", "--lake"]).arg(&lake), 0);
    let s = ingest_json(&[&all], &lake, &[], 0);
    assert_eq!(s["objects"]["read"], 0, "{point}: nothing left to read");
}

#[test]
fn a_later_run_killed_before_its_commit_record() {
    crash_a_later_run("before-commit");
}

#[test]
fn a_later_run_killed_right_after_its_commit_record() {
    crash_a_later_run("after-commit");
}

#[test]
fn a_later_run_killed_while_publishing_replaced_key_daily_files() {
    crash_a_later_run("mid-publish");
}

/// Recovery itself killed half-way (by `lake recover`, then by the recovery a run starts
/// with), then finished by the next run.
#[test]
fn recovery_killed_half_way_is_finished_by_the_next_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (first, all) = two_halves(tmp.path());
    let lake = tmp.path().join("lake");
    ingest_json(&[&first], &lake, &[], 0);
    let ingest_all = |point: &str| {
        let mut c = keytrail();
        c.arg("ingest")
            .arg(&all)
            .arg("--lake")
            .arg(&lake)
            .arg("--quiet")
            .env("KEYTRAIL_CRASH_AT", point);
        c
    };
    // Committed, not published.
    killed(&mut ingest_all("after-commit"), "after-commit");
    // Recovery publishes it: killed after its first file, twice.
    killed(
        keytrail()
            .args(["lake", "recover", "--lake"])
            .arg(&lake)
            .env("KEYTRAIL_CRASH_AT", "mid-publish"),
        "lake recover",
    );
    killed(
        &mut ingest_all("mid-publish"),
        "recovery at the start of a run",
    );
    // The run committed: its objects are read no more; recovery finishes its files.
    let s = ingest_json(&[&all], &lake, &[], 0);
    assert_eq!(s["objects"]["read"], 0);
    let (events, key_daily) = clean_two_runs(&first, &all, tmp.path());
    assert_eq!(rows(&lake, "events"), events);
    assert_eq!(table_text(&lake, "key_daily"), key_daily);
    run_code(keytrail().args(["lake", "verify", "--lake"]).arg(&lake), 0);
}
