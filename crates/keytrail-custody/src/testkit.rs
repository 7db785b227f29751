//! Synthetic trails for tests and benchmarks: log files and hourly digest files shaped
//! exactly as CloudTrail delivers them, signed with an RSA key made here from a seed. Never
//! evidence of anything: the keys are as secret as their seeds.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::rand_core::{TryCryptoRng, TryRng};
use rsa::sha2::Sha256;
use rsa::{PrivateKey, PublicKey};
use serde_json::json;

use crate::digest::{HASH_ALGORITHM, SIGNATURE_ALGORITHM};
use crate::hash::sha256_hex;
use crate::layout::{Kind, SIDECAR_SUFFIX};
use crate::report::Time;
use crate::store::Metadata;

const HOUR: i64 = 3_600_000;

/// A deterministic stream of bytes from a seed (SHA-256 in counter mode), for making test keys.
struct SeededRng {
    seed: [u8; 32],
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl SeededRng {
    fn new(seed: &str) -> SeededRng {
        use rsa::sha2::Digest as _;
        SeededRng {
            seed: Sha256::digest(seed.as_bytes()).into(),
            counter: 0,
            block: [0; 32],
            used: 32,
        }
    }

    fn byte(&mut self) -> u8 {
        use rsa::sha2::Digest as _;
        if self.used == 32 {
            let mut h = Sha256::new();
            h.update(self.seed);
            h.update(self.counter.to_le_bytes());
            self.block = h.finalize().into();
            self.counter += 1;
            self.used = 0;
        }
        self.used += 1;
        self.block[self.used - 1]
    }
}

impl TryRng for SeededRng {
    type Error = core::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for d in dst {
            *d = self.byte();
        }
        Ok(())
    }
}

impl TryCryptoRng for SeededRng {}

/// An RSA key pair standing in for CloudTrail's signing key of a region.
#[derive(Clone, Debug)]
pub struct TestKey {
    pub private: PrivateKey,
    /// 32 hex digits, as CloudTrail's fingerprints look (here: the first half of the SHA-256
    /// of the PKCS#1 public key).
    pub fingerprint: String,
}

impl TestKey {
    /// A key of `bits` (at least 1024) made from `seed`: the same seed, the same key.
    pub fn generate(bits: usize, seed: &str) -> TestKey {
        let private = PrivateKey::new(&mut SeededRng::new(seed), bits)
            .unwrap_or_else(|e| panic!("generating a {bits}-bit test key: {e}"));
        let der = private
            .to_public_key()
            .to_pkcs1_der()
            .unwrap_or_else(|e| panic!("encoding a test key: {e}"));
        let fingerprint = sha256_hex(der.as_bytes())[..32].to_owned();
        TestKey {
            private,
            fingerprint,
        }
    }

    pub fn public(&self) -> PublicKey {
        self.private.to_public_key()
    }

    /// The base64 of the PKCS#1 DER public key, as `list-public-keys` gives it in `Value`.
    pub fn value(&self) -> String {
        let der = self
            .public()
            .to_pkcs1_der()
            .unwrap_or_else(|e| panic!("encoding a test key: {e}"));
        data_encoding::BASE64.encode(der.as_bytes())
    }

    /// SHA256withRSA (PKCS#1 v1.5) over `message`, in hex as S3 metadata holds it.
    pub fn sign(&self, message: &[u8]) -> String {
        let sig = self
            .private
            .pkcs1v15_sign::<Sha256>(message)
            .unwrap_or_else(|e| panic!("signing with a test key: {e}"));
        data_encoding::HEXLOWER.encode(&sig)
    }
}

/// A saved `aws cloudtrail list-public-keys` answer holding these keys and their windows.
pub fn public_keys_json(keys: &[(&TestKey, i64, i64)]) -> String {
    let list: Vec<serde_json::Value> = keys
        .iter()
        .map(|(k, from, until)| {
            json!({
                "Value": k.value(),
                "ValidityStartTime": Time(*from).to_string().replace('Z', "+00:00"),
                "ValidityEndTime": Time(*until).to_string().replace('Z', "+00:00"),
                "Fingerprint": k.fingerprint,
            })
        })
        .collect();
    serde_json::to_string_pretty(&json!({ "PublicKeyList": list })).unwrap_or_default()
}

/// Gzip bytes as CloudTrail does (one member).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = e.write_all(bytes);
    e.finish().unwrap_or_default()
}

/// Gunzip (test helper: panics on bad input).
pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(bytes), &mut out)
        .unwrap_or_else(|e| panic!("gunzip: {e}"));
    out
}

/// What trail to make.
#[derive(Clone, Debug)]
pub struct TrailSpec {
    pub bucket: String,
    /// A bucket prefix before `AWSLogs/` (empty, or ending in `/`).
    pub prefix: String,
    pub account: String,
    pub region: String,
    pub trail: String,
    /// The first hour (UTC ms, on the hour).
    pub start: i64,
    /// Hourly digests.
    pub hours: usize,
    /// Log files delivered in each digest's hour.
    pub files_per_hour: usize,
    /// Events in each log file.
    pub events_per_file: usize,
    /// Where in the hour digests end (CloudTrail's own offset, e.g. 1 min 31 s).
    pub digest_offset_ms: i64,
}

impl Default for TrailSpec {
    fn default() -> Self {
        TrailSpec {
            bucket: "trail-bucket".into(),
            prefix: String::new(),
            account: "111122223333".into(),
            region: "us-east-1".into(),
            trail: "management-events".into(),
            start: 1_732_924_800_000, // 2024-11-30T00:00:00Z
            hours: 4,
            files_per_hour: 3,
            events_per_file: 3,
            digest_offset_ms: 91_000,
        }
    }
}

/// One object of a built trail.
#[derive(Clone, Debug)]
pub struct TrailObject {
    /// The S3 key.
    pub key: String,
    /// The bytes as stored (gzip).
    pub bytes: Vec<u8>,
    /// User metadata (digests: `signature`, `signature-algorithm`).
    pub metadata: Metadata,
    pub kind: Kind,
}

/// A built trail: log files, then digests, in delivery order.
#[derive(Clone, Debug)]
pub struct Trail {
    pub spec: TrailSpec,
    pub objects: Vec<TrailObject>,
}

fn stamp(ms: i64, format: &str) -> String {
    use chrono::TimeZone as _;
    chrono::Utc
        .timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format(format).to_string())
        .unwrap_or_default()
}

/// A log file of CloudTrail's shape: `n` events ending at `end`.
fn log_content(spec: &TrailSpec, end: i64, n: usize, seq: usize) -> (Vec<u8>, i64, i64) {
    // Whole seconds, as CloudTrail writes eventTime.
    let step = (200 / (n.max(1) as i64)).max(1) * 1_000;
    let times: Vec<i64> = (0..n).map(|i| end - 240_000 + (i as i64) * step).collect();
    let records: Vec<serde_json::Value> = times
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({
                "eventVersion": "1.09",
                "userIdentity": {
                    "type": "IAMUser",
                    "principalId": "AIDAEXAMPLEPRINCIPAL1",
                    "arn": format!("arn:aws:iam::{}:user/alice", spec.account),
                    "accountId": spec.account,
                    "accessKeyId": "AKIAIOSFODNN7EXAMPLE",
                    "userName": "alice"
                },
                "eventTime": Time(*t).to_string(),
                "eventSource": "s3.amazonaws.com",
                "eventName": "ListBuckets",
                "awsRegion": spec.region,
                "sourceIPAddress": "198.51.100.7",
                "userAgent": "aws-cli/2.15.0",
                "requestParameters": null,
                "responseElements": null,
                "requestID": format!("REQ{seq:06}{i:04}"),
                "eventID": format!("00000000-0000-4000-8000-{seq:06}{i:06}"),
                "readOnly": true,
                "eventType": "AwsApiCall",
                "managementEvent": true,
                "recipientAccountId": spec.account,
                "eventCategory": "Management"
            })
        })
        .collect();
    let body = serde_json::to_vec(&json!({ "Records": records })).unwrap_or_default();
    let oldest = times.first().copied().unwrap_or(end);
    let newest = times.last().copied().unwrap_or(end);
    (body, oldest, newest)
}

/// 16 letters and digits, as CloudTrail's unique part of a log file name.
fn unique(seed: &str) -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let h = sha256_hex(seed.as_bytes());
    h.as_bytes()
        .chunks(2)
        .take(16)
        .map(|c| ALNUM[usize::from(c[0] ^ c[1]) % ALNUM.len()] as char)
        .collect()
}

impl Trail {
    /// Build the trail: each hour's log files, then the hour's digest listing them, chained to
    /// the digest before it and signed with `key` (the first digest's `previousDigest*` are
    /// `null`).
    pub fn build(spec: TrailSpec, key: &TestKey) -> Trail {
        let mut objects = Vec::new();
        let base = format!("{}AWSLogs/{}", spec.prefix, spec.account);
        // (key, sha256 of content, signature) of the previous digest.
        let mut previous: Option<(String, String, String)> = None;
        let mut seq = 0;
        for h in 0..spec.hours {
            let start = spec.start + (h as i64) * HOUR + spec.digest_offset_ms;
            let end = start + HOUR;
            let mut listed = Vec::new();
            let (mut oldest_all, mut newest_all) = (None::<i64>, None::<i64>);
            for f in 0..spec.files_per_hour {
                // Delivered inside the hour, named by the minute.
                let delivered = start
                    + 60_000
                    + (f as i64) * (HOUR - 20 * 60_000) / (spec.files_per_hour.max(1) as i64);
                let delivered = delivered - delivered.rem_euclid(60_000);
                let (content, oldest, newest) =
                    log_content(&spec, delivered, spec.events_per_file, seq);
                seq += 1;
                let key = format!(
                    "{base}/CloudTrail/{}/{}/{}_CloudTrail_{}_{}_{}.json.gz",
                    spec.region,
                    stamp(delivered, "%Y/%m/%d"),
                    spec.account,
                    spec.region,
                    stamp(delivered, "%Y%m%dT%H%MZ"),
                    unique(&format!("{}{}{seq}", spec.trail, spec.region))
                );
                listed.push(json!({
                    "s3Bucket": spec.bucket,
                    "s3Object": key,
                    "hashValue": sha256_hex(&content),
                    "hashAlgorithm": HASH_ALGORITHM,
                    "newestEventTime": Time(newest).to_string(),
                    "oldestEventTime": Time(oldest).to_string(),
                }));
                oldest_all = Some(oldest_all.map_or(oldest, |o| o.min(oldest)));
                newest_all = Some(newest_all.map_or(newest, |n| n.max(newest)));
                objects.push(TrailObject {
                    key,
                    bytes: gzip(&content),
                    metadata: Metadata::new(),
                    kind: Kind::Log,
                });
            }
            let digest_key = format!(
                "{base}/CloudTrail-Digest/{}/{}/{}_CloudTrail-Digest_{}_{}_{}_{}.json.gz",
                spec.region,
                stamp(end, "%Y/%m/%d"),
                spec.account,
                spec.region,
                spec.trail,
                spec.region,
                stamp(end, "%Y%m%dT%H%M%SZ"),
            );
            let (pk, ph, ps) = match &previous {
                Some((k, h, s)) => (json!(k), json!(h), json!(s)),
                None => (json!(null), json!(null), json!(null)),
            };
            let digest = json!({
                "awsAccountId": spec.account,
                "digestStartTime": Time(start).to_string(),
                "digestEndTime": Time(end).to_string(),
                "digestS3Bucket": spec.bucket,
                "digestS3Object": digest_key,
                "digestPublicKeyFingerprint": key.fingerprint,
                "digestSignatureAlgorithm": SIGNATURE_ALGORITHM,
                "newestEventTime": newest_all.map(|t| Time(t).to_string()),
                "oldestEventTime": oldest_all.map(|t| Time(t).to_string()),
                "previousDigestS3Bucket": if previous.is_some() { json!(spec.bucket) } else { json!(null) },
                "previousDigestS3Object": pk,
                "previousDigestHashValue": ph,
                "previousDigestHashAlgorithm": if previous.is_some() { json!(HASH_ALGORITHM) } else { json!(null) },
                "previousDigestSignature": ps,
                "logFiles": listed,
            });
            let content = serde_json::to_vec(&digest).unwrap_or_default();
            let sha = sha256_hex(&content);
            let signature = key.sign(
                signing_string(&digest, &sha, previous.as_ref().map(|p| p.2.as_str())).as_bytes(),
            );
            let mut metadata = Metadata::new();
            metadata.insert("signature".into(), signature.clone());
            metadata.insert("signature-algorithm".into(), SIGNATURE_ALGORITHM.into());
            objects.push(TrailObject {
                key: digest_key.clone(),
                bytes: gzip(&content),
                metadata,
                kind: Kind::Digest,
            });
            previous = Some((digest_key, sha, signature));
        }
        Trail { spec, objects }
    }

    pub fn logs(&self) -> impl Iterator<Item = &TrailObject> {
        self.objects.iter().filter(|o| o.kind == Kind::Log)
    }

    pub fn digests(&self) -> impl Iterator<Item = &TrailObject> {
        self.objects.iter().filter(|o| o.kind == Kind::Digest)
    }

    pub fn get(&self, key: &str) -> Option<&TrailObject> {
        self.objects.iter().find(|o| o.key == key)
    }

    /// Write the trail under `dir` as a copy keeps it (`dir/<key>`), without metadata; with
    /// `sidecars`, each digest's metadata as `<digest>.metadata.json` beside it.
    pub fn write_to(&self, dir: &Path, sidecars: bool) -> std::io::Result<()> {
        for o in &self.objects {
            let p = dir.join(&o.key);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&p, &o.bytes)?;
            if sidecars && o.kind == Kind::Digest {
                let mut side = p.into_os_string();
                side.push(SIDECAR_SUFFIX);
                std::fs::write(
                    side,
                    serde_json::to_vec(&json!({ "Metadata": o.metadata }))?,
                )?;
            }
        }
        Ok(())
    }
}

/// The signing string of a digest's JSON (test side: built independently of
/// [`crate::digest::ParsedDigest::signing_string`]).
pub fn signing_string(digest: &serde_json::Value, sha256: &str, previous: Option<&str>) -> String {
    let s = |k: &str| digest[k].as_str().unwrap_or_default().to_owned();
    format!(
        "{}\n{}/{}\n{}\n{}",
        s("digestEndTime"),
        s("digestS3Bucket"),
        s("digestS3Object"),
        sha256,
        previous.unwrap_or("null")
    )
}

/// Re-sign a stored digest with another key (its content unchanged): the signature an
/// attacker without CloudTrail's key could make.
pub fn resign(digest: &TrailObject, key: &TestKey) -> String {
    let content = gunzip(&digest.bytes);
    let v: serde_json::Value = serde_json::from_slice(&content).unwrap_or_default();
    let previous = v["previousDigestSignature"].as_str();
    key.sign(signing_string(&v, &sha256_hex(&content), previous).as_bytes())
}

/// The trail's digests by key (for tests).
pub fn digest_keys(trail: &Trail) -> BTreeMap<i64, String> {
    trail
        .digests()
        .filter_map(|d| crate::layout::digest_time(&d.key).map(|t| (t, d.key.clone())))
        .collect()
}
