//! Sigma rules beside keytrail's own (`--rules DIR`, `rules list|lint|test`), stolen workload
//! credentials with AWS's address ranges (`--aws-ip-ranges`), and findings as JSON lines.

use std::path::{Path, PathBuf};

use crate::util::{ingest_json, keytrail, run_code, testdata};

fn lake(name: &str, paths: &[&Path]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keytrail-it-sigma-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    ingest_json(paths, &dir, &[], 0);
    dir
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sigma_rules_written_for_the_tests_load_compile_and_match_exactly_their_fixtures() {
    let rules = testdata().join("sigma/rules");
    let out = run_code(
        keytrail()
            .args(["rules", "test", "--no-bundled", "--rules"])
            .arg(&rules),
        0,
    );
    assert_eq!(
        stdout(&out),
        "7 rule(s), 29 test event(s): 29 passed, 0 failed\n"
    );
    // Listed as Sigma, with their level, tactic and tags.
    let out = run_code(
        keytrail()
            .args([
                "rules",
                "list",
                "--no-bundled",
                "--format",
                "csv",
                "--rules",
            ])
            .arg(&rules),
        0,
    );
    assert!(
        stdout(&out).contains("\n5d0e2b0a-1c1e-4a51-9b57-0b7f3f4c7a01,sigma,high,defense-evasion,Trail stopped or deleted outside Terraform,attack.defense-evasion attack.t1562.008,"),
        "{}",
        stdout(&out)
    );
    // Lint: clean but for nothing (they have tests), exit 0.
    let out = run_code(
        keytrail()
            .args(["rules", "lint", "--strict", "--no-bundled", "--rules"])
            .arg(&rules),
        0,
    );
    assert!(stdout(&out).ends_with("7 rule(s) checked: 0 error(s), 0 warning(s)\n"));
}

#[test]
fn unsupported_sigma_constructs_are_named_and_the_rest_load() {
    let dir = testdata().join("sigma");
    let out = run_code(
        keytrail()
            .args(["rules", "lint", "--no-bundled", "--rules"])
            .arg(&dir),
        1,
    );
    let text = stdout(&out);
    for (file, says) in [
        ("aggregation.yml", "an aggregation (`| count() ...`)"),
        ("near.yml", "`near` (temporal proximity)"),
        ("keywords.yml", "a keyword search (values without a field)"),
        ("windash.yml", "modifier `windash`"),
        (
            "other-log-source.yml",
            "log source `product: azure, service: signinlogs`",
        ),
        ("correlation.yml", "several YAML documents in one file"),
        (
            "unknown-field.yml",
            "field `userIdentity.sessionContext.nothingHere`",
        ),
        ("deep.yml", "nested 5002 levels deep (at most 48)"),
        (
            "not-a-rule.yaml",
            "not a rule: neither keytrail's `match` nor Sigma's `detection`",
        ),
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(file))
            .unwrap_or_else(|| panic!("{file} not named:\n{text}"));
        assert!(line.starts_with("error: ") && line.contains(says), "{line}");
    }
    assert!(
        text.ends_with("16 rule(s) checked: 9 error(s), 0 warning(s)\n"),
        "{text}"
    );
    // The hidden `.github/` folder is passed over. `rules test` and `detect` run the seven
    // that can run.
    assert!(!text.contains(".github"), "{text}");
    let out = run_code(
        keytrail()
            .args(["rules", "test", "--no-bundled", "--rules"])
            .arg(&dir),
        0,
    );
    assert_eq!(
        stdout(&out),
        "7 rule(s), 29 test event(s): 29 passed, 0 failed\n"
    );
}

#[test]
fn a_sigma_rule_finds_its_events_in_a_lake_with_its_tags() {
    let l = lake("captures", &[&testdata().join("stratus")]);
    let out = run_code(
        keytrail()
            .arg("detect")
            .arg("--lake")
            .arg(&l)
            .args([
                "--no-bundled",
                "--no-detectors",
                "--format",
                "jsonl",
                "--threads",
                "2",
                "--rules",
            ])
            .arg(testdata().join("sigma/rules/one-of-selections-not-filter.yml")),
        1,
    );
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON finding per line"))
        .collect();
    // Stratus's cloudtrail-stop and cloudtrail-delete detonations.
    let keys: Vec<&str> = lines
        .iter()
        .map(|f| f["key"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(keys, vec!["AKIAFBJ48BV9CGRBRKGM", "AKIAGGWFBBHBE7D3M9WI"]);
    for f in &lines {
        // The stable field names of a finding line (docs/rules.md "Findings as JSON lines").
        let names: Vec<&str> = f
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let mut want = vec![
            "rule",
            "title",
            "severity",
            "category",
            "source",
            "time",
            "last",
            "key",
            "principal",
            "account",
            "source_ip",
            "reason",
            "events",
            "details",
            "tags",
        ];
        want.sort_unstable();
        let mut got = names.clone();
        got.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(f["rule"], "5d0e2b0a-1c1e-4a51-9b57-0b7f3f4c7a01");
        assert_eq!(f["severity"], "high");
        assert_eq!(
            f["tags"],
            serde_json::json!(["attack.defense-evasion", "attack.t1562.008"])
        );
    }
}

#[test]
fn stolen_lambda_credentials_are_found_and_the_same_role_inside_aws_is_not() {
    let stolen = lake(
        "stolen",
        &[&testdata().join("workload/stolen-lambda-credentials.json")],
    );
    let out = run_code(
        keytrail().arg("detect").arg("--lake").arg(&stolen).args([
            "--format",
            "jsonl",
            "--min-severity",
            "medium",
            "--threads",
            "2",
        ]),
        1,
    );
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let f = &lines[0];
    assert_eq!(f["rule"], "kt-workload-credentials-outside");
    assert_eq!(f["severity"], "high");
    assert_eq!(f["key"], "ASIARTXV5AHDLAMBDA01");
    assert_eq!(f["source_ip"], "198.51.100.23");
    assert!(
        f["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("key ASIARTXV5AHDLAMBDA01) used from 198.51.100.23 by aws-cli, outside AWS"),
        "{f}"
    );
    assert_eq!(f["events"].as_array().map(Vec::len), Some(4));

    let inside = lake(
        "inside",
        &[&testdata().join("workload/lambda-inside-aws.json")],
    );
    let out = run_code(
        keytrail().arg("detect").arg("--lake").arg(&inside).args([
            "--format",
            "jsonl",
            "--min-severity",
            "low",
            "--threads",
            "2",
        ]),
        0,
    );
    assert_eq!(stdout(&out), "");
    // Not even at info is the workload's own use taken for theft.
    let out = run_code(
        keytrail().arg("detect").arg("--lake").arg(&inside).args([
            "--format",
            "jsonl",
            "--min-severity",
            "info",
            "--threads",
            "2",
        ]),
        1,
    );
    assert!(
        !stdout(&out).contains("kt-workload-credentials-outside"),
        "{}",
        stdout(&out)
    );

    // A ranges file that puts the laptop's network inside AWS: now an AWS address unlike
    // the workload's first calls, at medium.
    let ranges = stolen.join("my-ranges.json");
    std::fs::write(
        &ranges,
        r#"{"syncToken": "1", "createDate": "2026-01-02-03-04-05", "prefixes": [
             {"ip_prefix": "198.51.100.0/24", "region": "us-east-1", "service": "EC2"},
             {"ip_prefix": "44.192.0.0/11", "region": "us-east-1", "service": "EC2"}]}"#,
    )
    .expect("write ranges");
    let out = run_code(
        keytrail()
            .arg("detect")
            .arg("--lake")
            .arg(&stolen)
            .args([
                "--format",
                "jsonl",
                "--min-severity",
                "medium",
                "--threads",
                "2",
                "--aws-ip-ranges",
            ])
            .arg(&ranges),
        1,
    );
    let f: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().next().unwrap_or_default()).expect("a finding");
    assert_eq!(f["severity"], "medium");
    assert!(
        f["reason"].as_str().unwrap_or_default().contains(
            "an AWS address (EC2 us-east-1) and a client unlike the workload's own first calls"
        ),
        "{f}"
    );
    let out = run_code(
        keytrail()
            .args(["rules", "list", "--format", "csv", "--aws-ip-ranges"])
            .arg(&ranges),
        0,
    );
    assert!(stdout(&out).contains("AWS ip-ranges.json of 2026-01-02T03:04:05Z (syncToken 1,"));
    // A broken ranges file is an error naming it.
    std::fs::write(&ranges, "{").expect("write");
    let out = run_code(
        keytrail()
            .arg("detect")
            .arg("--lake")
            .arg(&stolen)
            .arg("--aws-ip-ranges")
            .arg(&ranges),
        2,
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("my-ranges.json: not AWS's ip-ranges.json")
    );
}

/// TrailDiscover's own example records (testdata/traildiscover, CC BY 4.0), ingested as they
/// are: the share of its calls `detect` flags at low or above, per ATT&CK tactic.
#[test]
#[allow(clippy::print_stderr)]
fn the_catalogs_example_records_are_flagged() {
    use std::collections::{BTreeMap, HashMap};
    let l = lake(
        "traildiscover",
        &[&testdata().join("traildiscover/examples.json.gz")],
    );
    let out = run_code(
        keytrail().arg("detect").arg("--lake").arg(&l).args([
            "--format",
            "json",
            "--min-severity",
            "low",
            "--threads",
            "2",
        ]),
        1,
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let flagged: std::collections::HashSet<String> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .flat_map(|f| f["events"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e.as_str().map(str::to_owned))
        .collect();
    // The catalog: (source, name) → (tactics, in the wild).
    let tsv = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../keytrail-detect/data/abused-calls.tsv"),
    )
    .expect("catalog");
    let mut cat: HashMap<(String, String), (Vec<String>, bool)> = HashMap::new();
    for line in tsv.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split('\t').collect();
        cat.insert(
            (f[0].to_owned(), f[1].to_owned()),
            (f[2].split(',').map(str::to_owned).collect(), f[4] == "true"),
        );
    }
    let text = {
        use std::io::Read as _;
        let mut s = String::new();
        flate2::read::GzDecoder::new(
            std::fs::File::open(testdata().join("traildiscover/examples.json.gz")).expect("file"),
        )
        .read_to_string(&mut s)
        .expect("gzip");
        s
    };
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    // tactic → [successful (flagged, all), denied (flagged, all)]
    let mut by: BTreeMap<String, [(u32, u32); 2]> = BTreeMap::new();
    let mut total = [(0u32, 0u32); 2];
    for r in v["Records"].as_array().expect("records") {
        let key = (
            r["eventSource"].as_str().unwrap_or_default().to_owned(),
            r["eventName"].as_str().unwrap_or_default().to_owned(),
        );
        let Some((tactics, wild)) = cat.get(&key) else {
            continue;
        };
        if tactics.iter().all(|t| t == "discovery") {
            continue;
        }
        let code = r["errorCode"].as_str().unwrap_or_default();
        let which = if code.is_empty() {
            if !wild {
                continue;
            }
            0
        } else if keytrail_model::facts::is_denied(code) {
            1
        } else {
            continue;
        };
        let hit = flagged.contains(r["eventID"].as_str().unwrap_or_default());
        for t in tactics.iter().filter(|t| *t != "discovery") {
            let e = &mut by.entry(t.clone()).or_default()[which];
            e.1 += 1;
            e.0 += u32::from(hit);
        }
        total[which].1 += 1;
        total[which].0 += u32::from(hit);
    }
    for (t, [s, d]) in &by {
        eprintln!("{t}: successful {}/{}, denied {}/{}", s.0, s.1, d.0, d.1);
    }
    eprintln!(
        "all: successful {}/{}, denied {}/{}",
        total[0].0, total[0].1, total[1].0, total[1].1
    );
    assert!(total[0].1 >= 20 && total[1].1 >= 200, "{total:?}");
    assert!(total[0].0 * 100 >= 90 * total[0].1, "successful: {total:?}");
    assert!(total[1].0 * 100 >= 50 * total[1].1, "denied: {total:?}");
}
