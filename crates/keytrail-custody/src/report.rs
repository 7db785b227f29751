//! What a validation found: one row per digest and per log file, counts per status with the
//! time each status covers, and notes.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

/// A UTC time (ms), shown as RFC 3339 (`2024-11-30T08:01:31Z`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub i64);

impl std::fmt::Display for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use chrono::TimeZone as _;
        match chrono::Utc.timestamp_millis_opt(self.0).single() {
            Some(t) if self.0 % 1000 == 0 => write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%SZ")),
            Some(t) => write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%S%.3fZ")),
            None => write!(f, "{}", self.0),
        }
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What a row is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Subject {
    Digest,
    LogFile,
}

impl Subject {
    pub fn as_str(self) -> &'static str {
        match self {
            Subject::Digest => "digest",
            Subject::LogFile => "log-file",
        }
    }
}

/// How bad a status is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    Ok,
    /// Not proven, for a reason that is not evidence of tampering (exit status 0).
    Warning,
    /// Evidence that the copy is not what CloudTrail delivered, or could not be checked
    /// (exit status 1).
    Failure,
}

/// The status of a digest or a log file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Digest: signed by a CloudTrail key valid at the time, consistent with its neighbours in
    /// the chain. Log file: its SHA-256 is the one such a digest lists.
    Valid,
    /// Digest: its signature is not in this copy (the newest digest of a local copy, without a
    /// saved sidecar, nor a later digest recording it).
    SignatureUnavailable,
    /// Digest: no public keys were given, so the signature was not checked.
    SignatureNotChecked,
    /// Log file: its hash matches its digest, but that digest is not proven.
    Unverified,
    /// Log file: delivered after the newest digest of its account and region in this copy;
    /// the digest that will list it is not in the copy.
    AfterLastDigest,
    /// Not in this copy, and outside `--since`/`--until`.
    OutsideWindow,
    /// Log file: its SHA-256 differs from the one its digest lists (or it is no longer gzip).
    Modified,
    /// Listed by a digest (a log file), or named by the next digest (a digest), and absent.
    Missing,
    /// Log file: in the window, and no digest lists it.
    NotCovered,
    /// Digest: its content or signature is not what the next digest records for it.
    ChainBroken,
    /// Digest: the signature does not verify.
    SignatureInvalid,
    /// Digest: signed by a key whose fingerprint is not among the public keys.
    UnknownKey,
    /// Digest: signed by a key outside the key's validity window.
    KeyOutOfWindow,
    /// Digest: not a digest file (not gzip, not JSON, wrong types, moved, unknown algorithm).
    Invalid,
    /// Could not be read (I/O, network, over the size limit).
    Unreadable,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Valid => "valid",
            Status::SignatureUnavailable => "signature-unavailable",
            Status::SignatureNotChecked => "signature-not-checked",
            Status::Unverified => "unverified",
            Status::AfterLastDigest => "after-last-digest",
            Status::OutsideWindow => "outside-window",
            Status::Modified => "modified",
            Status::Missing => "missing",
            Status::NotCovered => "not-covered",
            Status::ChainBroken => "chain-broken",
            Status::SignatureInvalid => "signature-invalid",
            Status::UnknownKey => "unknown-key",
            Status::KeyOutOfWindow => "key-out-of-window",
            Status::Invalid => "invalid",
            Status::Unreadable => "unreadable",
        }
    }

    /// In words, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Status::Valid => "valid",
            Status::SignatureUnavailable => "signature not available in this copy",
            Status::SignatureNotChecked => "signature not checked (no --public-keys)",
            Status::Unverified => "hash matches an unproven digest",
            Status::AfterLastDigest => "delivered after the newest digest in this copy",
            Status::OutsideWindow => "not in this copy, outside the window",
            Status::Modified => "modified",
            Status::Missing => "missing",
            Status::NotCovered => "not covered by any digest",
            Status::ChainBroken => "chain broken",
            Status::SignatureInvalid => "signature invalid",
            Status::UnknownKey => "signed by an unknown key",
            Status::KeyOutOfWindow => "signed by a key outside its validity window",
            Status::Invalid => "not a valid digest file",
            Status::Unreadable => "could not be read",
        }
    }

    pub fn level(self) -> Level {
        match self {
            Status::Valid => Level::Ok,
            Status::SignatureUnavailable
            | Status::SignatureNotChecked
            | Status::Unverified
            | Status::AfterLastDigest
            | Status::OutsideWindow => Level::Warning,
            Status::Modified
            | Status::Missing
            | Status::NotCovered
            | Status::ChainBroken
            | Status::SignatureInvalid
            | Status::UnknownKey
            | Status::KeyOutOfWindow
            | Status::Invalid
            | Status::Unreadable => Level::Failure,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One digest or log file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    pub subject: Subject,
    pub status: Status,
    /// The object as keytrail names objects: a path, or `s3://bucket/key` (for an absent
    /// object, the location the digest names).
    pub object: String,
    /// The time the object covers: a digest's start and end; a log file's oldest and newest
    /// event as its digest lists them, else its delivery time.
    pub from: Option<Time>,
    pub to: Option<Time>,
    /// For a log file: the digest that lists it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Why, in words.
    pub detail: String,
    /// xxh3-128 of the stored bytes that were checked (`xxh3:<hex>`), as `keytrail ingest`
    /// records them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_hash: Option<String>,
}

/// How many rows have one status, and the time they cover.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Count {
    pub subject: Subject,
    pub status: Status,
    pub level: Level,
    pub count: u64,
    pub earliest: Option<Time>,
    pub latest: Option<Time>,
}

/// The outcome of a validation.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// The stores validated, as named.
    pub stores: Vec<String>,
    pub since: Option<Time>,
    pub until: Option<Time>,
    /// Public keys given (0: signatures were not checked).
    pub public_keys: usize,
    /// Digest and log-file rows.
    pub digests: u64,
    pub log_files: u64,
    /// Nothing at failure level.
    pub passed: bool,
    pub failures: u64,
    pub warnings: u64,
    pub counts: Vec<Count>,
    /// Facts worth knowing that are not rows: gaps in a chain, limits of what was proven.
    pub notes: Vec<String>,
    pub rows: Vec<Row>,
}

impl Report {
    /// Sort the rows (failures first, then warnings, then by object) and compute the counts.
    pub fn finish(&mut self) {
        self.rows.sort_by(|a, b| {
            (
                std::cmp::Reverse(a.status.level()),
                a.subject,
                &a.object,
                a.status,
            )
                .cmp(&(
                    std::cmp::Reverse(b.status.level()),
                    b.subject,
                    &b.object,
                    b.status,
                ))
        });
        let mut counts: BTreeMap<(Subject, Status), Count> = BTreeMap::new();
        for r in &self.rows {
            let c = counts.entry((r.subject, r.status)).or_insert(Count {
                subject: r.subject,
                status: r.status,
                level: r.status.level(),
                count: 0,
                earliest: None,
                latest: None,
            });
            c.count += 1;
            if let Some(t) = r.from.or(r.to) {
                c.earliest = Some(c.earliest.map_or(t, |e| e.min(t)));
            }
            if let Some(t) = r.to.or(r.from) {
                c.latest = Some(c.latest.map_or(t, |l| l.max(t)));
            }
        }
        self.counts = counts.into_values().collect();
        self.digests = self.count(Subject::Digest);
        self.log_files = self.count(Subject::LogFile);
        self.failures = self.at(Level::Failure);
        self.warnings = self.at(Level::Warning);
        self.passed = self.failures == 0;
    }

    fn count(&self, subject: Subject) -> u64 {
        self.rows.iter().filter(|r| r.subject == subject).count() as u64
    }

    fn at(&self, level: Level) -> u64 {
        self.rows
            .iter()
            .filter(|r| r.status.level() == level)
            .count() as u64
    }

    /// The rows of one status, by object name.
    pub fn with_status(&self, subject: Subject, status: Status) -> Vec<&str> {
        self.rows
            .iter()
            .filter(|r| r.subject == subject && r.status == status)
            .map(|r| r.object.as_str())
            .collect()
    }
}
