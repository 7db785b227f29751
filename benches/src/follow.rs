//! `keytrail-bench follow DIR --keytrail BIN`: follow mode against moto's S3 and SQS on
//! 127.0.0.1 (moto, not AWS: its latencies are loopback and Python's, not the network's).
//!
//! 1. DIR's objects (`keytrail-bench gen`) are uploaded to a bucket in the delivery layout.
//! 2. One-shot: `keytrail ingest s3://…` of the bucket into a fresh lake, then `keytrail
//!    detect` over it.
//! 3. Backlog: a queue holding one CloudTrail notification per object, then `keytrail follow`
//!    started, timed until every object is committed, every message deleted and (with
//!    `--findings`) the findings of every commit written. Without and with findings, and with
//!    `--s3-lake` also with findings into a lake in S3 (a bucket of the same server).
//! 4. Latency: over the lake the backlog left, objects delivered one at a time, each holding an
//!    event a rule raises (made with the lake's busiest key, so the detectors read a long
//!    history): the time from sending the notification to its findings line in the file, for
//!    `--batch-window 0s` and `1s`.
#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use keytrail_follow::testkit::{self, Moto};
use serde_json::{Value, json};

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let p = e?.path();
        if p.is_dir() {
            files(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// A `keytrail follow` process and its JSON status lines.
struct Follower {
    child: Child,
    statuses: Arc<Mutex<Vec<Value>>>,
}

impl Follower {
    fn start(bin: &Path, moto: &Moto, args: &[String]) -> anyhow::Result<Follower> {
        let mut child = Command::new(bin)
            .arg("follow")
            .args(args)
            .args(["--json", "--threads", "2", "--endpoint-url"])
            .arg(moto.endpoint())
            .envs(moto.env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting keytrail follow")?;
        let stderr = child.stderr.take().context("stderr")?;
        let statuses: Arc<Mutex<Vec<Value>>> = Arc::default();
        let s = Arc::clone(&statuses);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) if v.get("status").is_some() => s
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(v),
                    _ => println!("  follow: {line}"),
                }
            }
        });
        Ok(Follower { child, statuses })
    }

    fn last(&self) -> Option<Value> {
        self.statuses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .last()
            .cloned()
    }

    fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let s = self.child.wait()?;
        if !s.success() {
            bail!("keytrail follow exited with {s}");
        }
        Ok(())
    }
}

fn lake_seq(lake: &Path) -> u64 {
    keytrail_lake::Lake::open(lake)
        .and_then(|l| l.manifest())
        .map(|m| m.last_seq())
        .unwrap_or(0)
}

fn median(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9), at(1.0))
}

pub fn run(dir: &Path, args: &[String]) -> anyhow::Result<()> {
    let bin = PathBuf::from(
        arg_value(args, "--keytrail").unwrap_or_else(|| "target/release/keytrail".into()),
    );
    let samples: usize = arg_value(args, "--samples")
        .map_or(Ok(10), |v| v.parse())
        .context("--samples")?;
    let work = std::env::temp_dir().join(format!("keytrail-bench-follow-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;

    let moto = Moto::start();
    let rt = testkit::runtime();
    let (s3, sqs) = (moto.s3(), moto.sqs());
    let bucket = "trail";
    rt.block_on(testkit::create_bucket(&s3, bucket));
    let mut paths = Vec::new();
    files(dir, &mut paths)?;
    paths.sort();
    let t = Instant::now();
    let keys: Vec<String> = rt.block_on(async {
        futures::stream::iter(paths.iter().map(|p| {
            let s3 = s3.clone();
            let key = p
                .strip_prefix(dir)
                .map(|k| k.to_string_lossy().into_owned())
                .unwrap_or_default();
            async move {
                let body = std::fs::read(p).unwrap_or_default();
                testkit::put(&s3, bucket, &key, body).await;
                key
            }
        }))
        .buffer_unordered(16)
        .collect()
        .await
    });
    let logs: Vec<&String> = keys
        .iter()
        .filter(|k| {
            keytrail_ingest::source::classify_name(k) != keytrail_ingest::source::NameKind::Digest
        })
        .collect();
    let bytes: u64 = paths
        .iter()
        .filter_map(|p| p.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "moto {} (not AWS) on 127.0.0.1: {} objects, {:.1} MB uploaded in {:.1}s",
        moto.endpoint(),
        keys.len(),
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    // One-shot.
    let oneshot = work.join("oneshot");
    let t = Instant::now();
    let out = Command::new(&bin)
        .args([
            "ingest",
            "s3://trail",
            "--json",
            "--threads",
            "2",
            "--endpoint-url",
        ])
        .arg(moto.endpoint())
        .arg("--lake")
        .arg(&oneshot)
        .envs(moto.env())
        .output()?;
    let ingest_secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("ingest failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let summary: Value = serde_json::from_slice(&out.stdout)?;
    let events = summary["events"]["read"].as_u64().unwrap_or(0);
    println!(
        "one-shot `keytrail ingest s3://`: {} objects, {events} events in {ingest_secs:.2}s = {:.0} objects/s, {:.0} events/s",
        summary["objects"]["read"],
        summary["objects"]["read"].as_f64().unwrap_or(0.0) / ingest_secs,
        events as f64 / ingest_secs
    );
    let t = Instant::now();
    let out = Command::new(&bin)
        .args(["detect", "--format", "jsonl", "--threads", "2", "-o"])
        .arg(work.join("detect.jsonl"))
        .arg("--lake")
        .arg(&oneshot)
        .output()?;
    let detect_secs = t.elapsed().as_secs_f64();
    let found = std::fs::read_to_string(work.join("detect.jsonl"))
        .unwrap_or_default()
        .lines()
        .count();
    println!(
        "one-shot `keytrail detect`: {found} findings in {detect_secs:.2}s (exit {:?}); ingest + detect {:.2}s",
        out.status.code(),
        ingest_secs + detect_secs
    );

    // Backlog.
    let mut history = PathBuf::new();
    let mut cases = vec![(false, false), (true, false)];
    if args.iter().any(|a| a == "--s3-lake") {
        rt.block_on(testkit::create_bucket(&s3, "lake"));
        cases.push((true, true));
    }
    for (findings, in_s3) in cases {
        let url = rt.block_on(testkit::create_queue(
            &sqs,
            &format!("backlog-{findings}-{in_s3}"),
            None,
        ));
        let bodies: Vec<String> = logs
            .iter()
            .map(|k| testkit::cloudtrail_notice(bucket, &[k]))
            .collect();
        rt.block_on(testkit::send_all(&sqs, &url, &bodies));
        let lake = if in_s3 {
            PathBuf::from("s3://lake/backlog")
        } else {
            work.join(format!("backlog-{findings}"))
        };
        let out = work.join(format!("findings-{findings}-{in_s3}.jsonl"));
        let mut a: Vec<String> = vec![
            "--queue-url".into(),
            url.clone(),
            "--lake".into(),
            lake.display().to_string(),
            "--work-dir".into(),
            work.display().to_string(),
            "--batch-window".into(),
            "1s".into(),
        ];
        if findings {
            a.extend(["--findings".into(), out.display().to_string()]);
        }
        let t = Instant::now();
        let f = Follower::start(&bin, &moto, &a)?;
        let status = loop {
            if let Some(s) = f.last() {
                let read = s["totals"]["objects_read"].as_u64()
                    == Some(summary["objects"]["read"].as_u64().unwrap_or(0));
                // A lake in S3 is new: its last commit is the follower's last.
                let seq = if in_s3 {
                    s["totals"]["commits"].as_u64()
                } else {
                    Some(lake_seq(&lake))
                };
                let caught_up = !findings || s["findings_commit"].as_u64() == seq;
                if read && caught_up && rt.block_on(testkit::counts(&sqs, &url)) == (0, 0) {
                    break s;
                }
            }
            if t.elapsed() > Duration::from_secs(1800) {
                bail!("the backlog was not read in 30 minutes");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let secs = t.elapsed().as_secs_f64();
        f.stop()?;
        let tot = &status["totals"];
        println!(
            "backlog of {} messages, `keytrail follow`{}{}: {} events in {secs:.2}s = {:.0} objects/s, {:.0} events/s; {} batches, {} commits, {} findings",
            bodies.len(),
            if findings { " --findings" } else { "" },
            if in_s3 { " --lake s3://" } else { "" },
            tot["events"],
            bodies.len() as f64 / secs,
            tot["events"].as_f64().unwrap_or(0.0) / secs,
            tot["batches"],
            tot["commits"],
            tot["findings"],
        );
        if findings && !in_s3 {
            history = lake;
        }
    }

    // Latency, over the lake the backlog left.
    let out = Command::new(&bin)
        .args(["sql", "SELECT accesskeyid AS k, count(*) AS n FROM events WHERE accesskeyid IS NOT NULL GROUP BY 1 ORDER BY 2 DESC LIMIT 1", "--format", "csv", "--lake"])
        .arg(&history)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (busiest, n) = text
        .lines()
        .nth(1)
        .and_then(|l| l.split_once(','))
        .map(|(k, n)| (k.to_owned(), n.to_owned()))
        .context("the busiest key")?;
    for window in ["0s", "1s"] {
        let url = rt.block_on(testkit::create_queue(
            &sqs,
            &format!("latency-{window}"),
            None,
        ));
        let findings = work.join(format!("latency-{window}.jsonl"));
        let a: Vec<String> = vec![
            "--queue-url".into(),
            url.clone(),
            "--lake".into(),
            history.display().to_string(),
            "--batch-window".into(),
            window.into(),
            "--findings".into(),
            findings.display().to_string(),
        ];
        let f = Follower::start(&bin, &moto, &a)?;
        while f.last().is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut lat = Vec::new();
        for i in 0..samples {
            let now = keytrail_model::time::now_millis();
            let id = format!("latency-{window}-{i}");
            let mut r = testkit::record(
                &id,
                &busiest,
                now - 30_000,
                "cloudtrail.amazonaws.com",
                "StopLogging",
            );
            r["requestParameters"] = json!({"name": "main"});
            let key = testkit::log_key("111122223333", "us-east-1", now, &format!("LAT{i}"));
            rt.block_on(testkit::put(&s3, bucket, &key, testkit::log_object(&[r])));
            let t = Instant::now();
            rt.block_on(testkit::send(
                &sqs,
                &url,
                &testkit::cloudtrail_notice(bucket, &[&key]),
            ));
            loop {
                if std::fs::read_to_string(&findings)
                    .unwrap_or_default()
                    .contains(&id)
                {
                    break;
                }
                if t.elapsed() > Duration::from_secs(120) {
                    bail!("no findings line for {id}");
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            lat.push(t.elapsed().as_secs_f64());
            std::thread::sleep(Duration::from_millis(300));
        }
        f.stop()?;
        let (p50, p90, max) = median(&mut lat);
        println!(
            "latency, notification sent → findings line, --batch-window {window}, key with {n} events of history: median {:.0} ms, p90 {:.0} ms, max {:.0} ms ({samples} objects)",
            p50 * 1000.0,
            p90 * 1000.0,
            max * 1000.0
        );
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
