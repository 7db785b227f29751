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
    let tmp = tempfile::tempdir().expect("tmp");
    let logs = testdata().join("stratus");
    let lake = tmp.path().join("lake");
    let out = run(keytrail()
        .arg("ingest")
        .arg(&logs)
        .arg("--lake")
        .arg(&lake)
        .arg("--quiet")
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
