//! `keytrail verify-logs` and `ingest --verify-logs` end to end: a trail of six hours of log
//! files and hourly digests, shaped as CloudTrail delivers them and signed with a 2048-bit RSA
//! key made here, served from a local directory and from the S3 test server (digests carry
//! their signature in `x-amz-meta-signature`, which s3s-fs keeps); then tampered with.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use aws_sdk_s3::primitives::ByteStream;
use keytrail_custody::testkit::{
    TestKey, Trail, TrailSpec, gunzip, gzip, public_keys_json, resign,
};

use crate::s3server::{Fault, S3Server};
use crate::util::*;

const HOUR: i64 = 3_600_000;
const START: i64 = 1_732_924_800_000; // 2024-11-30T00:00:00Z
const BUCKET: &str = "trail-bucket";

/// CloudTrail's key for the region (2048-bit, as CloudTrail's; made once per test binary).
fn key() -> &'static TestKey {
    static K: OnceLock<TestKey> = OnceLock::new();
    K.get_or_init(|| TestKey::generate(2048, "keytrail tests: cloudtrail us-east-1"))
}

/// A key that is not CloudTrail's.
fn attacker() -> &'static TestKey {
    static K: OnceLock<TestKey> = OnceLock::new();
    K.get_or_init(|| TestKey::generate(2048, "keytrail tests: someone else"))
}

fn trail() -> Trail {
    Trail::build(
        TrailSpec {
            bucket: BUCKET.into(),
            hours: 6,
            files_per_hour: 3,
            ..TrailSpec::default()
        },
        key(),
    )
}

fn write_keys(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("keys.json");
    std::fs::write(
        &p,
        public_keys_json(&[(key(), START - 90 * 24 * HOUR, START + 90 * 24 * HOUR)]),
    )
    .expect("keys");
    p
}

fn name(key: &str) -> String {
    key.rsplit('/').next().unwrap_or(key).to_owned()
}

/// `(subject, status)` → file names, from the JSON report.
fn statuses(report: &serde_json::Value) -> BTreeMap<(String, String), Vec<String>> {
    let mut m: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for r in report["rows"].as_array().expect("rows") {
        m.entry((
            r["subject"].as_str().expect("subject").to_owned(),
            r["status"].as_str().expect("status").to_owned(),
        ))
        .or_default()
        .push(name(r["object"].as_str().expect("object")));
    }
    for v in m.values_mut() {
        v.sort();
    }
    m
}

fn get<'a>(
    m: &'a BTreeMap<(String, String), Vec<String>>,
    subject: &str,
    status: &str,
) -> Vec<&'a str> {
    m.get(&(subject.to_owned(), status.to_owned()))
        .map(|v| v.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn verify_json(cmd: &mut Command, code: i32) -> serde_json::Value {
    let out = run_code(cmd.arg("--format").arg("json"), code);
    serde_json::from_slice(&out.stdout).expect("report is JSON")
}

#[test]
fn a_local_copy_verifies_offline_but_for_the_newest_signature() {
    let t = trail();
    let tmp = tempfile::tempdir().expect("tmp");
    let copy = tmp.path().join("copy");
    t.write_to(&copy, false).expect("write");
    let keys = write_keys(tmp.path());
    let digests: Vec<String> = t.digests().map(|d| name(&d.key)).collect();

    let r = verify_json(
        keytrail()
            .arg("verify-logs")
            .arg(&copy)
            .arg("--public-keys")
            .arg(&keys),
        0,
    );
    let s = statuses(&r);
    assert_eq!(get(&s, "digest", "valid").len(), 5, "{s:#?}");
    assert_eq!(
        get(&s, "digest", "signature-unavailable"),
        vec![digests[5].as_str()]
    );
    assert_eq!(get(&s, "log-file", "valid").len(), 15);
    assert_eq!(get(&s, "log-file", "unverified").len(), 3);
    assert_eq!(r["passed"], true);
    assert_eq!(r["failures"], 0);
    assert_eq!(r["warnings"], 4);
    // The counts say which hours each status covers.
    let counts = r["counts"].as_array().expect("counts");
    let valid = counts
        .iter()
        .find(|c| c["subject"] == "digest" && c["status"] == "valid")
        .expect("valid digests");
    assert_eq!(valid["earliest"], "2024-11-30T00:01:31Z");
    assert_eq!(valid["latest"], "2024-11-30T05:01:31Z");

    // The table says it in words, as a warning, and exits 0.
    let out = run_code(
        keytrail()
            .arg("verify-logs")
            .arg(&copy)
            .arg("--public-keys")
            .arg(&keys)
            .args(["--format", "table"]),
        0,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains(&digests[5]))
        .unwrap_or_else(|| panic!("the newest digest is named:\n{text}"));
    assert!(
        line.contains("signature-unavailable") && line.contains("warning"),
        "{line}"
    );
    assert!(
        line.contains("signature not available in this copy"),
        "{line}"
    );
    assert!(
        text.contains("PASSED: 6 digests and 18 log files checked; 0 failures, 4 warnings"),
        "{text}"
    );

    // Sidecars saved with the copy prove the newest digest too.
    t.write_to(&copy, true).expect("sidecars");
    let r = verify_json(
        keytrail()
            .arg("verify-logs")
            .arg(&copy)
            .arg("--public-keys")
            .arg(&keys),
        0,
    );
    assert_eq!(r["warnings"], 0, "{:#?}", statuses(&r));
    assert_eq!(get(&statuses(&r), "digest", "valid").len(), 6);
}

#[test]
fn tampering_with_a_local_copy_is_named_object_by_object() {
    let t = trail();
    let tmp = tempfile::tempdir().expect("tmp");
    let copy = tmp.path().join("copy");
    t.write_to(&copy, false).expect("write");
    let keys = write_keys(tmp.path());
    let logs: Vec<&str> = t.logs().map(|l| l.key.as_str()).collect();
    let digests: Vec<_> = t.digests().collect();

    // A log file altered: one event renamed, gzipped again.
    let altered = String::from_utf8(gunzip(&t.objects[0].bytes))
        .expect("utf8")
        .replacen("ListBuckets", "DeleteBucket", 1);
    std::fs::write(copy.join(logs[0]), gzip(altered.as_bytes())).expect("alter");
    // A log file deleted.
    std::fs::remove_file(copy.join(logs[4])).expect("delete log");
    // A log file added in hour 2 that no digest lists.
    let (folder, _) = logs[6].rsplit_once('/').expect("folder");
    let extra = format!(
        "{folder}/111122223333_CloudTrail_us-east-1_20241130T0230Z_ExtraExtraExtra1.json.gz"
    );
    std::fs::copy(copy.join(logs[6]), copy.join(&extra)).expect("extra");
    // A digest deleted (hour 3).
    std::fs::remove_file(copy.join(&digests[3].key)).expect("delete digest");
    // A digest re-signed with another key (hour 1), its signature saved as a sidecar.
    std::fs::write(
        copy.join(format!("{}.metadata.json", digests[1].key)),
        format!(
            r#"{{"Metadata":{{"signature":"{}","signature-algorithm":"SHA256withRSA"}}}}"#,
            resign(digests[1], attacker())
        ),
    )
    .expect("sidecar");

    let r = verify_json(
        keytrail()
            .arg("verify-logs")
            .arg(&copy)
            .arg("--public-keys")
            .arg(&keys),
        1,
    );
    let s = statuses(&r);
    assert_eq!(get(&s, "log-file", "modified"), vec![name(logs[0])]);
    assert_eq!(get(&s, "log-file", "missing"), vec![name(logs[4])]);
    assert_eq!(
        get(&s, "log-file", "not-covered"),
        sorted(vec![
            name(&extra),
            name(logs[9]),
            name(logs[10]),
            name(logs[11])
        ])
    );
    assert_eq!(get(&s, "digest", "missing"), vec![name(&digests[3].key)]);
    assert_eq!(
        get(&s, "digest", "signature-invalid"),
        vec![name(&digests[1].key)]
    );
    assert_eq!(
        get(&s, "digest", "valid"),
        sorted(vec![name(&digests[0].key), name(&digests[4].key)])
    );
    // Warnings: the digest before the deleted one and the newest have no signature here.
    assert_eq!(
        get(&s, "digest", "signature-unavailable"),
        sorted(vec![name(&digests[2].key), name(&digests[5].key)])
    );
    // Failures: modified 1, missing log 1, not covered 4, missing digest 1, signature 1.
    assert_eq!(r["failures"], 8);
    assert_eq!(r["passed"], false);
    // The missing digest is named where the next digest says it is.
    let row = r["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|x| x["subject"] == "digest" && x["status"] == "missing")
        .expect("missing digest");
    assert_eq!(row["object"], format!("s3://{BUCKET}/{}", digests[3].key));

    // CSV: one row per object, failures first.
    let out = run_code(
        keytrail()
            .arg("verify-logs")
            .arg(&copy)
            .arg("--public-keys")
            .arg(&keys)
            .args(["--format", "csv"]),
        1,
    );
    let csv = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        csv.lines().count(),
        1 + r["rows"].as_array().expect("rows").len()
    );
    assert!(
        csv.lines().nth(1).expect("row").contains(",failure,"),
        "{csv}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("FAILED"),
        "verdict on stderr"
    );
}

/// `keytrail verify-logs` against the S3 test server, credentials from the environment.
fn s3_cli(server: &S3Server) -> Command {
    let mut c = keytrail();
    c.env("AWS_ACCESS_KEY_ID", crate::s3server::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", crate::s3server::SECRET_KEY)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/nonexistent/keytrail-test/config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/keytrail-test/credentials",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_REGION", "us-east-1");
    c.args(["verify-logs", "--endpoint-url", &server.endpoint]);
    c
}

/// Upload objects with their user metadata, through S3 itself.
fn upload(server: &S3Server, objects: &[(&str, Vec<u8>, HashMap<String, String>)]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = server.client(&keytrail_ingest::s3::S3Options::default());
    rt.block_on(async {
        for (key, bytes, meta) in objects {
            client
                .put_object()
                .bucket(BUCKET)
                .key(*key)
                .body(ByteStream::from(bytes.clone()))
                .set_metadata((!meta.is_empty()).then(|| meta.clone()))
                .send()
                .await
                .expect("put");
        }
    });
}

fn delete(server: &S3Server, key: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = server.client(&keytrail_ingest::s3::S3Options::default());
    rt.block_on(client.delete_object().bucket(BUCKET).key(key).send())
        .expect("delete");
}

#[test]
fn a_bucket_with_signature_metadata_proves_every_digest_and_names_tampering() {
    let t = trail();
    let server = S3Server::start();
    server.bucket(BUCKET);
    let objects: Vec<(&str, Vec<u8>, HashMap<String, String>)> = t
        .objects
        .iter()
        .map(|o| {
            (
                o.key.as_str(),
                o.bytes.clone(),
                o.metadata.clone().into_iter().collect(),
            )
        })
        .collect();
    upload(&server, &objects);
    let tmp = tempfile::tempdir().expect("tmp");
    let keys = write_keys(tmp.path());
    // A body cut off half-way and a throttled digest: read again (here by the SDK's own
    // retries), not reported.
    let first_log = t.logs().nth(2).expect("log").key.clone();
    let a_digest = t.digests().nth(4).expect("digest").key.clone();
    server.fault(&first_log, &[Fault::Truncate]);
    server.fault(&a_digest, &[Fault::SlowDown, Fault::Internal]);

    let r = verify_json(
        s3_cli(&server)
            .arg(format!("s3://{BUCKET}"))
            .arg("--public-keys")
            .arg(&keys),
        0,
    );
    let s = statuses(&r);
    assert_eq!(get(&s, "digest", "valid").len(), 6, "{s:#?}");
    assert_eq!(get(&s, "log-file", "valid").len(), 18);
    assert_eq!(r["warnings"], 0);
    assert_eq!(server.unused_faults(), 0);
    let first = r["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|x| x["subject"] == "digest")
        .expect("row");
    assert!(
        first["detail"]
            .as_str()
            .expect("detail")
            .contains("S3 metadata"),
        "{first}"
    );

    // Tamper, through S3.
    let logs: Vec<&str> = t.logs().map(|l| l.key.as_str()).collect();
    let digests: Vec<_> = t.digests().collect();
    let altered = String::from_utf8(gunzip(&t.objects[0].bytes))
        .expect("utf8")
        .replacen("198.51.100.7", "203.0.113.9", 1);
    let (folder, _) = logs[6].rsplit_once('/').expect("folder");
    let extra = format!(
        "{folder}/111122223333_CloudTrail_us-east-1_20241130T0230Z_ExtraExtraExtra1.json.gz"
    );
    let mut resigned: HashMap<String, String> = digests[1].metadata.clone().into_iter().collect();
    resigned.insert("signature".into(), resign(digests[1], attacker()));
    upload(
        &server,
        &[
            (logs[0], gzip(altered.as_bytes()), HashMap::new()),
            (&extra, t.objects[6].bytes.clone(), HashMap::new()),
            (&digests[1].key, digests[1].bytes.clone(), resigned),
        ],
    );
    delete(&server, logs[4]);
    delete(&server, &digests[3].key);

    let r = verify_json(
        s3_cli(&server)
            .arg(format!("s3://{BUCKET}"))
            .arg("--public-keys")
            .arg(&keys),
        1,
    );
    let s = statuses(&r);
    assert_eq!(get(&s, "log-file", "modified"), vec![name(logs[0])]);
    assert_eq!(get(&s, "log-file", "missing"), vec![name(logs[4])]);
    assert_eq!(
        get(&s, "log-file", "not-covered"),
        sorted(vec![
            name(&extra),
            name(logs[9]),
            name(logs[10]),
            name(logs[11])
        ])
    );
    assert_eq!(get(&s, "digest", "missing"), vec![name(&digests[3].key)]);
    assert_eq!(
        get(&s, "digest", "signature-invalid"),
        vec![name(&digests[1].key)]
    );
    // With metadata, the digest before the deleted one stands on its own signature.
    assert_eq!(
        get(&s, "digest", "valid"),
        sorted(vec![
            name(&digests[0].key),
            name(&digests[2].key),
            name(&digests[4].key),
            name(&digests[5].key)
        ])
    );
    // Objects are named by their S3 URI.
    let modified = r["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|x| x["status"] == "modified")
        .expect("row");
    assert_eq!(modified["object"], format!("s3://{BUCKET}/{}", logs[0]));
    assert_eq!(r["failures"], 8);
}

#[test]
fn ingest_records_which_objects_a_valid_chain_covers() {
    let t = trail();
    let tmp = tempfile::tempdir().expect("tmp");
    let copy = tmp.path().join("copy");
    t.write_to(&copy, false).expect("write");
    let keys = write_keys(tmp.path());
    let logs: Vec<&str> = t.logs().map(|l| l.key.as_str()).collect();
    let altered = String::from_utf8(gunzip(&t.objects[0].bytes))
        .expect("utf8")
        .replacen("ListBuckets", "DeleteBucket", 1);
    std::fs::write(copy.join(logs[0]), gzip(altered.as_bytes())).expect("alter");
    let lake = tmp.path().join("lake");

    let s = ingest_json(
        &[&copy],
        &lake,
        &[
            "--verify-logs",
            "--public-keys",
            keys.to_str().expect("utf8"),
        ],
        0,
    );
    assert_balanced(&s);
    let c = &s["custody"];
    assert_eq!(c["passed"], false);
    assert_eq!(c["failures"], 1);
    assert_eq!(c["read"]["valid"], 14);
    assert_eq!(c["read"]["modified"], 1);
    assert_eq!(c["read"]["unverified"], 3);
    assert_eq!(c["problems"][0][0], "modified");

    // The manifest records it per object.
    let manifest = lake.join("_keytrail/manifest");
    let record = std::fs::read_dir(&manifest)
        .expect("manifest")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("commit record");
    let commit: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record).expect("read")).expect("json");
    let by_source: BTreeMap<String, String> = commit["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|o| {
            (
                name(o["source"].as_str().expect("source")),
                o["custody"].as_str().expect("custody").to_owned(),
            )
        })
        .collect();
    assert_eq!(by_source.len(), 18);
    assert_eq!(by_source[&name(logs[0])], "modified");
    assert_eq!(by_source[&name(logs[1])], "valid");
    assert_eq!(by_source[&name(logs[17])], "unverified");

    // What `investigate` will say of a timeline's source objects.
    let records: Vec<(String, Option<String>)> = commit["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|o| {
            (
                o["source"].as_str().expect("source").to_owned(),
                o["custody"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let canon = copy.canonicalize().expect("canon");
    let sources: Vec<String> = logs[..4]
        .iter()
        .map(|l| canon.join(l).display().to_string())
        .collect();
    let cov = keytrail_custody::source_coverage(
        sources.iter().map(String::as_str),
        records.iter().map(|(s, c)| (s.as_str(), c.as_deref())),
    );
    assert_eq!(cov.sources, 4);
    assert_eq!(cov.covered, 3);
    assert_eq!(
        cov.to_string(),
        "3 of 4 source objects were covered by a valid digest chain (1 modified)"
    );

    // And `investigate` says it of its timeline's sources: every log of the trail holds the
    // one key's calls.
    let out = run_code(
        keytrail()
            .args([
                "investigate",
                "AKIAIOSFODNN7EXAMPLE",
                "--format",
                "json",
                "--lake",
            ])
            .arg(&lake),
        0,
    );
    let inv: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(inv["custody"]["sources"], 18);
    assert_eq!(inv["custody"]["covered"], 14);
    assert!(
        inv["notes"].as_array().expect("notes").iter().any(|n| n.as_str()
            == Some("Chain of custody: 14 of 18 source objects were covered by a valid digest chain (1 modified, 3 unverified).")),
        "{}",
        inv["notes"]
    );

    // The human summary says it.
    let lake2 = tmp.path().join("lake2");
    let out = run_code(
        keytrail()
            .arg("ingest")
            .arg(&copy)
            .arg("--lake")
            .arg(&lake2)
            .arg("--verify-logs")
            .arg("--public-keys")
            .arg(&keys),
        0,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("custody  14 of 18 objects read covered by a valid digest chain (modified 1, unverified 3); validation FAILED: 1 failures, 4 warnings"),
        "{text}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bad = tmp.path().join("keys.json");
    std::fs::write(
        &bad,
        "{\"PublicKeyList\": [{\"Value\": \"not base64!\", \"Fingerprint\": \"ab\"}]}",
    )
    .expect("write");
    let out = run_code(
        keytrail()
            .arg("verify-logs")
            .arg(tmp.path())
            .arg("--public-keys")
            .arg(&bad),
        2,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("keys.json") && err.contains("base64"), "{err}");
    run_code(
        keytrail()
            .arg("verify-logs")
            .arg(tmp.path().join("nowhere")),
        2,
    );
    run_code(
        keytrail()
            .arg("verify-logs")
            .arg(tmp.path())
            .args(["--format", "html"]),
        2,
    );
    run_code(
        keytrail().args(["ingest", "x", "--lake", "y", "--public-keys", "k.json"]),
        2,
    );
}
