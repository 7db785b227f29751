//! The query commands on a lake in S3 (the test server, `s3server.rs`), read in place: every
//! command answers exactly as on a downloaded copy of the same lake, a one-key question fetches
//! only the data files the key index names (none for a key the lake has never seen), throttling
//! is retried, and `lake verify` checks the bucket against the manifest.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use keytrail_lake::{Lake, Relation};
use keytrail_model::Table;

use crate::s3::{cli, s3_env, sample_server};
use crate::s3server::{Fault, Logged, S3Server};
use crate::util::*;

const URI: &str = "s3://lake/kt";
const LEAKED: &str = "AKIARTXV5AHDZMKNCBCQ";
/// A session key of the sample, used on one day only (3 events).
const ONE_DAY: &str = "ASIARTXV5AHDYHPGSGN6";
const ABSENT: &str = "AKIAZZZZZZZZZZZZZZZZ";

/// The sample ingested into `s3://lake/kt` on a test server, and a downloaded copy of it.
struct Fixture {
    server: S3Server,
    metadata: TcpListener,
    copy: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let server = sample_server();
        let metadata = TcpListener::bind("127.0.0.1:0").expect("bind");
        let tmp = tempfile::tempdir().expect("tmp");
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&work).expect("work dir");
        run_code(
            cli(&server, &metadata)
                .args(["s3://trail/AWSLogs/", "--lake", URI, "--quiet"])
                .arg("--work-dir")
                .arg(&work),
            0,
        );
        let copy = tmp.path().join("copy");
        copy_tree(&server.bucket("lake").join("kt"), &copy);
        server.take_log();
        Fixture {
            server,
            metadata,
            copy,
            _tmp: tmp,
        }
    }

    /// `keytrail ARGS --lake s3://lake/kt --endpoint-url ...`, run in `testdata/`.
    fn remote(&self, args: &[&str]) -> Output {
        let mut c = s3_env(&self.metadata);
        c.current_dir(testdata()).args(args).args([
            "--lake",
            URI,
            "--endpoint-url",
            &self.server.endpoint,
        ]);
        run(&mut c)
    }

    /// `keytrail ARGS --lake COPY`, run in `testdata/`.
    fn local(&self, args: &[&str]) -> Output {
        let mut c: Command = keytrail();
        c.current_dir(testdata())
            .args(args)
            .arg("--lake")
            .arg(&self.copy);
        run(&mut c)
    }

    /// Run `args` on both lakes; insist they exit `code` with the same output (the lake's
    /// name aside) and return it.
    fn same(&self, args: &[&str], code: i32) -> String {
        let local = self.local(args);
        let remote = self.remote(args);
        let text =
            |o: &Output, name: &str| String::from_utf8_lossy(&o.stdout).replace(name, "LAKE");
        let copy = self.copy.display().to_string();
        assert_eq!(
            local.status.code(),
            Some(code),
            "{args:?} on the copy: {}",
            String::from_utf8_lossy(&local.stderr)
        );
        assert_eq!(
            remote.status.code(),
            Some(code),
            "{args:?} on S3: {}",
            String::from_utf8_lossy(&remote.stderr)
        );
        let want = text(&local, &copy);
        assert!(!want.trim().is_empty(), "{args:?} printed nothing");
        assert_eq!(text(&remote, URI), want, "{args:?}");
        want
    }

    /// The events files the key index names for `key` (from the copy).
    fn indexed_files(&self, key: &str) -> BTreeSet<String> {
        Lake::open(&self.copy)
            .expect("copy")
            .snapshot()
            .expect("snapshot")
            .lookup(&[key], Relation::Any)
            .expect("lookup")
            .into_iter()
            .map(|e| format!("kt/{}", e.file))
            .collect()
    }

    fn events_files(&self) -> BTreeSet<String> {
        Lake::open(&self.copy)
            .expect("copy")
            .snapshot()
            .expect("snapshot")
            .table_files(Table::Events)
            .map(|f| format!("kt/{}", f.record.path))
            .collect()
    }
}

/// Keys of the GETs (whole or ranged) of `log` under `prefix` (the `=` of partitions is
/// percent-encoded in the request path).
fn fetched(log: &[Logged], prefix: &str) -> BTreeSet<String> {
    log.iter()
        .filter_map(Logged::get_key)
        .map(|k| k.replace("%3D", "="))
        .filter(|k| k.starts_with(prefix))
        .collect()
}

#[test]
fn every_query_command_answers_on_s3_as_on_a_copy() {
    let f = Fixture::new();
    let text = f.same(
        &[
            "sql",
            "--format",
            "csv",
            "SELECT accesskeyid, count(*) AS n, min(eventtime) AS first, max(eventtime) AS last FROM events GROUP BY 1 ORDER BY 1",
        ],
        0,
    );
    assert_eq!(
        text.lines().count(),
        1 + 23,
        "22 keys and events without one: {text}"
    );
    f.same(
        &[
            "sql",
            "--format",
            "csv",
            "SELECT accesskeyid, date, events FROM key_daily ORDER BY 1, 2",
        ],
        0,
    );
    f.same(
        &[
            "sql",
            "--format",
            "csv",
            "SELECT eventtype, json_get_str(insightdetails, 'insightType') AS kind FROM insights",
        ],
        0,
    );
    let last = f.same(
        &[
            "report",
            "last-used",
            "--as-of",
            "2024-12-01",
            "--format",
            "json",
        ],
        0,
    );
    let rows: serde_json::Value = serde_json::from_str(&last).expect("json");
    assert_eq!(rows.as_array().map(Vec::len), Some(22));
    f.same(
        &[
            "report",
            "unused",
            "--as-of",
            "2024-12-01",
            "--inventory",
            "inventory/keys.csv",
            "--format",
            "csv",
        ],
        0,
    );
    f.same(
        &[
            "report",
            "rotation",
            "--as-of",
            "2024-12-01",
            "--inventory",
            "inventory/credential-report.csv",
            "--format",
            "csv",
        ],
        0,
    );
    f.same(&["report", "alternatives", "--format", "json"], 0);
    let inv = f.same(&["investigate", LEAKED, "--format", "json"], 0);
    let v: serde_json::Value = serde_json::from_str(&inv).expect("json");
    assert!(
        v["timeline"].as_array().map_or(0, Vec::len) >= 54,
        "the leaked key's timeline: {inv}"
    );
    f.same(&["investigate", LEAKED, "--format", "table"], 0);
    let local_detect = f.local(&["detect", "--format", "json", "--threads", "2"]);
    let code = local_detect.status.code().expect("exit code");
    let found = f.same(&["detect", "--format", "json", "--threads", "2"], code);
    assert!(found.contains("\"findings\""), "{found}");
    let verified = f.same(&["lake", "verify", "--json"], 0);
    let v: serde_json::Value = serde_json::from_str(&verified).expect("json");
    assert_eq!(v["problems"], serde_json::json!([]));
    assert_eq!(v["rows"]["events"], 1279);
}

#[test]
fn a_one_key_question_fetches_only_the_files_the_index_names() {
    let f = Fixture::new();
    let all = f.events_files();
    let named = f.indexed_files(ONE_DAY);
    assert!(
        !named.is_empty() && named.len() < all.len(),
        "{named:?} of {all:?}"
    );
    assert!(f.indexed_files(ABSENT).is_empty());

    // A key the lake has never seen: the manifest and the key index are read, no data file.
    let q = |key: &str| format!("SELECT count(*) AS n FROM events WHERE accesskeyid = '{key}'");
    let out = f.remote(&["sql", "--format", "csv", "--stats", &q(ABSENT)]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "n\n0\n");
    let stats = String::from_utf8_lossy(&out.stderr);
    assert!(
        stats.lines().any(|l| l.trim_start().starts_with("events ")
            && l.contains(&format!("0 of {} files", all.len()))),
        "{stats}"
    );
    let log = f.server.take_log();
    assert_eq!(fetched(&log, "kt/events/"), BTreeSet::new());
    assert_eq!(fetched(&log, "kt/key_daily/"), BTreeSet::new());
    assert!(!fetched(&log, "kt/_keytrail/index/").is_empty(), "{log:?}");
    assert!(
        !fetched(&log, "kt/_keytrail/manifest/").is_empty(),
        "{log:?}"
    );

    // A key it holds: its count comes from the index's row counts, no data file is read...
    let out = f.remote(&["sql", "--format", "csv", &q(ONE_DAY)]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "n\n3\n", "{out:?}");
    assert_eq!(fetched(&f.server.take_log(), "kt/events/"), BTreeSet::new());
    // ... and its rows are read from exactly the files the index names.
    let rows =
        format!("SELECT eventid, eventname FROM events WHERE accesskeyid = '{ONE_DAY}' ORDER BY 1");
    let want = f.local(&["sql", "--format", "csv", &rows]);
    assert_eq!(String::from_utf8_lossy(&want.stdout).lines().count(), 4);
    let out = f.remote(&["sql", "--format", "csv", &rows]);
    assert_eq!(out.stdout, want.stdout);
    assert_eq!(fetched(&f.server.take_log(), "kt/events/"), named);

    // So does an investigation of it that finds no other key.
    let out = f.remote(&["investigate", ABSENT, "--format", "json"]);
    let log = f.server.take_log();
    assert_eq!(
        fetched(&log, "kt/events/"),
        BTreeSet::new(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn throttling_and_server_errors_are_retried() {
    let f = Fixture::new();
    let q =
        format!("SELECT eventid, eventname FROM events WHERE accesskeyid = '{LEAKED}' ORDER BY 1");
    let want = f.local(&["sql", "--format", "csv", &q]);
    let data = f
        .indexed_files(LEAKED)
        .into_iter()
        .next()
        .expect("an indexed file");
    f.server.fault("kt/_keytrail/lake.json", &[Fault::SlowDown]);
    f.server
        .fault("kt/_keytrail/manifest/0000000001.json", &[Fault::Internal]);
    f.server.fault(&data, &[Fault::SlowDown, Fault::SlowDown]);
    let out = f.remote(&["sql", "--format", "csv", &q]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, want.stdout);
    assert_eq!(f.server.unused_faults(), 0, "every fault was met");

    // A store that keeps failing: the command fails naming the object, after its retries.
    f.server
        .fault("kt/_keytrail/lake.json", &[Fault::SlowDown; 12]);
    let mut c = s3_env(&f.metadata);
    c.args([
        "sql",
        "SELECT 1",
        "--lake",
        URI,
        "--endpoint-url",
        &f.server.endpoint,
    ]);
    let out = run_code(&mut c, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("s3://lake/kt/_keytrail/lake.json"), "{err}");
    f.server.clear_faults();
}

#[test]
fn lake_verify_checks_the_bucket_against_the_manifest() {
    let f = Fixture::new();
    let out = f.remote(&["lake", "verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.starts_with("s3://lake/kt: 1 commits"), "{text}");
    assert!(
        text.contains("ok: every file matches the manifest"),
        "{text}"
    );

    let dir = f.server.bucket("lake").join("kt");
    let gone = f
        .events_files()
        .into_iter()
        .next()
        .expect("a file")
        .trim_start_matches("kt/")
        .to_owned();
    std::fs::remove_file(dir.join(&gone)).expect("delete");
    f.server.put(
        "lake",
        "kt/events/date=2024-11-25/stray.parquet",
        b"not a lake file",
    );
    let out = f.remote(&["lake", "verify", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        v["problems"],
        serde_json::json!([
            format!("{gone}: missing"),
            "events/date=2024-11-25/stray.parquet: not in the manifest"
        ])
    );
}

#[test]
fn a_prefix_without_a_lake_and_lake_commands_that_write_say_so() {
    let f = Fixture::new();
    let mut c = s3_env(&f.metadata);
    c.args([
        "sql",
        "SELECT 1",
        "--lake",
        "s3://lake/nothing-here",
        "--endpoint-url",
        &f.server.endpoint,
    ]);
    let out = run_code(&mut c, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("s3://lake/nothing-here") && err.contains("_keytrail/lake.json"),
        "{err}"
    );
    let out = run_code(keytrail().args(["lake", "compact", "--lake", URI]), 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs a lake directory"), "{err}");
    assert!(!Path::new("s3:").exists());
}

#[test]
fn a_committed_run_still_publishing_is_read_from_its_staged_files() {
    let f = Fixture::new();
    // A second lake whose only run committed and was killed after copying one file into place.
    let uri = "s3://lake/half";
    let out = run(cli(&f.server, &f.metadata)
        .args(["s3://trail/AWSLogs/", "--lake", uri, "--quiet"])
        .env("KEYTRAIL_CRASH_AT", "s3-mid-publish"));
    assert_eq!(out.status.code(), None, "killed");
    let dir = f.server.bucket("lake").join("half");
    let published = crate::s3::objects_under(&dir)
        .into_iter()
        .filter(|n| n.starts_with("events/") && n.ends_with(".parquet"))
        .count();
    let all = f.events_files().len();
    assert!(
        published < all,
        "{published} of {all} in place: still publishing"
    );
    f.server.take_log();

    let q = "SELECT accesskeyid, count(*) AS n, min(eventtime) AS first FROM events GROUP BY 1 ORDER BY 1";
    let want = f.local(&["sql", "--format", "csv", q]);
    let mut c = s3_env(&f.metadata);
    c.args(["sql", "--format", "csv", q, "--lake", uri])
        .args(["--endpoint-url", &f.server.endpoint]);
    let got = run_code(&mut c, 0);
    assert_eq!(
        got.stdout, want.stdout,
        "the whole commit, read from staging"
    );
    // Staged copies were read, and nothing was published by a reader.
    let log = f.server.take_log();
    assert!(!fetched(&log, "half/_keytrail/staging/").is_empty());
    assert!(
        log.iter().all(|l| l.method == "GET" || l.method == "HEAD"),
        "read only: {log:?}"
    );

    // lake verify names what is still staged.
    let mut c = s3_env(&f.metadata);
    c.args([
        "lake",
        "verify",
        "--lake",
        uri,
        "--endpoint-url",
        &f.server.endpoint,
    ]);
    let out = run_code(&mut c, 1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("still staged"), "{text}");
}
