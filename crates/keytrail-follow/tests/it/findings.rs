//! Findings on arrival: rules over the new events, detectors over the touched keys' history,
//! each finding written once, across batches and restarts.

use std::path::Path;

use keytrail_detect::RuleSet;
use keytrail_follow::testkit::{self, ACCOUNT, REGION};
use keytrail_follow::{Detection, FindingsLog, Sink, Source};
use keytrail_model::time::now_millis;
use serde_json::{Value, json};

use crate::util::*;

const KEY: &str = "AKIA2FOLLOWTESTKEY03";
const ADMIN: &str = "AKIA2FOLLOWADMINKY03";
const MIN: i64 = 60_000;

fn stop_logging(id: &str, t: i64) -> Value {
    let mut r = testkit::record(id, KEY, t, "cloudtrail.amazonaws.com", "StopLogging");
    r["requestParameters"] =
        json!({"name": "arn:aws:cloudtrail:us-east-1:123456789012:trail/main"});
    r["readOnly"] = json!(false);
    r
}

fn deactivate(id: &str, t: i64) -> Value {
    let mut r = testkit::record(id, ADMIN, t, "iam.amazonaws.com", "UpdateAccessKey");
    r["userIdentity"]["arn"] = json!(format!("arn:aws:iam::{ACCOUNT}:user/admin"));
    r["userIdentity"]["userName"] = json!("admin");
    r["requestParameters"] = json!({"accessKeyId": KEY, "status": "Inactive", "userName": "alice"});
    r["readOnly"] = json!(false);
    r
}

fn use_key(id: &str, t: i64) -> Value {
    testkit::record(id, KEY, t, "s3.amazonaws.com", "ListBuckets")
}

/// (rule, first event) of each line.
fn summary(lines: &[Value]) -> Vec<(String, String)> {
    lines
        .iter()
        .map(|l| {
            (
                l["rule"].as_str().expect("rule").to_owned(),
                l["events"][0].as_str().expect("event").to_owned(),
            )
        })
        .collect()
}

fn detection() -> Detection {
    Detection {
        rules: RuleSet::bundled().expect("bundled rules"),
        threads: 2,
        ..Detection::default()
    }
}

#[test]
fn findings_are_raised_once_as_their_events_arrive() {
    let env = Env::new("findings");
    let url = env.queue(None);
    let t0 = now_millis() - 6 * 3_600_000;
    let out = env.tmp.path().join("findings.jsonl");
    let mut opts = env.options(Source::Queue(url.clone()));
    opts.findings = Some(Sink::File(out.clone()));
    opts.detection = detection();
    let f = start(opts);
    let mut commits = 0;
    let mut batch = |tag: &str, records: Vec<Value>| {
        let key = testkit::log_key(ACCOUNT, REGION, t0 + commits * MIN, tag);
        env.put(&key, &records);
        env.send(&url, &testkit::cloudtrail_notice(&env.bucket, &[&key]));
        commits += 1;
        let n = commits as u64;
        f.wait("the batch committed", 60, |s| {
            s.totals.commits == n && s.findings_commit.is_some_and(|c| c >= n)
        });
    };
    // 1: the key in use, and logging stopped (a rule).
    batch(
        "B1",
        vec![
            use_key("b1-0", t0),
            use_key("b1-1", t0 + MIN),
            stop_logging("b1-stop", t0 + 5 * MIN),
        ],
    );
    // 2: the key deactivated, and used after (a detector over the key's history).
    batch(
        "B2",
        vec![
            deactivate("b2-deact", t0 + 10 * MIN),
            use_key("b2-use-0", t0 + 11 * MIN),
            use_key("b2-use-1", t0 + 12 * MIN),
        ],
    );
    // 3: used again after deactivation: the same finding grows, nothing new.
    batch("B3", vec![use_key("b3-use-0", t0 + 13 * MIN)]);
    // 4: logging stopped again: a new rule finding.
    batch("B4", vec![stop_logging("b4-stop", t0 + 20 * MIN)]);
    let totals = f.stop();

    let lines = findings(&out);
    assert_eq!(
        summary(&lines),
        [
            ("cloudtrail-stopped", "b1-stop"),
            ("kt-key-used-after-deactivation", "b2-use-0"),
            ("cloudtrail-stopped", "b4-stop"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert_eq!(totals.findings, 3);
    assert_eq!(lines[0]["commit"], 1);
    assert_eq!(lines[1]["commit"], 2);
    assert_eq!(lines[1]["key"], KEY);
    assert_eq!(lines[1]["severity"], "critical");
    let ids: std::collections::HashSet<&str> = lines
        .iter()
        .map(|l| l["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), 3);

    // Started again: nothing pending, nothing written again.
    let mut opts = env.options(Source::Queue(url.clone()));
    opts.findings = Some(Sink::File(out.clone()));
    opts.detection = detection();
    let f = start(opts);
    f.wait("started", 30, |s| {
        s.status == keytrail_follow::StatusKind::Idle
    });
    f.stop();
    assert_eq!(findings(&out).len(), 3);
}

/// Ingest one local object into `lake` (a commit other than the follower's).
fn ingest(lake: &Path, dir: &Path, name: &str, records: &[Value]) {
    let path = dir.join(name);
    std::fs::write(&path, testkit::log_object(records)).expect("write");
    let opts = keytrail_ingest::IngestOptions::new(vec![path], lake.to_path_buf());
    let s = keytrail_ingest::ingest(&opts, &keytrail_ingest::NoProgress).expect("ingest");
    assert!(s.commit.is_some());
}

#[test]
fn a_stop_between_writing_findings_and_moving_the_cursor_writes_nothing_twice() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let out = tmp.path().join("findings.jsonl");
    let t0 = now_millis() - 3_600_000;
    ingest(&lake, tmp.path(), "a.json.gz", &[use_key("a-0", t0)]);
    // A cursor made now starts after the lake's last commit: nothing of commit 1 is raised.
    let log = FindingsLog::open(&lake, Sink::File(out.clone()), 1).expect("open");
    assert_eq!(log.seq(), 1);
    let cursor_path = log.cursor_path().to_path_buf();
    drop(log);
    ingest(
        &lake,
        tmp.path(),
        "b.json.gz",
        &[
            stop_logging("b-stop", t0 + MIN),
            stop_logging("b-stop2", t0 + 2 * MIN),
        ],
    );
    ingest(
        &lake,
        tmp.path(),
        "c.json.gz",
        &[stop_logging("c-stop", t0 + 90 * MIN)],
    );
    let d = detection();
    let before = std::fs::read(&cursor_path).expect("cursor");

    let mut log = FindingsLog::open(&lake, Sink::File(out.clone()), 3).expect("open");
    let fresh = keytrail_follow::fresh::fresh(&lake, log.seq(), &d).expect("fresh");
    assert_eq!(fresh.upto, 3);
    assert_eq!(log.append(&fresh).expect("append"), 2);
    let whole = std::fs::read_to_string(&out).expect("findings");
    assert_eq!(whole.lines().count(), 2, "{whole}");
    drop(log);

    // As if stopped after writing but before the cursor moved.
    std::fs::write(&cursor_path, &before).expect("cursor");
    let mut log = FindingsLog::open(&lake, Sink::File(out.clone()), 3).expect("open");
    assert_eq!(log.seq(), 1);
    let fresh = keytrail_follow::fresh::fresh(&lake, log.seq(), &d).expect("fresh");
    assert_eq!(log.append(&fresh).expect("append"), 0, "both were written");
    assert_eq!(log.seq(), 3);
    assert_eq!(std::fs::read_to_string(&out).expect("findings"), whole);
    drop(log);

    // As if stopped in the middle of the second line.
    let first_len = whole.find('\n').expect("a line") + 1;
    let cut = first_len + (whole.len() - first_len) / 2;
    std::fs::write(&out, &whole[..cut]).expect("cut");
    std::fs::write(&cursor_path, &before).expect("cursor");
    let mut log = FindingsLog::open(&lake, Sink::File(out.clone()), 3).expect("open");
    let fresh = keytrail_follow::fresh::fresh(&lake, log.seq(), &d).expect("fresh");
    assert_eq!(log.append(&fresh).expect("append"), 1, "the cut line again");
    let lines = findings(&out);
    assert_eq!(
        summary(&lines),
        [
            ("cloudtrail-stopped", "b-stop"),
            ("cloudtrail-stopped", "c-stop")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert_eq!(
        lines[0].to_string(),
        whole
            .lines()
            .next()
            .map(|l| serde_json::from_str::<Value>(l).expect("json").to_string())
            .expect("line")
    );
}
