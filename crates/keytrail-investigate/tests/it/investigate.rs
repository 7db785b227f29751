//! The leaked-key investigation: synthetic chains with known answers (role chaining three deep,
//! a derived key used in a file delivered before the file of the call that minted it, a
//! federation token used after its parent was deactivated), the real Stratus captures, the
//! raw-logs mode against the lake mode, and every output format.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use keytrail_engine::{LakeSession, SessionOptions, block_on};
use keytrail_ingest::{IngestOptions, Input, NoProgress, ingest};
use keytrail_investigate::{
    InvestigateError, InvestigateOptions, Investigation, Timeline, TimelineRow, investigate,
    raw::investigate_raw, timeline_rows,
};
use keytrail_model::AccessKeyId;
use serde_json::{Value, json};

const ACCOUNT: &str = "123456789012";
const LEAKED: &str = "AKIAQXLEAKEDKEY00001";
const SESSION: &str = "ASIAQXSESSIONKEY0001";
const ROLE1: &str = "ASIAQXROLEONEKEY0001";
const ROLE2: &str = "ASIAQXROLETWOKEY0001";
const ROLE3: &str = "ASIAQXROLETHREEKEY01";
const BACKDOOR: &str = "AKIAQXBACKDOORKEY001";
const FEDERATED: &str = "ASIAQXFEDERATEDKEY01";
const RESPONDER: &str = "ASIAQXRESPONDERKEY01";
const BYSTANDER: &str = "AKIAQXBYSTANDERKEY01";

#[allow(clippy::too_many_arguments)] // one fixture event, every field named at the call
fn event(
    key: &str,
    arn: &str,
    time: &str,
    source: &str,
    name: &str,
    req: Value,
    resp: Value,
    error: Option<&str>,
) -> Value {
    let mut e = json!({
        "eventVersion": "1.09",
        "userIdentity": {"type": if key.starts_with("AKIA") { "IAMUser" } else { "AssumedRole" }, "arn": arn,
                          "accountId": ACCOUNT, "accessKeyId": key, "principalId": "AIDAEXAMPLE"},
        "eventTime": time, "eventSource": source, "eventName": name, "awsRegion": "us-east-1",
        "sourceIPAddress": if key == RESPONDER || key == BYSTANDER { "192.0.2.10" } else { "198.51.100.66" },
        "userAgent": "aws-cli/2.15.0", "requestParameters": req, "responseElements": resp,
        "requestID": "r", "eventID": format!("ev-{time}-{name}"), "readOnly": false,
        "eventType": "AwsApiCall", "recipientAccountId": ACCOUNT,
    });
    if let Some(code) = error {
        e["errorCode"] = json!(code);
    }
    e
}

fn creds(key: &str, principal: (&str, &str)) -> Value {
    json!({"credentials": {"accessKeyId": key, "expiration": "Dec 1, 2024, 3:00:00 PM",
                            "sessionToken": "IQoJb3JpZ2luX2VjEXAMPLETOKEN"},
           principal.0: {"arn": principal.1}})
}

const USER: &str = "arn:aws:iam::123456789012:user/deploy";

/// Write the chain's events into delivery files. The derived role key ROLE3 is used in a file
/// delivered (and named) BEFORE the file holding the AssumeRole that minted it.
fn chain_logs(dir: &Path) {
    let f = |name: &str, events: Vec<Value>| {
        let p = dir.join(format!("AWSLogs/{ACCOUNT}/CloudTrail/us-east-1/2024/12/01/{ACCOUNT}_CloudTrail_us-east-1_{name}.json.gz"));
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&serde_json::to_vec(&json!({"Records": events})).expect("json"))
            .expect("gz");
        std::fs::write(p, gz.finish().expect("gz")).expect("write");
    };
    let r =
        |role: &str, session: &str| format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}");
    // Delivered first: ROLE3 at work, and a bystander.
    f(
        "20241201T0105Z_AAAAAAAAAAAAAAA1",
        vec![
            event(
                ROLE3,
                &r("Admin", "c"),
                "2024-12-01T01:04:00Z",
                "s3.amazonaws.com",
                "PutBucketPolicy",
                json!({"bucketName": "payroll", "bucketPolicy": {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject"}]}}),
                Value::Null,
                None,
            ),
            event(
                BYSTANDER,
                "arn:aws:iam::123456789012:user/alice",
                "2024-12-01T01:03:00Z",
                "s3.amazonaws.com",
                "ListBuckets",
                json!({}),
                Value::Null,
                None,
            ),
        ],
    );
    // The leaked key mints, and the chain goes three roles deep.
    f(
        "20241201T0110Z_BBBBBBBBBBBBBBB2",
        vec![
            event(
                LEAKED,
                USER,
                "2024-12-01T01:00:00Z",
                "sts.amazonaws.com",
                "GetCallerIdentity",
                json!({}),
                Value::Null,
                None,
            ),
            event(
                LEAKED,
                USER,
                "2024-12-01T01:00:30Z",
                "iam.amazonaws.com",
                "ListUsers",
                json!({}),
                Value::Null,
                Some("AccessDenied"),
            ),
            event(
                LEAKED,
                USER,
                "2024-12-01T01:01:00Z",
                "sts.amazonaws.com",
                "GetSessionToken",
                json!({"durationSeconds": 129600}),
                creds(SESSION, ("sessionUser", USER)),
                None,
            ),
            event(
                LEAKED,
                USER,
                "2024-12-01T01:01:10Z",
                "sts.amazonaws.com",
                "AssumeRole",
                json!({"roleArn": "arn:aws:iam::123456789012:role/Ops", "roleSessionName": "a"}),
                creds(ROLE1, ("assumedRoleUser", &r("Ops", "a"))),
                None,
            ),
            event(
                ROLE1,
                &r("Ops", "a"),
                "2024-12-01T01:02:00Z",
                "sts.amazonaws.com",
                "AssumeRole",
                json!({"roleArn": "arn:aws:iam::123456789012:role/Deploy", "roleSessionName": "b"}),
                creds(ROLE2, ("assumedRoleUser", &r("Deploy", "b"))),
                None,
            ),
            event(
                ROLE2,
                &r("Deploy", "b"),
                "2024-12-01T01:03:00Z",
                "sts.amazonaws.com",
                "AssumeRole",
                json!({"roleArn": "arn:aws:iam::123456789012:role/Admin", "roleSessionName": "c"}),
                creds(ROLE3, ("assumedRoleUser", &r("Admin", "c"))),
                None,
            ),
            event(
                LEAKED,
                USER,
                "2024-12-01T01:05:00Z",
                "iam.amazonaws.com",
                "CreateAccessKey",
                json!({"userName": "svc-backup"}),
                json!({"accessKey": {"accessKeyId": BACKDOOR, "userName": "svc-backup", "status": "Active"}}),
                None,
            ),
            event(
                LEAKED,
                USER,
                "2024-12-01T01:06:00Z",
                "sts.amazonaws.com",
                "GetFederationToken",
                json!({"name": "svc"}),
                creds(
                    FEDERATED,
                    (
                        "federatedUser",
                        "arn:aws:sts::123456789012:federated-user/svc",
                    ),
                ),
                None,
            ),
            // A failed AssumeRole mints nothing.
            event(
                LEAKED,
                USER,
                "2024-12-01T01:06:30Z",
                "sts.amazonaws.com",
                "AssumeRole",
                json!({"roleArn": "arn:aws:iam::123456789012:role/Nope"}),
                Value::Null,
                Some("AccessDenied"),
            ),
            event(
                SESSION,
                USER,
                "2024-12-01T01:07:00Z",
                "ec2.amazonaws.com",
                "AuthorizeSecurityGroupIngress",
                json!({"groupId": "sg-1", "ipPermissions": {"items": [{"ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]}}]}}),
                Value::Null,
                None,
            ),
        ],
    );
    // The responder deactivates the leaked key; the federation token keeps working.
    f(
        "20241201T0130Z_CCCCCCCCCCCCCCC3",
        vec![
            event(
                RESPONDER,
                "arn:aws:sts::123456789012:assumed-role/SecOps/me",
                "2024-12-01T01:20:00Z",
                "iam.amazonaws.com",
                "UpdateAccessKey",
                json!({"userName": "deploy", "accessKeyId": LEAKED, "status": "Inactive"}),
                Value::Null,
                None,
            ),
            event(
                FEDERATED,
                "arn:aws:sts::123456789012:federated-user/svc",
                "2024-12-01T01:25:00Z",
                "cloudtrail.amazonaws.com",
                "StopLogging",
                json!({"name": "main"}),
                Value::Null,
                None,
            ),
            event(
                BACKDOOR,
                "arn:aws:iam::123456789012:user/svc-backup",
                "2024-12-01T01:26:00Z",
                "iam.amazonaws.com",
                "DetachUserPolicy",
                json!({"userName": "deploy", "policyArn": "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3"}),
                Value::Null,
                None,
            ),
        ],
    );
}

fn opts(keys: &[&str]) -> InvestigateOptions {
    InvestigateOptions {
        keys: keys
            .iter()
            .map(|k| AccessKeyId::parse(k).expect("key"))
            .collect(),
        since: None,
        until: None,
    }
}

fn session_opts() -> SessionOptions {
    SessionOptions {
        threads: 2,
        ..SessionOptions::default()
    }
}

/// The investigation of `lake` and its timeline's rows.
fn run(lake: &Path, o: &InvestigateOptions) -> (Investigation, Vec<TimelineRow>) {
    block_on(2, async {
        let s = LakeSession::open(lake, &session_opts()).await?;
        let inv = investigate(&s, o).await?;
        let rows = timeline_rows(&s, &inv).await?;
        Ok::<_, InvestigateError>((inv, rows))
    })
    .expect("investigate")
}

fn lake_of(logs: &Path, tmp: &Path) -> PathBuf {
    let lake = tmp.join("lake");
    let s = ingest(
        &IngestOptions::new(vec![logs.to_path_buf()], lake.clone()),
        &NoProgress,
    )
    .expect("ingest");
    assert_eq!(s.objects.failed, 0);
    lake
}

fn chain_of(inv: &Investigation) -> Vec<(String, usize, Option<String>)> {
    inv.keys
        .iter()
        .map(|k| (k.key.clone(), k.depth, k.parent.clone()))
        .collect()
}

fn check_chain(inv: &Investigation, timeline: &[TimelineRow]) {
    let mut chain = chain_of(inv);
    chain.sort();
    let p = |k: &str| Some(k.to_owned());
    assert_eq!(
        chain,
        vec![
            (BACKDOOR.to_owned(), 1, p(LEAKED)),
            (LEAKED.to_owned(), 0, None),
            (FEDERATED.to_owned(), 1, p(LEAKED)),
            (ROLE1.to_owned(), 1, p(LEAKED)),
            (ROLE3.to_owned(), 3, p(ROLE2)),
            (ROLE2.to_owned(), 2, p(ROLE1)),
            (SESSION.to_owned(), 1, p(LEAKED)),
        ]
    );
    let edges: Vec<(&str, &str, &str)> = inv
        .derived
        .iter()
        .map(|e| (e.parent.as_str(), e.event_name.as_str(), e.child.as_str()))
        .collect();
    assert_eq!(
        edges,
        vec![
            (LEAKED, "GetSessionToken", SESSION),
            (LEAKED, "AssumeRole", ROLE1),
            (ROLE1, "AssumeRole", ROLE2),
            (ROLE2, "AssumeRole", ROLE3),
            (LEAKED, "CreateAccessKey", BACKDOOR),
            (LEAKED, "GetFederationToken", FEDERATED),
        ]
    );
    // Every event of every chain key (13), plus the responder's deactivation that names one.
    assert_eq!(inv.activity.events, 13);
    assert_eq!(inv.timeline_rows, 14);
    assert_eq!(timeline.len(), 14);
    assert_eq!(timeline[0].time, "2024-12-01T01:00:00Z");
    assert!(
        timeline
            .windows(2)
            .all(|w| (&w[0].time, &w[0].event_id) <= (&w[1].time, &w[1].event_id)),
        "in time order"
    );
    assert!(timeline.iter().all(|t| t.key.as_deref() != Some(BYSTANDER)));
    let deactivation = timeline
        .iter()
        .find(|t| t.relation == "names-chain-key")
        .expect("names");
    assert_eq!(deactivation.key.as_deref(), Some(RESPONDER));
    assert_eq!(deactivation.time, "2024-12-01T01:20:00Z");

    let leaked = inv.keys.iter().find(|k| k.key == LEAKED).expect("leaked");
    let d = leaked.deactivated.as_ref().expect("deactivated");
    assert_eq!(
        (d.time.as_str(), d.action.as_str()),
        ("2024-12-01T01:20:00Z", "UpdateAccessKey (Inactive)")
    );
    let used_after: Vec<(&str, u64)> = inv
        .keys
        .iter()
        .filter(|k| k.used_after_ancestor_deactivated > 0)
        .map(|k| (k.key.as_str(), k.used_after_ancestor_deactivated))
        .collect();
    assert_eq!(used_after, vec![(BACKDOOR, 1), (FEDERATED, 1)]);
    assert!(inv.notes.iter().any(|n| n.starts_with(FEDERATED)
        && n.contains("after AKIAQXLEAKEDKEY00001 was deactivated at 2024-12-01T01:20:00Z")));

    let blast: Vec<(&str, &str, bool)> = inv
        .blast_radius
        .iter()
        .filter(|b| !matches!(b.group, "reconnaissance" | "denied" | "credentials"))
        .map(|b| (b.group, b.action.as_str(), b.succeeded))
        .collect();
    assert_eq!(
        blast,
        vec![
            ("iam", "CreateAccessKey", true),
            ("s3", "PutBucketPolicy", true),
            ("security-groups", "AuthorizeSecurityGroupIngress", true),
            ("logging-detection", "StopLogging", true),
            ("quarantine", "DetachUserPolicy", true),
        ]
    );
    let sg = inv
        .blast_radius
        .iter()
        .find(|b| b.group == "security-groups")
        .expect("sg");
    assert_eq!(sg.resource, "groupId=sg-1, open to 0.0.0.0/0");
    let s3 = inv
        .blast_radius
        .iter()
        .find(|b| b.group == "s3")
        .expect("s3");
    assert_eq!(s3.resource, "bucketName=payroll, Principal \"*\"");
    let denied: Vec<(&str, u64)> = inv
        .blast_radius
        .iter()
        .filter(|b| b.group == "denied")
        .map(|b| (b.action.as_str(), b.count))
        .collect();
    assert_eq!(denied, vec![("ListUsers", 1)]);
    // Minting calls are listed as credentials, the refused one too.
    let creds: Vec<(&str, bool)> = inv
        .blast_radius
        .iter()
        .filter(|b| b.group == "credentials")
        .map(|b| (b.action.as_str(), b.succeeded))
        .collect();
    assert_eq!(
        creds,
        vec![
            ("GetSessionToken", true),
            ("AssumeRole", true),
            ("AssumeRole", true),
            ("AssumeRole", true),
            ("GetFederationToken", true),
            ("AssumeRole", false),
        ]
    );
    let ips: Vec<(&str, u64)> = inv
        .activity
        .source_ips
        .iter()
        .map(|s| (s.value.as_str(), s.events))
        .collect();
    assert_eq!(ips, vec![("198.51.100.66", 13)]);
}

/// The timeline read a day at a time (each chunk read while the one before is taken) is the
/// timeline read at once: every row once, in time order, each with its event; a chunk left
/// empty by `--since` is skipped.
#[test]
fn a_timeline_read_a_day_at_a_time_is_the_whole_timeline() {
    let tmp = tempfile::tempdir().expect("tmp");
    let logs = tmp.path().join("logs");
    for day in 1..=4 {
        let p = logs.join(format!(
            "AWSLogs/{ACCOUNT}/CloudTrail/us-east-1/2024/12/0{day}/{ACCOUNT}_CloudTrail_us-east-1_2024120{day}T1200Z_AAAAAAAAAAAAAAA{day}.json.gz"
        ));
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        let events: Vec<Value> = ["09", "10"]
            .iter()
            .map(|h| {
                let time = format!("2024-12-0{day}T{h}:00:00Z");
                event(
                    LEAKED,
                    USER,
                    &time,
                    "s3.amazonaws.com",
                    "ListBuckets",
                    json!({}),
                    Value::Null,
                    None,
                )
            })
            .collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&serde_json::to_vec(&json!({"Records": events})).expect("json"))
            .expect("gz");
        std::fs::write(p, gz.finish().expect("gz")).expect("write");
    }
    let lake = lake_of(&logs, tmp.path());
    let mut o = opts(&[LEAKED]);
    o.since = Some(keytrail_model::time::parse_event_time("2024-12-02T00:00:00Z").expect("t"));
    let (whole, chunks) = block_on(2, async {
        let s = LakeSession::open(&lake, &session_opts()).await?;
        let inv = investigate(&s, &o).await?;
        let whole = timeline_rows(&s, &inv).await?;
        let mut t = Timeline::open_in_chunks(&s, &inv, true, 1).await?;
        let mut chunks = Vec::new();
        while let Some(c) = t.next(&s).await? {
            assert_eq!(c.rows.len(), c.events_json.len());
            for (row, e) in c.rows.iter().zip(&c.events_json) {
                let e: Value = serde_json::from_str(e).expect("event JSON");
                assert_eq!(e["eventid"].as_str(), row.event_id.as_deref());
            }
            chunks.push(c.rows);
        }
        Ok::<_, InvestigateError>((whole, chunks))
    })
    .expect("investigate");
    let times = |rows: &[TimelineRow]| rows.iter().map(|r| r.time.clone()).collect::<Vec<_>>();
    let expected: Vec<String> = (2..=4)
        .flat_map(|d| ["09", "10"].map(|h| format!("2024-12-0{d}T{h}:00:00Z")))
        .collect();
    assert_eq!(times(&whole), expected);
    assert_eq!(
        chunks.iter().map(|c| times(c)).collect::<Vec<_>>(),
        expected
            .chunks(2)
            .map(<[String]>::to_vec)
            .collect::<Vec<_>>()
    );
    assert_eq!(chunks.concat(), whole);
}

#[test]
fn the_chain_is_followed_three_roles_deep_and_past_the_deactivation() {
    let tmp = tempfile::tempdir().expect("tmp");
    let logs = tmp.path().join("logs");
    chain_logs(&logs);
    let lake = lake_of(&logs, tmp.path());
    let (inv, timeline) = run(&lake, &opts(&[LEAKED]));
    check_chain(&inv, &timeline);

    // Starting from a derived key follows only what it minted.
    let (inv, _) = run(&lake, &opts(&[ROLE2]));
    assert_eq!(
        chain_of(&inv),
        vec![
            (ROLE2.to_owned(), 0, None),
            (ROLE3.to_owned(), 1, Some(ROLE2.to_owned()))
        ]
    );

    // The window limits the timeline, not the chain.
    let mut o = opts(&[LEAKED]);
    o.since = Some(keytrail_model::time::parse_event_time("2024-12-01T01:10:00Z").expect("t"));
    let (inv, timeline) = run(&lake, &o);
    assert_eq!(inv.keys.len(), 7);
    assert_eq!(inv.activity.events, 2); // StopLogging, DetachUserPolicy
    assert_eq!(timeline.len(), 3); // and the deactivation, made by the responder
}

#[test]
fn raw_logs_give_the_same_answer_as_the_lake_reading_only_what_they_must_twice() {
    let tmp = tempfile::tempdir().expect("tmp");
    let logs = tmp.path().join("logs");
    chain_logs(&logs);
    let lake = lake_of(&logs, tmp.path());
    let (from_lake, lake_timeline) = run(&lake, &opts(&[LEAKED]));

    let mut template = IngestOptions::with_inputs(Vec::new(), PathBuf::new());
    template.threads = 2;
    let out = investigate_raw(
        vec![Input::Local(logs.clone())],
        None,
        &template,
        &opts(&[LEAKED]),
        &session_opts(),
        &NoProgress,
    )
    .expect("raw");
    let (_, raw_timeline) = run(&out.lake, &opts(&[LEAKED]));
    check_chain(&out.investigation, &raw_timeline);
    assert_eq!(raw_timeline, lake_timeline);
    assert_eq!(
        serde_json::to_value(&out.investigation).expect("json"),
        serde_json::to_value(&from_lake).expect("json")
    );
    // Pass 1 read all three files; ROLE1's, ROLE2's and ROLE3's calls were found by re-reading
    // only the files that hold them, one link per pass.
    let reads: Vec<u64> = out.passes.iter().map(|p| p.objects.read).collect();
    assert_eq!(reads[0], 3);
    assert!(
        out.passes.len() >= 2 && reads[1..].iter().all(|n| *n <= 2),
        "{reads:?}"
    );
    let written: u64 = out.passes.iter().map(|p| p.events.written).sum();
    assert_eq!(written, 14, "every kept event written once");
}

fn stratus(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/stratus")
        .join(name)
}

#[test]
fn real_captures_a_federation_token_used_next_and_a_key_made_for_another_user() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    ingest(
        &IngestOptions::new(
            vec![
                stratus("aws.persistence.sts-federation-token.json"),
                stratus("aws.persistence.iam-create-admin-user.json"),
            ],
            lake.clone(),
        ),
        &NoProgress,
    )
    .expect("ingest");

    let (inv, _) = run(&lake, &opts(&["AKIA6V1GNZTT65XQH36M"]));
    assert_eq!(
        chain_of(&inv),
        vec![
            ("AKIA6V1GNZTT65XQH36M".to_owned(), 0, None),
            (
                "ASIASTJKC5GCM7ZE6LUP".to_owned(),
                1,
                Some("AKIA6V1GNZTT65XQH36M".to_owned())
            ),
        ]
    );
    let e = &inv.derived[0];
    assert_eq!(
        (e.event_name.as_str(), e.time.as_str()),
        ("GetFederationToken", "2024-11-30T08:43:17Z")
    );
    // CloudTrail wrote "Nov 30, 2024, 8:43:17 PM": the `mintedexpiration` fact is a time.
    assert_eq!(e.expiration.as_deref(), Some("2024-11-30T20:43:17Z"));
    let child = &inv.keys[1];
    assert_eq!(
        (child.events, child.first_seen.as_deref()),
        (1, Some("2024-11-30T08:43:18Z"))
    );
    // The session token in the response was never stored.
    let text = serde_json::to_string(&inv).expect("json");
    assert!(
        !text.contains("IQoJb3JpZ2luX2Vj"),
        "no session token in the output"
    );

    let (inv, _) = run(&lake, &opts(&["AKIAOZUDECYXYM4ONAN4"]));
    assert_eq!(inv.derived.len(), 1);
    assert_eq!(inv.derived[0].child, "AKIAXAFZN8JEPF6L682H");
    assert_eq!(
        inv.derived[0].child_principal.as_deref(),
        Some("malicious-iam-user")
    );
    let iam: Vec<&str> = inv
        .blast_radius
        .iter()
        .filter(|b| b.group == "iam")
        .map(|b| b.action.as_str())
        .collect();
    assert_eq!(
        iam,
        vec!["AttachUserPolicy", "CreateAccessKey", "CreateUser"]
    );
    let attach = inv
        .blast_radius
        .iter()
        .find(|b| b.action == "AttachUserPolicy")
        .expect("attach");
    assert!(
        attach.resource.contains("userName=malicious-iam-user"),
        "{}",
        attach.resource
    );
    assert!(
        attach.resource.contains("AdministratorAccess"),
        "{}",
        attach.resource
    );
}

/// `n` characters of a base32 key body from a number (fixture key IDs).
fn key_body(prefix: &str, n: usize) -> String {
    format!("{prefix}QXCHAIN{n:013}")
}

/// Every minting call the chain follows, shaped as CloudTrail writes them: AssumeRoot (root
/// credentials for a member account), GetSessionToken, GetFederationToken, CreateAccessKey,
/// and AssumeRole chained past the depth limit; a DeleteAccessKey deactivates the created key.
#[test]
fn every_minting_call_and_the_depth_limit() {
    const ROOTKEY: &str = "ASIAQXASSUMEROOTKEY1";
    const SESSIONK: &str = "ASIAQXSESSIONTOKEN01";
    const FEDK: &str = "ASIAQXFEDERATIONKEY1";
    const NEWKEY: &str = "AKIAQXCREATEDKEY0001";
    let tmp = tempfile::tempdir().expect("tmp");
    let logs = tmp.path().join("logs");
    let mut events = vec![
        event(
            LEAKED,
            USER,
            "2024-12-02T00:00:00Z",
            "sts.amazonaws.com",
            "AssumeRoot",
            json!({"targetPrincipal": "210987654321", "taskPolicyArn": {"arn": "arn:aws:iam::aws:policy/root-task/IAMDeleteRootUserCredentials"}}),
            json!({"credentials": {"accessKeyId": ROOTKEY, "sessionToken": "IQoJb3JpZ2luX2VjEXAMPLETOKEN", "expiration": "Dec 2, 2024, 12:15:00 AM"}, "sourceIdentity": "deploy"}),
            None,
        ),
        event(
            ROOTKEY,
            "arn:aws:iam::210987654321:root",
            "2024-12-02T00:01:00Z",
            "iam.amazonaws.com",
            "DeleteLoginProfile",
            json!({}),
            Value::Null,
            None,
        ),
        event(
            LEAKED,
            USER,
            "2024-12-02T00:02:00Z",
            "sts.amazonaws.com",
            "GetSessionToken",
            json!({"durationSeconds": 3600}),
            json!({"credentials": {"accessKeyId": SESSIONK, "sessionToken": "IQoJb3JpZ2luX2VjEXAMPLETOKEN", "expiration": "2024-12-02T01:02:00Z"}}),
            None,
        ),
        event(
            LEAKED,
            USER,
            "2024-12-02T00:03:00Z",
            "sts.amazonaws.com",
            "GetFederationToken",
            json!({"name": "svc"}),
            creds(
                FEDK,
                (
                    "federatedUser",
                    "arn:aws:sts::123456789012:federated-user/svc",
                ),
            ),
            None,
        ),
        event(
            LEAKED,
            USER,
            "2024-12-02T00:04:00Z",
            "iam.amazonaws.com",
            "CreateAccessKey",
            json!({"userName": "svc-backup"}),
            json!({"accessKey": {"accessKeyId": NEWKEY, "status": "Active", "userName": "svc-backup", "createDate": "Dec 2, 2024, 12:04:00 AM"}}),
            None,
        ),
        event(
            RESPONDER,
            "arn:aws:sts::123456789012:assumed-role/SecOps/me",
            "2024-12-02T00:30:00Z",
            "iam.amazonaws.com",
            "DeleteAccessKey",
            json!({"accessKeyId": NEWKEY, "userName": "svc-backup"}),
            Value::Null,
            None,
        ),
        event(
            NEWKEY,
            "arn:aws:iam::123456789012:user/svc-backup",
            "2024-12-02T00:10:00Z",
            "s3.amazonaws.com",
            "ListBuckets",
            json!({}),
            Value::Null,
            None,
        ),
    ];
    // Role chaining 40 links deep from the session key: only MAX_DEPTH links are followed.
    let mut parent = SESSIONK.to_owned();
    for i in 0..40 {
        let child = key_body("ASIA", i);
        let t = format!("2024-12-02T01:{:02}:{:02}Z", i / 30, (i % 30) * 2);
        events.push(event(
            &parent,
            "arn:aws:sts::123456789012:assumed-role/Hop/x",
            &t,
            "sts.amazonaws.com",
            "AssumeRole",
            json!({"roleArn": "arn:aws:iam::123456789012:role/Hop", "roleSessionName": "x"}),
            creds(
                &child,
                (
                    "assumedRoleUser",
                    "arn:aws:sts::123456789012:assumed-role/Hop/x",
                ),
            ),
            None,
        ));
        parent = child;
    }
    let p = logs.join(format!(
        "AWSLogs/{ACCOUNT}/CloudTrail/us-east-1/2024/12/02/{ACCOUNT}_CloudTrail_us-east-1_20241202T0000Z_MINTINGCALLS0001.json.gz"
    ));
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&serde_json::to_vec(&json!({"Records": events})).expect("json"))
        .expect("gz");
    std::fs::write(p, gz.finish().expect("gz")).expect("write");
    let lake = lake_of(&logs, tmp.path());

    let (inv, timeline) = run(&lake, &opts(&[LEAKED]));
    let first: Vec<(&str, &str)> = inv
        .derived
        .iter()
        .take(4)
        .map(|e| (e.event_name.as_str(), e.child.as_str()))
        .collect();
    assert_eq!(
        first,
        vec![
            ("AssumeRoot", ROOTKEY),
            ("GetSessionToken", SESSIONK),
            ("GetFederationToken", FEDK),
            ("CreateAccessKey", NEWKEY),
        ]
    );
    let root = &inv.derived[0];
    assert_eq!(root.expiration.as_deref(), Some("2024-12-02T00:15:00Z"));
    let deepest = inv.keys.iter().map(|k| k.depth).max();
    assert_eq!(deepest, Some(keytrail_investigate::MAX_DEPTH));
    // LEAKED (0), its four children (1), then the hops: SESSIONK's first hop at depth 2 …
    // down to depth MAX_DEPTH, so MAX_DEPTH - 1 hop keys; the note names the last of them,
    // whose own minting calls were not followed.
    assert_eq!(
        inv.keys.len(),
        1 + 4 + (keytrail_investigate::MAX_DEPTH - 1)
    );
    assert!(
        inv.notes
            .iter()
            .any(|n| n.contains("deeper than 32 links") && n.contains(&key_body("ASIA", 30))),
        "{:?}",
        inv.notes
    );
    // DeleteAccessKey is a deactivation; the created key used before it raises no note.
    let created = inv.keys.iter().find(|k| k.key == NEWKEY).expect("created");
    let d = created.deactivated.as_ref().expect("deleted");
    assert_eq!(
        (d.action.as_str(), d.time.as_str()),
        ("DeleteAccessKey", "2024-12-02T00:30:00Z")
    );
    assert_eq!(
        d.by.as_deref(),
        Some("arn:aws:sts::123456789012:assumed-role/SecOps/me")
    );
    let deletion = timeline
        .iter()
        .find(|t| t.event_name.as_deref() == Some("DeleteAccessKey"))
        .expect("the deletion is in the timeline");
    assert_eq!(deletion.relation, "names-chain-key");
}
