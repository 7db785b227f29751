//! Issue 13, part 5: faults on every path. A damaged lake is caught by `keytrail lake verify`,
//! each damage named, exit status 1.

use std::fs;
use std::path::{Path, PathBuf};

use crate::util::*;

/// The bundled sample's lake, made once; each test damages its own copy.
fn sample_lake() -> &'static Path {
    use std::sync::OnceLock;
    static LAKE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &LAKE
        .get_or_init(|| {
            let tmp = tempfile::tempdir().expect("tmp");
            let lake = tmp.path().join("lake");
            ingest_json(&[&testdata().join("sample")], &lake, &[], 0);
            (tmp, lake)
        })
        .1
}

fn copy_of_lake(tmp: &Path) -> PathBuf {
    let lake = tmp.join("lake");
    copy_tree(sample_lake(), &lake);
    lake
}

/// `lake verify`: its exit status and problem lines.
fn verify(lake: &Path) -> (i32, Vec<String>) {
    let out = run(keytrail()
        .args(["lake", "verify", "--json", "--lake"])
        .arg(lake));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let problems = v["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p.as_str().expect("text").to_owned())
        .collect();
    (out.status.code().expect("exited"), problems)
}

/// The lake-relative path of a file of a table (the `n`th, in name order).
fn rel(lake: &Path, table: &str, n: usize) -> String {
    let f = &table_files(lake, table)[n];
    f.strip_prefix(lake)
        .expect("in the lake")
        .to_string_lossy()
        .replace('\\', "/")
}

#[test]
fn an_undamaged_lake_verifies() {
    let (code, problems) = verify(sample_lake());
    assert_eq!((code, problems), (0, Vec::<String>::new()));
}

#[test]
fn every_kind_of_damage_is_named_and_fails_verify() {
    type Damage = fn(&Path) -> Vec<String>;
    let cases: [(&str, Damage); 7] = [
        ("missing", |lake| {
            let r = rel(lake, "events", 0);
            fs::remove_file(lake.join(&r)).expect("rm");
            vec![format!("{r}: missing")]
        }),
        ("extra", |lake| {
            let r = rel(lake, "events", 0);
            let extra = r.replace(".parquet", "-copy.parquet");
            fs::copy(lake.join(&r), lake.join(&extra)).expect("cp");
            vec![format!("{extra}: not in the manifest")]
        }),
        ("truncated", |lake| {
            let r = rel(lake, "events", 1);
            let f = fs::OpenOptions::new()
                .write(true)
                .open(lake.join(&r))
                .expect("open");
            let len = f.metadata().expect("meta").len();
            f.set_len(len / 2).expect("truncate");
            vec![format!(
                "{r}: not a readable Parquet file (truncated or overwritten?)"
            )]
        }),
        ("foreign", |lake| {
            let r = rel(lake, "events", 0);
            let dir = r.rsplit_once('/').expect("dir").0.to_owned();
            fs::write(lake.join(&dir).join("notes.txt"), b"hello").expect("write");
            fs::create_dir_all(lake.join("insights/tmp")).expect("mkdir");
            vec![
                format!("{dir}/notes.txt: a foreign file, not in the manifest"),
                "insights/tmp: not a date partition".to_owned(),
            ]
        }),
        ("wrong row count", |lake| {
            // The commit record says one row more than the file holds.
            let r = rel(lake, "events", 0);
            let dir = lake.join("_keytrail/manifest");
            let record = fs::read_dir(&dir)
                .expect("manifest")
                .map(|e| e.expect("entry").path())
                .find(|p| p.extension().is_some_and(|e| e == "json"))
                .expect("a commit record");
            let mut commit: serde_json::Value =
                serde_json::from_slice(&fs::read(&record).expect("read")).expect("json");
            let file = commit["files"]
                .as_array_mut()
                .expect("files")
                .iter_mut()
                .find(|f| f["path"] == r.as_str())
                .expect("the file's record");
            let rows = file["rows"].as_u64().expect("rows");
            file["rows"] = (rows + 1).into();
            fs::write(&record, serde_json::to_vec(&commit).expect("json")).expect("write");
            vec![format!(
                "{r}: {rows} rows, the manifest recorded {}",
                rows + 1
            )]
        }),
        ("wrong partition", |lake| {
            let r = rel(lake, "events", 0);
            let (dir, name) = r.rsplit_once('/').expect("dir");
            let other = rel(lake, "events", table_files(lake, "events").len() - 1);
            let other_dir = other.rsplit_once('/').expect("dir").0;
            assert_ne!(dir, other_dir);
            fs::rename(lake.join(&r), lake.join(other_dir).join(name)).expect("mv");
            vec![
                format!("{r}: missing"),
                format!(
                    "{other_dir}/{name}: not in the manifest, which has this file at {r} (moved to the wrong partition?)"
                ),
            ]
        }),
        ("rows of another day", |lake| {
            // A file replaced by one of another day under its own name: the rows and the
            // partition disagree, and so do the file and its record's time range (and its
            // row count).
            let files = table_files(lake, "key_daily");
            fs::copy(&files[files.len() - 1], &files[0]).expect("cp");
            let r = rel(lake, "key_daily", 0);
            vec![
                format!("{r}: holds rows of "),
                format!("{r}: its time range is "),
            ]
        }),
    ];
    for (what, damage) in cases {
        let tmp = tempfile::tempdir().expect("tmp");
        let lake = copy_of_lake(tmp.path());
        let want = damage(&lake);
        let (code, problems) = verify(&lake);
        assert_eq!(code, 1, "{what}: {problems:?}");
        for w in &want {
            assert!(
                problems.iter().any(|p| p.starts_with(w.as_str())),
                "{what}: no problem starting {w:?} in {problems:?}"
            );
        }
        // Nothing but the damage is reported.
        assert!(
            problems.len() <= want.len() + 1,
            "{what}: {problems:?} for {want:?}"
        );
    }
}

// --- S3 faults on every operation, for an S3 source and for a lake in S3 ------------------

use std::collections::BTreeSet;
use std::time::Duration;

use keytrail_ingest::s3::S3Options;
use keytrail_ingest::{IngestOptions, Input, NoProgress, ingest};

use crate::s3server::{ReqFault, S3Server};

const US: &str = "AWSLogs/111111111111/CloudTrail/us-east-1";

fn sample_server() -> S3Server {
    let s = S3Server::start();
    s.put_tree("trail", "", &testdata().join("sample"));
    s
}

fn metadata() -> std::net::TcpListener {
    let m = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    m.set_nonblocking(true).expect("nonblocking");
    m
}

/// The sample ingested into a local lake, for comparison.
fn clean(tmp: &Path) -> PathBuf {
    let lake = tmp.join("clean");
    ingest_json(&[&testdata().join("sample")], &lake, &[], 0);
    lake
}

/// Commit records under a lake in S3 (names).
fn records(server: &S3Server, prefix: &str) -> Vec<String> {
    let dir = server
        .bucket("lake")
        .join(prefix)
        .join("_keytrail/manifest");
    let mut out: Vec<String> = fs::read_dir(&dir)
        .map(|d| {
            d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn a_commit_record_written_but_answered_with_an_error_commits_the_run_once() {
    let server = sample_server();
    let tmp = tempfile::tempdir().expect("tmp");
    let m = metadata();
    // S3 stores the record, then answers 500: the SDK sends the PUT again, and its
    // `If-None-Match: *` now fails against the run's own record.
    server.fault_requests(
        "PUT",
        "/lake/kt/_keytrail/manifest/",
        &[ReqFault::After(500)],
    );
    let ingest = |code| {
        let out = run_code(
            crate::s3::cli(&server, &m)
                .args(["s3://trail", "--lake", "s3://lake/kt", "--json"])
                .arg("--work-dir")
                .arg(tmp.path()),
            code,
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    };
    let s = ingest(0);
    assert_eq!(server.unused_request_faults(), 0, "the fault was used");
    assert_eq!(s["commit"], 1, "{s}");
    assert_eq!(records(&server, "kt"), ["0000000001.json"]);
    let again = ingest(0);
    assert!(again["commit"].is_null(), "{again}");
    let lake_dir = server.bucket("lake").join("kt");
    let clean = clean(tmp.path());
    assert_eq!(rows(&lake_dir, "events"), rows(&clean, "events"));
    assert_eq!(
        table_text(&lake_dir, "key_daily"),
        table_text(&clean, "key_daily")
    );
}

#[test]
fn one_failure_on_every_lake_operation_is_retried() {
    let server = sample_server();
    let tmp = tempfile::tempdir().expect("tmp");
    let m = metadata();
    let once = [ReqFault::Status(503)];
    // Listing the source, GETting a source object, staging an upload, the commit record
    // (refused before it is written), copying a staged file into place, listing the lake.
    server.fault_requests("GET", "/trail?list-type=2", &once);
    server.fault_requests(
        "GET",
        &format!("/trail/{US}/2024/11/30/"),
        &[ReqFault::Status(500)],
    );
    server.fault_requests(
        "PUT",
        "/lake/kt/_keytrail/staging/",
        &[ReqFault::Status(500)],
    );
    server.fault_requests(
        "PUT",
        "/lake/kt/_keytrail/manifest/",
        &[ReqFault::Status(500)],
    );
    server.fault_requests("PUT", "/lake/kt/events/", &[ReqFault::Status(500)]);
    server.fault_requests("GET", "/lake?list-type=2", &once);
    let out = run_code(
        crate::s3::cli(&server, &m)
            .args(["s3://trail", "--lake", "s3://lake/kt", "--json"])
            .arg("--work-dir")
            .arg(tmp.path()),
        0,
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(server.unused_request_faults(), 0, "every fault was used");
    assert_eq!(s["objects"]["failed"], 0, "{s}");
    assert_eq!(records(&server, "kt"), ["0000000001.json"]);
    let lake_dir = server.bucket("lake").join("kt");
    let clean = clean(tmp.path());
    assert_eq!(rows(&lake_dir, "events"), rows(&clean, "events"));
    assert_eq!(
        table_text(&lake_dir, "key_daily"),
        table_text(&clean, "key_daily")
    );
}

#[test]
fn a_multipart_part_that_fails_once_is_sent_again() {
    let server = S3Server::start();
    server.bucket("lake");
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("big.parquet");
    let bytes: Vec<u8> = (0..11u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(&path, &bytes).expect("write");
    server.fault_requests("PUT", "partNumber=2", &[ReqFault::Status(500)]);
    let s3 = S3Options::default();
    let lake = keytrail_ingest::s3lake::S3Lake::new(
        server.client(&s3),
        keytrail_ingest::s3::S3Uri::parse("s3://lake/parts")
            .expect("s3")
            .expect("uri"),
        keytrail_ingest::s3lake::S3LakeOptions {
            part_size: 5 << 20,
            ..Default::default()
        },
    );
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(lake.upload(&path, "parts/events/big.parquet"))
        .expect("upload");
    assert_eq!(server.unused_request_faults(), 0);
    let stored = fs::read(server.bucket("lake").join("parts/events/big.parquet")).expect("read");
    assert!(stored == bytes, "the object is the file, byte for byte");
}

#[test]
fn copies_that_keep_failing_after_the_commit_are_finished_by_the_next_run() {
    let server = sample_server();
    let tmp = tempfile::tempdir().expect("tmp");
    let m = metadata();
    server.fault_requests("PUT", "/lake/kt/events/", &[ReqFault::Status(500); 40]);
    let ingest = |code| {
        run_code(
            crate::s3::cli(&server, &m)
                .args(["s3://trail", "--lake", "s3://lake/kt", "--json"])
                .arg("--work-dir")
                .arg(tmp.path()),
            code,
        )
    };
    let out = ingest(2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the run was committed (sequence 1)") && err.contains("finishes it"),
        "{err}"
    );
    server.clear_faults();
    let out = ingest(0);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(s["commit"].is_null(), "the objects were committed: {s}");
    let lake_dir = server.bucket("lake").join("kt");
    let clean = clean(tmp.path());
    assert_eq!(rows(&lake_dir, "events"), rows(&clean, "events"));
    assert_eq!(records(&server, "kt"), ["0000000001.json"]);
}

#[test]
fn source_objects_refused_missing_or_hanging_fail_alone() {
    let server = sample_server();
    let day = format!("{US}/2024/11/26");
    let mut names: Vec<String> = fs::read_dir(server.bucket("trail").join(&day))
        .expect("day")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 3, "{names:?}");
    let key = |i: usize| format!("{day}/{}", names[i]);
    server.fault_requests(
        "GET",
        &format!("/trail/{}", key(0)),
        &[ReqFault::Status(403); 10],
    );
    server.fault_requests(
        "GET",
        &format!("/trail/{}", key(1)),
        &[ReqFault::Status(404); 10],
    );
    server.fault_requests(
        "GET",
        &format!("/trail/{}", key(2)),
        &[ReqFault::Hang(Duration::from_secs(4)); 10],
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let s3 = S3Options {
        attempt_timeout: Duration::from_secs(1),
        max_attempts: 2,
        ..S3Options::default()
    };
    let mut o = IngestOptions::with_inputs(
        vec![Input::parse("s3://trail").expect("input")],
        tmp.path().join("lake"),
    );
    o.threads = 2;
    o.s3_client = Some(server.client(&s3));
    o.s3 = s3;
    let s = ingest(&o, &NoProgress).expect("the run goes on");
    assert!(s.balances());
    let failed: BTreeSet<(String, bool)> = s
        .failures
        .iter()
        .map(|f| {
            let said = f.reason.contains("AccessDenied")
                || f.reason.contains("NoSuchKey")
                || f.reason.to_lowercase().contains("timeout")
                || f.reason.to_lowercase().contains("timed out");
            (f.object.clone(), said)
        })
        .collect();
    let want: BTreeSet<(String, bool)> = (0..3)
        .map(|i| (format!("s3://trail/{}", key(i)), true))
        .collect();
    assert_eq!(failed, want, "{:#?}", s.failures);
    assert_eq!(s.objects.failed, 3);
    assert!(s.objects.read > 20, "the rest is read: {s:#?}");
}

#[test]
fn a_source_listing_refused_stops_the_run_naming_it_and_commits_nothing() {
    let server = sample_server();
    let tmp = tempfile::tempdir().expect("tmp");
    let m = metadata();
    server.fault_requests("GET", "/trail?list-type=2", &[ReqFault::Status(403); 10]);
    let lake = tmp.path().join("lake");
    let out = run_code(
        crate::s3::cli(&server, &m)
            .arg("s3://trail")
            .arg("--lake")
            .arg(&lake),
        2,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("s3://trail/") && err.contains("cannot list"),
        "{err}"
    );
    assert!(err.contains("AccessDenied"), "{err}");
    assert!(table_files(&lake, "events").is_empty());
}
