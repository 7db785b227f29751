//! Every stateful detector on synthetic sequences, with the exact findings expected.

use keytrail_detect::fixture::{batch_of, session_with};
use keytrail_detect::{DetectOptions, Finding, Severity, block_on, detect_in};
use serde_json::{Value, json};

const ACCOUNT: &str = "111122223333";
/// 2024-11-01T00:00:00Z
const T0: i64 = 1_730_419_200_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

const CLI: &str = "aws-cli/2.15.30 Python/3.11.8 Linux/6.1 exe/x86_64.amzn.2023";
const PY: &str = "python-requests/2.31.0";

/// One event: `id`, time offset in ms, key, service, API, source address, user agent.
struct E<'a> {
    id: &'a str,
    t: i64,
    key: &'a str,
    src: &'a str,
    name: &'a str,
    ip: &'a str,
    ua: &'a str,
    region: &'a str,
    err: Option<&'a str>,
}

fn e<'a>(id: &'a str, t: i64, key: &'a str, name: &'a str, ip: &'a str) -> E<'a> {
    E {
        id,
        t,
        key,
        src: "iam.amazonaws.com",
        name,
        ip,
        ua: CLI,
        region: "us-east-1",
        err: None,
    }
}

fn user(key: &str) -> Value {
    json!({"type": "IAMUser", "principalId": "AIDAEXAMPLE", "arn": format!("arn:aws:iam::{ACCOUNT}:user/u-{key}"), "accountId": ACCOUNT, "accessKeyId": key, "userName": format!("u-{key}")})
}

fn record(x: &E<'_>, identity: Value, request: Value, response: Value) -> Value {
    let mut v = json!({
        "eventVersion": "1.08",
        "userIdentity": identity,
        "eventTime": keytrail_model::time::format_millis(T0 + x.t),
        "eventSource": x.src,
        "eventName": x.name,
        "awsRegion": x.region,
        "sourceIPAddress": x.ip,
        "userAgent": x.ua,
        "requestParameters": request,
        "responseElements": response,
        "eventID": x.id,
        "eventType": "AwsApiCall",
        "recipientAccountId": ACCOUNT,
    });
    if let Some(c) = x.err {
        v["errorCode"] = json!(c);
    }
    v
}

fn plain(x: &E<'_>) -> Value {
    record(x, user(x.key), Value::Null, Value::Null)
}

fn run(records: Vec<Value>) -> Vec<Finding> {
    let labelled: Vec<(String, Value)> = records
        .into_iter()
        .map(|v| (v["eventID"].as_str().unwrap_or_default().to_owned(), v))
        .collect();
    let batch = batch_of(&labelled).expect("records decode");
    let detect = |max_sort_events: u64| {
        let mut ctx = session_with(batch.clone(), 2).expect("session");
        let mut opts = DetectOptions {
            min_severity: Severity::Info,
            ..DetectOptions::default()
        };
        opts.config.max_sort_events = max_sort_events;
        block_on(2, async move { detect_in(&mut ctx, true, &opts).await })
            .expect("detect")
            .findings
    };
    let whole = detect(2_000_000);
    // Read in key buckets (as a large lake is), the findings are the same.
    assert_eq!(detect(2), whole, "bucketed run differs");
    // One key's findings, read with its principals' calls alone (as `keytrail follow` asks for
    // the keys new events touched), are the same as from every event — but for the detectors
    // that compare a key's addresses with every other key's.
    let alone = |f: &Finding| {
        f.rule != keytrail_detect::detectors::INSTANCE_ELSEWHERE
            && f.rule != keytrail_detect::detectors::WORKLOAD_OUTSIDE
    };
    let keys: std::collections::BTreeSet<String> = labelled
        .iter()
        .filter_map(|(_, v)| v["userIdentity"]["accessKeyId"].as_str().map(str::to_owned))
        .collect();
    for k in keys {
        let mut ctx = session_with(batch.clone(), 2).expect("session");
        let opts = DetectOptions {
            min_severity: Severity::Info,
            keys: Some([k.clone()].into()),
            ..DetectOptions::default()
        };
        let alone_run: Vec<Finding> =
            block_on(2, async move { detect_in(&mut ctx, true, &opts).await })
                .expect("detect")
                .findings;
        let one: Vec<Finding> = alone_run.iter().filter(|f| alone(f)).cloned().collect();
        let expected: Vec<&Finding> = whole
            .iter()
            .filter(|f| alone(f) && f.key.as_deref() == Some(k.as_str()))
            .collect();
        assert_eq!(
            one.iter().collect::<Vec<_>>(),
            expected,
            "findings of {k} alone"
        );
        // An instance's sessions are judged together (the other sessions are read with the
        // key): what the key alone raises, the whole run raises too, with the same evidence.
        // (Fewer may be raised alone: an address is also flagged when a person's key used it,
        // and only the people whose keys were read are known.)
        let elsewhere = |fs: &[Finding]| -> Vec<(Option<String>, Vec<String>)> {
            fs.iter()
                .filter(|f| {
                    f.rule == keytrail_detect::detectors::INSTANCE_ELSEWHERE
                        && f.key.as_deref() == Some(k.as_str())
                })
                .map(|f| (f.key.clone(), f.events.clone()))
                .collect()
        };
        let whole_of_k = elsewhere(&whole);
        for f in elsewhere(&alone_run) {
            assert!(
                whole_of_k.contains(&f),
                "{k} alone raises {f:?}, the whole run only {whole_of_k:?}"
            );
        }
    }
    whole
}

/// (detector, key, evidence) of every finding.
fn summary(fs: &[Finding]) -> Vec<(String, String, Vec<String>)> {
    fs.iter()
        .map(|f| {
            (
                f.rule.clone(),
                f.key.clone().unwrap_or_default(),
                f.events.clone(),
            )
        })
        .collect()
}

fn s(rule: &str, key: &str, ids: &[&str]) -> (String, String, Vec<String>) {
    (
        rule.to_owned(),
        key.to_owned(),
        ids.iter().map(|i| (*i).to_owned()).collect(),
    )
}

#[test]
fn new_network_client_and_region_after_the_warm_up_only() {
    let k = "AKIAAAAAAAAAAAAAAAA1";
    let mut evs = vec![
        e("a1", 0, k, "ListUsers", "203.0.113.5"),
        // New within the warm-up (first 24 hours): learnt, not reported.
        E {
            ua: PY,
            region: "eu-west-1",
            ..e("a2", 6 * HOUR, k, "ListUsers", "192.0.2.1")
        },
        e("a3", 30 * HOUR, k, "ListUsers", "203.0.113.77"), // same /24: not new
        e("a4", 30 * HOUR + MIN, k, "ListUsers", "10.1.2.3"), // private: never new
        // After the warm-up: a new network with a new client, then a new region alone.
        E {
            ua: "Boto3/1.34.0 md/Botocore#1.34.0",
            ..e("a5", 40 * HOUR, k, "ListRoles", "198.51.100.7")
        },
        E {
            ua: "Boto3/1.34.0 md/Botocore#1.34.0",
            ..e("a6", 40 * HOUR + 5 * MIN, k, "ListRoles", "198.51.100.8")
        },
        E {
            region: "ap-south-1",
            ..e("a7", 50 * HOUR, k, "ListUsers", "203.0.113.5")
        },
    ];
    let records: Vec<Value> = evs.drain(..).map(|x| plain(&x)).collect();
    let found = run(records);
    assert_eq!(
        summary(&found),
        vec![
            s("kt-new-network-and-client", k, &["a5", "a6"]),
            s("kt-new-source-network", k, &["a5", "a6"]),
            s("kt-new-user-agent", k, &["a5", "a6"]),
            s("kt-new-region", k, &["a7"]),
        ]
    );
    assert_eq!(
        found[1].reason,
        "first use from network 198.51.100.0/24 (198.51.100.7) after the key's warm-up"
    );
    assert_eq!(found[0].severity, Severity::Medium);
    assert_eq!(
        found[2].reason,
        "first use from client boto3 after the key's warm-up"
    );
}

#[test]
fn fifteen_denied_calls_in_ten_minutes_make_a_burst_fourteen_do_not() {
    let (k1, k2) = ("AKIAAAAAAAAAAAAAAAA1", "AKIAAAAAAAAAAAAAAAA2");
    let mut records = Vec::new();
    let ids1: Vec<String> = (0..15).map(|i| format!("d1-{i:02}")).collect();
    let ids2: Vec<String> = (0..14).map(|i| format!("d2-{i:02}")).collect();
    for (i, id) in ids1.iter().enumerate() {
        // 15 denied calls 40 s apart: 9 min 20 s.
        let x = E {
            err: Some("AccessDenied"),
            ..e(
                id,
                i as i64 * 40_000,
                k1,
                "GetAccountAuthorizationDetails",
                "198.51.100.7",
            )
        };
        records.push(plain(&x));
    }
    // A successful call in the middle does not break the burst.
    records.push(plain(&e(
        "ok-1",
        5 * MIN + 1,
        k1,
        "GetUser",
        "198.51.100.7",
    )));
    for (i, id) in ids2.iter().enumerate() {
        let x = E {
            err: Some("Client.UnauthorizedOperation"),
            ..e(
                id,
                i as i64 * 30_000,
                k2,
                "DescribeInstances",
                "198.51.100.7",
            )
        };
        records.push(plain(&x));
    }
    // k2's 15th denied call comes too late (11 minutes after the first).
    records.push(plain(&E {
        err: Some("AccessDenied"),
        ..e("d2-late", 11 * MIN, k2, "ListUsers", "198.51.100.7")
    }));
    let found: Vec<Finding> = run(records)
        .into_iter()
        .filter(|f| f.rule == "kt-denied-burst")
        .collect();
    let ids: Vec<&str> = ids1.iter().map(String::as_str).collect();
    assert_eq!(summary(&found), vec![s("kt-denied-burst", k1, &ids)]);
    assert_eq!(
        found[0].reason,
        "15 denied calls in 9 min: GetAccountAuthorizationDetails ×15"
    );
}

#[test]
fn reconnaissance_burst_across_services() {
    let (k1, k2) = ("AKIAAAAAAAAAAAAAAAA1", "AKIAAAAAAAAAAAAAAAA2");
    let calls = [
        ("sts.amazonaws.com", "GetCallerIdentity"),
        ("iam.amazonaws.com", "ListUsers"),
        ("iam.amazonaws.com", "ListRoles"),
        ("s3.amazonaws.com", "ListBuckets"),
        ("ec2.amazonaws.com", "DescribeInstances"),
        ("ec2.amazonaws.com", "DescribeSecurityGroups"),
        ("lambda.amazonaws.com", "ListFunctions20150331"),
        ("secretsmanager.amazonaws.com", "ListSecrets"),
    ];
    let k3 = "AKIAAAAAAAAAAAAAAAA3";
    // k1 has two days of history (one call); k3 has none: its first day is its warm-up,
    // where every call is new and nothing is judged.
    let mut records = vec![plain(&e("h0", -48 * HOUR, k1, "GetUser", "203.0.113.5"))];
    for (i, (src, name)) in calls.iter().enumerate() {
        let id = format!("r{i}");
        records.push(plain(&E {
            src,
            ..e(&id, i as i64 * 30_000, k1, name, "198.51.100.7")
        }));
        let id = format!("w{i}");
        records.push(plain(&E {
            src,
            ..e(&id, i as i64 * 30_000, k3, name, "198.51.100.7")
        }));
    }
    // k2 reads eight APIs of one service: an inventory job, not a sweep.
    for i in 0..8 {
        let id = format!("q{i}");
        let name = format!("DescribeThing{i}");
        records.push(plain(&E {
            src: "ec2.amazonaws.com",
            ..e(&id, i * 30_000, k2, &name, "203.0.113.5")
        }));
    }
    let found: Vec<Finding> = run(records)
        .into_iter()
        .filter(|f| f.rule == "kt-recon-burst")
        .collect();
    assert_eq!(
        summary(&found),
        vec![s(
            "kt-recon-burst",
            k1,
            &["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7"]
        )]
    );
    assert_eq!(
        found[0].reason,
        "8 read calls in 4 min: 8 APIs across 6 services (ec2, iam, lambda, s3, secretsmanager, sts) in 1 region(s)"
    );
}

#[test]
fn one_key_alternating_between_distant_networks_within_thirty_minutes() {
    let (k1, k2, k3) = (
        "AKIAAAAAAAAAAAAAAAA1",
        "AKIAAAAAAAAAAAAAAAA2",
        "AKIAAAAAAAAAAAAAAAA3",
    );
    let records = vec![
        // k1: A B A B within 15 minutes.
        plain(&e("x1", 0, k1, "GetUser", "203.0.113.5")),
        plain(&e("x2", 5 * MIN, k1, "GetUser", "198.51.100.7")),
        plain(&e("x3", 10 * MIN, k1, "GetUser", "203.0.113.6")),
        plain(&e("x4", 15 * MIN, k1, "GetUser", "198.51.100.8")),
        // k2: moved once from A to B (a laptop changing networks).
        plain(&e("y1", 0, k2, "GetUser", "203.0.113.5")),
        plain(&e("y2", 5 * MIN, k2, "GetUser", "203.0.113.5")),
        plain(&e("y3", 10 * MIN, k2, "GetUser", "198.51.100.7")),
        plain(&e("y4", 15 * MIN, k2, "GetUser", "198.51.100.7")),
        // k3: A B A B, 40 minutes apart.
        plain(&e("z1", 0, k3, "GetUser", "203.0.113.5")),
        plain(&e("z2", 40 * MIN, k3, "GetUser", "198.51.100.7")),
        plain(&e("z3", 80 * MIN, k3, "GetUser", "203.0.113.5")),
        plain(&e("z4", 120 * MIN, k3, "GetUser", "198.51.100.7")),
    ];
    let found: Vec<Finding> = run(records)
        .into_iter()
        .filter(|f| f.rule == "kt-distant-networks")
        .collect();
    assert_eq!(
        summary(&found),
        vec![s("kt-distant-networks", k1, &["x1", "x2", "x3", "x4"])]
    );
    assert_eq!(
        found[0].reason,
        "alternated between 198.51.0.0/16 and 203.0.0.0/16 within 15 min (198.51.100.7, 198.51.100.8, 203.0.113.5, 203.0.113.6)"
    );
}

fn instance_identity(key: &str, session: &str, delivery: bool) -> Value {
    let mut ctx = json!({
        "sessionIssuer": {"type": "Role", "principalId": "AROAEXAMPLE", "arn": format!("arn:aws:iam::{ACCOUNT}:role/web"), "accountId": ACCOUNT, "userName": "web"},
        "attributes": {"creationDate": "2024-11-01T00:00:00Z", "mfaAuthenticated": "false"}
    });
    if delivery {
        ctx["ec2RoleDelivery"] = json!("2.0");
    }
    json!({"type": "AssumedRole", "principalId": format!("AROAEXAMPLE:{session}"), "arn": format!("arn:aws:sts::{ACCOUNT}:assumed-role/web/{session}"), "accountId": ACCOUNT, "accessKeyId": key, "sessionContext": ctx})
}

#[test]
fn instance_credentials_used_from_another_address() {
    let (k1, k2) = ("ASIAAAAAAAAAAAAAAAA1", "ASIAAAAAAAAAAAAAAAA2");
    let inst = "i-0123456789abcdef0";
    let records = vec![
        // The instance, through its NAT address and from inside the VPC.
        record(
            &e("i1", 0, k1, "GetObject", "52.23.148.12"),
            instance_identity(k1, inst, true),
            Value::Null,
            Value::Null,
        ),
        record(
            &e("i2", MIN, k1, "GetObject", "10.0.1.5"),
            instance_identity(k1, inst, true),
            Value::Null,
            Value::Null,
        ),
        // The same credentials from somewhere else.
        record(
            &E {
                ua: PY,
                ..e("i3", 30 * MIN, k1, "ListBuckets", "198.51.100.77")
            },
            instance_identity(k1, inst, true),
            Value::Null,
            Value::Null,
        ),
        record(
            &E {
                ua: PY,
                ..e("i4", 31 * MIN, k1, "ListUsers", "198.51.100.77")
            },
            instance_identity(k1, inst, true),
            Value::Null,
            Value::Null,
        ),
        // Another instance (no ec2RoleDelivery, but a session named after it) only at home.
        record(
            &e("j1", 0, k2, "GetObject", "52.23.148.13"),
            instance_identity(k2, "i-0fedcba9876543210", false),
            Value::Null,
            Value::Null,
        ),
        record(
            &e("j2", HOUR, k2, "GetObject", "52.23.148.13"),
            instance_identity(k2, "i-0fedcba9876543210", false),
            Value::Null,
            Value::Null,
        ),
    ];
    let found: Vec<Finding> = run(records)
        .into_iter()
        .filter(|f| f.rule == "kt-instance-credentials-elsewhere")
        .collect();
    assert_eq!(
        summary(&found),
        vec![s("kt-instance-credentials-elsewhere", k1, &["i3", "i4"])]
    );
    assert_eq!(
        found[0].reason,
        format!(
            "credentials of EC2 instance {inst} (role web, key {k1}) used from 198.51.100.77, outside AWS (in no published AWS range; the instance's own address is 52.23.148.12)"
        )
    );
}

#[test]
fn an_instance_s_sessions_are_judged_together() {
    // Two sessions of one instance's role credentials; the address outside AWS that the first
    // used is used again by the second: one finding, of the first session's key, as when the
    // second session's key is read alone (`run` checks it).
    let (k1, k3) = ("ASIAAAAAAAAAAAAAAAA1", "ASIAAAAAAAAAAAAAAAA3");
    let inst = "i-0123456789abcdef0";
    let at = |id: &str, t: i64, k: &str, ip: &str| {
        record(
            &e(id, t, k, "GetObject", ip),
            instance_identity(k, inst, true),
            Value::Null,
            Value::Null,
        )
    };
    let records = vec![
        at("i1", 0, k1, "52.23.148.12"),
        at("i3", 30 * MIN, k1, "198.51.100.77"),
        at("m1", 6 * HOUR, k3, "198.51.100.77"),
        at("m2", 6 * HOUR + MIN, k3, "52.23.148.12"),
    ];
    let found: Vec<Finding> = run(records)
        .into_iter()
        .filter(|f| f.rule == "kt-instance-credentials-elsewhere")
        .collect();
    assert_eq!(
        summary(&found),
        vec![s("kt-instance-credentials-elsewhere", k1, &["i3", "m1"])]
    );
}

#[test]
fn lambda_credentials_used_outside_the_function() {
    let (k1, k2) = ("ASIAAAAAAAAAAAAAAAA1", "ASIAAAAAAAAAAAAAAAA2");
    let lambda_ua = "aws-sdk-js/3.614.0 ua/2.0 os/linux#5.10 lang/js md/nodejs#20.15.0 exec-env/AWS_Lambda_nodejs20.x api/s3#3.614.0";
    let id = |k: &str| {
        json!({"type": "AssumedRole", "principalId": "AROAFN:fn", "arn": format!("arn:aws:sts::{ACCOUNT}:assumed-role/fn-role/fn"), "accountId": ACCOUNT, "accessKeyId": k,
               "sessionContext": {"sessionIssuer": {"type": "Role", "arn": format!("arn:aws:iam::{ACCOUNT}:role/fn-role"), "accountId": ACCOUNT, "userName": "fn-role"}}})
    };
    let records = vec![
        record(
            &E {
                ua: lambda_ua,
                ..e("l1", 0, k1, "GetObject", "3.5.140.2")
            },
            id(k1),
            Value::Null,
            Value::Null,
        ),
        record(
            &E {
                ua: lambda_ua,
                ..e("l2", MIN, k1, "PutObject", "3.5.140.9")
            },
            id(k1),
            Value::Null,
            Value::Null,
        ),
        record(
            &E {
                ua: CLI,
                ..e("l3", 20 * MIN, k1, "ListBuckets", "198.51.100.77")
            },
            id(k1),
            Value::Null,
            Value::Null,
        ),
        // Another function's credentials used only by the function.
        record(
            &E {
                ua: lambda_ua,
                ..e("m1", 0, k2, "GetObject", "3.5.140.3")
            },
            id(k2),
            Value::Null,
            Value::Null,
        ),
    ];
    let found: Vec<Finding> = run(records)
        .into_iter()
        .filter(|f| f.rule == "kt-workload-credentials-outside")
        .collect();
    assert_eq!(
        summary(&found),
        vec![s("kt-workload-credentials-outside", k1, &["l3"])]
    );
    assert_eq!(
        found[0].reason,
        format!(
            "credentials of a Lambda function (role fn-role, key {k1}) used from 198.51.100.77 by aws-cli, outside AWS (in no published AWS range); the workload's own calls came from 3.5.140.2, 3.5.140.9 (aws-sdk-js)"
        )
    );
}

#[test]
fn key_used_after_deactivation_and_its_session_after_the_parent_was_deactivated() {
    let (k, other, child) = (
        "AKIAAAAAAAAAAAAAAAA1",
        "AKIAAAAAAAAAAAAAAAA2",
        "ASIAAAAAAAAAAAAAAAA3",
    );
    let admin = "AKIAAAAAAAAAAAAAAAA9";
    let records = vec![
        plain(&e("k1", 0, k, "ListUsers", "198.51.100.7")),
        record(
            &E {
                src: "sts.amazonaws.com",
                ..e("k2", MIN, k, "GetSessionToken", "198.51.100.7")
            },
            user(k),
            json!({"durationSeconds": 43200}),
            json!({"credentials": {"accessKeyId": child, "expiration": "Nov 2, 2024, 12:00:00 AM", "sessionToken": "x"}}),
        ),
        plain(&e("c1", 2 * MIN, child, "ListRoles", "198.51.100.7")),
        // The owner sets the key Inactive at 10 minutes.
        record(
            &e("off", 10 * MIN, admin, "UpdateAccessKey", "203.0.113.5"),
            user(admin),
            json!({"accessKeyId": k, "status": "Inactive", "userName": format!("u-{k}")}),
            Value::Null,
        ),
        // A denied attempt to set another key Inactive changes nothing.
        record(
            &E {
                err: Some("AccessDenied"),
                ..e("fail", 11 * MIN, admin, "UpdateAccessKey", "203.0.113.5")
            },
            user(admin),
            json!({"accessKeyId": other, "status": "Inactive"}),
            Value::Null,
        ),
        E {
            err: Some("InvalidClientTokenId"),
            ..e("k3", 12 * MIN, k, "ListUsers", "198.51.100.7")
        }
        .into_plain(),
        plain(&e("k4", 13 * MIN, k, "ListUsers", "198.51.100.7")),
        plain(&e("c2", 20 * MIN, child, "CreateUser", "198.51.100.7")),
        plain(&e("o1", 20 * MIN, other, "ListUsers", "203.0.113.5")),
    ];
    let found: Vec<Finding> = run(records)
        .into_iter()
        .filter(|f| f.rule.contains("after"))
        .collect();
    assert_eq!(
        summary(&found),
        vec![
            s("kt-key-used-after-deactivation", k, &["k3", "k4"]),
            s("kt-session-used-after-parent-deactivated", child, &["c2"]),
        ]
    );
    assert_eq!(
        found[0].reason,
        format!(
            "2 event(s) after the key was set Inactive at 2024-11-01T00:10:00Z by arn:aws:iam::{ACCOUNT}:user/u-{admin} (event off)"
        )
    );
    assert_eq!(found[0].severity, Severity::Critical);
}

trait IntoPlain {
    fn into_plain(self) -> Value;
}

impl IntoPlain for E<'_> {
    fn into_plain(self) -> Value {
        plain(&self)
    }
}

#[test]
fn service_events_raise_nothing() {
    let k = "ASIAAAAAAAAAAAAAAAA1";
    // A service acting on its own behalf, with a key, across many services and networks.
    let identity = json!({"type": "AssumedRole", "principalId": "AROASLR:x", "arn": format!("arn:aws:sts::{ACCOUNT}:assumed-role/AWSServiceRoleForConfig/x"), "accountId": ACCOUNT, "accessKeyId": k, "invokedBy": "config.amazonaws.com",
        "sessionContext": {"sessionIssuer": {"type": "Role", "arn": format!("arn:aws:iam::{ACCOUNT}:role/aws-service-role/config.amazonaws.com/AWSServiceRoleForConfig"), "accountId": ACCOUNT, "userName": "AWSServiceRoleForConfig"}}});
    let srcs = [
        "iam", "s3", "ec2", "lambda", "sns", "sqs", "kms", "rds", "ecs",
    ];
    let mut records = Vec::new();
    for (i, s) in srcs.iter().enumerate() {
        let id = format!("s{i}");
        let src = format!("{s}.amazonaws.com");
        let ip = if i % 2 == 0 {
            "203.0.113.5"
        } else {
            "198.51.100.7"
        };
        records.push(record(
            &E {
                src: &src,
                err: Some("AccessDenied"),
                ..e(&id, i as i64 * 10_000, k, "ListThings", ip)
            },
            identity.clone(),
            Value::Null,
            Value::Null,
        ));
    }
    assert_eq!(summary(&run(records)), vec![]);
}

/// The records of a CloudTrail file in `testdata/`.
fn testdata_records(rel: &str) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(rel);
    let text = std::fs::read_to_string(&path).expect("testdata file");
    let v: Value = serde_json::from_str(&text).expect("JSON");
    v["Records"].as_array().expect("Records").clone()
}

#[test]
fn stolen_lambda_credentials_used_from_a_laptop_outside_aws() {
    // The sequence: the Lambda runtime (awslambda-worker) and the function's code
    // from an AWS address, then minutes later aws-cli on macOS and Docker from outside AWS.
    let found: Vec<Finding> = run(testdata_records("workload/stolen-lambda-credentials.json"))
        .into_iter()
        .filter(|f| f.severity >= Severity::Medium)
        .collect();
    let k = "ASIARTXV5AHDLAMBDA01";
    assert_eq!(
        summary(&found),
        vec![s(
            "kt-workload-credentials-outside",
            k,
            &[
                "0a1b2c3d-0003-4e5f-8a9b-000000000003",
                "0a1b2c3d-0004-4e5f-8a9b-000000000004",
                "0a1b2c3d-0005-4e5f-8a9b-000000000005",
                "0a1b2c3d-0006-4e5f-8a9b-000000000006"
            ]
        )]
    );
    let f = &found[0];
    assert_eq!(f.severity, Severity::High);
    assert_eq!(f.source_ip.as_deref(), Some("198.51.100.23"));
    assert_eq!(
        f.reason,
        format!(
            "credentials of a Lambda function (role orders-fn-role, key {k}) used from 198.51.100.23 by aws-cli, outside AWS (in no published AWS range); the workload's own calls came from 44.203.17.90 (awslambda-worker, boto3)"
        )
    );
    assert!(
        f.tags.contains(&"attack.credential-access".to_owned()),
        "{:?}",
        f.tags
    );
}

#[test]
fn the_same_role_used_only_from_aws_addresses_raises_nothing() {
    let found = run(testdata_records("workload/lambda-inside-aws.json"));
    // The runtime's image pull is an abused call of the catalog, at info only (workloads
    // pull images every day); nothing else, at any severity.
    assert_eq!(
        summary(&found),
        vec![s(
            "kt-abused-call",
            "ASIARTXV5AHDLAMBDA02",
            &["0a1b2c3d-0011-4e5f-8a9b-000000000011"]
        )]
    );
    assert_eq!(found[0].severity, Severity::Info);
}

#[test]
fn ecs_and_codebuild_credentials_inside_and_outside_aws() {
    let (ecs, cb) = ("ASIAAAAAAAAAAAAAAEC1", "ASIAAAAAAAAAAAAAACB1");
    let ecs_ua = "Boto3/1.34.69 md/Botocore#1.34.69 ua/2.0 os/linux#5.10 lang/python#3.12.3 exec-env/AWS_ECS_FARGATE";
    let role = |k: &str, r: &str, session: &str| {
        json!({"type": "AssumedRole", "principalId": format!("AROAEX:{session}"), "arn": format!("arn:aws:sts::{ACCOUNT}:assumed-role/{r}/{session}"), "accountId": ACCOUNT, "accessKeyId": k,
               "sessionContext": {"sessionIssuer": {"type": "Role", "arn": format!("arn:aws:iam::{ACCOUNT}:role/{r}"), "accountId": ACCOUNT, "userName": r}}})
    };
    let at = |id: &'static str, t: i64, k: &'static str, ip: &'static str, ua: &'static str| E {
        ua,
        src: "s3.amazonaws.com",
        ..e(id, t, k, "ListBuckets", ip)
    };
    let records = vec![
        // The ECS task, then its credentials from another AWS network by another client.
        record(
            &at("e1", 0, ecs, "52.23.148.12", ecs_ua),
            role(ecs, "task", "7f1c"),
            Value::Null,
            Value::Null,
        ),
        record(
            &at("e2", 40 * MIN, ecs, "3.236.9.144", PY),
            role(ecs, "task", "7f1c"),
            Value::Null,
            Value::Null,
        ),
        // A CodeBuild build (session AWSCodeBuild-…): its first calls from AWS, then from outside.
        record(
            &at("c1", 0, cb, "44.203.17.90", CLI),
            role(cb, "build", "AWSCodeBuild-5d0e2b0a"),
            Value::Null,
            Value::Null,
        ),
        record(
            &at("c2", 2 * MIN, cb, "44.203.17.90", CLI),
            role(cb, "build", "AWSCodeBuild-5d0e2b0a"),
            Value::Null,
            Value::Null,
        ),
        record(
            &at("c3", 50 * MIN, cb, "198.51.100.77", CLI),
            role(cb, "build", "AWSCodeBuild-5d0e2b0a"),
            Value::Null,
            Value::Null,
        ),
    ];
    let found: Vec<Finding> = run(records)
        .into_iter()
        .filter(|f| f.rule == "kt-workload-credentials-outside")
        .collect();
    assert_eq!(
        summary(&found),
        vec![
            s("kt-workload-credentials-outside", ecs, &["e2"]),
            s("kt-workload-credentials-outside", cb, &["c3"]),
        ]
    );
    assert_eq!(found[1].severity, Severity::High);
    assert!(found[1].reason.starts_with("credentials of a CodeBuild build (role build, key ASIAAAAAAAAAAAAAACB1) used from 198.51.100.77 by aws-cli, outside AWS"), "{}", found[1].reason);
    assert_eq!(found[0].severity, Severity::Medium);
    assert_eq!(
        found[0].reason,
        format!(
            "credentials of an ECS task (role task, key {ecs}) used from 3.236.9.144 by python-requests, an AWS address (EC2 us-east-1) and a client unlike the workload's own first calls; the workload's own calls came from 52.23.148.12 (boto3)"
        )
    );
}

#[test]
fn instance_credentials_stolen_before_the_instance_called_from_outside_aws() {
    let k = "ASIAAAAAAAAAAAAAAAA1";
    let inst = "i-0123456789abcdef0";
    let at = |id: &'static str, t: i64, ip: &'static str| E {
        ua: PY,
        ..e(id, t, k, "ListBuckets", ip)
    };
    let records = vec![
        // The thief first, from outside AWS; then the instance; then another AWS address.
        record(
            &at("t1", 0, "198.51.100.77"),
            instance_identity(k, inst, true),
            Value::Null,
            Value::Null,
        ),
        record(
            &at("t2", MIN, "52.23.148.12"),
            instance_identity(k, inst, true),
            Value::Null,
            Value::Null,
        ),
        record(
            &at("t3", 2 * MIN, "3.236.9.144"),
            instance_identity(k, inst, true),
            Value::Null,
            Value::Null,
        ),
    ];
    let found: Vec<Finding> = run(records)
        .into_iter()
        .filter(|f| f.rule == "kt-instance-credentials-elsewhere")
        .collect();
    assert_eq!(
        summary(&found),
        vec![
            s("kt-instance-credentials-elsewhere", k, &["t1"]),
            s("kt-instance-credentials-elsewhere", k, &["t3"]),
        ]
    );
    assert_eq!(
        (found[0].severity, found[1].severity),
        (Severity::High, Severity::Medium)
    );
    assert!(found[1].reason.ends_with("used from 3.236.9.144, not the instance's own address (52.23.148.12), an AWS address (EC2 us-east-1)"), "{}", found[1].reason);
}

#[test]
fn abused_calls_after_refusals_are_medium_unless_routine_or_only_throttled() {
    const DAY: i64 = 24 * HOUR;
    let (ka, kb, kc) = (
        "AKIAAAAAAAAAAAAAAAAA",
        "AKIABBBBBBBBBBBBBBBB",
        "AKIACCCCCCCCCCCCCCCC",
    );
    let ip = "198.51.100.7";
    let kms = |id: &'static str, t: i64, key: &'static str, err: Option<&'static str>| {
        plain(&E {
            src: "kms.amazonaws.com",
            err,
            ..e(id, t, key, "CreateKey", ip)
        })
    };
    let records = vec![
        // A makes CreateKey every day: on day 4, a refusal then a success are routine.
        kms("a-1", 10 * HOUR, ka, None),
        kms("a-2", DAY + 10 * HOUR, ka, None),
        kms("a-3", 2 * DAY + 10 * HOUR, ka, None),
        kms("a-4-denied", 3 * DAY + 10 * HOUR, ka, Some("AccessDenied")),
        kms("a-4", 3 * DAY + 10 * HOUR + 5 * MIN, ka, None),
        // B never made it: refused, then through five minutes later.
        kms("b-denied", 3 * DAY + 10 * HOUR, kb, Some("AccessDenied")),
        kms("b-ok", 3 * DAY + 10 * HOUR + 5 * MIN, kb, None),
        // C never made it either, but was only throttled before it got through.
        kms(
            "c-throttled",
            3 * DAY + 10 * HOUR,
            kc,
            Some("ThrottlingException"),
        ),
        kms("c-ok", 3 * DAY + 10 * HOUR + 5 * MIN, kc, None),
    ];
    let found: Vec<(String, Severity, Vec<String>, String)> = run(records)
        .into_iter()
        .filter(|f| f.rule == "kt-abused-call" && f.time >= T0 + 3 * DAY)
        .map(|f| (f.key.unwrap_or_default(), f.severity, f.events, f.reason))
        .collect();
    let ids = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        found,
        vec![
            (
                ka.to_owned(),
                Severity::Info,
                ids(&["a-4-denied", "a-4"]),
                "CreateKey (kms; impact): denied attempt at a call routine for the principal (made on 3 earlier day(s) within 90 days)".to_owned()
            ),
            (
                kb.to_owned(),
                Severity::Medium,
                ids(&["b-denied", "b-ok"]),
                "CreateKey (kms; impact): succeeded after 1 denied attempt(s) within the hour"
                    .to_owned()
            ),
            (
                kc.to_owned(),
                Severity::Low,
                ids(&["c-throttled", "c-ok"]),
                "CreateKey (kms; impact): never made before by this principal".to_owned()
            ),
        ]
    );
}

#[test]
fn a_role_s_sessions_share_its_history_of_abused_calls_and_no_other_role_s() {
    const DAY: i64 = 24 * HOUR;
    let call = |id: &'static str, t: i64, key: &'static str, arn: Option<&str>| {
        let x = E {
            src: "kms.amazonaws.com",
            ..e(id, t, key, "CreateKey", "198.51.100.7")
        };
        let identity = match arn {
            Some(arn) => {
                json!({"type": "AssumedRole", "principalId": "AROAEXAMPLE:s", "arn": arn, "accountId": ACCOUNT, "accessKeyId": key})
            }
            None => json!({"type": "AssumedRole", "accountId": ACCOUNT, "accessKeyId": key}),
        };
        record(&x, identity, Value::Null, Value::Null)
    };
    let session = |role: &str, s: &str| format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{s}");
    let found: Vec<(String, Vec<String>, Severity)> = run(vec![
        call(
            "admin-s1",
            10 * HOUR,
            "ASIAADMINSESSION0001",
            Some(&session("Admin", "s1")),
        ),
        // Another role whose name starts with the first's: its own history.
        call(
            "ops-s3",
            DAY + 10 * HOUR,
            "ASIAADMINOPSSESSION3",
            Some(&session("AdminOps", "s3")),
        ),
        // The first role's other session: routine, the role made it the day before last.
        call(
            "admin-s2",
            2 * DAY + 10 * HOUR,
            "ASIAADMINSESSION0002",
            Some(&session("Admin", "s2")),
        ),
        // A caller named by its key alone.
        call(
            "nameless",
            3 * DAY + 10 * HOUR,
            "ASIANAMELESSSESSION4",
            None,
        ),
    ])
    .into_iter()
    .filter(|f| f.rule == "kt-abused-call")
    .map(|f| (f.key.unwrap_or_default(), f.events, f.severity))
    .collect();
    let f = |k: &str, id: &str, s: Severity| (k.to_owned(), vec![id.to_owned()], s);
    assert_eq!(
        found,
        vec![
            f("ASIAADMINSESSION0001", "admin-s1", Severity::Low),
            f("ASIAADMINOPSSESSION3", "ops-s3", Severity::Low),
            f("ASIAADMINSESSION0002", "admin-s2", Severity::Info),
            f("ASIANAMELESSSESSION4", "nameless", Severity::Low),
        ]
    );
}

#[test]
fn an_abused_call_is_routine_after_one_earlier_day_of_the_principal_within_90_days() {
    const DAY: i64 = 24 * HOUR;
    let ip = "198.51.100.7";
    // Two keys of one user (alice), one key of bob, one of carol, one of dave.
    let (a1, a2, b, c, d) = (
        "AKIAALICEALICEALICE1",
        "AKIAALICEALICEALICE2",
        "AKIABOBBOBBOBBOBBOB1",
        "AKIACAROLCAROLCAROL1",
        "AKIADAVEDAVEDAVEDAV1",
    );
    let as_user = |id: &'static str,
                   t: i64,
                   key: &'static str,
                   who: &str,
                   err: Option<&'static str>| {
        let x = E {
            src: "kms.amazonaws.com",
            err,
            ..e(id, t, key, "CreateKey", ip)
        };
        let identity = json!({"type": "IAMUser", "principalId": "AIDAEXAMPLE", "arn": format!("arn:aws:iam::{ACCOUNT}:user/{who}"), "accountId": ACCOUNT, "accessKeyId": key, "userName": who});
        record(&x, identity, Value::Null, Value::Null)
    };
    let records = vec![
        // alice's first CreateKey ever (key 1), then the next day with her other key:
        // routine, the principal's history spans its keys.
        as_user("alice-0", 10 * HOUR, a1, "alice", None),
        as_user("alice-1", DAY + 10 * HOUR, a2, "alice", None),
        // bob: a refusal is no history; his first success the next day is not routine.
        as_user("bob-0-denied", 10 * HOUR, b, "bob", Some("AccessDenied")),
        as_user("bob-1", DAY + 10 * HOUR, b, "bob", None),
        // carol: made on day 0, again on day 90 (routine: within 90 days).
        as_user("carol-0", 10 * HOUR, c, "carol", None),
        as_user("carol-90", 90 * DAY + 10 * HOUR, c, "carol", None),
        // dave: made on day 0, again on day 91 (not routine: outside the window).
        as_user("dave-0", 10 * HOUR, d, "dave", None),
        as_user("dave-91", 91 * DAY + 10 * HOUR, d, "dave", None),
    ];
    let found: Vec<(Vec<String>, Severity, String)> = run(records)
        .into_iter()
        .filter(|f| f.rule == "kt-abused-call")
        .map(|f| (f.events, f.severity, f.reason))
        .collect();
    let r = |ids: &[&str], s: Severity, why: &str| {
        (
            ids.iter().map(|i| (*i).to_owned()).collect::<Vec<_>>(),
            s,
            format!("CreateKey (kms; impact): {why}"),
        )
    };
    let never = "never made before by this principal";
    assert_eq!(
        found,
        vec![
            r(&["alice-0"], Severity::Low, never),
            r(&["bob-0-denied"], Severity::Low, "denied attempt"),
            r(&["carol-0"], Severity::Low, never),
            r(&["dave-0"], Severity::Low, never),
            r(
                &["alice-1"],
                Severity::Info,
                "routine: made on 1 earlier day(s) within 90 days"
            ),
            r(&["bob-1"], Severity::Low, never),
            r(
                &["carol-90"],
                Severity::Info,
                "routine: made on 1 earlier day(s) within 90 days"
            ),
            r(
                &["dave-91"],
                Severity::Low,
                "not made by this principal within 90 days"
            ),
        ]
    );
}

#[test]
fn a_rule_matching_daily_before_since_is_routine_after_it() {
    const DAY: i64 = 24 * HOUR;
    let key = "AKIASSMSSMSSMSSMSSM1";
    let records: Vec<(String, Value)> = ["s-0", "s-1", "s-2", "s-3"]
        .iter()
        .enumerate()
        .map(|(d, id)| {
            let x = E {
                src: "ssm.amazonaws.com",
                ..e(
                    id,
                    d as i64 * DAY + 10 * HOUR,
                    key,
                    "SendCommand",
                    "198.51.100.7",
                )
            };
            let v = record(
                &x,
                user(key),
                json!({"documentName": "AWS-RunShellScript"}),
                Value::Null,
            );
            ((*id).to_owned(), v)
        })
        .collect();
    let batch = batch_of(&records).expect("records decode");
    let found = |since: Option<i64>| -> Vec<(String, Severity)> {
        let mut ctx = session_with(batch.clone(), 2).expect("session");
        let opts = DetectOptions {
            since,
            min_severity: Severity::Info,
            detectors: false,
            rules: keytrail_detect::RuleSet::bundled().expect("bundled rules"),
            ..DetectOptions::default()
        };
        block_on(2, async move { detect_in(&mut ctx, true, &opts).await })
            .expect("detect")
            .findings
            .into_iter()
            .filter(|f| f.rule == "ssm-command-or-session")
            .map(|f| (f.events.join(" "), f.severity))
            .collect()
    };
    let m = |id: &str, s: Severity| (id.to_owned(), s);
    // The first day's command is not routine; every later day's is (an earlier day).
    assert_eq!(
        found(None),
        vec![
            m("s-0", Severity::Medium),
            m("s-1", Severity::Info),
            m("s-2", Severity::Info),
            m("s-3", Severity::Info),
        ]
    );
    // The same when only the fourth day is reported: the days before `--since` count.
    assert_eq!(found(Some(T0 + 3 * DAY)), vec![m("s-3", Severity::Info)]);
}

#[test]
fn events_reported_by_rules_elsewhere_are_not_reported_again_by_the_catalog() {
    let key = "AKIASTOPSTOPSTOPSTOP";
    let x = E {
        src: "cloudtrail.amazonaws.com",
        ..e("stop-1", 10 * HOUR, key, "StopLogging", "198.51.100.7")
    };
    let v = record(&x, user(key), json!({"name": "main"}), Value::Null);
    let batch = batch_of(&[("stop-1".to_owned(), v)]).expect("records decode");
    let found = |reported: &[&str]| -> Vec<(String, Severity)> {
        let mut ctx = session_with(batch.clone(), 2).expect("session");
        // Detectors only, as `keytrail follow` runs them beside its own rules pass.
        let opts = DetectOptions {
            min_severity: Severity::Info,
            reported: reported.iter().map(|s| (*s).to_owned()).collect(),
            ..DetectOptions::default()
        };
        block_on(2, async move { detect_in(&mut ctx, true, &opts).await })
            .expect("detect")
            .findings
            .into_iter()
            .map(|f| (f.rule, f.severity))
            .collect()
    };
    assert_eq!(
        found(&[]),
        vec![("kt-abused-call".to_owned(), Severity::Low)]
    );
    assert_eq!(found(&["stop-1"]), vec![]);
}
