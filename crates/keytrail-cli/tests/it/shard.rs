//! `--shard auto`: the worker's share from a Kubernetes Indexed Job's or an AWS Batch array
//! job's variables, set on the real binary's process; the usage errors; and three workers
//! started as a scheduler starts them, sharing one lake in S3, reading every object once.

use std::collections::BTreeMap;
use std::path::Path;

use crate::s3::{cli, objects_under, sample, sample_server, verify_copy};
use crate::util::*;

/// Environment variables set on a worker's process.
type Env<'a> = &'a [(&'a str, &'a str)];

/// `keytrail ingest SAMPLE --lake LAKE --json ARGS` with `env` set.
fn ingest_env(lake: &Path, args: &[&str], env: &[(&str, &str)], code: i32) -> serde_json::Value {
    let mut cmd = keytrail();
    cmd.arg("ingest")
        .arg(sample())
        .arg("--lake")
        .arg(lake)
        .arg("--json")
        .args(args)
        .envs(env.iter().copied());
    let out = run_code(&mut cmd, code);
    serde_json::from_slice(&out.stdout).expect("summary is JSON")
}

/// What a run read: objects read and passed over as another shard's, and its rows.
fn share(lake: &Path, s: &serde_json::Value) -> (u64, u64, Vec<Row>) {
    assert_balanced(s);
    (
        s["objects"]["read"].as_u64().expect("read"),
        s["objects"]["skipped"]["other-shard"].as_u64().unwrap_or(0),
        rows(lake, "events"),
    )
}

#[test]
fn auto_takes_the_share_the_scheduler_gives() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = |name: &str| tmp.path().join(name);
    // Each scheduler's index i (from 0) of n reads what `--shard i+1/n` reads.
    let cases: [(&str, &[&str], Env<'_>, &str); 4] = [
        (
            "k8s-env",
            &[],
            &[("JOB_COMPLETION_INDEX", "1"), ("KEYTRAIL_SHARD_COUNT", "3")],
            "2/3",
        ),
        (
            "k8s-flag",
            &["--shard-count", "3"],
            &[("JOB_COMPLETION_INDEX", "0")],
            "1/3",
        ),
        (
            "batch",
            &[],
            &[
                ("AWS_BATCH_JOB_ARRAY_INDEX", "2"),
                ("AWS_BATCH_JOB_ARRAY_SIZE", "3"),
            ],
            "3/3",
        ),
        (
            "batch-2",
            &[],
            &[
                ("AWS_BATCH_JOB_ARRAY_INDEX", "0"),
                ("AWS_BATCH_JOB_ARRAY_SIZE", "2"),
            ],
            "1/2",
        ),
    ];
    let mut reads = BTreeMap::new();
    for (name, args, env, fixed) in cases {
        let mut all = vec!["--shard", "auto"];
        all.extend_from_slice(args);
        let auto = ingest_env(&lake(name), &all, env, 0);
        let by_flag = ingest_env(&lake(&format!("{name}-fixed")), &["--shard", fixed], &[], 0);
        let got = share(&lake(name), &auto);
        assert_eq!(
            got,
            share(&lake(&format!("{name}-fixed")), &by_flag),
            "{name}"
        );
        assert!(got.0 > 0 && got.1 > 0, "{name}: a share, not all: {got:?}");
        reads.insert(fixed, got);
    }
    // The three shares of 3 are the whole sample (29 log objects), and 1/2 is not 1/3: not the
    // same rows (how many objects each reads may be equal by chance, the split hashes paths).
    assert_eq!(reads["1/3"].0 + reads["2/3"].0 + reads["3/3"].0, 29);
    assert!(reads["1/2"].2 != reads["1/3"].2, "1/2 read what 1/3 read");
}

#[test]
fn auto_without_a_scheduler_or_with_bad_values_is_a_usage_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cases: [(&[&str], Env<'_>, &str); 9] = [
        (
            &[],
            &[],
            "neither JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) nor AWS_BATCH_JOB_ARRAY_INDEX (an AWS Batch array job) is set",
        ),
        (
            &[],
            &[("KEYTRAIL_SHARD_COUNT", "3")],
            "neither JOB_COMPLETION_INDEX",
        ),
        (
            &[],
            &[("JOB_COMPLETION_INDEX", "0")],
            "Kubernetes passes no shard count: set KEYTRAIL_SHARD_COUNT",
        ),
        (
            &[],
            &[("JOB_COMPLETION_INDEX", "3"), ("KEYTRAIL_SHARD_COUNT", "3")],
            "JOB_COMPLETION_INDEX=3 is not below the shard count 3 (KEYTRAIL_SHARD_COUNT)",
        ),
        (
            &[],
            &[
                ("JOB_COMPLETION_INDEX", "one"),
                ("KEYTRAIL_SHARD_COUNT", "3"),
            ],
            "JOB_COMPLETION_INDEX=\"one\" is not a whole number",
        ),
        (
            &[],
            &[("AWS_BATCH_JOB_ARRAY_INDEX", "1")],
            "AWS_BATCH_JOB_ARRAY_INDEX is set but AWS_BATCH_JOB_ARRAY_SIZE is not",
        ),
        (
            &["--shard-count", "4"],
            &[
                ("AWS_BATCH_JOB_ARRAY_INDEX", "1"),
                ("AWS_BATCH_JOB_ARRAY_SIZE", "3"),
            ],
            "--shard-count 4 differs from AWS_BATCH_JOB_ARRAY_SIZE=3",
        ),
        (
            &[],
            &[
                ("JOB_COMPLETION_INDEX", "0"),
                ("KEYTRAIL_SHARD_COUNT", "2"),
                ("AWS_BATCH_JOB_ARRAY_INDEX", "0"),
                ("AWS_BATCH_JOB_ARRAY_SIZE", "2"),
            ],
            "both JOB_COMPLETION_INDEX and AWS_BATCH_JOB_ARRAY_INDEX are set",
        ),
        (
            &[],
            &[("JOB_COMPLETION_INDEX", "0"), ("KEYTRAIL_SHARD_COUNT", "0")],
            "KEYTRAIL_SHARD_COUNT must be at least 1",
        ),
    ];
    for (i, (args, env, says)) in cases.into_iter().enumerate() {
        let lake = tmp.path().join(format!("lake-{i}"));
        let out = run_code(
            keytrail()
                .arg("ingest")
                .arg(sample())
                .arg("--lake")
                .arg(&lake)
                .args(["--shard", "auto"])
                .args(args)
                .envs(env.iter().copied()),
            2,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{env:?}: {err}");
        assert!(!lake.exists(), "{env:?}: nothing was written");
    }
    // --shard-count belongs to --shard auto.
    for args in [
        &["--shard", "1/2", "--shard-count", "2"][..],
        &["--shard-count", "2"],
    ] {
        let out = run_code(
            keytrail()
                .arg("ingest")
                .arg(sample())
                .arg("--lake")
                .arg(tmp.path().join("x"))
                .args(args),
            2,
        );
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains("--shard-count goes with --shard auto only"),
            "{args:?}"
        );
    }
}

#[test]
fn three_auto_workers_share_one_lake_in_s3_and_read_each_object_once() {
    let server = sample_server();
    let tmp = tempfile::tempdir().expect("tmp");
    let metadata = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    // As an Indexed Job of 3 completions starts them: the same command, its own index each.
    // All three read the manifest before any commits, so two must lose commit races.
    server.gate_commits_until_listings(3);
    let children: Vec<_> = (0..3)
        .map(|i| {
            cli(&server, &metadata)
                .args(["s3://trail", "--lake", "s3://lake/auto", "--json"])
                .args(["--shard", "auto"])
                .env("JOB_COMPLETION_INDEX", i.to_string())
                .env("KEYTRAIL_SHARD_COUNT", "3")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let mut read = Vec::new();
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
        assert_eq!(s["objects"]["seen"], 30);
        read.push(s["objects"]["read"].as_u64().expect("read"));
    }
    assert!(
        read.iter().all(|n| *n > 0),
        "every worker has a share: {read:?}"
    );

    // Each object is in exactly one commit record, and the three hold every log object.
    let lake_dir = server.bucket("lake").join("auto");
    let mut sources: BTreeMap<String, usize> = BTreeMap::new();
    let records: Vec<String> = objects_under(&lake_dir)
        .into_iter()
        .filter(|n| n.starts_with("_keytrail/manifest/"))
        .collect();
    assert_eq!(records.len(), 3, "{records:?}");
    for r in &records {
        let commit: serde_json::Value =
            serde_json::from_slice(&std::fs::read(lake_dir.join(r)).expect("record"))
                .expect("json");
        for o in commit["objects"].as_array().expect("objects") {
            *sources
                .entry(o["source"].as_str().expect("source").to_owned())
                .or_default() += 1;
        }
    }
    assert_eq!(sources.len(), 29, "{sources:#?}");
    assert!(sources.values().all(|n| *n == 1), "{sources:#?}");
    assert!(sources.keys().all(|k| k.starts_with("s3://trail/AWSLogs/")));
    assert_eq!(read.iter().sum::<u64>(), 29);

    // And the lake holds exactly a clean run's rows and key_daily.
    let clean = tmp.path().join("clean");
    ingest_json(&[&sample()], &clean, &[], 0);
    assert_eq!(rows(&lake_dir, "events"), rows(&clean, "events"));
    assert_eq!(
        table_text(&lake_dir, "key_daily"),
        table_text(&clean, "key_daily")
    );
    verify_copy(&lake_dir, tmp.path(), "verify");
}
