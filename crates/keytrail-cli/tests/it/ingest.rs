//! `keytrail ingest` on the real captures: exact counts, reruns, new files, filters.

use std::collections::BTreeMap;
use std::fs;

use arrow::array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::util::*;

const STRATUS_FILES: u64 = 35;

#[test]
fn real_captures_land_exactly_once() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let stratus = testdata().join("stratus");
    let otrf = testdata().join("otrf");
    let s = ingest_json(&[&stratus, &otrf], &lake, &[], 0);
    assert_balanced(&s);
    assert_eq!(s["objects"]["seen"], STRATUS_FILES + 1 + 2);
    assert_eq!(s["objects"]["read"], STRATUS_FILES + 1);
    assert_eq!(
        s["objects"]["skipped"]["not-a-log-file"], 2,
        "the two LICENSE files"
    );
    assert_eq!(s["events"]["read"], 413);
    assert_eq!(s["events"]["written"], 413);
    assert_eq!(s["commit"], 1);

    let rows = rows(&lake, "events");
    assert_eq!(rows.len(), 413);
    let keys = per_key(&rows);
    assert_eq!(keys.len(), 43, "42 keys and the events made without one");
    let want = [
        ("ASIA5FLZVX4OI4ZDQJOL", 87),
        ("AKIAW9X2Q2U25SK79UCX", 56),
        ("AKIAAM80VXLJF8NPK4VC", 43),
        ("AKIAZI86ACIZ2J9CV86Z", 35),
        ("ASIANQQHHS551LWULIWD", 30),
        ("AKIA4HNRH6OJUWNZ893Z", 29),
    ];
    for (k, n) in want {
        assert_eq!(keys.get(&Some(k.to_owned())), Some(&n), "{k}");
    }
    assert_eq!(keys.get(&None), Some(&6));

    // Partitions are the events' UTC days.
    let mut days: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        *days.entry(r.partition.clone()).or_default() += 1;
    }
    let days: Vec<_> = days.into_iter().collect();
    assert_eq!(
        days,
        [
            ("date=2020-09-14".to_owned(), 103),
            ("date=2024-07-30".to_owned(), 36),
            ("date=2024-07-31".to_owned(), 50),
            ("date=2024-08-01".to_owned(), 97),
            ("date=2024-08-02".to_owned(), 105),
            ("date=2024-08-28".to_owned(), 1),
            ("date=2024-10-17".to_owned(), 15),
            ("date=2024-11-26".to_owned(), 4),
            ("date=2024-11-30".to_owned(), 2),
        ]
    );
    // The federation token's two events, with their exact times (OTRF's come from @timestamp).
    let fed: Vec<_> = rows
        .iter()
        .filter(|r| r.partition == "date=2024-11-30")
        .map(|r| {
            (
                r.key.clone().unwrap_or_default(),
                r.time,
                r.event_name.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        fed,
        [
            (
                "AKIA6V1GNZTT65XQH36M".to_owned(),
                1_732_956_197_000,
                "GetFederationToken".to_owned()
            ),
            (
                "ASIASTJKC5GCM7ZE6LUP".to_owned(),
                1_732_956_198_000,
                "GetCallerIdentity".to_owned()
            ),
        ]
    );

    // A rerun reads nothing and adds nothing.
    let again = ingest_json(&[&stratus, &otrf], &lake, &[], 0);
    assert_balanced(&again);
    assert_eq!(again["objects"]["read"], 0);
    assert_eq!(
        again["objects"]["skipped"]["already-ingested"],
        STRATUS_FILES + 1
    );
    assert_eq!(again["commit"], serde_json::Value::Null);
    assert_eq!(rows_after(&lake), rows);

    let out = run_code(keytrail().args(["lake", "verify", "--lake"]).arg(&lake), 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("events: 413 rows"), "{text}");
    assert!(
        text.contains("ok: every file matches the manifest"),
        "{text}"
    );
}

fn rows_after(lake: &std::path::Path) -> Vec<Row> {
    rows(lake, "events")
}

/// Every value of every column of both tables, as text.
fn all_text(lake: &std::path::Path) -> String {
    let mut all = table_text(lake, "events");
    all.extend(table_text(lake, "key_daily"));
    all.join("\n")
}

#[test]
fn session_tokens_and_secret_keys_are_never_written() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let fed = testdata().join("stratus/aws.persistence.sts-federation-token.json");
    let secrets = testdata().join("corrupt/secrets.json");
    assert!(
        fs::read_to_string(&fed)
            .expect("read")
            .contains("IQoJb3JpZ2lu"),
        "the capture holds a token"
    );
    ingest_json(&[&fed, &secrets], &lake, &[], 0);
    let text = all_text(&lake);
    assert!(text.contains("ASIASTJKC5GCM7ZE6LUP"), "key IDs are kept");
    assert!(text.contains("ASIACORPUS000000000B"));
    assert!(!text.contains("IQoJb3JpZ2lu"), "no session token");
    assert!(!text.contains("wJalrXUtnFEMI"), "no secret access key");
    // Four in `events` (two tokens, one secret key, one token in a user agent) and the user
    // agent again in `key_daily`.
    assert_eq!(text.matches("REDACTED_BY_KEYTRAIL").count(), 5, "{text}");
}

#[test]
fn new_files_add_only_their_rows_and_copies_are_duplicates() {
    let tmp = tempfile::tempdir().expect("tmp");
    let logs = tmp.path().join("logs");
    let lake = tmp.path().join("lake");
    let names = [
        "aws.persistence.iam-create-admin-user.json",
        "aws.defense-evasion.cloudtrail-stop.json",
        "aws.persistence.sts-federation-token.json",
        "aws.exfiltration.ec2-share-ami.json",
    ];
    for n in &names[..2] {
        copy_tree(&testdata().join("stratus").join(n), &logs.join(n));
    }
    let first = ingest_json(&[&logs], &lake, &[], 0);
    let n_first = first["events"]["written"].as_u64().expect("n");
    for n in &names[2..] {
        copy_tree(&testdata().join("stratus").join(n), &logs.join(n));
    }
    // The same content under a new name is not read twice.
    copy_tree(
        &testdata().join("stratus").join(names[0]),
        &logs.join("copy-of-admin-user.json"),
    );
    let second = ingest_json(&[&logs], &lake, &[], 0);
    assert_balanced(&second);
    assert_eq!(second["objects"]["read"], 2);
    assert_eq!(second["objects"]["skipped"]["already-ingested"], 2);
    assert_eq!(second["objects"]["skipped"]["duplicate"], 1);

    let clean = tmp.path().join("clean");
    let all: Vec<_> = names
        .iter()
        .map(|n| testdata().join("stratus").join(n))
        .collect();
    let refs: Vec<&std::path::Path> = all.iter().map(|p| p.as_path()).collect();
    let c = ingest_json(&refs, &clean, &[], 0);
    assert_eq!(
        n_first + second["events"]["written"].as_u64().expect("n"),
        c["events"]["written"].as_u64().expect("n")
    );
    assert_eq!(rows(&lake, "events"), rows(&clean, "events"));
}

#[test]
fn changed_content_under_a_known_name_is_not_read_again() {
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("log.json");
    let lake = tmp.path().join("lake");
    copy_tree(
        &testdata().join("stratus/aws.defense-evasion.cloudtrail-stop.json"),
        &file,
    );
    ingest_json(&[&file], &lake, &[], 0);
    let before = rows(&lake, "events");
    copy_tree(
        &testdata().join("stratus/aws.defense-evasion.cloudtrail-delete.json"),
        &file,
    );
    let s = ingest_json(&[&file], &lake, &[], 0);
    assert_eq!(s["objects"]["skipped"]["changed"], 1);
    assert!(
        s["notable_skips"][0]["detail"]
            .as_str()
            .expect("detail")
            .contains("other content under this name"),
        "{s}"
    );
    assert_eq!(rows(&lake, "events"), before);
}

#[test]
fn filtered_runs_then_wider_runs_write_each_event_once() {
    let tmp = tempfile::tempdir().expect("tmp");
    let stratus = testdata().join("stratus");
    let lake = tmp.path().join("lake");
    // 1. one key
    let a = ingest_json(&[&stratus], &lake, &["--key", "AKIAW9X2Q2U25SK79UCX"], 0);
    assert_balanced(&a);
    let one = per_key(&rows(&lake, "events"));
    assert_eq!(one.get(&Some("AKIAW9X2Q2U25SK79UCX".to_owned())), Some(&56));
    assert_eq!(one.len(), 1, "{one:?}");
    // 2. that key and another: only the other's events are new
    let b = ingest_json(
        &[&stratus],
        &lake,
        &[
            "--key",
            "AKIAW9X2Q2U25SK79UCX",
            "--key",
            "AKIAAM80VXLJF8NPK4VC",
        ],
        0,
    );
    assert_balanced(&b);
    assert_eq!(b["events"]["written"], 43);
    assert_eq!(b["events"]["already_written"], 56);
    // 3. the same filter again reads nothing
    let c = ingest_json(
        &[&stratus],
        &lake,
        &[
            "--key",
            "AKIAAM80VXLJF8NPK4VC",
            "--key",
            "AKIAW9X2Q2U25SK79UCX",
        ],
        0,
    );
    assert_eq!(c["objects"]["read"], 0);
    // 4. everything: the lake ends as a clean unfiltered run would
    ingest_json(&[&stratus], &lake, &[], 0);
    let clean = tmp.path().join("clean");
    ingest_json(&[&stratus], &clean, &[], 0);
    assert_eq!(rows(&lake, "events"), rows(&clean, "events"));
    assert_eq!(rows(&lake, "events").len(), 310);
}

#[test]
fn time_window_keeps_the_days_asked_for() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let s = ingest_json(
        &[&testdata().join("stratus")],
        &lake,
        &["--since", "2024-08-01", "--until", "2024-08-01"],
        0,
    );
    assert_balanced(&s);
    assert_eq!(s["events"]["written"], 97);
    assert_eq!(s["events"]["filtered"], 310 - 97);
    let r = rows(&lake, "events");
    assert!(r.iter().all(|r| r.partition == "date=2024-08-01"));
}

#[test]
fn usage_errors_exit_2_with_a_reason() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let cases: [(&[&str], &str); 4] = [
        (
            &["--key", "akiaiosfodnn7example"],
            "did you mean `AKIAIOSFODNN7EXAMPLE`",
        ),
        (
            &["--key", "AIDAIOSFODNN7EXAMPLE"],
            "AIDA is the prefix of IAM user IDs",
        ),
        (&["--since", "yesterday-ish"], "is not a time"),
        (
            &["--since", "2024-02-01", "--until", "2024-01-01"],
            "--since must be before --until",
        ),
    ];
    for (args, want) in cases {
        let out = run_code(
            keytrail()
                .arg("ingest")
                .arg(testdata().join("stratus"))
                .arg("--lake")
                .arg(&lake)
                .args(args),
            2,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let out = run_code(
        keytrail()
            .arg("ingest")
            .arg(tmp.path().join("nope"))
            .arg("--lake")
            .arg(&lake),
        2,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}

#[test]
fn key_daily_is_right_when_a_day_arrives_in_several_runs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let otrf = testdata().join("otrf/ec2_proxy_s3_exfiltration_2020-09-14011940.json");
    let text = fs::read_to_string(&otrf).expect("read");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    // Split one day's events over three files, ingested in three runs.
    let parts = tmp.path().join("parts");
    fs::create_dir_all(&parts).expect("mkdir");
    for (i, chunk) in lines.chunks(40).enumerate() {
        fs::write(parts.join(format!("part{i}.json")), chunk.join("\n")).expect("write");
    }
    let lake = tmp.path().join("lake");
    for i in 0..3 {
        ingest_json(&[&parts.join(format!("part{i}.json"))], &lake, &[], 0);
    }
    let clean = tmp.path().join("clean");
    ingest_json(&[&otrf], &clean, &[], 0);
    let read = |lake: &std::path::Path| -> Vec<RecordBatch> {
        let files = table_files(lake, "key_daily");
        assert_eq!(files.len(), 1, "one key_daily file for the day");
        ParquetRecordBatchReaderBuilder::try_new(fs::File::open(&files[0]).expect("open"))
            .expect("parquet")
            .build()
            .expect("reader")
            .map(|b| b.expect("batch"))
            .collect()
    };
    let (merged, whole) = (read(&lake), read(&clean));
    assert_eq!(merged, whole);
    let rows: usize = whole.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, 2, "two keys in the OTRF capture");
}
