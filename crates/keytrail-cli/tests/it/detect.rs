//! `keytrail detect`, `keytrail rules list|lint|test`, `keytrail report alternatives`: the
//! sample lake's incident and the real captures must produce the findings they should.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;

use crate::util::{ingest_json, keytrail, run_code, testdata};

fn lake(name: &str, paths: &[&Path]) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("keytrail-it-detect-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    ingest_json(paths, &dir, &[], 0);
    dir
}

fn sample_lake() -> &'static Path {
    static L: OnceLock<std::path::PathBuf> = OnceLock::new();
    L.get_or_init(|| lake("sample", &[&testdata().join("sample")]))
}

fn captures_lake() -> &'static Path {
    static L: OnceLock<std::path::PathBuf> = OnceLock::new();
    L.get_or_init(|| {
        lake(
            "captures",
            &[&testdata().join("stratus"), &testdata().join("otrf")],
        )
    })
}

fn detect_json(lake: &Path, args: &[&str], code: i32) -> serde_json::Value {
    let out = run_code(
        keytrail()
            .arg("detect")
            .arg("--lake")
            .arg(lake)
            .args(["--format", "json", "--threads", "2"])
            .args(args),
        code,
    );
    serde_json::from_slice(&out.stdout).expect("detect prints JSON")
}

/// (rule, key) of every finding.
fn pairs(report: &serde_json::Value) -> Vec<(String, String)> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap_or_default().to_owned(),
                f["key"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn p(rule: &str, key: &str) -> (String, String) {
    (rule.to_owned(), key.to_owned())
}

const LEAKED: &str = "AKIARTXV5AHDZMKNCBCQ";
const SESSION: &str = "ASIARTXV5AHDYHPGSGN6";
const ASSUMED: &str = "ASIARTXV5AHDSRWPFM6V";
const FEDERATION: &str = "ASIARTXV5AHD2DKLCJS3";

#[test]
fn the_sample_incident_lights_up_and_nothing_else_does() {
    // At medium and above: exactly the incident.
    let r = detect_json(sample_lake(), &["--min-severity", "medium"], 1);
    assert_eq!(
        pairs(&r),
        vec![
            p("kt-new-network-and-client", LEAKED),
            p("kt-recon-burst", LEAKED),
            p("recon-offensive-os-user-agent", LEAKED),
            p("kt-denied-burst", LEAKED),
            p("recon-account-authorization-details", LEAKED),
            p("iam-create-user", LEAKED),
            p("iam-admin-policy-attached", LEAKED),
            p("iam-access-key-for-other-user", LEAKED),
            p("kt-abused-call", LEAKED),
            p("long-term-key-mints-session", LEAKED),
            p("kt-abused-call", LEAKED),
            p("ec2-unusual-instances", SESSION),
            p("security-group-open-to-world", SESSION),
            p("cloudtrail-stopped", SESSION),
            p("s3-bucket-policy-public-or-cross-account", ASSUMED),
            p("kt-session-used-after-parent-deactivated", FEDERATION),
        ]
    );
    assert_eq!(
        r["findings"][10]["reason"],
        "GetFederationToken (sts; persistence): one of 4 distinct persistence or privilege-escalation calls within the hour"
    );
    // At low, the sample's one week also shows its benign keys' first uses of abused calls
    // (RunInstances, PutRolePolicy, GetAuthorizationToken, the responder's UpdateAccessKey):
    // a principal's first call of each is not routine (routine: made on an earlier day).
    let low = detect_json(sample_lake(), &[], 1);
    let extra: Vec<&serde_json::Value> = low["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["severity"] == "low")
        .collect();
    assert_eq!(
        low["findings"].as_array().map(Vec::len),
        Some(extra.len() + 16)
    );
    for f in &extra {
        let reason = f["reason"].as_str().unwrap_or_default();
        assert_eq!(f["rule"], "kt-abused-call", "{f}");
        assert!(
            reason.contains("never made before") || reason.contains(" earlier day(s)"),
            "{reason}"
        );
        assert!(
            ![LEAKED, SESSION, ASSUMED, FEDERATION]
                .contains(&f["key"].as_str().unwrap_or_default())
        );
    }
    assert_eq!(r["events"], 1279);
    let f = &r["findings"][3];
    assert_eq!(f["time"], "2024-11-30T03:14:00Z");
    assert_eq!(
        f["reason"],
        "16 denied calls in 1 min: GetAccountAuthorizationDetails ×16"
    );
    assert_eq!(f["events"].as_array().map(Vec::len), Some(16));
    // Keys ranked: the session key (critical) first, then the leaked key.
    let keys: Vec<&str> = r["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["key"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(keys, vec![SESSION, LEAKED, FEDERATION, ASSUMED]);
    assert_eq!(r["keys"][1]["findings"], 11);
    assert_eq!(r["keys"][1]["score"], 170);
    // GetSessionToken and GetFederationToken within the hour: one finding, both events.
    assert_eq!(
        r["findings"][9]["reason"],
        format!("{LEAKED} minted {SESSION}; {LEAKED} minted {FEDERATION} [2 events]")
    );
}

#[test]
fn since_and_min_severity_narrow_the_findings_and_set_the_exit_status() {
    let r = detect_json(
        sample_lake(),
        &[
            "--since",
            "2024-11-30T03:20:00Z",
            "--min-severity",
            "medium",
        ],
        1,
    );
    assert_eq!(
        pairs(&r),
        vec![
            p("s3-bucket-policy-public-or-cross-account", ASSUMED),
            p("kt-session-used-after-parent-deactivated", FEDERATION),
        ]
    );
    let r = detect_json(sample_lake(), &["--min-severity", "critical"], 1);
    assert_eq!(pairs(&r), vec![p("cloudtrail-stopped", SESSION)]);
    let r = detect_json(
        sample_lake(),
        &["--until", "2024-11-29", "--min-severity", "medium"],
        0,
    );
    assert_eq!(pairs(&r), vec![]);
    let r = detect_json(sample_lake(), &["--until", "2024-11-29"], 1);
    assert!(
        pairs(&r).iter().all(|(r, _)| r == "kt-abused-call"),
        "{:?}",
        pairs(&r)
    );
    // Info findings (a new network, client or region alone) only when asked for.
    let r = detect_json(sample_lake(), &["--min-severity", "info"], 1);
    let info: BTreeSet<String> = r["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["severity"] == "info")
        .map(|f| f["rule"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(info.contains("kt-new-source-network"), "{info:?}");
}

#[test]
fn the_sample_findings_as_csv() {
    let out = run_code(
        keytrail()
            .arg("detect")
            .arg("--lake")
            .arg(sample_lake())
            .args(["--format", "csv", "--threads", "2"]),
        1,
    );
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stdout));
}

#[test]
fn the_sample_findings_as_json_lines_are_the_json_reports_findings() {
    let jsonl = || {
        let mut c = keytrail();
        c.arg("detect").arg("--lake").arg(sample_lake()).args([
            "--format",
            "jsonl",
            "--min-severity",
            "info",
            "--threads",
            "2",
        ]);
        c
    };
    let text = String::from_utf8(run_code(&mut jsonl(), 1).stdout).expect("UTF-8");
    assert!(text.ends_with('\n'), "{text}");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a finding per line"))
        .collect();
    let r = detect_json(sample_lake(), &["--min-severity", "info"], 1);
    let findings = r["findings"].as_array().expect("findings");
    assert!(findings.len() > 30, "{}", findings.len());
    assert_eq!(&lines, findings);
    // Written to a file, the same bytes.
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("findings.jsonl");
    run_code(jsonl().arg("-o").arg(&file), 1);
    assert_eq!(std::fs::read_to_string(&file).expect("written"), text);
}

#[test]
fn the_sample_findings_as_markdown() {
    let out = run_code(
        keytrail()
            .arg("detect")
            .arg("--lake")
            .arg(sample_lake())
            .args([
                "--format",
                "markdown",
                "--min-severity",
                "high",
                "--threads",
                "2",
            ]),
        1,
    );
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stdout));
}

#[test]
fn the_real_captures_produce_their_findings() {
    let r = detect_json(captures_lake(), &[], 1);
    let got: BTreeSet<(String, String)> = pairs(&r).into_iter().collect();
    for want in [
        // aws.defense-evasion.cloudtrail-stop
        p("cloudtrail-stopped", "AKIAGGWFBBHBE7D3M9WI"),
        // aws.persistence.iam-create-admin-user
        p("iam-create-user", "AKIAOZUDECYXYM4ONAN4"),
        p("iam-admin-policy-attached", "AKIAOZUDECYXYM4ONAN4"),
        p("iam-access-key-for-other-user", "AKIAOZUDECYXYM4ONAN4"),
        // aws.persistence.sts-federation-token
        p("long-term-key-mints-session", "AKIA6V1GNZTT65XQH36M"),
        // aws.defense-evasion.cloudtrail-delete, -event-selectors, vpc-remove-flow-logs,
        // dns-delete-logs, organizations-leave
        p("cloudtrail-deleted", "AKIAFBJ48BV9CGRBRKGM"),
        p(
            "cloudtrail-management-events-dropped",
            "AKIA2I0BSXU5LNRWIN0K",
        ),
        p("vpc-flow-logs-deleted", "AKIA5Q8Z0GHOBYSEN9D6"),
        p("dns-query-logging-deleted", "AKIADT99GZBZR7NVDT0D"),
        p("organization-left", "ASIA36EV31F1RB3OA8IG"),
        // aws.persistence.iam-backdoor-role, iam-create-backdoor-role, iam-backdoor-user
        p("iam-role-trusts-other-account", "AKIAMUV7B57OZM0RV05D"),
        p("iam-role-trusts-other-account", "AKIA0W5KI69TY8X86BGT"),
        p("iam-admin-policy-attached", "AKIA0W5KI69TY8X86BGT"),
        p("iam-access-key-for-other-user", "AKIA30BEZSJBVKOFKZW0"),
        // aws.persistence.iam-create-user-login-profile, privilege-escalation.iam-update-user-login-profile
        p("iam-login-profile", "AKIAE18PGYHCY2CYMTFK"),
        p("iam-login-profile", "AKIAV1MIS7NGMDMR83FC"),
        // aws.execution.ec2-launch-unusual-instances, ec2-user-data; credential-access.ec2-get-password-data
        p("ec2-unusual-instances", "ASIA9F6MXE9HSYOXYQOS"),
        p("ec2-user-data-modified", "AKIAZI86ACIZ2J9CV86Z"),
        p("ec2-get-password-data", "ASIANQQHHS551LWULIWD"),
        p("kt-denied-burst", "ASIANQQHHS551LWULIWD"),
        // aws.exfiltration.*
        p("security-group-open-to-world", "AKIAXW7UJ577KFYIAHIM"),
        p("ec2-image-or-snapshot-shared", "AKIA40XZ2OQU8R4QKTAC"),
        p("ec2-image-or-snapshot-shared", "AKIAYLJU0B35TFSNKCS2"),
        p("ec2-image-or-snapshot-shared", "AKIAIYTVC64GTXUFCS2X"),
        // aws.credential-access.ec2-steal-instance-credentials, and OTRF's stolen instance key
        p("kt-instance-credentials-elsewhere", "ASIAP5CT9NN8EYVU1FXV"),
        p("kt-instance-credentials-elsewhere", "ASIA5FLZVX4OPVKKVBMX"),
        // aws.execution.ssm-send-command, ssm-start-session; persistence.lambda-backdoor-function,
        // lambda-overwrite-code, lambda-layer-extension (rules of issue 12)
        p("ssm-command-or-session", "AKIA4HNRH6OJUWNZ893Z"),
        p("ssm-command-or-session", "AKIAAM80VXLJF8NPK4VC"),
        p("lambda-public-function-url", "AKIAYALJGCQ7J893JO5I"),
        p("lambda-code-or-layer-changed", "AKIAUBN5AMJF3I0EG996"),
        p("lambda-code-or-layer-changed", "AKIAKHYV6FI4F4CJQMDV"),
        // CreateUser, AttachUserPolicy, CreateAccessKey within minutes: an escalation sequence.
        p("kt-abused-call", "AKIAOZUDECYXYM4ONAN4"),
    ] {
        assert!(got.contains(&want), "missing {want:?} in {got:#?}");
    }
    // The Stratus user agent marks every detonation: one finding per key and hour.
    let ua = got
        .iter()
        .filter(|(r, _)| r == "recon-offensive-tool-user-agent")
        .count();
    assert_eq!(ua, 39);
    assert_eq!(r["findings"].as_array().map(Vec::len), Some(74));
    assert_eq!(got.len(), 74, "{got:#?}");
}

#[test]
fn rules_list_lint_and_test_pass_on_the_bundled_rules() {
    let out = run_code(keytrail().args(["rules", "list", "--format", "csv"]), 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("id,kind,severity,category,title,tags,origin\n"));
    assert!(
        text.contains("\naws-ip-ranges,data,,credential-use,\"AWS ip-ranges.json of 2025-07-24T20:23:14Z (syncToken 1753388594, bundled;"),
        "{text}"
    );
    assert!(text.contains("\ncloudtrail-stopped,rule,critical,logging-tampering,"));
    assert!(text.contains("\nkt-denied-burst,detector,medium,recon,"));
    let out = run_code(keytrail().args(["rules", "lint", "--strict"]), 0);
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("0 error(s), 0 warning(s)\n"));
    let out = run_code(keytrail().args(["rules", "test"]), 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains(" 0 failed\n"));
}

#[test]
fn set_changes_a_detector_setting_and_rules_list_shows_it() {
    // The sample's leaked key makes 16 denied calls within a minute: a burst at 16, none at 17.
    let burst = |args: &[&str]| {
        let r = detect_json(sample_lake(), args, 1);
        pairs(&r).contains(&p("kt-denied-burst", LEAKED))
    };
    assert!(burst(&["--set", "denied-count=16"]));
    assert!(!burst(&["--set", "denied-count=17"]));
    assert!(burst(&[
        "--set",
        "denied-count=17",
        "--set",
        "denied-count=16"
    ]));
    let out = run_code(
        keytrail().args([
            "rules",
            "list",
            "--format",
            "csv",
            "--set",
            "denied-count=30",
            "--set",
            "recon-window=15m",
        ]),
        0,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "\ndenied-count,setting,,detector-settings,denied calls that make a burst: 30,,--set\n"
        ),
        "{text}"
    );
    assert!(text.contains(
        "\nrecon-window,setting,,detector-settings,the span a reconnaissance burst's calls fall within: 15m,,--set\n"
    ));
    assert!(text.contains(
        "\ndenied-window,setting,,detector-settings,the span a denied burst's calls fall within: 10m,,default\n"
    ));
    let out = run_code(
        keytrail().args(["rules", "list", "--format", "csv", "--no-detectors"]),
        0,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains(",setting,") && !text.contains(",detector,"),
        "{text}"
    );
    // A setting that does not exist, or a value it cannot take, stops the run before it reads.
    for (arg, says) in [
        (
            "denied-burst=3",
            "--set denied-burst: no such detector setting; the settings are warmup,",
        ),
        (
            "recon-window=15",
            "--set recon-window=15: a length of time above zero",
        ),
    ] {
        let out = run_code(
            keytrail()
                .args(["detect", "--lake"])
                .arg(sample_lake())
                .args(["--set", arg]),
            2,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
    }
}

const USER_RULE: &str = r#"id: my-ci-deploy-used
title: ci-deploy's key used from outside the runners
description: The CI key calls only from 203.0.113.0/24.
severity: high
category: credential-use
match:
  userIdentity.userName: ci-deploy
  not:
    sourceIPAddress|cidr: 203.0.113.0/24
reason: "ci-deploy from {sourceIPAddress}"
tests:
  positive:
    - {eventSource: sts.amazonaws.com, eventName: GetCallerIdentity, sourceIPAddress: 198.51.100.77, userIdentity: {type: IAMUser, userName: ci-deploy, accessKeyId: AKIAEXAMPLEEXAMPLE01}}
  negative:
    - {eventSource: sts.amazonaws.com, eventName: GetCallerIdentity, sourceIPAddress: 203.0.113.10, userIdentity: {type: IAMUser, userName: ci-deploy, accessKeyId: AKIAEXAMPLEEXAMPLE01}}
"#;

#[test]
fn a_users_rule_folder_is_linted_tested_and_used() {
    let dir = tempfile::tempdir().expect("tmp");
    let rules = dir.path().join("credential-use");
    std::fs::create_dir_all(&rules).expect("mkdir");
    std::fs::write(rules.join("my-ci-deploy-used.yaml"), USER_RULE).expect("write");
    let d = dir.path().to_str().expect("utf-8");
    run_code(
        keytrail().args(["rules", "lint", "--no-bundled", "--rules", d]),
        0,
    );
    let out = run_code(
        keytrail().args(["rules", "test", "--no-bundled", "--rules", d]),
        0,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1 rule(s), 2 test event(s): 2 passed, 0 failed\n"
    );
    let r = detect_json(
        sample_lake(),
        &["--no-bundled", "--no-detectors", "--rules", d],
        1,
    );
    // The leaked key, and the session key minted from it (same user name).
    assert_eq!(
        pairs(&r),
        vec![
            p("my-ci-deploy-used", LEAKED),
            p("my-ci-deploy-used", SESSION)
        ]
    );
    let f = &r["findings"];
    assert_eq!(f[0]["time"], "2024-11-30T03:12:05Z");
    assert_eq!(
        f[0]["reason"],
        "ci-deploy from 198.51.100.77; ci-deploy from 198.51.100.77 (denied: AccessDenied) [30 events]"
    );
    assert_eq!(f[1]["reason"], "ci-deploy from 198.51.100.77 [3 events]");

    // A fixture that fails, and a rule that does not parse.
    let broken = USER_RULE.replace(
        "sourceIPAddress: 198.51.100.77",
        "sourceIPAddress: 203.0.113.99",
    );
    std::fs::write(rules.join("my-ci-deploy-used.yaml"), broken).expect("write");
    let out = run_code(
        keytrail().args(["rules", "test", "--no-bundled", "--rules", d]),
        1,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "FAIL my-ci-deploy-used positive[0]: did not match\n1 rule(s), 2 test event(s): 1 passed, 1 failed\n"
    );
    std::fs::write(
        rules.join("bad.yaml"),
        "id: bad\ntitle: x\nseverity: urgent\ncategory: recon\nmatch: {eventName: x}\n",
    )
    .expect("write");
    let out = run_code(
        keytrail().args(["rules", "lint", "--no-bundled", "--rules", d]),
        1,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("bad.yaml: rule bad: unknown severity `urgent`"),
        "{text}"
    );
    // detect refuses a rule folder with a broken rule.
    let out = run_code(
        keytrail()
            .arg("detect")
            .arg("--lake")
            .arg(sample_lake())
            .args(["--rules", d]),
        2,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown severity"));
}

#[test]
fn alternatives_recommend_a_replacement_for_each_long_term_key() {
    let out = run_code(
        keytrail()
            .args(["report", "alternatives", "--format", "json", "--lake"])
            .arg(sample_lake()),
        0,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let rows = v.as_array().expect("rows");
    assert!(
        rows.iter()
            .all(|r| r["key"].as_str().is_some_and(|k| k.starts_with("AKIA")))
    );
    let of = |key: &str| {
        rows.iter()
            .find(|r| r["key"] == key)
            .unwrap_or_else(|| panic!("{key} listed"))
            .clone()
    };
    // The steady daily caller from one network outside AWS.
    let reporting = of("AKIARTXV5AHDT3IDRTCQ");
    assert_eq!(reporting["recommendation"], "roles-anywhere");
    assert_eq!(reporting["usage"], "steady-program");
    assert_eq!(reporting["networks"], 1);
    // An AWS CLI on an Amazon Linux host.
    let ec2 = of("AKIARTXV5AHDYJI6AXTW");
    assert_eq!(ec2["recommendation"], "iam-role");
    assert!(
        ec2["why"]
            .as_str()
            .is_some_and(|w| w.contains("Amazon Linux host in the user agent (66 events)")),
        "{}",
        ec2["why"]
    );
}
