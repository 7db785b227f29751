//! Validation end to end over synthetic trails (`testkit`): local copies and an in-memory
//! store with S3-style metadata; every status, and hostile files. Keys are 1024-bit here
//! (the smallest the `rsa` crate accepts) to keep debug builds quick; the CLI tests use 2048.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

use keytrail_custody::testkit::{
    TestKey, Trail, TrailSpec, gunzip, gzip, public_keys_json, resign,
};
use keytrail_custody::{
    LocalStore, Metadata, ObjectStore, PublicKeys, ReadError, Report, Scope, Status, StoredObject,
    Subject, VerifyOptions, verify,
};

const HOUR: i64 = 3_600_000;
const START: i64 = 1_732_924_800_000; // 2024-11-30T00:00:00Z

fn key() -> &'static TestKey {
    static K: OnceLock<TestKey> = OnceLock::new();
    K.get_or_init(|| TestKey::generate(1024, "cloudtrail us-east-1"))
}

fn attacker() -> &'static TestKey {
    static K: OnceLock<TestKey> = OnceLock::new();
    K.get_or_init(|| TestKey::generate(1024, "someone else"))
}

fn trail() -> Trail {
    Trail::build(TrailSpec::default(), key())
}

fn keys() -> PublicKeys {
    PublicKeys::parse(
        public_keys_json(&[(key(), START - 30 * 24 * HOUR, START + 30 * 24 * HOUR)]).as_bytes(),
    )
    .expect("keys")
}

fn opts(keys: Option<PublicKeys>) -> VerifyOptions {
    VerifyOptions {
        keys,
        workers: 2,
        ..VerifyOptions::default()
    }
}

fn run_local(dir: &Path, o: &VerifyOptions) -> Report {
    let store = LocalStore::new(dir);
    verify(&[&store as &dyn ObjectStore], o).expect("verify")
}

/// Every row as (subject, status, file name), sorted.
fn statuses(r: &Report) -> BTreeMap<(Subject, Status), Vec<String>> {
    let mut m: BTreeMap<(Subject, Status), Vec<String>> = BTreeMap::new();
    for row in &r.rows {
        m.entry((row.subject, row.status))
            .or_default()
            .push(row.object.rsplit('/').next().unwrap_or("").to_owned());
    }
    for v in m.values_mut() {
        v.sort();
    }
    m
}

fn name(key: &str) -> String {
    key.rsplit('/').next().unwrap_or("").to_owned()
}

fn count(r: &Report, s: Subject, st: Status) -> usize {
    r.rows
        .iter()
        .filter(|x| x.subject == s && x.status == st)
        .count()
}

#[test]
fn a_local_copy_is_valid_but_for_the_newest_digests_signature() {
    let t = trail();
    let dir = tempfile::tempdir().expect("tmp");
    t.write_to(dir.path(), false).expect("write");
    let r = run_local(dir.path(), &opts(Some(keys())));
    assert!(r.passed, "{:#?}", r.rows);
    let digests: Vec<&str> = t.digests().map(|d| d.key.as_str()).collect();
    let newest = name(digests[3]);
    let s = statuses(&r);
    assert_eq!(s[&(Subject::Digest, Status::Valid)].len(), 3, "{s:#?}");
    assert_eq!(
        s[&(Subject::Digest, Status::SignatureUnavailable)],
        vec![newest]
    );
    assert_eq!(s[&(Subject::LogFile, Status::Valid)].len(), 9);
    // The newest digest's log files match it, but it is not proven.
    assert_eq!(s[&(Subject::LogFile, Status::Unverified)].len(), 3);
    assert_eq!(r.failures, 0);
    assert_eq!(r.warnings, 4);
    // Counts say what time each status covers.
    let valid = r
        .counts
        .iter()
        .find(|c| c.subject == Subject::Digest && c.status == Status::Valid)
        .expect("count");
    assert_eq!(valid.count, 3);
    assert_eq!(
        valid.earliest.map(|t| t.to_string()).as_deref(),
        Some("2024-11-30T00:01:31Z")
    );
    assert_eq!(
        valid.latest.map(|t| t.to_string()).as_deref(),
        Some("2024-11-30T03:01:31Z")
    );
}

#[test]
fn sidecars_prove_the_newest_digest_too() {
    let t = trail();
    let dir = tempfile::tempdir().expect("tmp");
    t.write_to(dir.path(), true).expect("write");
    let r = run_local(dir.path(), &opts(Some(keys())));
    assert!(r.passed);
    assert_eq!(r.warnings, 0, "{:#?}", r.rows);
    assert_eq!(count(&r, Subject::Digest, Status::Valid), 4);
    assert_eq!(count(&r, Subject::LogFile, Status::Valid), 12);
}

#[test]
fn without_keys_hashes_and_the_chain_are_checked_and_signatures_are_not() {
    let t = trail();
    let dir = tempfile::tempdir().expect("tmp");
    t.write_to(dir.path(), false).expect("write");
    let r = run_local(dir.path(), &opts(None));
    assert!(r.passed);
    assert_eq!(count(&r, Subject::Digest, Status::SignatureNotChecked), 3);
    assert_eq!(count(&r, Subject::Digest, Status::SignatureUnavailable), 1);
    assert_eq!(count(&r, Subject::LogFile, Status::Unverified), 12);
    assert!(
        r.notes.iter().any(|n| n.contains("no --public-keys")),
        "{:?}",
        r.notes
    );

    // A log file altered is still caught without keys.
    let log = t.logs().nth(4).expect("log");
    std::fs::write(dir.path().join(&log.key), gzip(b"{\"Records\":[]}")).expect("write");
    let r = run_local(dir.path(), &opts(None));
    assert!(!r.passed);
    assert_eq!(
        r.with_status(Subject::LogFile, Status::Modified),
        vec![
            dir.path()
                .canonicalize()
                .expect("canon")
                .join(&log.key)
                .display()
                .to_string()
        ]
    );
}

#[test]
fn tampering_is_named_object_by_object() {
    let t = trail();
    let dir = tempfile::tempdir().expect("tmp");
    t.write_to(dir.path(), false).expect("write");
    let root = dir.path();
    let logs: Vec<&str> = t.logs().map(|l| l.key.as_str()).collect();
    let digests: Vec<&str> = t.digests().map(|d| d.key.as_str()).collect();
    // Hour 0: one log file altered (same gzip shape, one event name changed).
    let content = String::from_utf8(gunzip(&t.objects[0].bytes)).expect("utf8");
    let altered = content.replacen("ListBuckets", "ListBucketz", 1);
    std::fs::write(root.join(logs[0]), gzip(altered.as_bytes())).expect("alter");
    // Hour 0: one deleted.
    std::fs::remove_file(root.join(logs[1])).expect("delete");
    // Hour 1: an extra file, named inside the hour, that no digest lists.
    let extra = logs[3].replace(
        "_CloudTrail_us-east-1_20241130T0102Z_",
        "_CloudTrail_us-east-1_20241130T0130Z_",
    );
    assert_ne!(extra, logs[3]);
    std::fs::copy(root.join(logs[3]), root.join(&extra)).expect("extra");
    // Hour 2's digest deleted: its log files are no longer covered.
    std::fs::remove_file(root.join(digests[2])).expect("delete digest");

    let r = run_local(root, &opts(Some(keys())));
    assert!(!r.passed);
    let s = statuses(&r);
    assert_eq!(
        s[&(Subject::LogFile, Status::Modified)],
        vec![name(logs[0])]
    );
    assert_eq!(s[&(Subject::LogFile, Status::Missing)], vec![name(logs[1])]);
    let mut uncovered = vec![name(&extra), name(logs[6]), name(logs[7]), name(logs[8])];
    uncovered.sort();
    assert_eq!(s[&(Subject::LogFile, Status::NotCovered)], uncovered);
    assert_eq!(
        s[&(Subject::Digest, Status::Missing)],
        vec![name(digests[2])]
    );
    // The missing digest's row names it where the next digest says it was.
    let missing = r
        .rows
        .iter()
        .find(|x| x.subject == Subject::Digest && x.status == Status::Missing)
        .expect("row");
    assert_eq!(missing.object, format!("s3://trail-bucket/{}", digests[2]));
    assert!(
        missing.detail.contains(&name(digests[3])),
        "{}",
        missing.detail
    );
    assert!(!missing.detail.contains("--since"), "{}", missing.detail);
    // The digest before the deleted one lost the only record of its signature.
    assert_eq!(
        s[&(Subject::Digest, Status::SignatureUnavailable)],
        vec![name(digests[1]), name(digests[3])]
    );
    assert_eq!(s[&(Subject::Digest, Status::Valid)], vec![name(digests[0])]);
    assert_eq!(r.failures, 1 + 1 + 4 + 1);
}

#[test]
fn a_digest_altered_and_resigned_breaks_its_signature_and_the_chain() {
    let t = trail();
    let dir = tempfile::tempdir().expect("tmp");
    t.write_to(dir.path(), true).expect("write");
    let digests: Vec<_> = t.digests().collect();
    // Someone hides a log file from hour 1's digest and signs the result with their own key,
    // keeping CloudTrail's fingerprint.
    let d = digests[1];
    let mut v: serde_json::Value = serde_json::from_slice(&gunzip(&d.bytes)).expect("json");
    v["logFiles"].as_array_mut().expect("files").remove(0);
    let bytes = gzip(&serde_json::to_vec(&v).expect("json"));
    let mut forged = d.clone();
    forged.bytes = bytes.clone();
    let sig = resign(&forged, attacker());
    std::fs::write(dir.path().join(&d.key), &bytes).expect("write");
    std::fs::write(
        dir.path().join(format!("{}.metadata.json", d.key)),
        format!(r#"{{"signature":"{sig}","signature-algorithm":"SHA256withRSA"}}"#),
    )
    .expect("sidecar");
    let r = run_local(dir.path(), &opts(Some(keys())));
    let s = statuses(&r);
    assert_eq!(
        s[&(Subject::Digest, Status::SignatureInvalid)],
        vec![name(&d.key)]
    );
    let row = r
        .rows
        .iter()
        .find(|x| x.status == Status::SignatureInvalid)
        .expect("row");
    assert!(row.detail.contains("does not verify"), "{}", row.detail);
    assert!(
        row.detail.contains("records"),
        "the chain too: {}",
        row.detail
    );
    // The hidden file is now listed by no digest.
    let hidden = t.logs().nth(3).expect("log");
    assert_eq!(
        s[&(Subject::LogFile, Status::NotCovered)],
        vec![name(&hidden.key)]
    );
    assert!(!r.passed);

    // Signed with the attacker's key under the attacker's fingerprint: an unknown key.
    v["digestPublicKeyFingerprint"] = serde_json::json!(attacker().fingerprint);
    let bytes = gzip(&serde_json::to_vec(&v).expect("json"));
    forged.bytes = bytes.clone();
    let sig = resign(&forged, attacker());
    std::fs::write(dir.path().join(&d.key), &bytes).expect("write");
    std::fs::write(
        dir.path().join(format!("{}.metadata.json", d.key)),
        format!(r#"{{"signature":"{sig}"}}"#),
    )
    .expect("sidecar");
    let r = run_local(dir.path(), &opts(Some(keys())));
    assert_eq!(
        statuses(&r)[&(Subject::Digest, Status::UnknownKey)],
        vec![name(&d.key)]
    );
}

#[test]
fn keys_outside_their_window_are_named() {
    let t = trail();
    let dir = tempfile::tempdir().expect("tmp");
    t.write_to(dir.path(), true).expect("write");
    // The key stopped signing at 02:00: the digests ending 02:01:31, 03:01:31 and 04:01:31
    // are out of its window.
    let keys =
        PublicKeys::parse(public_keys_json(&[(key(), START - HOUR, START + 2 * HOUR)]).as_bytes())
            .expect("keys");
    let r = run_local(dir.path(), &opts(Some(keys)));
    assert_eq!(count(&r, Subject::Digest, Status::KeyOutOfWindow), 3);
    assert_eq!(count(&r, Subject::Digest, Status::Valid), 1);
    assert!(!r.passed);
    // Keys of another region: unknown.
    let other = PublicKeys::parse(
        public_keys_json(&[(attacker(), START - HOUR, START + 9 * HOUR)]).as_bytes(),
    )
    .expect("keys");
    let r = run_local(dir.path(), &opts(Some(other)));
    assert_eq!(count(&r, Subject::Digest, Status::UnknownKey), 4);
}

#[test]
fn hostile_files_are_rows_with_reasons_never_panics() {
    let t = trail();
    let dir = tempfile::tempdir().expect("tmp");
    t.write_to(dir.path(), true).expect("write");
    let root = dir.path();
    let digests: Vec<&str> = t.digests().map(|d| d.key.as_str()).collect();
    let logs: Vec<&str> = t.logs().map(|l| l.key.as_str()).collect();
    // A truncated log file, a log file that is a bomb for the limit set below.
    let bytes = std::fs::read(root.join(logs[0])).expect("read");
    std::fs::write(root.join(logs[0]), &bytes[..bytes.len() / 2]).expect("truncate");
    // Digests: not gzip, gzip of not-JSON, JSON of the wrong types.
    std::fs::write(root.join(digests[0]), b"plain text").expect("w");
    std::fs::write(root.join(digests[1]), gzip(b"{\"digestStartTime\": 5")).expect("w");
    std::fs::write(
        root.join(digests[2]),
        gzip(br#"{"digestStartTime":1,"digestEndTime":2,"logFiles":"x"}"#),
    )
    .expect("w");
    // A sidecar that is not JSON.
    std::fs::write(root.join(format!("{}.metadata.json", digests[3])), b"{{").expect("w");
    let mut o = opts(Some(keys()));
    o.max_log_bytes = 1_500;
    let r = run_local(root, &o);
    assert!(!r.passed);
    let s = statuses(&r);
    assert_eq!(
        s[&(Subject::Digest, Status::Invalid)],
        vec![name(digests[0]), name(digests[1]), name(digests[2])]
    );
    let invalid: Vec<&str> = r
        .rows
        .iter()
        .filter(|x| x.status == Status::Invalid)
        .map(|x| x.detail.as_str())
        .collect();
    assert!(
        invalid.iter().all(|d| d.starts_with("not a digest file")),
        "{invalid:?}"
    );
    // Digest 3 still verifies: its sidecar is unreadable, but there is no other source; its
    // previous (digest 2) is unreadable, so it stands alone.
    let d3 = r
        .rows
        .iter()
        .find(|x| x.object.ends_with(&name(digests[3])))
        .expect("d3");
    assert_eq!(d3.status, Status::SignatureUnavailable, "{}", d3.detail);
    assert!(d3.detail.contains("sidecar"), "{}", d3.detail);
    // Its log files are bigger than the limit: unreadable, by name.
    assert_eq!(count(&r, Subject::LogFile, Status::Unreadable), 3);
    let too_big = r
        .rows
        .iter()
        .find(|x| x.status == Status::Unreadable)
        .expect("row");
    assert!(
        too_big.detail.contains("more than 1500 bytes"),
        "{}",
        too_big.detail
    );
}

#[test]
fn the_window_leaves_out_what_is_before_it() {
    let t = trail();
    let dir = tempfile::tempdir().expect("tmp");
    t.write_to(dir.path(), true).expect("write");
    let digests: Vec<&str> = t.digests().map(|d| d.key.as_str()).collect();
    // A copy that starts with hour 2: the first digest of the copy names one that is not here.
    std::fs::remove_file(dir.path().join(digests[0])).expect("rm");
    std::fs::remove_file(dir.path().join(digests[1])).expect("rm");
    for l in t.logs().take(6) {
        std::fs::remove_file(dir.path().join(&l.key)).expect("rm");
    }
    let r = run_local(dir.path(), &opts(Some(keys())));
    assert_eq!(r.with_status(Subject::Digest, Status::Missing).len(), 1);
    assert!(!r.passed);
    let row = r
        .rows
        .iter()
        .find(|x| x.status == Status::Missing)
        .expect("row");
    assert!(
        row.detail
            .ends_with("if the copy starts after it, pass --since 2024-11-30T02:01:31Z"),
        "{}",
        row.detail
    );
    // From where the copy starts, everything is proven.
    let mut o = opts(Some(keys()));
    // (The deleted digest ended at 02:01:31: a window from 02:00 would still need it.)
    o.since = Some(START + 2 * HOUR + 91_000);
    let r = run_local(dir.path(), &o);
    assert!(r.passed, "{:#?}", r.rows);
    assert_eq!(count(&r, Subject::Digest, Status::Valid), 2);
    assert_eq!(count(&r, Subject::LogFile, Status::Valid), 6);
    assert!(
        r.notes.iter().any(|n| n.contains("before --since")),
        "{:?}",
        r.notes
    );
}

#[test]
fn files_delivered_after_the_newest_digest_are_a_warning() {
    let t = trail();
    let dir = tempfile::tempdir().expect("tmp");
    t.write_to(dir.path(), true).expect("write");
    let last = t.logs().last().expect("log").key.clone();
    // Delivered at 04:30, after the newest digest (03:01:31 to 04:01:31).
    let late = {
        let (dir_part, file) = last.rsplit_once('/').expect("slash");
        let parts: Vec<&str> = file.split('_').collect();
        format!(
            "{dir_part}/{}_{}_{}_20241130T0430Z_LATEFILE00000000.json.gz",
            parts[0], parts[1], parts[2]
        )
    };
    std::fs::copy(dir.path().join(&last), dir.path().join(&late)).expect("late");
    let r = run_local(dir.path(), &opts(Some(keys())));
    assert!(r.passed, "{:#?}", r.rows);
    assert_eq!(
        r.with_status(Subject::LogFile, Status::AfterLastDigest)
            .len(),
        1
    );
}

/// A store with S3's metadata, in memory.
struct MemStore {
    objects: BTreeMap<String, (Vec<u8>, Metadata)>,
}

impl ObjectStore for MemStore {
    fn name(&self) -> String {
        "s3://trail-bucket/".into()
    }
    fn list(&self, _scope: &Scope) -> Result<Vec<StoredObject>, keytrail_custody::CustodyError> {
        Ok(self
            .objects
            .iter()
            .map(|(k, (b, _))| StoredObject {
                key: k.clone(),
                display: format!("s3://trail-bucket/{k}"),
                size: b.len() as u64,
            })
            .collect())
    }
    fn open(&self, o: &StoredObject) -> Result<Box<dyn Read + Send + '_>, ReadError> {
        let (b, _) = self.objects.get(&o.key).ok_or(ReadError::NotFound)?;
        Ok(Box::new(&b[..]))
    }
    fn metadata(&self, o: &StoredObject) -> Result<Option<Metadata>, ReadError> {
        Ok(Some(
            self.objects
                .get(&o.key)
                .ok_or(ReadError::NotFound)?
                .1
                .clone(),
        ))
    }
}

#[test]
fn with_s3_metadata_every_digest_is_proven_and_a_resigned_one_is_caught() {
    let t = trail();
    let mut store = MemStore {
        objects: t
            .objects
            .iter()
            .map(|o| (o.key.clone(), (o.bytes.clone(), o.metadata.clone())))
            .collect(),
    };
    let r = verify(&[&store as &dyn ObjectStore], &opts(Some(keys()))).expect("verify");
    assert!(r.passed);
    assert_eq!(r.warnings, 0);
    assert_eq!(count(&r, Subject::Digest, Status::Valid), 4);
    // The newest digest re-signed with another key: its own signature fails.
    let newest = t.digests().last().expect("digest");
    let sig = resign(newest, attacker());
    store
        .objects
        .get_mut(&newest.key)
        .expect("obj")
        .1
        .insert("signature".into(), sig);
    let r = verify(&[&store as &dyn ObjectStore], &opts(Some(keys()))).expect("verify");
    assert_eq!(
        r.with_status(Subject::Digest, Status::SignatureInvalid),
        vec![format!("s3://trail-bucket/{}", newest.key)]
    );
    assert_eq!(count(&r, Subject::LogFile, Status::Unverified), 3);
    // One in the middle: its signature fails, and it no longer matches what the next records.
    let second = t.digests().nth(1).expect("digest");
    let sig = resign(second, attacker());
    store
        .objects
        .get_mut(&second.key)
        .expect("obj")
        .1
        .insert("signature".into(), sig);
    let r = verify(&[&store as &dyn ObjectStore], &opts(Some(keys()))).expect("verify");
    let row = r
        .rows
        .iter()
        .find(|x| x.object.ends_with(&second.key))
        .expect("row");
    assert_eq!(row.status, Status::SignatureInvalid);
    assert!(
        row.detail.contains("not the previousDigestSignature"),
        "{}",
        row.detail
    );
}

/// A store whose first read of each object breaks off half-way (a dropped connection).
struct Flaky {
    inner: MemStore,
    opened: std::sync::Mutex<BTreeMap<String, usize>>,
}

struct BreaksOff<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Read for BreaksOff<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset",
            ));
        }
        let n = buf.len().min(self.at).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        self.at -= n;
        Ok(n)
    }
}

impl ObjectStore for Flaky {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn list(&self, s: &Scope) -> Result<Vec<StoredObject>, keytrail_custody::CustodyError> {
        self.inner.list(s)
    }
    fn open(&self, o: &StoredObject) -> Result<Box<dyn Read + Send + '_>, ReadError> {
        let mut opened = self.opened.lock().expect("lock");
        let n = opened.entry(o.key.clone()).or_default();
        *n += 1;
        let (b, _) = self.inner.objects.get(&o.key).ok_or(ReadError::NotFound)?;
        if *n == 1 {
            Ok(Box::new(BreaksOff {
                bytes: b,
                at: b.len() / 2,
            }))
        } else {
            Ok(Box::new(&b[..]))
        }
    }
    fn metadata(&self, o: &StoredObject) -> Result<Option<Metadata>, ReadError> {
        self.inner.metadata(o)
    }
}

#[test]
fn reads_that_break_off_are_tried_again_and_bad_content_is_not() {
    let t = trail();
    let store = Flaky {
        inner: MemStore {
            objects: t
                .objects
                .iter()
                .map(|o| (o.key.clone(), (o.bytes.clone(), o.metadata.clone())))
                .collect(),
        },
        opened: std::sync::Mutex::new(BTreeMap::new()),
    };
    let r = verify(&[&store as &dyn ObjectStore], &opts(Some(keys()))).expect("verify");
    assert!(r.passed, "{:#?}", r.rows);
    assert_eq!(r.warnings, 0);
    let opened = store.opened.lock().expect("lock");
    assert_eq!(opened.len(), 16);
    assert!(opened.values().all(|n| *n == 2), "{opened:?}");
    drop(opened);
    // With one attempt, a broken read is `unreadable`, never `modified`.
    let store = Flaky {
        inner: store.inner,
        opened: std::sync::Mutex::new(BTreeMap::new()),
    };
    let mut o = opts(Some(keys()));
    o.read_attempts = 1;
    let r = verify(&[&store as &dyn ObjectStore], &o).expect("verify");
    assert_eq!(count(&r, Subject::LogFile, Status::Unreadable), 0);
    assert_eq!(count(&r, Subject::Digest, Status::Unreadable), 4);
    assert_eq!(count(&r, Subject::LogFile, Status::NotCovered), 12);
    assert_eq!(count(&r, Subject::LogFile, Status::Modified), 0);
}
