//! `keytrail report ...` on the bundled sample and the inventories in `testdata/inventory/`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::util::*;

/// The sample's lake, ingested once for every report test.
fn lake() -> &'static Path {
    static LAKE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &LAKE
        .get_or_init(|| {
            let tmp = tempfile::tempdir().expect("tmp");
            let lake = tmp.path().join("lake");
            let s = ingest_json(&[&testdata().join("sample")], &lake, &[], 0);
            assert_eq!(s["events"]["written"], 1279, "{s}");
            (tmp, lake)
        })
        .1
}

/// `keytrail report ARGS --lake LAKE --as-of 2024-12-01`, run in `testdata/` so inventory
/// paths print as given.
fn report(args: &[&str], code: i32) -> std::process::Output {
    let mut cmd = keytrail();
    cmd.current_dir(testdata())
        .arg("report")
        .args(args)
        .arg("--lake")
        .arg(lake())
        .args(["--as-of", "2024-12-01"]);
    run_code(&mut cmd, code)
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8")
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn last_used_json_has_every_key_stalest_first() {
    let out = report(&["last-used", "--since", "7d", "--format", "json"], 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let rows = v.as_array().expect("array");
    assert_eq!(rows.len(), 22);
    assert_eq!(rows[0]["access_key_id"], "AKIARTXV5AHDT3IDRTCQ");
    assert_eq!(rows[0]["last_used"], "2024-11-29T06:00:40Z");
    assert_eq!(rows[0]["days_since_used"], 1);
    let ci = rows
        .iter()
        .find(|r| r["access_key_id"] == "AKIARTXV5AHDZMKNCBCQ")
        .expect("ci-deploy");
    assert_eq!(ci["owner"], "ci-deploy");
    assert_eq!(ci["kind"], "long-term");
    assert_eq!(ci["last_source_ip"], "198.51.100.77");
    assert_eq!(ci["last_service"], "sts.amazonaws.com");
    assert_eq!(ci["events"], 54);
    assert_eq!(ci["errors"], 16);
    assert_eq!(ci["source_ips"], 2);
    // Every documented field is in every row, null or not.
    let fields: Vec<&str> = ci
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        [
            "access_key_id",
            "kind",
            "status",
            "owner",
            "owner_arn",
            "account_id",
            "principal_type",
            "created",
            "first_seen",
            "last_used",
            "last_used_from",
            "days_since_used",
            "last_service",
            "last_event",
            "last_region",
            "last_source_ip",
            "events",
            "errors",
            "source_ips",
            "inventory",
            "inventory_match",
        ]
    );
    // The caveat goes to stderr, the rows alone to stdout.
    assert!(
        stderr(&out).contains("note: Without --inventory, only keys used in the lake are listed"),
        "{}",
        stderr(&out)
    );

    // A one-day window counts only the 30th; temporary keys only.
    let out = report(
        &[
            "last-used",
            "--since",
            "1d",
            "--kind",
            "temporary",
            "--format",
            "csv",
        ],
        0,
    );
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8, "{text}");
    assert!(lines[1..].iter().all(|l| l.starts_with("ASIA")), "{text}");
}

#[test]
fn unused_and_rotation_with_every_inventory_form() {
    // The key list in either form, with the credential report: the same answer.
    for list in ["inventory/keys.csv", "inventory/list-access-keys.json"] {
        let out = report(
            &[
                "unused",
                "--days",
                "45",
                "--inventory",
                list,
                "--inventory",
                "inventory/credential-report.csv",
                "--format",
                "csv",
            ],
            0,
        );
        let text = stdout(&out);
        let ids: Vec<&str> = text
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap_or(""))
            .collect();
        assert_eq!(
            ids,
            ["AKIARTXV5AHDROLDBATC", "AKIARTXV5AHDVLEGACY2"],
            "{text}"
        );
        assert_eq!(stderr(&out), "", "every slot matched: no note");
    }
    // The credential report alone: the two keys are flagged without their IDs, and the note
    // says why.
    let out = report(
        &[
            "unused",
            "--inventory",
            "inventory/credential-report.csv",
            "--format",
            "json",
        ],
        0,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v.as_array().map(Vec::len), Some(2));
    assert_eq!(v[0]["access_key_id"], serde_json::Value::Null);
    assert_eq!(v[0]["user_name"], "old-batch");
    assert_eq!(v[0]["flag"], "never-used");
    assert_eq!(
        v[1]["reason"],
        "not used for 181 days (last used 2024-06-02, per the credential report)"
    );
    assert!(
        stderr(&out).contains("2 row(s) have no access key ID"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn rotation_table_and_markdown() {
    let args = [
        "rotation",
        "--max-age",
        "90",
        "--inventory",
        "inventory/keys.csv",
        "--inventory",
        "inventory/credential-report.csv",
    ];
    let table = report(&[&args[..], &["--format", "table"]].concat(), 0);
    insta::assert_snapshot!("report_rotation_table", stdout(&table));
    let md = report(&[&args[..], &["--format", "markdown"]].concat(), 0);
    insta::assert_snapshot!("report_rotation_markdown", stdout(&md));
}

#[test]
fn html_report_is_one_self_contained_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("keys.html");
    let out = report(
        &[
            "last-used",
            "--inventory",
            "inventory/list-access-keys.json",
            "-o",
            file.to_str().expect("path"),
        ],
        0,
    );
    assert_eq!(stdout(&out), "");
    let html = std::fs::read_to_string(&file).expect("html written");
    assert!(html.starts_with("<!DOCTYPE html>"), "{}", &html[..80]);
    // No script, no stylesheet, image or font to fetch.
    for bad in ["<script", "<link", "src=", "href=", "@import", "url("] {
        assert!(!html.contains(bad), "{bad}");
    }
    // One chart per listed key plus the total, and a row per key.
    assert_eq!(html.matches("<svg").count(), 26 + 1);
    assert_eq!(html.matches("<tr>").count(), 26 + 1);
    assert!(
        html.contains("2024-11-30: 30 calls"),
        "ci-deploy's last day"
    );
    // No temporary file left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn bad_flags_are_refused() {
    let out = report(&["last-used", "--kind", "forever"], 2);
    assert!(
        stderr(&out).contains("invalid value 'forever' for '--kind <KIND>'")
            && stderr(&out).contains("long-term"),
        "{}",
        stderr(&out)
    );
    let out = report(&["unused", "--days", "0"], 2);
    assert!(stderr(&out).contains("--days must be at least 1"));
    let out = report(&["last-used", "--since", "yesterday-ish"], 2);
    assert!(stderr(&out).contains("--since"), "{}", stderr(&out));
    let out = report(&["rotation", "--inventory", "inventory/nope.json"], 2);
    assert!(
        stderr(&out).contains("inventory/nope.json"),
        "{}",
        stderr(&out)
    );
    let out = report(&["rotation", "--inventory", "LICENSES.md"], 2);
    assert!(
        stderr(&out).contains("LICENSES.md: line 1: a key CSV needs the columns UserName, AccessKeyId, Status, CreateDate"),
        "{}",
        stderr(&out)
    );
}

/// Every format of one report with known answers (the unused report over the key list and the
/// credential report), and the last-used report's Markdown and HTML with its charts.
#[test]
fn every_format() {
    let redact = |s: String| s.replace(env!("CARGO_PKG_VERSION"), "[version]");
    for f in ["table", "csv", "json", "jsonl", "markdown", "html"] {
        let out = report(
            &[
                "unused",
                "--inventory",
                "inventory/keys.csv",
                "--inventory",
                "inventory/credential-report.csv",
                "--format",
                f,
            ],
            0,
        );
        insta::assert_snapshot!(format!("unused_{f}"), redact(stdout(&out)));
    }
    for f in ["markdown", "html"] {
        let out = report(
            &[
                "last-used",
                "--since",
                "2024-11-24",
                "--inventory",
                "inventory/keys.csv",
                "--format",
                f,
            ],
            0,
        );
        insta::assert_snapshot!(format!("last_used_{f}"), redact(stdout(&out)));
    }
}
