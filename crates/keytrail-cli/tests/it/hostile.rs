//! Issue 13: no input stops a run. Deep nesting (which overflowed the stack and aborted the
//! process) is refused per record, or per object when the document itself nests too deeply; a
//! panic while one object is fetched or decoded fails that object only; rule files and
//! inventories that nest without end are errors naming the file, not crashes or hangs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::*;

const DEEP: [&str; 5] = [
    "deep-records.json.gz",
    "deep-field.json.gz",
    "deep-document.json.gz",
    "deep-lines.jsonl.gz",
    "deep-lookup.json.gz",
];

fn corrupt(name: &str) -> PathBuf {
    testdata().join("corrupt").join(name)
}

fn event_ids(lake: &Path) -> Vec<String> {
    let mut ids: Vec<String> = rows(lake, "events")
        .into_iter()
        .filter_map(|r| r.event_id)
        .collect();
    ids.sort();
    ids
}

#[test]
fn deep_nesting_is_refused_per_record_and_the_rest_is_written() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let paths: Vec<PathBuf> = DEEP.iter().map(|n| corrupt(n)).collect();
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let s = ingest_json(&refs, &lake, &[], 1);
    assert_balanced(&s);
    assert_eq!(s["objects"]["seen"], 5);
    assert_eq!(s["objects"]["read"], 4);
    assert_eq!(s["objects"]["failed"], 1);
    // The document that is itself too deep (one event whose member nests 200,000 arrays) is
    // the object's failure, named with its reason.
    let f = &s["failures"][0];
    assert!(
        f["object"]
            .as_str()
            .expect("object")
            .ends_with("testdata/corrupt/deep-document.json.gz"),
        "{f}"
    );
    assert_eq!(f["code"], "too-deep");
    assert!(
        f["reason"]
            .as_str()
            .expect("reason")
            .contains("more than 128 levels"),
        "{f}"
    );
    // Each too-deep record is skipped alone, named by object and index, with its reason.
    assert_eq!(s["events"]["read"], 11);
    assert_eq!(s["events"]["written"], 7);
    assert_eq!(s["events"]["skipped"], 4);
    assert_eq!(s["skipped_records_by_reason"]["too-deep"], 4);
    let mut samples: Vec<(String, u64)> = s["skipped_record_samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|r| {
            assert!(
                r["reason"]
                    .as_str()
                    .expect("reason")
                    .contains("nested more than 128 levels deep"),
                "{r}"
            );
            let o = r["object"].as_str().expect("object");
            (
                o.rsplit('/').next().expect("name").to_owned(),
                r["record"].as_u64().expect("index"),
            )
        })
        .collect();
    samples.sort();
    assert_eq!(
        samples,
        [
            ("deep-field.json.gz".to_owned(), 1),
            ("deep-lines.jsonl.gz".to_owned(), 1),
            ("deep-lookup.json.gz".to_owned(), 1),
            ("deep-records.json.gz".to_owned(), 1),
        ]
    );
    // Every good record around them is in the lake.
    assert_eq!(
        event_ids(&lake),
        [
            "corpus-0700",
            "corpus-0701",
            "corpus-0710",
            "corpus-0712",
            "corpus-0730",
            "corpus-0732",
            "corpus-0740"
        ]
    );
    run_code(keytrail().args(["lake", "verify", "--lake"]).arg(&lake), 0);
}

#[test]
fn a_panic_while_decoding_fails_that_object_only() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let files = [
        corrupt("good.json.gz"),
        corrupt("lines.jsonl"),
        corrupt("secrets.json"),
    ];
    let out = run_code(
        keytrail()
            .arg("ingest")
            .args(&files)
            .arg("--lake")
            .arg(&lake)
            .args(["--json", "--threads", "2"])
            .env("KEYTRAIL_PANIC_AT", "decode:lines.jsonl"),
        1,
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_balanced(&s);
    assert_eq!(s["objects"]["read"], 2);
    assert_eq!(s["objects"]["failed"], 1);
    let f = &s["failures"][0];
    assert!(
        f["object"]
            .as_str()
            .expect("o")
            .ends_with("corrupt/lines.jsonl")
    );
    assert_eq!(f["code"], "internal-error");
    assert!(
        f["reason"]
            .as_str()
            .expect("r")
            .contains("a bug in keytrail"),
        "{f}"
    );
    assert_eq!(
        event_ids(&lake),
        ["corpus-0001", "corpus-0002", "corpus-0600"]
    );
    // The failed object is not in the manifest: the next run reads it.
    let s = ingest_json(
        &files.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
        &lake,
        &[],
        0,
    );
    assert_eq!(s["objects"]["read"], 1);
    assert_eq!(s["events"]["written"], 3);
}

#[test]
fn rules_that_nest_without_end_are_errors_not_crashes_or_hangs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("rules");
    let recon = dir.join("recon");
    std::fs::create_dir_all(&recon).expect("mkdir");
    let head = |id: &str| format!("id: {id}\ntitle: t\nseverity: low\ncategory: recon\n");
    let n = 100_000;
    // Flow collections: the YAML parser's time grows with the square of their depth.
    std::fs::write(
        recon.join("flow-arrays.yaml"),
        format!(
            "{}match:\n  eventName: {}{}\n",
            head("a"),
            "[".repeat(n),
            "]".repeat(n)
        ),
    )
    .expect("write");
    std::fs::write(
        recon.join("flow-maps.yaml"),
        format!(
            "{}match: {}1{}\n",
            head("b"),
            "{a: ".repeat(n),
            "}".repeat(n)
        ),
    )
    .expect("write");
    // Block mappings: 2,000 levels of indentation.
    let block: String = (0..2000)
        .map(|i| format!("{}a:\n", "  ".repeat(i + 1)))
        .collect();
    std::fs::write(
        recon.join("block.yaml"),
        format!("{}match:\n{block}", head("c")),
    )
    .expect("write");
    let started = Instant::now();
    let out = run_code(
        keytrail()
            .args(["rules", "lint", "--no-bundled", "--rules"])
            .arg(&dir),
        1,
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("flow-arrays.yaml: more than 4096 `[` and `{`"),
        "{text}"
    );
    assert!(
        text.contains("flow-maps.yaml: more than 4096 `[` and `{`"),
        "{text}"
    );
    assert!(
        text.contains("block.yaml: recursion limit exceeded"),
        "{text}"
    );
    assert!(text.contains("3 rule(s) checked: 3 error(s)"), "{text}");
}

#[test]
fn an_inventory_that_nests_without_end_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    ingest_json(&[&corrupt("good.json.gz")], &lake, &[], 0);
    let n = 200_000;
    let inventory = tmp.path().join("deep.json");
    std::fs::write(
        &inventory,
        format!(
            "{{\"AccessKeyMetadata\": {}{}}}",
            "[".repeat(n),
            "]".repeat(n)
        ),
    )
    .expect("write");
    let out = run_code(
        keytrail()
            .args(["report", "last-used", "--lake"])
            .arg(&lake)
            .arg("--inventory")
            .arg(&inventory),
        2,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("deep.json: not valid JSON: recursion limit exceeded"),
        "{err}"
    );
}

#[test]
fn a_panic_while_fetching_or_decoding_an_s3_object_fails_that_object_only() {
    use crate::s3server::S3Server;
    let server = S3Server::start();
    for name in ["good.json.gz", "lines.jsonl", "secrets.json"] {
        server.put(
            "trail",
            &format!("in/{name}"),
            &std::fs::read(corrupt(name)).expect("read"),
        );
    }
    let metadata = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    metadata.set_nonblocking(true).expect("nonblocking");
    for (at, failed) in [
        ("fetch:lines.jsonl", "s3://trail/in/lines.jsonl"),
        ("decode:secrets.json", "s3://trail/in/secrets.json"),
    ] {
        let tmp = tempfile::tempdir().expect("tmp");
        let lake = tmp.path().join("lake");
        let out = run_code(
            crate::s3::cli(&server, &metadata)
                .arg("s3://trail/in/")
                .arg("--lake")
                .arg(&lake)
                .arg("--json")
                .env("KEYTRAIL_PANIC_AT", at),
            1,
        );
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
        assert_balanced(&s);
        assert_eq!(s["objects"]["seen"], 3, "{at}");
        assert_eq!(s["objects"]["read"], 2, "{at}");
        assert_eq!(s["failures"][0]["object"], failed, "{at}");
        assert_eq!(s["failures"][0]["code"], "internal-error", "{at}");
        let written = if at.contains("lines") { 3 } else { 5 };
        assert_eq!(s["events"]["written"], written, "{at}");
    }
}
