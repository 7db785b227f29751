//! Every fact column on real captures (Stratus Red Team detonations, `testdata/stratus/`, and
//! the bundled sample's leaked-key night), decoded by the same decoder ingest uses.

use std::collections::HashMap;
use std::path::PathBuf;

use keytrail_model::facts::{EventView, Facts, KeyStatus, SourceClass, facts};
use keytrail_model::time::format_millis;
use keytrail_model::{Event, decode_event};

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

/// The records of a capture by event ID, as raw JSON text.
fn records(path: PathBuf) -> HashMap<String, String> {
    let bytes = std::fs::read(&path).expect("capture");
    let text = if path.extension().is_some_and(|e| e == "gz") {
        use std::io::Read;
        let mut out = String::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_string(&mut out)
            .expect("gunzip");
        out
    } else {
        String::from_utf8(bytes).expect("utf-8")
    };
    let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
    let list = doc
        .get("Records")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_else(|| doc.as_array().cloned().unwrap_or_default());
    list.into_iter()
        .map(|r| {
            (
                r["eventID"].as_str().unwrap_or_default().to_owned(),
                r.to_string(),
            )
        })
        .collect()
}

fn facts_of(raw: &str) -> Facts {
    let e: Event<'_> = decode_event(raw).expect("decodes");
    facts(&EventView::of_event(&e))
}

fn stratus(name: &str, event_id: &str) -> Facts {
    let recs = records(testdata().join("stratus").join(name));
    facts_of(recs.get(event_id).expect("event in the capture"))
}

#[test]
fn denied_and_failed_calls() {
    let denied = stratus(
        "aws.discovery.ec2-download-user-data.json",
        "4cf5dad6-648f-48eb-85a7-6181c5d79424",
    );
    assert!(denied.denied, "AccessDenied");
    assert_eq!(denied.minted, None, "a refused AssumeRole mints nothing");
    let ok = stratus(
        "aws.discovery.ec2-download-user-data.json",
        "cf589cd4-9633-4cc6-9b5c-c74f5a735fa5",
    );
    assert!(!ok.denied);
    // Every Client.UnauthorizedOperation of the captures is a denial; no throttling is.
    let dir = testdata().join("stratus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.extend(walk(&testdata().join("sample")));
    let (mut unauthorized, mut throttled) = (0, 0);
    for p in files {
        for raw in records(p).values() {
            let v: serde_json::Value = serde_json::from_str(raw).expect("json");
            let f = facts_of(raw);
            match v["errorCode"].as_str() {
                Some("Client.UnauthorizedOperation") => {
                    assert!(f.denied, "{raw}");
                    unauthorized += 1;
                }
                Some("ThrottlingException") => {
                    assert!(!f.denied, "{raw}");
                    throttled += 1;
                }
                None => assert!(!f.denied),
                Some(_) => {}
            }
        }
    }
    assert_eq!((unauthorized, throttled), (60, 7));
}

#[test]
fn accounts_targets_and_minted_keys() {
    let f = stratus(
        "aws.persistence.iam-create-admin-user.json",
        "083dc4ad-e264-46bc-a407-d0dd31b58bdc",
    );
    assert_eq!(f.caller_account.as_deref(), Some("229654561268"));
    assert_eq!(f.resource_account.as_deref(), Some("229654561268"));
    assert_eq!(f.target_user.as_deref(), Some("malicious-iam-user"));
    assert_eq!(
        f.target_policy.as_deref(),
        Some("arn:aws:iam::aws:policy/AdministratorAccess")
    );
    assert!(!f.aws_service);
    // The anonymised capture's address has leading zeros: neither an address nor a service.
    assert_eq!(f.source_class, Some(SourceClass::Other));

    let f = stratus(
        "aws.persistence.iam-create-admin-user.json",
        "94faedcc-0fa4-46e6-9322-022e8e934f04",
    );
    assert_eq!(f.target_key.as_deref(), Some("AKIAXAFZN8JEPF6L682H"));
    assert_eq!(f.key_status, Some(KeyStatus::Active));
    let m = f.minted.expect("CreateAccessKey mints a key");
    assert_eq!(
        (m.key.as_str(), m.principal.as_deref(), m.expiration),
        ("AKIAXAFZN8JEPF6L682H", Some("malicious-iam-user"), None)
    );

    let f = stratus(
        "aws.persistence.iam-create-backdoor-role.json",
        "39480357-0a1d-4531-a3f2-71be4c041c25",
    );
    assert_eq!(
        f.target_role.as_deref(),
        Some("stratus-red-team-malicious-iam-role")
    );

    let f = stratus(
        "aws.persistence.sts-federation-token.json",
        "6e882b9d-2af8-4c67-b91f-aeac6a0e5e70",
    );
    let m = f.minted.expect("GetFederationToken mints a key");
    assert_eq!(m.key, "ASIASTJKC5GCM7ZE6LUP");
    assert_eq!(
        m.expiration.map(format_millis).as_deref(),
        Some("2024-11-30T20:43:17Z")
    );
    assert!(
        m.principal
            .as_deref()
            .is_some_and(|p| p.contains(":federated-user/")),
        "{m:?}"
    );

    let f = stratus(
        "aws.discovery.ec2-download-user-data.json",
        "cf589cd4-9633-4cc6-9b5c-c74f5a735fa5",
    );
    assert_eq!(
        f.target_role.as_deref(),
        Some("arn:aws:iam::321848314756:role/stratus-red-team-get-usr-data-role")
    );
    assert!(f.minted.is_some_and(|m| m.key.starts_with("ASIA")));
}

#[test]
fn the_sample_night_deactivation_and_service_calls() {
    let dir = testdata().join("sample");
    let mut deactivations = Vec::new();
    let (mut services, mut service_named) = (0, 0);
    for entry in walk(&dir) {
        for raw in records(entry).values() {
            let v: serde_json::Value = serde_json::from_str(raw).expect("json");
            if v.get("eventTime").is_none() {
                continue; // the digest file
            }
            let f = facts_of(raw);
            if f.key_status.is_some_and(KeyStatus::is_deactivation) {
                deactivations.push((f.target_key.clone(), f.key_status, f.resource_account));
            }
            if f.aws_service {
                services += 1;
                if f.source_class == Some(SourceClass::AwsService) {
                    service_named += 1;
                }
            }
        }
    }
    assert_eq!(
        deactivations,
        vec![(
            Some("AKIARTXV5AHDZMKNCBCQ".to_owned()),
            Some(KeyStatus::Inactive),
            Some("111111111111".to_owned())
        )]
    );
    assert!(
        services > 0 && service_named == services,
        "{services} {service_named}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".json.gz")
                && !p.to_string_lossy().contains("Digest")
                && !p.to_string_lossy().contains("Insight")
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
