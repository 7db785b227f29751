//! The validation: read every digest, check its signature and its place in the chain, hash
//! every log file it lists, and find the log files no digest lists.
//!
//! A digest's signature comes from the store's metadata (S3), else from a sidecar saved with
//! the copy, else from the next digest's `previousDigestSignature` (a local copy keeps no
//! metadata, but each digest records the signature of the one before it). Whatever its source,
//! a signature is only trusted once it verifies over the digest's content with a CloudTrail
//! public key valid at the digest's end time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rsa::sha2::Sha256;

use crate::digest::{HASH_ALGORITHM, ParsedDigest, SIGNATURE_ALGORITHM, parse_time};
use crate::error::{CustodyError, ReadError};
use crate::hash::{self, Hashed};
use crate::keys::{KeyLookup, PublicKeys};
use crate::layout::{self, Kind, SIDECAR_SUFFIX};
use crate::report::{Report, Row, Status, Subject, Time};
use crate::store::{Metadata, ObjectStore, Scope, StoredObject, parse_sidecar};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// What to validate and how.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// Check log files delivered at or after this time (UTC ms) and the digests that cover them.
    pub since: Option<i64>,
    /// ... and before this time.
    pub until: Option<i64>,
    /// CloudTrail's public keys; `None`: signatures are not checked (hashes and the chain are).
    pub keys: Option<PublicKeys>,
    /// Only these accounts (by the objects' names); empty: all.
    pub accounts: Vec<String>,
    /// Only these regions; empty: all.
    pub regions: Vec<String>,
    /// Objects read at once.
    pub workers: usize,
    /// Largest digest, decompressed.
    pub max_digest_bytes: u64,
    /// Largest log file, decompressed (a larger one is `unreadable`, never read whole).
    pub max_log_bytes: u64,
    /// A log file delivered less than this before the newest digest of its account and region
    /// may belong to the next digest: unlisted, it is `after-last-digest`, not `not-covered`.
    pub grace_ms: i64,
    /// Attempts to read an object when the store fails (not when its content is bad).
    pub read_attempts: u32,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            since: None,
            until: None,
            keys: None,
            accounts: Vec::new(),
            regions: Vec::new(),
            workers: std::thread::available_parallelism().map_or(2, usize::from),
            max_digest_bytes: 256 << 20,
            max_log_bytes: 1 << 30,
            grace_ms: 15 * 60_000,
            read_attempts: 3,
        }
    }
}

impl VerifyOptions {
    fn in_window(&self, t: Option<i64>) -> bool {
        match t {
            Some(t) => self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u),
            None => true,
        }
    }

    /// A digest covering `[start, end]` matters to the window: log files delivered in the
    /// window are listed by digests that end after `since` and start before `until` (plus the
    /// grace: a file named before `until` can be delivered just after it).
    fn digest_in_window(&self, start: i64, end: i64) -> bool {
        self.since.is_none_or(|s| end > s)
            && self
                .until
                .is_none_or(|u| start < u.saturating_add(self.grace_ms))
    }

    fn wanted(&self, key: &str) -> bool {
        if self.accounts.is_empty() && self.regions.is_empty() {
            return true;
        }
        match layout::account_region(key) {
            Some((a, r)) => {
                (self.accounts.is_empty() || self.accounts.iter().any(|x| x == a))
                    && (self.regions.is_empty() || self.regions.iter().any(|x| x == r))
            }
            None => false,
        }
    }
}

/// One object of one store.
struct Obj {
    store: usize,
    object: StoredObject,
    kind: Kind,
}

/// Every object of every store, found by the key CloudTrail gave it.
struct Index {
    objs: Vec<Obj>,
    by_key: HashMap<String, usize>,
    by_name: HashMap<String, Vec<usize>>,
}

impl Index {
    fn new(objs: Vec<Obj>) -> Index {
        let mut by_key = HashMap::new();
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, o) in objs.iter().enumerate() {
            by_key
                .entry(layout::trail_key(&o.object.key).to_owned())
                .or_insert(i);
            by_name
                .entry(layout::file_name(&o.object.key).to_owned())
                .or_default()
                .push(i);
        }
        Index {
            objs,
            by_key,
            by_name,
        }
    }

    /// Find the object a digest names by its S3 key: at its place in CloudTrail's layout, or
    /// (the second value `true`) by its unique file name elsewhere; a gunzipped copy
    /// (`.json`) stands for `.json.gz`.
    fn find(&self, key: &str) -> Option<(usize, bool)> {
        let tk = layout::trail_key(key);
        let gunzipped = tk.strip_suffix(".gz");
        if let Some(i) = self
            .by_key
            .get(tk)
            .or_else(|| gunzipped.and_then(|g| self.by_key.get(g)))
        {
            return Some((*i, false));
        }
        let name = layout::file_name(key);
        let one = |n: &str| match self.by_name.get(n).map(Vec::as_slice) {
            Some([i]) => Some(*i),
            _ => None,
        };
        one(name)
            .or_else(|| name.strip_suffix(".gz").and_then(one))
            .map(|i| (i, true))
    }
}

/// Run `f` over `items` on `workers` threads; results in the items' order.
fn par_map<T: Sync, R: Send>(items: &[T], workers: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let done = Mutex::new(Vec::with_capacity(items.len()));
    let workers = workers.clamp(1, items.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    mine.push((i, f(item)));
                }
                if let Ok(mut d) = done.lock() {
                    d.extend(mine);
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_default();
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// Where a digest's signature came from.
#[derive(Clone, Debug)]
enum SigSource {
    Metadata,
    Sidecar(String),
    Next(String),
}

impl std::fmt::Display for SigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SigSource::Metadata => f.write_str("the object's S3 metadata"),
            SigSource::Sidecar(s) => write!(f, "the sidecar {s}"),
            SigSource::Next(n) => write!(f, "previousDigestSignature of {n}"),
        }
    }
}

#[derive(Clone, Debug)]
struct Sig {
    hex: String,
    algorithm: Option<String>,
    source: SigSource,
}

/// A digest object after reading.
struct DigestRead {
    obj: usize,
    parsed: Result<(ParsedDigest, Hashed), (Status, String)>,
    own_sig: Option<Sig>,
    notes: Vec<String>,
}

fn with_retries<T>(
    attempts: u32,
    mut f: impl FnMut() -> Result<T, ReadError>,
) -> Result<T, ReadError> {
    let attempts = attempts.max(1);
    let mut n = 1;
    loop {
        match f() {
            Err(ReadError::Io(e)) if n < attempts => {
                tracing::debug!(attempt = n, "read failed, trying again: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100 << n.min(5)));
                n += 1;
            }
            other => return other,
        }
    }
}

fn signature_of(meta: &Metadata, source: SigSource) -> Option<Sig> {
    meta.get("signature").map(|s| Sig {
        hex: s.trim().to_owned(),
        algorithm: meta.get("signature-algorithm").cloned(),
        source,
    })
}

fn read_digest(
    stores: &[&dyn ObjectStore],
    index: &Index,
    i: usize,
    opts: &VerifyOptions,
) -> DigestRead {
    let o = &index.objs[i];
    let store = stores[o.store];
    let mut notes = Vec::new();
    let read = with_retries(opts.read_attempts, || {
        hash::read_content(store.open(&o.object)?, opts.max_digest_bytes)
    });
    let parsed = match read {
        Ok((content, hashed)) => ParsedDigest::parse(&content)
            .map(|p| (p, hashed))
            .map_err(|e| (Status::Invalid, e.to_string())),
        Err(e @ ReadError::Gzip(_)) => Err((Status::Invalid, e.to_string())),
        Err(e @ ReadError::TooLarge { .. }) => Err((
            Status::Unreadable,
            format!("{e} (a digest; the limit is the largest digest keytrail reads)"),
        )),
        Err(e) => Err((Status::Unreadable, e.to_string())),
    };
    let mut own_sig = match with_retries(opts.read_attempts, || store.metadata(&o.object)) {
        Ok(Some(meta)) => signature_of(&meta, SigSource::Metadata),
        Ok(None) => None,
        Err(e) => {
            notes.push(format!("its metadata could not be read: {e}"));
            None
        }
    };
    if own_sig.is_none() {
        let sidecar = format!("{}{SIDECAR_SUFFIX}", layout::trail_key(&o.object.key));
        if let Some((s, _)) = index.find(&sidecar) {
            let so = &index.objs[s];
            let bytes = with_retries(opts.read_attempts, || {
                hash::read_content(stores[so.store].open(&so.object)?, 1 << 20)
            });
            match bytes
                .map_err(|e| e.to_string())
                .and_then(|(b, _)| parse_sidecar(&b))
            {
                Ok(meta) => {
                    own_sig = signature_of(&meta, SigSource::Sidecar(so.object.display.clone()));
                    if own_sig.is_none() {
                        notes.push(format!(
                            "the sidecar {} holds no `signature`",
                            so.object.display
                        ));
                    }
                }
                Err(e) => notes.push(format!(
                    "the sidecar {} is unreadable: {e}",
                    so.object.display
                )),
            }
        }
    }
    DigestRead {
        obj: i,
        parsed,
        own_sig,
        notes,
    }
}

/// The rank of a digest problem: the highest names the row.
fn rank(s: Status) -> u8 {
    match s {
        Status::Invalid | Status::Unreadable => 9,
        Status::Missing => 8,
        Status::SignatureInvalid => 7,
        Status::UnknownKey => 6,
        Status::KeyOutOfWindow => 5,
        Status::ChainBroken => 4,
        Status::SignatureUnavailable => 3,
        Status::SignatureNotChecked => 2,
        _ => 0,
    }
}

/// Validate the trail (or copies of it) held by `stores`.
pub fn verify(stores: &[&dyn ObjectStore], opts: &VerifyOptions) -> Result<Report, CustodyError> {
    // List a day more on each side: a digest lists files of the day folder before its own,
    // and the digest after the window records the signature of the last one in it.
    let scope = Scope {
        since: opts.since.map(|s| s.saturating_sub(DAY)),
        until: opts.until.map(|u| u.saturating_add(DAY)),
    };
    let mut objs = Vec::new();
    for (s, store) in stores.iter().enumerate() {
        for object in store.list(&scope)? {
            let kind = layout::classify(&object.key);
            if kind != Kind::Other && !opts.wanted(&object.key) {
                continue;
            }
            objs.push(Obj {
                store: s,
                object,
                kind,
            });
        }
    }
    let index = Index::new(objs);
    tracing::info!(objects = index.objs.len(), "listed");

    // Read every digest.
    let digest_objs: Vec<usize> = (0..index.objs.len())
        .filter(|i| index.objs[*i].kind == Kind::Digest)
        .collect();
    let digests: Vec<DigestRead> = par_map(&digest_objs, opts.workers, |i| {
        read_digest(stores, &index, *i, opts)
    });
    let by_obj: HashMap<usize, usize> = digests
        .iter()
        .enumerate()
        .map(|(d, r)| (r.obj, d))
        .collect();
    let display = |d: usize| index.objs[digests[d].obj].object.display.clone();
    // Digests are named by their file name in details (CloudTrail makes it unique).
    let short = |d: usize| layout::file_name(&index.objs[digests[d].obj].object.key).to_owned();

    // Link each digest to the one before it.
    let mut next_of: Vec<Vec<usize>> = vec![Vec::new(); digests.len()];
    let mut missing: BTreeMap<String, (Option<i64>, Vec<usize>)> = BTreeMap::new();
    let mut outside_before = 0u64;
    for (d, r) in digests.iter().enumerate() {
        let Ok((p, _)) = &r.parsed else { continue };
        let Some(prev_key) = &p.digest.previous_digest_s3_object else {
            continue;
        };
        match index.find(prev_key).and_then(|(o, _)| by_obj.get(&o)) {
            Some(&pd) => next_of[pd].push(d),
            None => {
                let end = layout::digest_time(prev_key);
                if !opts.digest_in_window(p.start, p.end) {
                    continue;
                }
                if opts.since.is_some_and(|s| end.is_some_and(|e| e <= s)) {
                    outside_before += 1;
                    continue;
                }
                let bucket = p
                    .digest
                    .previous_digest_s3_bucket
                    .as_deref()
                    .unwrap_or(&p.digest.digest_s3_bucket);
                missing
                    .entry(format!("s3://{bucket}/{prev_key}"))
                    .or_insert((end, Vec::new()))
                    .1
                    .push(d);
            }
        }
    }

    let mut report = Report {
        stores: stores.iter().map(|s| s.name()).collect(),
        since: opts.since.map(Time),
        until: opts.until.map(Time),
        public_keys: opts.keys.as_ref().map_or(0, PublicKeys::len),
        ..Report::default()
    };

    // Judge each digest.
    let mut status: Vec<Status> = vec![Status::Valid; digests.len()];
    let mut reported: Vec<bool> = vec![false; digests.len()];
    for (d, r) in digests.iter().enumerate() {
        let o = &index.objs[r.obj];
        let (p, hashed) = match &r.parsed {
            Ok(x) => x,
            Err((s, detail)) => {
                status[d] = *s;
                let end = layout::digest_time(&o.object.key);
                reported[d] = end.is_none_or(|e| opts.digest_in_window(e - HOUR, e));
                if reported[d] {
                    report.rows.push(Row {
                        subject: Subject::Digest,
                        status: *s,
                        object: o.object.display.clone(),
                        from: end.map(|e| Time(e - HOUR)),
                        to: end.map(Time),
                        digest: None,
                        detail: detail.clone(),
                        stored_hash: None,
                    });
                }
                continue;
            }
        };
        let mut issues: Vec<(Status, String)> = Vec::new();
        let mut good: Vec<String> = Vec::new();
        // Where it is must be where it says it is.
        let here = layout::trail_key(&o.object.key);
        let says = &p.digest.digest_s3_object;
        let placed = if here.starts_with("AWSLogs/") {
            layout::trail_key(says) == here
        } else {
            layout::file_name(says) == layout::file_name(here)
        };
        if !placed {
            issues.push((
                Status::Invalid,
                format!("it is the digest of {says}, stored under another name (moved or renamed)"),
            ));
        }
        // Its signature: its own, else what the next digest records.
        let from_next = next_of[d].iter().find_map(|&n| match &digests[n].parsed {
            Ok((np, _)) => np.previous_signature().map(|s| Sig {
                hex: s.to_owned(),
                algorithm: None,
                source: SigSource::Next(short(n)),
            }),
            Err(_) => None,
        });
        let sig = r.own_sig.clone().or(from_next);
        match (&sig, &opts.keys) {
            (None, _) => issues.push((
                Status::SignatureUnavailable,
                if next_of[d].is_empty() {
                    "signature not available in this copy: no S3 metadata, no sidecar, and no later digest in this copy names it as its previous digest".to_owned()
                } else {
                    "signature not available in this copy: no S3 metadata, no sidecar, and the digest after it records none".to_owned()
                },
            )),
            (Some(_), None) => issues.push((
                Status::SignatureNotChecked,
                "no public keys were given (--public-keys)".to_owned(),
            )),
            (Some(sig), Some(keys)) => {
                let fp = &p.digest.digest_public_key_fingerprint;
                if let Some(a) = sig.algorithm.as_deref().filter(|a| *a != SIGNATURE_ALGORITHM) {
                    issues.push((
                        Status::SignatureInvalid,
                        format!("signature-algorithm is `{a}`, not {SIGNATURE_ALGORITHM} ({})", sig.source),
                    ));
                }
                match keys.lookup(fp, p.end) {
                    KeyLookup::Unknown => issues.push((
                        Status::UnknownKey,
                        format!("its key {fp} is not among the {} public keys given", keys.len()),
                    )),
                    KeyLookup::OutOfWindow(k) => issues.push((
                        Status::KeyOutOfWindow,
                        format!(
                            "its key {fp} signed from {} to {}, not at {}",
                            k.valid_from.map_or("the start".to_owned(), |t| Time(t).to_string()),
                            k.valid_until.map_or("now".to_owned(), |t| Time(t).to_string()),
                            p.digest.digest_end_time
                        ),
                    )),
                    KeyLookup::Found(k) => {
                        let message = p.signing_string(&hashed.sha256);
                        let verified = data_encoding::HEXLOWER_PERMISSIVE
                            .decode(sig.hex.as_bytes())
                            .map_err(|e| format!("the signature is not hex: {e}"))
                            .and_then(|bytes| {
                                k.key
                                    .pkcs1v15_verify::<Sha256>(message.as_bytes(), &bytes)
                                    .map_err(|_| {
                                        format!(
                                            "the signature from {} does not verify with key {fp}",
                                            sig.source
                                        )
                                    })
                            });
                        match verified {
                            Ok(()) => good.push(format!(
                                "signed with key {fp} (signature from {})",
                                sig.source
                            )),
                            Err(e) => issues.push((Status::SignatureInvalid, e)),
                        }
                    }
                }
            }
        }
        // What the next digest records for it.
        for &n in &next_of[d] {
            let Ok((np, _)) = &digests[n].parsed else {
                continue;
            };
            let recorded = np
                .digest
                .previous_digest_hash_value
                .as_deref()
                .unwrap_or("");
            if !recorded.eq_ignore_ascii_case(&hashed.sha256) {
                issues.push((
                    Status::ChainBroken,
                    format!(
                        "its SHA-256 is {}, but {} records {recorded}",
                        hashed.sha256,
                        short(n)
                    ),
                ));
            }
            if let (Some(own), Some(rec)) = (&r.own_sig, np.previous_signature())
                && !own.hex.eq_ignore_ascii_case(rec)
            {
                issues.push((
                    Status::ChainBroken,
                    format!(
                        "its signature ({}) is not the previousDigestSignature {} records",
                        own.source,
                        short(n)
                    ),
                ));
            }
            if let Some(b) = &np.digest.previous_digest_s3_bucket
                && *b != p.digest.digest_s3_bucket
            {
                issues.push((
                    Status::ChainBroken,
                    format!(
                        "it names bucket {}, but {} records {b}",
                        p.digest.digest_s3_bucket,
                        short(n)
                    ),
                ));
            }
        }
        if p.digest.previous_digest_s3_object.is_none() {
            good.push("the first digest of its chain".to_owned());
        }
        let worst = issues.iter().map(|(s, _)| *s).max_by_key(|s| rank(*s));
        status[d] = worst.unwrap_or(Status::Valid);
        reported[d] = opts.digest_in_window(p.start, p.end);
        if reported[d] {
            let mut detail: Vec<String> = issues.into_iter().map(|(_, t)| t).collect();
            detail.extend(r.notes.iter().cloned());
            if detail.is_empty() {
                detail = good;
            }
            report.rows.push(Row {
                subject: Subject::Digest,
                status: status[d],
                object: o.object.display.clone(),
                from: Some(Time(p.start)),
                to: Some(Time(p.end)),
                digest: None,
                detail: detail.join("; "),
                stored_hash: Some(hashed.stored_hash.clone()),
            });
        }
    }
    // The oldest digest of each chain in the copy: a missing digest older than all of them
    // may only be where the copy starts.
    let mut oldest: HashMap<String, i64> = HashMap::new();
    for r in &digests {
        if let Ok((p, _)) = &r.parsed {
            let e = oldest
                .entry(layout::digest_stream(&index.objs[r.obj].object.key))
                .or_insert(p.start);
            *e = (*e).min(p.start);
        }
    }
    for (object, (end, by)) in &missing {
        let names: Vec<String> = by.iter().map(|&d| short(d)).collect();
        let mut detail = format!("named as the previous digest by {}", names.join(", "));
        let first = by.iter().any(|&d| {
            let stream = layout::digest_stream(&index.objs[digests[d].obj].object.key);
            match (&digests[d].parsed, oldest.get(&stream)) {
                (Ok((p, _)), Some(o)) => p.start <= *o,
                _ => false,
            }
        });
        if let (true, Some(e)) = (first, end) {
            detail.push_str(&format!(
                "; it is older than every digest of its chain in this copy: if the copy starts after it, pass --since {}",
                Time(*e)
            ));
        }
        report.rows.push(Row {
            subject: Subject::Digest,
            status: Status::Missing,
            object: object.clone(),
            from: None,
            to: end.map(Time),
            digest: None,
            detail,
            stored_hash: None,
        });
    }
    if outside_before > 0 {
        report.notes.push(format!(
            "{outside_before} chain(s) continue before --since with a digest not in this copy"
        ));
    }

    // Every log file a digest lists, and what each reported digest asks to check.
    let mut listed: HashSet<usize> = HashSet::new();
    struct Pending<'a> {
        digest: usize,
        entry: &'a crate::digest::LogFileEntry,
        found: Option<(usize, bool)>,
    }
    let mut pending = Vec::new();
    for (d, r) in digests.iter().enumerate() {
        let Ok((p, _)) = &r.parsed else { continue };
        for entry in &p.digest.log_files {
            let found = index.find(&entry.s3_object);
            if let Some((o, _)) = found {
                listed.insert(o);
            }
            if reported[d] {
                pending.push(Pending {
                    digest: d,
                    entry,
                    found,
                });
            }
        }
    }
    let to_hash: Vec<usize> = {
        let mut v: Vec<usize> = pending
            .iter()
            .filter_map(|p| p.found.map(|(o, _)| o))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let hashes: HashMap<usize, Result<Hashed, ReadError>> = to_hash
        .iter()
        .copied()
        .zip(par_map(&to_hash, opts.workers, |&o| {
            let obj = &index.objs[o];
            with_retries(opts.read_attempts, || {
                hash::hash(stores[obj.store].open(&obj.object)?, opts.max_log_bytes)
            })
        }))
        .collect();
    for p in pending {
        let e = p.entry;
        let digest_name = short(p.digest);
        let delivered = layout::log_time(&e.s3_object);
        let from = e
            .oldest_event_time
            .as_deref()
            .and_then(parse_time)
            .or(delivered)
            .map(Time);
        let to = e
            .newest_event_time
            .as_deref()
            .and_then(parse_time)
            .or(delivered)
            .map(Time);
        let mut row = Row {
            subject: Subject::LogFile,
            status: Status::Valid,
            object: format!("s3://{}/{}", e.s3_bucket, e.s3_object),
            from,
            to,
            digest: Some(display(p.digest)),
            detail: String::new(),
            stored_hash: None,
        };
        let Some((o, by_name)) = p.found else {
            if opts.in_window(delivered) {
                row.status = Status::Missing;
                row.detail = format!("listed by {digest_name}, not in this copy");
            } else {
                row.status = Status::OutsideWindow;
                row.detail = format!(
                    "listed by {digest_name}; not in this copy, delivered outside --since/--until"
                );
            }
            report.rows.push(row);
            continue;
        };
        row.object = index.objs[o].object.display.clone();
        match hashes.get(&o) {
            Some(Ok(h)) => {
                row.stored_hash = Some(h.stored_hash.clone());
                if !e.hash_algorithm.eq_ignore_ascii_case(HASH_ALGORITHM) {
                    row.status = Status::Unreadable;
                    row.detail = format!(
                        "{digest_name} lists it with hashAlgorithm `{}`; CloudTrail uses {HASH_ALGORITHM}",
                        e.hash_algorithm
                    );
                } else if !h.sha256.eq_ignore_ascii_case(e.hash_value.trim()) {
                    row.status = Status::Modified;
                    row.detail = format!(
                        "the SHA-256 of its content is {}; {digest_name} lists {}",
                        h.sha256, e.hash_value
                    );
                } else if status[p.digest] == Status::Valid {
                    row.detail = format!("SHA-256 as listed by {digest_name}");
                } else {
                    row.status = Status::Unverified;
                    row.detail = format!(
                        "SHA-256 as listed by {digest_name}, whose status is {}",
                        status[p.digest]
                    );
                }
            }
            Some(Err(ReadError::NotFound)) => {
                row.status = Status::Missing;
                row.detail = format!("listed by {digest_name}; gone while it was checked");
            }
            Some(Err(err @ ReadError::Gzip(_))) => {
                row.status = Status::Modified;
                row.detail = format!("no longer the gzip CloudTrail delivered: {err}");
            }
            Some(Err(err)) => {
                row.status = Status::Unreadable;
                row.detail = err.to_string();
            }
            None => {
                row.status = Status::Unreadable;
                row.detail = "internal: not read".to_owned();
            }
        }
        if by_name {
            row.detail
                .push_str(" (found by its name, not at its place in CloudTrail's layout)");
        }
        report.rows.push(row);
    }

    // Log files no digest lists.
    let mut spans: HashMap<(String, String), (i64, i64)> = HashMap::new();
    for r in &digests {
        let Ok((p, _)) = &r.parsed else { continue };
        let Some((a, g)) = layout::account_region(&index.objs[r.obj].object.key) else {
            continue;
        };
        let span = spans
            .entry((a.to_owned(), g.to_owned()))
            .or_insert((p.start, p.end));
        span.0 = span.0.min(p.start);
        span.1 = span.1.max(p.end);
    }
    for (o, obj) in index.objs.iter().enumerate() {
        if obj.kind != Kind::Log || listed.contains(&o) {
            continue;
        }
        let delivered = layout::log_time(&obj.object.key);
        if delivered.is_none() && (opts.since.is_some() || opts.until.is_some()) {
            continue;
        }
        if !opts.in_window(delivered) {
            continue;
        }
        let (account, region) = layout::account_region(&obj.object.key).unwrap_or(("?", "?"));
        let span = spans.get(&(account.to_owned(), region.to_owned()));
        let (status, detail) = match (span, delivered) {
            (None, _) => (
                Status::NotCovered,
                format!("no digest of account {account}, region {region} is in this copy"),
            ),
            (Some((_, newest)), Some(t)) if t >= newest - opts.grace_ms => (
                Status::AfterLastDigest,
                format!(
                    "delivered at the end of or after the newest digest of {account} {region} in this copy (ends {}); the digest that lists it is not in the copy",
                    Time(*newest)
                ),
            ),
            (Some((oldest, _)), Some(t)) if t < *oldest => (
                Status::NotCovered,
                format!(
                    "delivered before the oldest digest of {account} {region} in this copy (starts {}); if the copy starts there, pass --since {}",
                    Time(*oldest),
                    Time(*oldest)
                ),
            ),
            _ => (Status::NotCovered, "no digest lists it".to_owned()),
        };
        report.rows.push(Row {
            subject: Subject::LogFile,
            status,
            object: obj.object.display.clone(),
            from: delivered.map(Time),
            to: delivered.map(Time),
            digest: None,
            detail,
            stored_hash: None,
        });
    }

    // Notes: gaps in the chains, and the limits of the run.
    let mut streams: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (d, r) in digests.iter().enumerate() {
        if r.parsed.is_ok() && reported[d] {
            streams
                .entry(layout::digest_stream(&index.objs[r.obj].object.key))
                .or_default()
                .push(d);
        }
    }
    for ds in streams.values_mut() {
        ds.sort_by_key(|&d| digests[d].parsed.as_ref().map_or(0, |(p, _)| p.end));
        for w in ds.windows(2) {
            let (Ok((a, _)), Ok((b, _))) = (&digests[w[0]].parsed, &digests[w[1]].parsed) else {
                continue;
            };
            if b.digest.previous_digest_s3_object.is_none() {
                report.notes.push(format!(
                    "the chain restarts at {} (its previous digest is null): no digest covers {} to {}; CloudTrail logging or log file validation was off",
                    short(w[1]),
                    Time(a.end),
                    Time(b.start)
                ));
            }
        }
    }
    if digests.is_empty() {
        report.notes.push(
            "no digest files were found: nothing could be proven (is log file validation on for the trail? were its CloudTrail-Digest folders copied?)".to_owned(),
        );
    }
    if opts.keys.is_none() && !digests.is_empty() {
        report.notes.push(
            "no --public-keys: the hashes and the chain were checked, the signatures were not, so nothing proves the digests came from CloudTrail".to_owned(),
        );
    }
    report.finish();
    Ok(report)
}
