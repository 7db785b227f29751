//! `keytrail investigate`: over a lake, straight over raw logs (local and S3), and its errors.

use serde_json::Value;

use crate::s3server::S3Server;
use crate::util::*;

const LEAKED: &str = "AKIARTXV5AHDZMKNCBCQ";

/// `(key, depth, parent)` of each chain key.
type Keys = Vec<(String, u64, Option<String>)>;

/// The chain, the derived-credential edges and the timeline's event IDs.
fn summary(v: &Value) -> (Keys, Vec<String>, Vec<String>) {
    let keys = v["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| {
            (
                k["key"].as_str().expect("key").to_owned(),
                k["depth"].as_u64().expect("depth"),
                k["parent"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let derived = v["derived"]
        .as_array()
        .expect("derived")
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["parent"].as_str().unwrap_or(""),
                e["event_name"].as_str().unwrap_or(""),
                e["child"].as_str().unwrap_or("")
            )
        })
        .collect();
    let timeline = v["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|t| t["event_id"].as_str().unwrap_or("").to_owned())
        .collect();
    (keys, derived, timeline)
}

#[test]
fn the_sample_incident_from_a_lake_and_from_raw_logs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    ingest_json(&[&testdata().join("sample")], &lake, &[], 0);
    let out = run_code(
        keytrail()
            .args(["investigate", LEAKED, "--format", "json", "--lake"])
            .arg(&lake),
        0,
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let (keys, derived, timeline) = summary(&v);
    let p = Some(LEAKED.to_owned());
    assert_eq!(
        keys,
        vec![
            (LEAKED.to_owned(), 0, None),
            ("AKIARTXV5AHDRQSG4VCH".to_owned(), 1, p.clone()),
            (
                "ASIARTXV5AHDSRWPFM6V".to_owned(),
                2,
                Some("AKIARTXV5AHDRQSG4VCH".to_owned())
            ),
            ("ASIARTXV5AHDYHPGSGN6".to_owned(), 1, p.clone()),
            ("ASIARTXV5AHD2DKLCJS3".to_owned(), 1, p),
        ]
    );
    assert_eq!(
        derived,
        vec![
            "AKIARTXV5AHDZMKNCBCQ CreateAccessKey AKIARTXV5AHDRQSG4VCH",
            "AKIARTXV5AHDZMKNCBCQ GetSessionToken ASIARTXV5AHDYHPGSGN6",
            "AKIARTXV5AHDZMKNCBCQ GetFederationToken ASIARTXV5AHD2DKLCJS3",
            "AKIARTXV5AHDRQSG4VCH AssumeRole ASIARTXV5AHDSRWPFM6V",
        ]
    );
    // 54 events of the leaked key, 6 of the derived ones, and SecOps' UpdateAccessKey.
    assert_eq!(v["activity"]["events"], 60);
    assert_eq!(timeline.len(), 61);
    let fed = v["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["key"] == "ASIARTXV5AHD2DKLCJS3")
        .expect("fed");
    assert_eq!(fed["used_after_ancestor_deactivated"], 1);
    assert_eq!(
        v["keys"][0]["deactivated"]["time"], "2024-11-30T03:40:00Z",
        "the leaked key's deactivation by SecOps"
    );

    // The 3 a.m. path: no lake, the raw files; the same answer.
    let out = run_code(
        keytrail()
            .args(["investigate", LEAKED, "--format", "json"])
            .arg(testdata().join("sample")),
        0,
    );
    let raw: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        summary(&raw),
        (keys.clone(), derived.clone(), timeline.clone())
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass(es)"));

    // Straight from S3.
    let server = S3Server::start();
    server.put_tree("trail", "", &testdata().join("sample"));
    let out = run_code(
        keytrail()
            .env("AWS_ACCESS_KEY_ID", crate::s3server::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", crate::s3server::SECRET_KEY)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/nonexistent/keytrail-test/config")
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/keytrail-test/credentials",
            )
            .args([
                "investigate",
                LEAKED,
                "s3://trail",
                "--format",
                "json",
                "--endpoint-url",
                &server.endpoint,
            ]),
        0,
    );
    let s3: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(summary(&s3), (keys, derived, timeline));

    // Text formats name the chain; CSV is the timeline.
    let out = run_code(
        keytrail()
            .args(["investigate", LEAKED, "--format", "csv", "--lake"])
            .arg(&lake),
        0,
    );
    let csv = String::from_utf8_lossy(&out.stdout);
    assert_eq!(csv.lines().count(), 62);
    assert!(csv.starts_with("time,key,identity,call,"));
    let out = run_code(
        keytrail()
            .args(["investigate", LEAKED, "--format", "table", "--lake"])
            .arg(&lake),
        0,
    );
    let table = String::from_utf8_lossy(&out.stdout);
    for section in [
        "KEYS IN THE CHAIN",
        "DERIVED CREDENTIALS",
        "BLAST RADIUS",
        "SOURCE IPS",
        "TIMELINE",
    ] {
        assert!(table.contains(section), "{section}");
    }
}

#[test]
fn bad_arguments_are_refused() {
    let out = run_code(
        keytrail().args(["investigate", "AKIA123", "--lake", "/nonexistent"]),
        2,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither an access key ID"));
    let out = run_code(keytrail().args(["investigate", "AKIARTXV5AHDZMKNCBCQ"]), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--lake"));
    let tmp = tempfile::tempdir().expect("tmp");
    let out = run_code(
        keytrail()
            .arg("investigate")
            .arg(tmp.path())
            .args(["--lake", "/nonexistent"]),
        2,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least one access key ID"));
}

#[test]
fn output_to_a_pipe_writes_into_it_and_leaves_it_a_pipe() {
    use std::os::unix::fs::FileTypeExt as _;
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    ingest_json(&[&testdata().join("sample")], &lake, &[], 0);
    let fifo = tmp.path().join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).expect("read the pipe"))
    };
    run_code(
        keytrail()
            .args(["investigate", LEAKED, "--format", "csv", "--lake"])
            .arg(&lake)
            .arg("-o")
            .arg(&fifo),
        0,
    );
    // Checked before waiting for the reader: had the pipe been replaced, nothing would ever
    // write into it and the reader would wait forever.
    assert!(
        std::fs::metadata(&fifo)
            .expect("fifo")
            .file_type()
            .is_fifo(),
        "still a pipe"
    );
    let text = reader.join().expect("reader");
    assert_eq!(text.lines().count(), 62);
}

/// Every format of the sample incident's investigation. JSON: stable field names and the whole
/// event of each timeline row (the source object's path replaced for the snapshot).
#[test]
fn every_format_of_the_sample_incident() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    ingest_json(&[&testdata().join("sample")], &lake, &[], 0);
    let render = |format: &str| {
        let out = run_code(
            keytrail()
                .args(["investigate", LEAKED, "--format", format, "--lake"])
                .arg(&lake),
            0,
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    for f in ["table", "markdown", "csv", "jsonl"] {
        insta::assert_snapshot!(format!("investigate_{f}"), render(f));
    }
    let html = render("html");
    // Nothing runs and nothing is fetched (user agents may hold URLs, as text).
    assert!(!html.contains("<script") && !html.contains(" src=") && !html.contains("href="));
    insta::assert_snapshot!("investigate_html", html);
    let mut v: Value = serde_json::from_str(&render("json")).expect("valid JSON");
    let rows = v["timeline"].as_array_mut().expect("timeline");
    assert_eq!(rows.len() as u64, v["timeline_rows"].as_u64().unwrap_or(0));
    for t in v["timeline"].as_array_mut().expect("timeline") {
        t["event"]["sourceobject"] = Value::from("<path>");
    }
    insta::assert_json_snapshot!("investigate_json", v);
}
