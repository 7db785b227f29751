//! `keytrail follow`, the binary, against moto's S3 and SQS on 127.0.0.1: SIGTERM, kill -9 at
//! every point of a batch and restart, findings written once, polling, usage errors.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keytrail_follow::testkit::{self, ACCOUNT, Moto, REGION};
use keytrail_model::time::now_millis;
use serde_json::{Value, json};

use crate::util::*;

const MIN: i64 = 60_000;

fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A `keytrail follow` process; its stderr status lines (`--json`) gathered as they come.
struct Follower {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Follower {
    fn start(moto: &Moto, args: &[&str], crash_at: Option<&str>) -> Follower {
        let mut cmd = keytrail();
        cmd.arg("follow")
            .args(args)
            .args(["--json", "--threads", "2", "--endpoint-url"])
            .arg(moto.endpoint())
            .envs(moto.env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(p) = crash_at {
            cmd.env("KEYTRAIL_CRASH_AT", p);
        }
        let mut child = cmd.spawn().expect("keytrail follow starts");
        let stderr = child.stderr.take().expect("stderr");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let l = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                l.lock().expect("lines").push(line);
            }
        });
        Follower { child, lines }
    }

    fn statuses(&self) -> Vec<Value> {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("status").is_some())
            .collect()
    }

    fn stderr(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }

    /// Wait until a status satisfies `f` (or the process ended: `None`).
    fn wait(&mut self, what: &str, secs: u64, f: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(s) = self.statuses().into_iter().rev().find(|s| f(s)) {
                return Some(s);
            }
            if self.child.try_wait().expect("try_wait").is_some() {
                // Let the reader drain what is left, then look once more.
                std::thread::sleep(Duration::from_millis(200));
                return self.statuses().into_iter().rev().find(|s| f(s));
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit status (and stdout).
    fn terminate(self) -> (Option<i32>, String, String) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(sent.success());
        self.finish()
    }

    /// Wait for the process to end by itself.
    fn finish(mut self) -> (Option<i32>, String, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            assert!(Instant::now() < deadline, "the follower did not end");
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut out = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut o, &mut out);
        }
        std::thread::sleep(Duration::from_millis(100));
        (status.code(), out, self.stderr())
    }

    /// kill -9.
    fn kill9(mut self) -> String {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(100));
        self.stderr()
    }
}

/// A bucket of objects and the messages that announce them.
struct Trail {
    moto: &'static Moto,
    rt: tokio::runtime::Runtime,
    sqs: aws_sdk_sqs::Client,
    messages: Vec<String>,
    events: Vec<String>,
}

fn stop_logging(id: &str, key: &str, t: i64) -> Value {
    let mut r = testkit::record(id, key, t, "cloudtrail.amazonaws.com", "StopLogging");
    r["requestParameters"] =
        json!({"name": "arn:aws:cloudtrail:us-east-1:123456789012:trail/main"});
    r
}

/// `n` objects of 20 events each, in every notification format; two of them stop logging
/// (with different keys), one deactivates a key that is then used: three findings.
fn trail(n: usize) -> Trail {
    let moto = Moto::shared();
    let rt = testkit::runtime();
    let (s3, sqs) = (moto.s3(), moto.sqs());
    let bucket = unique("trail");
    rt.block_on(testkit::create_bucket(&s3, &bucket));
    let t0 = now_millis() - 20 * 3_600_000;
    let mut messages = Vec::new();
    let mut events = Vec::new();
    for i in 0..n {
        let key_id = format!("AKIA2FOLLOWCLI{i:06}");
        let t = t0 + i as i64 * MIN;
        let mut records: Vec<Value> = (0..20)
            .map(|j| {
                testkit::record(
                    &format!("o{i}-e{j}"),
                    &key_id,
                    t + j * 1000,
                    "s3.amazonaws.com",
                    "ListBuckets",
                )
            })
            .collect();
        match i {
            3 => records.push(stop_logging(
                "o3-stop",
                "AKIA2FOLLOWCLISTOP01",
                t0 + 2 * 3_600_000,
            )),
            7 => records.push(stop_logging(
                "o7-stop",
                "AKIA2FOLLOWCLISTOP02",
                t0 + 8 * 3_600_000,
            )),
            11 => {
                let mut d = testkit::record(
                    "o11-deact",
                    "AKIA2FOLLOWCLIADMIN1",
                    t + 30_000,
                    "iam.amazonaws.com",
                    "UpdateAccessKey",
                );
                d["requestParameters"] =
                    json!({"accessKeyId": key_id, "status": "Inactive", "userName": "alice"});
                records.push(d);
                for j in 0..2 {
                    records.push(testkit::record(
                        &format!("o11-after{j}"),
                        &key_id,
                        t + 40_000 + j * 1000,
                        "s3.amazonaws.com",
                        "ListBuckets",
                    ));
                }
            }
            _ => {}
        }
        events.extend(
            records
                .iter()
                .map(|r| r["eventID"].as_str().expect("id").to_owned()),
        );
        let key = testkit::log_key(ACCOUNT, REGION, t, &format!("OBJ{i:04}"));
        let (etag, size) = rt.block_on(testkit::put(
            &s3,
            &bucket,
            &key,
            testkit::log_object(&records),
        ));
        messages.push(match i % 4 {
            0 => testkit::cloudtrail_notice(&bucket, &[&key]),
            1 => testkit::sns(&testkit::cloudtrail_notice(&bucket, &[&key])),
            2 => testkit::s3_event(&bucket, &key, size, &etag),
            _ => testkit::sns(&testkit::s3_event(&bucket, &key, size, &etag)),
        });
    }
    events.sort();
    Trail {
        moto,
        rt,
        sqs,
        messages,
        events,
    }
}

impl Trail {
    /// A new queue holding every message.
    fn queue(&self) -> String {
        let url = self
            .rt
            .block_on(testkit::create_queue(&self.sqs, &unique("q"), None));
        self.rt
            .block_on(testkit::send_all(&self.sqs, &url, &self.messages));
        url
    }

    fn counts(&self, url: &str) -> (u64, u64) {
        self.rt.block_on(testkit::counts(&self.sqs, url))
    }
}

/// A lake in moto's S3, when `lake` is `s3://BUCKET/PREFIX`.
fn in_s3(lake: &Path) -> Option<keytrail_engine::LakeLocation> {
    let (bucket, prefix) = lake.to_str()?.strip_prefix("s3://")?.split_once('/')?;
    Some(Moto::shared().lake(bucket, prefix))
}

/// The lake's event IDs, sorted; `lake` is a directory or `s3://BUCKET/PREFIX` in moto.
fn event_ids(lake: &Path) -> Vec<String> {
    let mut v: Vec<String> = match in_s3(lake) {
        None => rows(lake, "events")
            .into_iter()
            .filter_map(|r| r.event_id)
            .collect(),
        Some(location) => {
            let (_, batches) = keytrail_engine::sql(
                location,
                "SELECT eventid FROM events",
                &keytrail_engine::SessionOptions::default(),
            )
            .expect("sql");
            keytrail_engine::rows::from_batches::<EventId>(&batches)
                .expect("rows")
                .into_iter()
                .filter_map(|r| r.eventid)
                .collect()
        }
    };
    v.sort();
    v
}

/// (rule, first event) of each findings line, and whether their ids are distinct.
fn findings_of(text: &str) -> (Vec<(String, String)>, bool) {
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a findings line is JSON"))
        .collect();
    let ids: BTreeSet<&str> = lines
        .iter()
        .map(|l| l["id"].as_str().expect("id"))
        .collect();
    let mut v: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["rule"].as_str().expect("rule").to_owned(),
                l["events"][0].as_str().expect("event").to_owned(),
            )
        })
        .collect();
    v.sort();
    (v, ids.len() == lines.len())
}

fn expected_findings() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = [
        ("cloudtrail-stopped", "o3-stop"),
        ("cloudtrail-stopped", "o7-stop"),
        // The admin's UpdateAccessKey is a call of the catalog of abused calls it had never
        // made (issue 12); the StopLogging calls are the rule's alone.
        ("kt-abused-call", "o11-deact"),
        ("kt-key-used-after-deactivation", "o11-after0"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    v.sort();
    v
}

fn follow_args<'a>(
    url: &'a str,
    lake: &'a Path,
    findings: &'a Path,
    extra: &[&'a str],
) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "--queue-url".into(),
        url.into(),
        "--lake".into(),
        lake.display().to_string(),
        "--findings".into(),
        findings.display().to_string(),
        "--batch-window".into(),
        "300ms".into(),
        "--visibility-timeout".into(),
        "2s".into(),
    ];
    v.extend(extra.iter().map(|s| (*s).to_owned()));
    v
}

/// Run a follower until every object is committed, every message deleted and the findings of
/// every commit written; SIGTERM; exit status 0.
fn follow_to_the_end(t: &Trail, url: &str, lake: &Path, findings: &Path) {
    let args = follow_args(url, lake, findings, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let f = Follower::start(t.moto, &args, None);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = event_ids(lake).len() == t.events.len() && t.counts(url) == (0, 0);
        let caught_up = f
            .statuses()
            .last()
            .is_some_and(|s| s["findings_commit"].as_u64() == Some(lake_seq(lake)));
        if done && caught_up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not done: {} of {} events, queue {:?}; stderr:\n{}",
            event_ids(lake).len(),
            t.events.len(),
            t.counts(url),
            f.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, _, stderr) = f.terminate();
    assert_eq!(code, Some(0), "SIGTERM exits 0; stderr:\n{stderr}");
}

fn lake_seq(lake: &Path) -> u64 {
    match in_s3(lake) {
        None => keytrail_lake::Lake::open(lake)
            .and_then(|l| l.manifest())
            .map(|m| m.last_seq())
            .unwrap_or(0),
        Some(location) => keytrail_engine::block_on::<_, keytrail_engine::EngineError>(2, async {
            let session = keytrail_engine::LakeSession::open(
                location,
                &keytrail_engine::SessionOptions::default(),
            )
            .await?;
            Ok(session.manifest().last_seq())
        })
        .unwrap_or(0),
    }
}

fn check(t: &Trail, url: &str, lake: &Path, findings: &Path, what: &str) {
    assert_eq!(event_ids(lake), t.events, "{what}: each event exactly once");
    assert_eq!(t.counts(url), (0, 0), "{what}: every message deleted");
    let text = std::fs::read_to_string(findings).unwrap_or_default();
    let (found, distinct) = findings_of(&text);
    assert_eq!(found, expected_findings(), "{what}: findings\n{text}");
    assert!(distinct, "{what}: no finding written twice\n{text}");
    let mut verify = keytrail();
    verify.args(["lake", "verify", "--lake"]).arg(lake);
    if in_s3(lake).is_some() {
        verify
            .args(["--endpoint-url", &t.moto.endpoint()])
            .envs(t.moto.env());
    }
    let out = run_code(&mut verify, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok: every file matches the manifest"));
}

#[test]
fn a_clean_run_and_sigterm() {
    let t = trail(16);
    let url = t.queue();
    let tmp = tempfile::tempdir().expect("tmp");
    let (lake, findings) = (tmp.path().join("lake"), tmp.path().join("f.jsonl"));
    follow_to_the_end(&t, &url, &lake, &findings);
    check(&t, &url, &lake, &findings, "clean");
}

#[test]
fn killed_at_every_point_of_a_batch_then_restarted() {
    let t = trail(16);
    for point in [
        "before-commit",
        "after-commit",
        "mid-publish",
        "follow-after-commit",
        "follow-mid-findings",
        "follow-after-findings",
    ] {
        let url = t.queue();
        let tmp = tempfile::tempdir().expect("tmp");
        let (lake, findings) = (tmp.path().join("lake"), tmp.path().join("f.jsonl"));
        let args = follow_args(&url, &lake, &findings, &[]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let f = Follower::start(t.moto, &args, Some(point));
        let (code, _, stderr) = f.finish();
        assert_eq!(code, None, "{point}: killed by a signal; stderr:\n{stderr}");
        assert!(stderr.contains(point), "{point}: stopped there:\n{stderr}");
        follow_to_the_end(&t, &url, &lake, &findings);
        check(&t, &url, &lake, &findings, point);
    }
}

#[test]
fn a_lake_in_s3_killed_at_every_point_of_a_batch_then_restarted() {
    let t = trail(12);
    let bucket = unique("s3lakefollow");
    t.rt.block_on(testkit::create_bucket(&t.moto.s3(), &bucket));
    for point in [
        "s3-before-commit",
        "s3-after-commit",
        "follow-after-commit",
        "follow-mid-findings",
        "follow-after-findings",
    ] {
        let url = t.queue();
        let tmp = tempfile::tempdir().expect("tmp");
        let lake = PathBuf::from(format!("s3://{bucket}/{point}"));
        let findings = tmp.path().join("f.jsonl");
        // A killed follower leaves its batch's working copy behind: in the test's directory.
        let work = tmp.path().display().to_string();
        let args = follow_args(&url, &lake, &findings, &["--work-dir", &work]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let f = Follower::start(t.moto, &args, Some(point));
        let (code, _, stderr) = f.finish();
        assert_eq!(code, None, "{point}: killed by a signal; stderr:\n{stderr}");
        assert!(stderr.contains(point), "{point}: stopped there:\n{stderr}");
        follow_to_the_end(&t, &url, &lake, &findings);
        check(&t, &url, &lake, &findings, point);
    }
}

#[test]
fn kill_9_mid_batch_then_restart() {
    let t = trail(60);
    let url = t.queue();
    let tmp = tempfile::tempdir().expect("tmp");
    let (lake, findings) = (tmp.path().join("lake"), tmp.path().join("f.jsonl"));
    // Small batches, so the kill lands in the middle of the work.
    let args = follow_args(&url, &lake, &findings, &["--max-batch", "7"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut f = Follower::start(t.moto, &args, None);
    f.wait("two batches", 60, |s| {
        s["totals"]["batches"].as_u64() >= Some(2)
    });
    let stderr = f.kill9();
    let read = event_ids(&lake).len();
    assert!(
        read < t.events.len(),
        "killed before the end: {read}\n{stderr}"
    );
    follow_to_the_end(&t, &url, &lake, &findings);
    check(&t, &url, &lake, &findings, "kill -9");
}

#[test]
fn sigterm_mid_backlog_exits_0_then_restart() {
    let t = trail(40);
    let url = t.queue();
    let tmp = tempfile::tempdir().expect("tmp");
    let (lake, findings) = (tmp.path().join("lake"), tmp.path().join("f.jsonl"));
    let args = follow_args(&url, &lake, &findings, &["--max-batch", "5"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut f = Follower::start(t.moto, &args, None);
    f.wait("a first batch", 60, |s| s["status"] == "batch");
    let (code, _, stderr) = f.terminate();
    assert_eq!(
        code,
        Some(0),
        "SIGTERM in the middle of a backlog exits 0:\n{stderr}"
    );
    let last: Value = stderr
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .expect("a status");
    assert_eq!(last["status"], "stopped");
    let read = event_ids(&lake).len();
    assert!(read < t.events.len(), "stopped before the end: {read}");
    // What was committed is whole: the manifest and the files agree, and a restart ends with
    // each event once.
    let out = run_code(keytrail().args(["lake", "verify", "--lake"]).arg(&lake), 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok: every file matches the manifest"));
    follow_to_the_end(&t, &url, &lake, &findings);
    check(&t, &url, &lake, &findings, "SIGTERM");
}

#[test]
fn findings_to_stdout_and_sigterm_while_waiting() {
    let t = trail(12);
    let url = t.queue();
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let args = [
        "--queue-url",
        &url,
        "--lake",
        &lake.display().to_string(),
        "--findings",
        "-",
        "--batch-window",
        "300ms",
    ]
    .map(str::to_owned);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut f = Follower::start(t.moto, &args, None);
    f.wait("every message deleted", 60, |s| {
        s["totals"]["deleted"].as_u64() == Some(12)
            && s["findings_commit"].as_u64().is_some_and(|c| c >= 1)
    });
    // Now in a 20 s long poll: SIGTERM ends it at once.
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    let (code, stdout, stderr) = f.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(asked.elapsed() < Duration::from_secs(5), "stopped promptly");
    let last: Value = stderr
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .expect("a status");
    assert_eq!(last["status"], "stopped");
    assert_eq!(last["totals"]["objects_read"], 12);
    assert_eq!(
        last["totals"]["events"].as_u64(),
        Some(t.events.len() as u64)
    );
    let (found, distinct) = findings_of(&stdout);
    assert!(distinct);
    assert_eq!(found, expected_findings(), "{stdout}");
}

/// A new bucket holding one log object delivered a minute ago in today's folder, of the
/// records `records(now)` makes.
fn bucket_with_an_object_of_now(
    name: &str,
    records: impl FnOnce(i64) -> Vec<Value>,
) -> (tokio::runtime::Runtime, aws_sdk_s3::Client, String) {
    let rt = testkit::runtime();
    let s3 = Moto::shared().s3();
    let bucket = unique(name);
    rt.block_on(testkit::create_bucket(&s3, &bucket));
    let now = now_millis();
    let key = testkit::log_key(ACCOUNT, REGION, now - 60_000, "NOW");
    rt.block_on(testkit::put(
        &s3,
        &bucket,
        &key,
        testkit::log_object(&records(now)),
    ));
    (rt, s3, bucket)
}

#[test]
fn polling_from_the_command_line() {
    let moto = Moto::shared();
    let (_, _, bucket) = bucket_with_an_object_of_now("pollcli", |now| {
        (0..5)
            .map(|i| {
                testkit::record(
                    &format!("p{i}"),
                    "AKIA2FOLLOWCLIPOLL01",
                    now - 60_000 + i,
                    "s3.amazonaws.com",
                    "ListBuckets",
                )
            })
            .collect()
    });
    let tmp = tempfile::tempdir().expect("tmp");
    let lake: PathBuf = tmp.path().join("lake");
    let uri = format!("s3://{bucket}");
    let lake_s = lake.display().to_string();
    let mut f = Follower::start(
        moto,
        &[&uri, "--lake", &lake_s, "--poll-interval", "300ms"],
        None,
    );
    f.wait("the object read", 60, |s| s["totals"]["objects_read"] == 1);
    let (code, _, stderr) = f.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(event_ids(&lake).len(), 5);
}

#[test]
fn polling_into_a_lake_in_s3() {
    let moto = Moto::shared();
    let (rt, s3, bucket) = bucket_with_an_object_of_now("polls3lake", |now| {
        vec![
            testkit::record(
                "s3lake-use",
                "AKIA2FOLLOWCLIPOLL02",
                now - 60_000,
                "s3.amazonaws.com",
                "ListBuckets",
            ),
            stop_logging("s3lake-stop", "AKIA2FOLLOWCLIPOLL02", now - 30_000),
        ]
    });
    let tmp = tempfile::tempdir().expect("tmp");
    let findings = tmp.path().join("findings.jsonl");
    let (uri, lake) = (format!("s3://{bucket}"), format!("s3://{bucket}/lake"));
    let (findings_s, work) = (
        findings.display().to_string(),
        tmp.path().display().to_string(),
    );
    let mut f = Follower::start(
        moto,
        &[
            &uri,
            "--lake",
            &lake,
            "--findings",
            &findings_s,
            "--work-dir",
            &work,
            "--poll-interval",
            "300ms",
        ],
        None,
    );
    f.wait("the object read and its findings written", 60, |s| {
        s["totals"]["objects_read"] == 1 && s["findings_commit"] == 1
    });
    let (code, _, stderr) = f.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    // The lake is in the bucket (read in place), the findings cursor too; nothing is left in
    // the working directory but the findings file.
    assert_eq!(event_ids(Path::new(&lake)), ["s3lake-stop", "s3lake-use"]);
    let text = std::fs::read_to_string(&findings).expect("findings");
    let (found, distinct) = findings_of(&text);
    assert!(distinct, "{text}");
    assert_eq!(
        found,
        [("cloudtrail-stopped".to_owned(), "s3lake-stop".to_owned())],
        "{text}"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["findings.jsonl"]);
    let cursors = rt
        .block_on(
            s3.list_objects_v2()
                .bucket(&bucket)
                .prefix("lake/_keytrail/follow/findings-")
                .send(),
        )
        .expect("list");
    assert_eq!(cursors.contents().len(), 1);
}

#[derive(serde::Deserialize)]
struct EventId {
    eventid: Option<String>,
}

#[test]
fn usage_errors() {
    for (args, says) in [
        (vec!["--lake", "/tmp/x"], "--queue-url"),
        (
            vec![
                "--queue-url",
                "https://q",
                "--lake",
                "s3://b/lake",
                "--part-size",
                "1M",
            ],
            "at least 5M",
        ),
        (
            vec![
                "--queue-url",
                "https://q",
                "--lake",
                "/tmp/x",
                "--batch-window",
                "10x",
            ],
            "--batch-window",
        ),
        (
            vec!["--queue-url", "q", "--lake", "/tmp/x"],
            "expected https://",
        ),
        (vec!["/tmp/logs", "--lake", "/tmp/x"], "s3://BUCKET"),
        (
            vec![
                "--queue-url",
                "https://q",
                "--lake",
                "/tmp/x",
                "--shard",
                "1/2",
            ],
            "--shard",
        ),
        (
            vec![
                "--queue-url",
                "https://q",
                "--lake",
                "/tmp/x",
                "--set",
                "denied-count=3",
                "--no-detectors",
            ],
            "--no-detectors, --set: detection runs only with --findings",
        ),
        (
            vec!["s3://b", "--lake", "/tmp/x", "--rules", "/tmp/r"],
            "--rules: detection runs only with --findings",
        ),
        (
            vec!["s3://b", "--lake", "/tmp/x", "--poll-interval", "1.5"],
            "--poll-interval",
        ),
    ] {
        let out = run_code(keytrail().arg("follow").args(&args), 2);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
