//! The S3 source against a real S3 HTTP server on 127.0.0.1 (`s3s-fs`, see `s3server.rs`):
//! listing and pruning of CloudTrail's layout, organization trails, incremental reruns, shards,
//! retries of throttling, server errors and broken connections, objects that keep failing, and
//! a killed run over S3 run again.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use keytrail_ingest::s3::S3Options;
use keytrail_ingest::{IngestOptions, Input, NoProgress, RunSummary, SkipReason, ingest};
use keytrail_model::time::{Bound, parse_time_bound};

use crate::s3server::{Fault, S3Server};
use crate::util::*;

const ACCOUNT: &str = "111111111111";
const US: &str = "AWSLogs/111111111111/CloudTrail/us-east-1";

pub(crate) fn sample() -> std::path::PathBuf {
    testdata().join("sample")
}

/// A server whose bucket `trail` holds the bundled sample under `AWSLogs/`.
pub(crate) fn sample_server() -> S3Server {
    let s = S3Server::start();
    s.put_tree("trail", "", &sample());
    s
}

fn options(server: &S3Server, inputs: &[&str], lake: &Path, s3: S3Options) -> IngestOptions {
    let inputs = inputs
        .iter()
        .map(|t| Input::parse(t).expect("input"))
        .collect();
    let mut o = IngestOptions::with_inputs(inputs, lake.to_path_buf());
    o.threads = 2;
    o.s3_client = Some(server.client(&s3));
    o.s3 = s3;
    o
}

fn s3_run(server: &S3Server, inputs: &[&str], lake: &Path, s3: S3Options) -> RunSummary {
    let s = ingest(&options(server, inputs, lake, s3), &NoProgress).expect("ingest");
    assert!(s.balances(), "{s:#?}");
    s
}

/// What a local run over the same files writes.
fn local_rows(paths: &[&Path], tmp: &Path, filter_args: &[&str]) -> Vec<Row> {
    let lake = tmp.join(format!("local-{}", filter_args.join("-").replace(':', "")));
    ingest_json(paths, &lake, filter_args, 0);
    rows(&lake, "events")
}

fn gets(log: &[crate::s3server::Logged]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in log {
        if let Some(k) = l.get_key() {
            *m.entry(k.to_owned()).or_default() += 1;
        }
    }
    m
}

pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

/// A delivery file of `n` events by `key` of `account` at `time` (+ i seconds).
fn delivery(account: &str, key: &str, time: &str, n: usize) -> Vec<u8> {
    let records: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "eventVersion": "1.09",
                "userIdentity": {
                    "type": "IAMUser",
                    "principalId": "AIDAEXAMPLEPRINCIPAL",
                    "arn": format!("arn:aws:iam::{account}:user/alice"),
                    "accountId": account,
                    "accessKeyId": key,
                    "userName": "alice"
                },
                "eventTime": format!("{time}:{i:02}Z"),
                "eventSource": "s3.amazonaws.com",
                "eventName": "ListBuckets",
                "awsRegion": "us-east-1",
                "sourceIPAddress": "198.51.100.1",
                "userAgent": "aws-cli/2.15.0",
                "requestParameters": null,
                "responseElements": null,
                "requestID": format!("req-{account}-{i}"),
                "eventID": format!("00000000-0000-4000-8000-{account}{i:02}"),
                "readOnly": true,
                "eventType": "AwsApiCall",
                "managementEvent": true,
                "recipientAccountId": account,
                "eventCategory": "Management"
            })
        })
        .collect();
    gzip(&serde_json::to_vec(&serde_json::json!({ "Records": records })).expect("json"))
}

#[test]
fn a_bucket_reads_like_the_same_files_on_disk_and_a_rerun_reads_nothing() {
    let server = sample_server();
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");

    let s = s3_run(&server, &["s3://trail"], &lake, S3Options::default());
    assert_eq!(s.objects.seen, 30);
    assert_eq!(s.objects.read, 29);
    assert_eq!(s.objects.skipped.get(&SkipReason::Digest), Some(&1));
    assert_eq!(s.events.written, 1279);
    assert_eq!(s.events.insights, 1);
    assert!(!s.partial);
    assert_eq!(
        rows(&lake, "events"),
        local_rows(&[&sample()], tmp.path(), &[])
    );
    // Every log object was fetched once; the digest was never fetched.
    let g = gets(&server.take_log());
    assert_eq!(g.len(), 29, "{g:#?}");
    assert!(g.values().all(|n| *n == 1));

    // The manifest holds every object by bucket, key and ETag: a rerun lists, and reads none.
    let again = s3_run(&server, &["s3://trail/"], &lake, S3Options::default());
    assert_eq!(
        again.objects.skipped.get(&SkipReason::AlreadyIngested),
        Some(&29)
    );
    assert_eq!(again.events.written, 0);
    assert_eq!(again.commit, None);
    assert!(gets(&server.take_log()).is_empty());

    // A new object (delivered late, into an old day folder) adds only its rows.
    let late = format!(
        "{US}/2024/11/27/{ACCOUNT}_CloudTrail_us-east-1_20241127T2359Z_LATELATELATE0001.json.gz"
    );
    server.put(
        "trail",
        &late,
        &delivery(ACCOUNT, "AKIAXLATEDELIVERYAAA", "2024-11-27T23:58", 3),
    );
    let third = s3_run(&server, &["s3://trail"], &lake, S3Options::default());
    assert_eq!(third.objects.read, 1);
    assert_eq!(third.events.written, 3);
    assert_eq!(gets(&server.take_log()).keys().collect::<Vec<_>>(), [&late]);
    assert_eq!(rows(&lake, "events").len(), 1282);
}

#[test]
fn a_time_window_lists_only_its_day_folders() {
    let server = sample_server();
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let mut o = options(&server, &["s3://trail"], &lake, S3Options::default());
    o.filter.since = Some(parse_time_bound("2024-11-29", Bound::Start, 0).expect("since"));
    o.filter.until = Some(parse_time_bound("2024-11-29", Bound::End, 0).expect("until"));
    let s = ingest(&o, &NoProgress).expect("ingest");
    assert!(s.balances());

    let log = server.take_log();
    let listed: BTreeSet<String> = log
        .iter()
        .filter(|l| !l.is_delimited())
        .filter_map(|l| l.list_prefix())
        .collect();
    let mut want = BTreeSet::new();
    for kr in [
        "CloudTrail/us-east-1",
        "CloudTrail/eu-west-1",
        "CloudTrail/ap-southeast-2",
        "CloudTrail-Digest/us-east-1",
        "CloudTrail-Insight/us-east-1",
    ] {
        for day in ["2024/11/29", "2024/11/30"] {
            want.insert(format!("AWSLogs/{ACCOUNT}/{kr}/{day}/"));
        }
    }
    assert_eq!(
        listed, want,
        "only the window's days (and the day after) are listed"
    );
    // 4 files of 11/29, 5 of 11/30 (one of them the insight file), 1 digest (never fetched).
    assert_eq!(s.objects.seen, 10);
    assert_eq!(gets(&log).len(), 9);
    // Exactly the rows of a local run over every file with the same window.
    assert_eq!(
        rows(&lake, "events"),
        local_rows(
            &[&sample()],
            tmp.path(),
            &["--since", "2024-11-29", "--until", "2024-11-29"]
        )
    );
    assert_eq!(s.events.written, 163);
}

#[test]
fn organization_trails_accounts_and_regions_prune_the_listing() {
    let server = sample_server();
    let org = "AWSLogs/o-a1b2c3d4e5";
    for (account, key) in [
        ("222222222222", "AKIAXORGTWOAAAAAAAAA"),
        ("333333333333", "AKIAXORGTHREEAAAAAAA"),
    ] {
        for (region, n) in [("us-east-1", 4), ("eu-west-1", 2)] {
            server.put(
                "trail",
                &format!(
                    "{org}/{account}/CloudTrail/{region}/2024/11/30/{account}_CloudTrail_{region}_20241130T0100Z_ORG{account}.json.gz"
                ),
                &delivery(account, key, &format!("2024-11-30T01:{}", if region == "us-east-1" { "00" } else { "30" }), n),
            );
        }
    }
    let tmp = tempfile::tempdir().expect("tmp");

    // The whole bucket: the single-account trail and both organization accounts.
    let all = s3_run(
        &server,
        &["s3://trail"],
        &tmp.path().join("all"),
        S3Options::default(),
    );
    assert_eq!(all.events.written, 1279 + 12);

    // One account of the organization.
    server.take_log();
    let lake = tmp.path().join("one");
    let s = s3_run(
        &server,
        &["s3://trail"],
        &lake,
        S3Options {
            accounts: vec!["222222222222".into()],
            ..S3Options::default()
        },
    );
    assert_eq!(s.objects.seen, 2);
    assert_eq!(s.events.written, 6);
    let keys: BTreeSet<_> = rows(&lake, "events")
        .into_iter()
        .filter_map(|r| r.key)
        .collect();
    assert_eq!(keys, BTreeSet::from(["AKIAXORGTWOAAAAAAAAA".to_owned()]));
    let listed: BTreeSet<String> = server
        .take_log()
        .iter()
        .filter(|l| !l.is_delimited())
        .filter_map(|l| l.list_prefix())
        .collect();
    assert!(
        listed
            .iter()
            .all(|p| p.starts_with(&format!("{org}/222222222222/"))),
        "{listed:#?}"
    );

    // The organization prefix, one region.
    let lake = tmp.path().join("region");
    let s = s3_run(
        &server,
        &[&format!("s3://trail/{org}/")],
        &lake,
        S3Options {
            regions: vec!["eu-west-1".into()],
            ..S3Options::default()
        },
    );
    assert_eq!(s.objects.seen, 2);
    assert_eq!(s.events.written, 4);
}

#[test]
fn throttling_server_errors_and_broken_connections_are_retried() {
    let server = sample_server();
    let day = |d: &str, name: &str| {
        format!("{US}/2024/11/{d}/{ACCOUNT}_CloudTrail_us-east-1_{name}.json.gz")
    };
    let slow = day("24", "20241124T0824Z_AS6ONXVR26JUDYXU");
    let internal = day("25", "20241125T0936Z_CLXF6O5TODTAWOXJ");
    let truncated = day("26", "20241126T0224Z_XWRKGTXQCHW5PPUN");
    let dropped = day("27", "20241127T1200Z_AXS3VDTKPJBS5PNA");
    let delayed = day("30", "20241130T0315Z_INCIDENTPART0002");
    server.fault(&slow, &[Fault::SlowDown, Fault::SlowDown]);
    server.fault(&internal, &[Fault::Internal]);
    server.fault(&truncated, &[Fault::Truncate, Fault::Truncate]);
    server.fault(&dropped, &[Fault::Drop]);
    server.fault(&delayed, &[Fault::Delay(Duration::from_millis(300))]);

    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let s = s3_run(&server, &["s3://trail"], &lake, S3Options::default());
    assert!(s.failures.is_empty(), "{:#?}", s.failures);
    assert_eq!(s.events.written, 1279);
    assert_eq!(server.unused_faults(), 0);
    let g = gets(&server.take_log());
    assert_eq!(g[&slow], 3);
    assert_eq!(g[&internal], 2);
    assert_eq!(g[&truncated], 3);
    assert_eq!(g[&dropped], 2);
    assert_eq!(g[&delayed], 1);
    assert_eq!(
        rows(&lake, "events"),
        local_rows(&[&sample()], tmp.path(), &[])
    );
}

#[test]
fn an_object_that_keeps_failing_is_named_and_the_run_goes_on() {
    let server = sample_server();
    let broken = format!(
        "{US}/2024/11/28/{ACCOUNT}_CloudTrail_us-east-1_20241128T2136Z_ZRYA65M5OZR7UDPR.json.gz"
    );
    server.fault(&broken, &[Fault::Internal; 10]);
    let empty = format!(
        "{US}/2024/11/29/{ACCOUNT}_CloudTrail_us-east-1_20241129T2300Z_EMPTYEMPTYEMPTY0.json.gz"
    );
    server.put("trail", &empty, b"");
    let cut = format!(
        "{US}/2024/11/29/{ACCOUNT}_CloudTrail_us-east-1_20241129T2310Z_CUTCUTCUTCUTCUT0.json.gz"
    );
    let whole = delivery(ACCOUNT, "AKIAXCUTAAAAAAAAAAAA", "2024-11-29T23:05", 5);
    server.put("trail", &cut, &whole[..whole.len() / 2]);

    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let s3 = S3Options {
        max_attempts: 2,
        ..S3Options::default()
    };
    let s = s3_run(&server, &["s3://trail"], &lake, s3);
    assert!(s.partial);
    let failed: BTreeMap<String, String> = s
        .failures
        .iter()
        .map(|f| (f.object.clone(), f.code.clone()))
        .collect();
    assert_eq!(
        failed,
        BTreeMap::from([
            (format!("s3://trail/{broken}"), "read-error".to_owned()),
            (format!("s3://trail/{empty}"), "empty".to_owned()),
            (format!("s3://trail/{cut}"), "corrupt-gzip".to_owned()),
        ]),
        "{:#?}",
        s.failures
    );
    assert!(
        s.failures
            .iter()
            .any(|f| f.reason.contains("InternalError")),
        "the reason says what S3 answered: {:#?}",
        s.failures
    );
    // Everything else is in: the sample less the broken object's events.
    let broken_file = sample().join(&broken);
    let broken_rows = local_rows(&[&broken_file], tmp.path(), &[]).len();
    assert!(broken_rows > 0);
    assert_eq!(s.events.written as usize, 1279 - broken_rows);
    assert_eq!(gets(&server.take_log())[&broken], 2);

    // The failed objects are not in the manifest: once S3 answers again, a rerun reads the
    // broken one (and only the failed ones).
    server.clear_faults();
    server.take_log();
    let again = s3_run(&server, &["s3://trail"], &lake, S3Options::default());
    assert_eq!(again.events.written as usize, broken_rows);
    assert_eq!(
        gets(&server.take_log())
            .into_keys()
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([broken.clone(), empty.clone(), cut.clone()])
    );
    assert_eq!(rows(&lake, "events").len(), 1279);
}

#[test]
fn shards_split_a_bucket_between_concurrent_workers_exactly_once() {
    let server = sample_server();
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let summaries: Vec<RunSummary> = std::thread::scope(|scope| {
        let workers: Vec<_> = (1..=3)
            .map(|i| {
                let (server, lake) = (&server, &lake);
                scope.spawn(move || {
                    let mut o = options(server, &["s3://trail"], lake, S3Options::default());
                    o.shard = Some(keytrail_ingest::Shard { index: i, count: 3 });
                    ingest(&o, &NoProgress).expect("worker")
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("join"))
            .collect()
    });
    let read: Vec<u64> = summaries.iter().map(|s| s.objects.read).collect();
    assert!(
        read.iter().all(|n| *n > 0),
        "every worker has a share: {read:?}"
    );
    assert_eq!(read.iter().sum::<u64>(), 29);
    for s in &summaries {
        assert!(s.balances());
        assert_eq!(s.objects.seen, 30);
    }
    assert_eq!(
        rows(&lake, "events"),
        local_rows(&[&sample()], tmp.path(), &[])
    );
    // The key_daily table is merged across the workers' commits: same as one clean run.
    let clean = tmp.path().join("clean");
    ingest_json(&[&sample()], &clean, &[], 0);
    assert_eq!(
        table_text(&lake, "key_daily"),
        table_text(&clean, "key_daily")
    );
    // Nothing is left for an unsharded run.
    let s = s3_run(&server, &["s3://trail"], &lake, S3Options::default());
    assert_eq!(s.events.written, 0);
}

/// The binary end to end: credentials from the environment, `--endpoint-url`, a local path
/// and an S3 prefix in one run, and no request to instance metadata.
pub(crate) fn cli(server: &S3Server, metadata: &std::net::TcpListener) -> std::process::Command {
    let mut c = s3_env(metadata);
    c.args(["ingest", "--endpoint-url", &server.endpoint]);
    c
}

/// A `keytrail` command with the test server's credentials in its environment, no AWS
/// config files, and instance metadata pointed at `metadata`.
pub(crate) fn s3_env(metadata: &std::net::TcpListener) -> std::process::Command {
    let mut c = keytrail();
    c.env("AWS_ACCESS_KEY_ID", crate::s3server::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", crate::s3server::SECRET_KEY)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/nonexistent/keytrail-test/config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/keytrail-test/credentials",
        )
        .env(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("http://{}", metadata.local_addr().expect("addr")),
        )
        .env("AWS_REGION", "us-east-1");
    c
}

#[test]
fn the_cli_mixes_local_and_s3_inputs_and_never_asks_instance_metadata() {
    let server = S3Server::start();
    // us-east-1 in the bucket, eu-west-1 and the rest on disk.
    server.put_tree("trail", US, &sample().join(US));
    let tmp = tempfile::tempdir().expect("tmp");
    let local = tmp.path().join("local");
    copy_tree(&sample(), &local);
    std::fs::remove_dir_all(local.join(US)).expect("rm");
    let metadata = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    metadata.set_nonblocking(true).expect("nonblocking");

    let lake = tmp.path().join("lake");
    let out = run_code(
        cli(&server, &metadata)
            .arg("s3://trail/AWSLogs/")
            .arg(&local)
            .arg("--lake")
            .arg(&lake)
            .arg("--json"),
        0,
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_balanced(&s);
    assert_eq!(s["events"]["written"], 1279);
    assert_eq!(
        rows(&lake, "events"),
        local_rows(&[&sample()], tmp.path(), &[])
    );
    assert!(
        metadata
            .accept()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "nothing connected to the instance metadata endpoint"
    );
    // The secret never reaches the output.
    assert!(!String::from_utf8_lossy(&out.stdout).contains(crate::s3server::SECRET_KEY));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(crate::s3server::SECRET_KEY));

    // Bad flags are refused before anything is read.
    let out = run_code(
        cli(&server, &metadata)
            .args(["s3://trail", "--lake"])
            .arg(&lake)
            .args(["--shard", "4/3"]),
        2,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--shard 4/3"));
    let out = run_code(
        cli(&server, &metadata).args(["s3://", "--lake"]).arg(&lake),
        2,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("names no bucket"));
}

#[test]
fn a_run_over_s3_killed_before_its_commit_ends_like_a_clean_run() {
    let server = sample_server();
    let tmp = tempfile::tempdir().expect("tmp");
    let metadata = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    for point in ["before-commit", "mid-publish"] {
        let lake = tmp.path().join(point);
        let out = run(cli(&server, &metadata)
            .arg("s3://trail")
            .arg("--lake")
            .arg(&lake)
            .arg("--quiet")
            .env("KEYTRAIL_CRASH_AT", point));
        assert_eq!(out.status.code(), None, "{point}: killed");
        let out = run_code(
            cli(&server, &metadata)
                .arg("s3://trail")
                .arg("--lake")
                .arg(&lake)
                .arg("--json"),
            0,
        );
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_balanced(&s);
        assert_eq!(
            rows(&lake, "events"),
            local_rows(&[&sample()], tmp.path(), &[]),
            "{point}"
        );
        assert_eq!(
            table_text(&lake, "key_daily"),
            table_text(&tmp.path().join("local-"), "key_daily"),
            "{point}"
        );
    }
}

// --- A lake in S3 (`--lake s3://...`) ---------------------------------------------------------

/// Objects under a prefix of the served folder, relative names (the lake as S3 holds it).
pub(crate) fn objects_under(dir: &Path) -> BTreeSet<String> {
    walk(dir)
        .into_iter()
        .map(|p| {
            p.strip_prefix(dir)
                .expect("under")
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Files of one table under the S3 lake.
fn files_of(lake: &Path, table: &str) -> Vec<String> {
    objects_under(lake)
        .into_iter()
        .filter(|n| n.starts_with(&format!("{table}/")))
        .collect()
}

/// `keytrail lake verify` on a copy of the S3 lake's folder.
pub(crate) fn verify_copy(lake: &Path, tmp: &Path, name: &str) {
    let copy = tmp.join(name);
    copy_tree(lake, &copy);
    let out = run_code(keytrail().args(["lake", "verify", "--lake"]).arg(&copy), 0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_lake_in_s3_holds_what_a_local_lake_holds_and_reruns_add_nothing() {
    let server = S3Server::start();
    // The sample, minus one object of 2024-11-27 that arrives later.
    server.put_tree("trail", "", &sample());
    let late_dir = server.bucket("trail").join(format!("{US}/2024/11/27/"));
    let mut late: Vec<_> = walk(&late_dir);
    late.sort();
    late.truncate(1);
    assert_eq!(late.len(), 1, "the sample has objects on 2024-11-27");
    let held = tempfile::tempdir().expect("tmp");
    for (i, f) in late.iter().enumerate() {
        std::fs::rename(f, held.path().join(i.to_string())).expect("hold back");
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let metadata = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let lake_dir = server.bucket("lake").join("kt");

    let ingest = |code| {
        let out = run_code(
            cli(&server, &metadata)
                .args(["s3://trail/AWSLogs/", "--lake", "s3://lake/kt", "--json"])
                .arg("--work-dir")
                .arg(tmp.path()),
            code,
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    };
    let first = ingest(0);
    assert_balanced(&first);
    assert_eq!(first["lake"], "s3://lake/kt");
    assert_eq!(first["commit"], 1);
    let names = objects_under(&lake_dir);
    assert!(names.contains("_keytrail/lake.json"), "{names:?}");
    assert!(
        names.contains("_keytrail/manifest/0000000001.json"),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.starts_with("_keytrail/staging/")),
        "nothing left staged: {names:?}"
    );
    // The working copy is gone.
    assert_eq!(std::fs::read_dir(tmp.path()).expect("tmp").count(), 0);

    // The rerun lists again, reads nothing, commits nothing.
    server.take_log();
    let again = ingest(0);
    assert_balanced(&again);
    assert_eq!(again["events"]["written"], 0);
    assert!(again["commit"].is_null());
    assert!(
        gets(&server.take_log())
            .keys()
            .all(|k| k.starts_with("kt/_keytrail/"))
    );

    // The late object: its events are added and the day's key_daily is replaced, not doubled.
    for (i, f) in late.iter().enumerate() {
        std::fs::rename(held.path().join(i.to_string()), f).expect("deliver");
    }
    let third = ingest(0);
    assert_balanced(&third);
    assert_eq!(third["commit"], 2);
    assert!(third["events"]["written"].as_u64().expect("n") > 0);

    let clean = tmp.path().join("clean");
    ingest_json(&[&sample()], &clean, &[], 0);
    assert_eq!(rows(&lake_dir, "events"), rows(&clean, "events"));
    assert_eq!(
        table_text(&lake_dir, "key_daily"),
        table_text(&clean, "key_daily")
    );
    let days: Vec<String> = files_of(&lake_dir, "key_daily");
    let distinct: BTreeSet<&str> = days
        .iter()
        .map(|d| d.split('/').nth(1).expect("day"))
        .collect();
    assert_eq!(
        days.len(),
        distinct.len(),
        "one key_daily file per day: {days:?}"
    );
    verify_copy(&lake_dir, tmp.path(), "verify");
}

#[test]
fn a_run_into_an_s3_lake_killed_anywhere_ends_like_a_clean_run() {
    let server = sample_server();
    let tmp = tempfile::tempdir().expect("tmp");
    let metadata = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let clean = tmp.path().join("clean");
    ingest_json(&[&sample()], &clean, &[], 0);
    for point in ["s3-before-commit", "s3-after-commit", "s3-mid-publish"] {
        let uri = format!("s3://lake/{point}");
        let lake_dir = server.bucket("lake").join(point);
        let out = run(cli(&server, &metadata)
            .args(["s3://trail", "--lake", &uri, "--quiet"])
            .env("KEYTRAIL_CRASH_AT", point));
        assert_eq!(out.status.code(), None, "{point}: killed");
        let staged = objects_under(&lake_dir)
            .into_iter()
            .filter(|n| n.starts_with("_keytrail/staging/"))
            .count();
        assert!(staged > 0, "{point}: the dead run left staged files");
        if point == "s3-before-commit" {
            assert!(rows(&lake_dir, "events").is_empty(), "nothing visible");
        }
        let out = run_code(
            cli(&server, &metadata).args(["s3://trail", "--lake", &uri, "--json"]),
            0,
        );
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_balanced(&s);
        assert_eq!(rows(&lake_dir, "events"), rows(&clean, "events"), "{point}");
        assert_eq!(
            table_text(&lake_dir, "key_daily"),
            table_text(&clean, "key_daily"),
            "{point}"
        );
        let left: Vec<String> = objects_under(&lake_dir)
            .into_iter()
            .filter(|n| n.starts_with("_keytrail/staging/"))
            .collect();
        if point == "s3-before-commit" {
            // A staged run without a commit record may still be alive: it is left until it is
            // a day old, and no reader of the tables sees it.
            assert!(!left.is_empty());
        } else {
            assert!(left.is_empty(), "{point}: rolled forward: {left:?}");
        }
    }
}

#[test]
fn concurrent_writers_into_one_s3_lake_each_commit_once() {
    let server = sample_server();
    let tmp = tempfile::tempdir().expect("tmp");
    let metadata = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    // All three read the manifest before any commits: two of them must lose the race for
    // sequence number 1 (and one of those for 2) and merge again.
    server.gate_commits_until_listings(3);
    let children: Vec<_> = (1..=3)
        .map(|i| {
            cli(&server, &metadata)
                .args(["s3://trail", "--lake", "s3://lake/shared", "--json"])
                .args(["--shard", &format!("{i}/3")])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let mut written = 0;
    let mut seqs = BTreeSet::new();
    for c in children {
        let out = c.wait_with_output().expect("wait");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_balanced(&s);
        written += s["events"]["written"].as_u64().expect("written");
        seqs.insert(s["commit"].as_u64().expect("seq"));
    }
    assert_eq!(written, 1279);
    assert_eq!(seqs, BTreeSet::from([1, 2, 3]));
    let refused = server
        .take_log()
        .iter()
        .filter(|l| l.method == "PUT" && l.path.contains("_keytrail/manifest/"))
        .count();
    assert!(
        refused >= 5,
        "3 commits + at least 2 lost races: {refused} PUTs"
    );
    let lake_dir = server.bucket("lake").join("shared");
    let clean = tmp.path().join("clean");
    ingest_json(&[&sample()], &clean, &[], 0);
    assert_eq!(rows(&lake_dir, "events"), rows(&clean, "events"));
    assert_eq!(
        table_text(&lake_dir, "key_daily"),
        table_text(&clean, "key_daily")
    );
    verify_copy(&lake_dir, tmp.path(), "verify");
}

#[test]
fn large_lake_files_go_up_in_parts() {
    let server = S3Server::start();
    server.bucket("lake");
    let tmp = tempfile::tempdir().expect("tmp");
    // 11 MiB of varied bytes in 5 MiB parts (S3's smallest): three parts.
    let path = tmp.path().join("big.parquet");
    let bytes: Vec<u8> = (0..11u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &bytes).expect("write");
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
    let log = server.take_log();
    let started = log
        .iter()
        .filter(|l| l.method == "POST" && l.query.starts_with("uploads"))
        .count();
    let parts = log
        .iter()
        .filter(|l| l.method == "PUT" && l.query.contains("partNumber="))
        .count();
    assert_eq!((started, parts), (1, 3));
    let stored =
        std::fs::read(server.bucket("lake").join("parts/events/big.parquet")).expect("stored");
    assert!(stored == bytes, "the object is the file, byte for byte");
}

#[test]
fn a_process_fetches_each_commit_record_of_a_lake_in_s3_once() {
    let server = S3Server::start();
    server.bucket("lake");
    let tmp = tempfile::tempdir().expect("tmp");
    let s3 = S3Options::default();
    let uri = keytrail_ingest::s3::S3Uri::parse("s3://lake/kt")
        .expect("s3")
        .expect("uri");
    // Options shared by every run of one process, as a follower's batches share them.
    let shared = keytrail_ingest::s3lake::S3LakeOptions::default();
    let commit_gets = |log: &[crate::s3server::Logged]| {
        let mut keys: Vec<String> = log
            .iter()
            .filter_map(|l| l.get_key())
            .filter(|k| k.starts_with("kt/_keytrail/manifest/"))
            .map(str::to_owned)
            .collect();
        keys.sort();
        keys
    };
    // One object of three events on `day`, committed into the lake by a run with `lake_opts`.
    let commit = |day: u32, lake_opts: &keytrail_ingest::s3lake::S3LakeOptions| {
        let dir = tmp.path().join(format!("day-{day}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join(format!(
            "{ACCOUNT}_CloudTrail_us-east-1_202411{day:02}T1000Z_ONEOBJECTOFDAY{day:02}.json.gz"
        ));
        let time = format!("2024-11-{day:02}T10:00");
        std::fs::write(&file, delivery(ACCOUNT, "AKIAXCOMMITCACHEAAAA", &time, 3)).expect("write");
        let mut o = IngestOptions::with_inputs(vec![Input::Local(file)], dir.join("work"));
        o.threads = 2;
        o.s3_client = Some(server.client(&s3));
        o.remote_lake = Some(uri.clone());
        o.s3_lake = lake_opts.clone();
        let s = ingest(&o, &NoProgress).expect("ingest");
        assert!(s.balances(), "{s:#?}");
        s.commit.expect("committed")
    };
    // Three commits, by runs of other processes (options of their own).
    for day in 1..=3 {
        assert_eq!(commit(day, &Default::default()), u64::from(day));
    }
    let record = |seq: u64| format!("kt/_keytrail/manifest/{seq:010}.json");
    let lake =
        keytrail_ingest::s3lake::S3Lake::new(server.client(&s3), uri.clone(), shared.clone());
    let rt = tokio::runtime::Runtime::new().expect("rt");
    server.take_log();
    let first = rt.block_on(lake.read_manifest()).expect("manifest");
    assert_eq!(first.last_seq(), 3);
    assert_eq!(
        commit_gets(&server.take_log()),
        [record(1), record(2), record(3)]
    );
    // Read again: nothing new is fetched; the listing starts after the last record held.
    let again = rt.block_on(lake.read_manifest()).expect("manifest");
    let log = server.take_log();
    assert!(commit_gets(&log).is_empty(), "{:?}", commit_gets(&log));
    let listings: Vec<&str> = log
        .iter()
        .filter(|l| {
            l.list_prefix()
                .is_some_and(|p| p.ends_with("_keytrail/manifest/"))
        })
        .map(|l| l.query.as_str())
        .collect();
    assert_eq!(listings.len(), 1, "{listings:?}");
    assert!(
        listings[0].contains("start-after=kt%2F_keytrail%2Fmanifest%2F0000000003.json"),
        "{listings:?}"
    );
    assert_eq!(again.commits(), first.commits());
    // A run sharing the options pulls without fetching the three records, commits the fourth,
    // and the next read fetches only that one.
    assert_eq!(commit(4, &shared), 4);
    assert!(commit_gets(&server.take_log()).is_empty());
    let fourth = rt.block_on(lake.read_manifest()).expect("manifest");
    assert_eq!(commit_gets(&server.take_log()), [record(4)]);
    // What the cache gives is what a reader without one reads.
    let fresh =
        keytrail_ingest::s3lake::S3Lake::new(server.client(&s3), uri.clone(), Default::default());
    let whole = rt.block_on(fresh.read_manifest()).expect("manifest");
    assert_eq!(fourth.commits(), whole.commits());
    assert_eq!(whole.last_seq(), 4);
    // The lake made again under the same name (another lake.json): the records held are
    // dropped and the new lake's are read.
    std::fs::remove_dir_all(server.bucket("lake").join("kt")).expect("remove the lake");
    assert_eq!(commit(5, &Default::default()), 1);
    server.take_log();
    let remade = rt.block_on(lake.read_manifest()).expect("manifest");
    assert_eq!(commit_gets(&server.take_log()), [record(1)]);
    assert_eq!(remade.last_seq(), 1);
    assert_eq!(remade.commits().len(), 1);
    // A record of a format newer than this keytrail's is refused, by name, as in a local lake.
    let dir = server.bucket("lake").join("kt/_keytrail/manifest");
    let mut newer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("0000000001.json")).expect("record"))
            .expect("json");
    newer["seq"] = 2.into();
    newer["format"] = 999.into();
    rt.block_on(
        server
            .client(&s3)
            .put_object()
            .bucket("lake")
            .key("kt/_keytrail/manifest/0000000002.json")
            .body(newer.to_string().into_bytes().into())
            .send(),
    )
    .expect("put");
    let e = rt
        .block_on(lake.read_manifest())
        .expect_err("a newer format");
    let e = e.to_string();
    assert!(
        e.contains("s3://lake/kt/_keytrail/manifest/0000000002.json")
            && e.contains("newer than this keytrail understands"),
        "{e}"
    );
}
