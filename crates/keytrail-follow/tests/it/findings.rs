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
pub(crate) const MIN: i64 = 60_000;

pub(crate) fn stop_logging(id: &str, t: i64) -> Value {
    let mut r = testkit::record(id, KEY, t, "cloudtrail.amazonaws.com", "StopLogging");
    r["requestParameters"] =
        json!({"name": "arn:aws:cloudtrail:us-east-1:123456789012:trail/main"});
    r["readOnly"] = json!(false);
    r
}

pub(crate) fn deactivate(id: &str, t: i64) -> Value {
    let mut r = testkit::record(id, ADMIN, t, "iam.amazonaws.com", "UpdateAccessKey");
    r["userIdentity"]["arn"] = json!(format!("arn:aws:iam::{ACCOUNT}:user/admin"));
    r["userIdentity"]["userName"] = json!("admin");
    r["requestParameters"] = json!({"accessKeyId": KEY, "status": "Inactive", "userName": "alice"});
    r["readOnly"] = json!(false);
    r
}

pub(crate) fn use_key(id: &str, t: i64) -> Value {
    testkit::record(id, KEY, t, "s3.amazonaws.com", "ListBuckets")
}

/// (rule, first event) of each line.
pub(crate) fn summary(lines: &[Value]) -> Vec<(String, String)> {
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

pub(crate) fn detection() -> Detection {
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
            // The admin's UpdateAccessKey is a call of the catalog of abused calls it had
            // never made (issue 12); the StopLogging calls are the rule's alone.
            ("kt-abused-call", "b2-deact"),
            ("kt-key-used-after-deactivation", "b2-use-0"),
            ("cloudtrail-stopped", "b4-stop"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert_eq!(totals.findings, 4);
    assert_eq!(lines[0]["commit"], 1);
    assert_eq!(lines[1]["commit"], 2);
    assert_eq!(lines[1]["key"], ADMIN);
    assert_eq!(lines[1]["severity"], "low");
    assert_eq!(lines[2]["commit"], 2);
    assert_eq!(lines[2]["key"], KEY);
    assert_eq!(lines[2]["severity"], "critical");
    let ids: std::collections::HashSet<&str> = lines
        .iter()
        .map(|l| l["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), 4);

    // Started again: nothing pending, nothing written again.
    let mut opts = env.options(Source::Queue(url.clone()));
    opts.findings = Some(Sink::File(out.clone()));
    opts.detection = detection();
    let f = start(opts);
    f.wait("started", 30, |s| {
        s.status == keytrail_follow::StatusKind::Idle
    });
    f.stop();
    assert_eq!(findings(&out).len(), 4);
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

fn key_pair(id: &str, t: i64) -> Value {
    let mut r = testkit::record(id, KEY, t, "ec2.amazonaws.com", "CreateKeyPair");
    r["requestParameters"] = json!({"keyName": id});
    r["readOnly"] = json!(false);
    r
}

/// (first event, severity) of each finding raised.
fn first_events(fresh: &keytrail_follow::fresh::Fresh) -> Vec<(&str, keytrail_detect::Severity)> {
    fresh
        .findings
        .iter()
        .map(|r| (r.finding.events[0].as_str(), r.finding.severity))
        .collect()
}

#[test]
fn a_rule_match_is_routine_when_the_lake_already_held_one_as_in_detect() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let day = keytrail_model::time::DAY_MS;
    let t0 = now_millis() - 5 * day;
    let mut d = detection();
    d.rules.rules.retain(|r| r.id == "ec2-key-pair-created");
    assert_eq!(d.rules.rules.len(), 1);
    d.detectors = false;
    ingest(
        &lake,
        tmp.path(),
        "a.json.gz",
        &[
            key_pair("a-kp", t0),
            testkit::record("a-other", ADMIN, t0, "s3.amazonaws.com", "ListBuckets"),
        ],
    );
    ingest(
        &lake,
        tmp.path(),
        "b.json.gz",
        &[
            key_pair("b-kp", t0 + 2 * day),
            use_key("b-use", t0 + 2 * day),
        ],
    );
    // At low: the key pair made two days after another by the same user is routine.
    let fresh = keytrail_follow::fresh::fresh(&lake, 1, &d).expect("fresh");
    assert_eq!(fresh.upto, 2);
    assert_eq!(fresh.events, 2);
    assert!(fresh.findings.is_empty(), "{:?}", fresh.findings);
    // Shown at info, with the reason `keytrail detect` gives.
    d.min_severity = keytrail_detect::Severity::Info;
    let fresh = keytrail_follow::fresh::fresh(&lake, 1, &d).expect("fresh");
    let found = first_events(&fresh);
    assert_eq!(found, [("b-kp", keytrail_detect::Severity::Info)]);
    assert!(
        fresh.findings[0]
            .finding
            .reason
            .contains("routine: this rule matched the principal on 1 earlier day(s)"),
        "{}",
        fresh.findings[0].finding.reason
    );
    // The detectors then read the keys the new events touched, not the lake's other keys.
    d.detectors = true;
    let fresh = keytrail_follow::fresh::fresh(&lake, 1, &d).expect("fresh");
    assert_eq!(fresh.touched, 1);
    d.detectors = false;
    // The first one, judged over commit 1 alone, is not routine.
    let fresh = keytrail_follow::fresh::fresh(&lake, 0, &d).expect("fresh");
    let found = first_events(&fresh);
    assert_eq!(
        found,
        [
            ("a-kp", keytrail_detect::Severity::Medium),
            ("b-kp", keytrail_detect::Severity::Info)
        ]
    );
}

/// Eight read calls across five services within minutes: a burst of discovery.
fn recon(prefix: &str, key: &str, t: i64) -> Vec<Value> {
    [
        ("s3.amazonaws.com", "ListBuckets"),
        ("ec2.amazonaws.com", "DescribeInstances"),
        ("iam.amazonaws.com", "ListUsers"),
        ("lambda.amazonaws.com", "ListFunctions"),
        ("rds.amazonaws.com", "DescribeDBInstances"),
        ("kms.amazonaws.com", "ListKeys"),
        ("dynamodb.amazonaws.com", "ListTables"),
        ("sns.amazonaws.com", "ListTopics"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (src, name))| {
        testkit::record(
            &format!("{prefix}-{i}"),
            key,
            t + i as i64 * 20_000,
            src,
            name,
        )
    })
    .collect()
}

#[test]
fn a_principal_s_history_is_the_whole_lake_s_not_only_the_touched_keys() {
    const OLD: &str = "AKIA2FOLLOWOLDKEYY03";
    const NEW: &str = "AKIA2FOLLOWNEWKEYY03";
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let day = keytrail_model::time::DAY_MS;
    let t0 = now_millis() - 5 * day;
    let mut d = detection();
    d.rules = RuleSet::default();
    // alice's old key: first seen, then two days later a burst of calls she never made.
    let mut first = vec![testkit::record(
        "old-0",
        OLD,
        t0,
        "sts.amazonaws.com",
        "GetCallerIdentity",
    )];
    first.extend(recon("old-burst", OLD, t0 + 2 * day));
    // Her new key, first seen long before its own burst.
    first.push(testkit::record(
        "new-0",
        NEW,
        t0 + 3_600_000,
        "sts.amazonaws.com",
        "GetCallerIdentity",
    ));
    ingest(&lake, tmp.path(), "a.json.gz", &first);
    // The new key makes the same calls a day after the old one: nothing new for alice, though
    // the old key is not among the keys the new commit touched.
    ingest(
        &lake,
        tmp.path(),
        "b.json.gz",
        &recon("new-burst", NEW, t0 + 3 * day),
    );
    let bursts = |after: u64| -> Vec<(String, String)> {
        keytrail_follow::fresh::fresh(&lake, after, &d)
            .expect("fresh")
            .findings
            .iter()
            .filter(|r| r.finding.rule == "kt-recon-burst")
            .map(|r| {
                (
                    r.finding.key.clone().unwrap_or_default(),
                    r.finding.events[0].clone(),
                )
            })
            .collect()
    };
    assert_eq!(bursts(1), Vec::<(String, String)>::new());
    // Both commits new: the old key's burst, not the new key's.
    assert_eq!(bursts(0), [(OLD.to_owned(), "old-burst-0".to_owned())]);
}
