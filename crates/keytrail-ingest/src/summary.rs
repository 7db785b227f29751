//! The account of a run: every object and every record, and what became of it.
//!
//! Two identities hold for every run and are checked by the tests:
//! - objects: `seen = read + skipped (every reason) + failed`
//! - records: `read = written + insights + filtered + already_written + skipped`

use std::collections::BTreeMap;
use std::ops::AddAssign;

use serde::Serialize;

use crate::process::SkippedRecord;

/// Record counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EventCounts {
    /// Records found in the objects read.
    pub read: u64,
    /// Rows written to `events`.
    pub written: u64,
    /// Rows written to `insights`.
    pub insights: u64,
    /// Left out by `--key`/`--since`/`--until`.
    pub filtered: u64,
    /// Already in the lake from an earlier run over the same object with another filter.
    pub already_written: u64,
    /// Not readable as events (see `skipped_records_by_reason`).
    pub skipped: u64,
}

impl AddAssign for EventCounts {
    fn add_assign(&mut self, o: EventCounts) {
        self.read += o.read;
        self.written += o.written;
        self.insights += o.insights;
        self.filtered += o.filtered;
        self.already_written += o.already_written;
        self.skipped += o.skipped;
    }
}

impl EventCounts {
    /// Whether every record read is accounted for.
    pub fn balances(&self) -> bool {
        self.read
            == self.written + self.insights + self.filtered + self.already_written + self.skipped
    }
}

/// Why an object was not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    /// The lake already holds it (same name, size and time, or same ETag).
    AlreadyIngested,
    /// Its content is the same as another object's that the lake holds or this run read.
    Duplicate,
    /// A CloudTrail digest file.
    Digest,
    /// Found while walking a directory, but not named like a log file.
    NotALogFile,
    /// The lake holds an earlier, different content under the same name; reading the new
    /// content could double events, so it is left alone (see docs/exactly-once.md).
    Changed,
    /// Outside `--since`/`--until` by its name (S3 day prefixes).
    OutsideWindow,
    /// Another `--shard` takes it.
    OtherShard,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::AlreadyIngested => "already-ingested",
            SkipReason::Duplicate => "duplicate",
            SkipReason::Digest => "digest",
            SkipReason::NotALogFile => "not-a-log-file",
            SkipReason::Changed => "changed",
            SkipReason::OutsideWindow => "outside-window",
            SkipReason::OtherShard => "other-shard",
        }
    }
}

/// An object that could not be read, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub object: String,
    pub reason: String,
    /// Short reason code (`corrupt-gzip`, `not-json`, ...).
    pub code: String,
}

/// An object that was passed over, and why (listed for the reasons a user must see).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skip {
    pub object: String,
    pub reason: SkipReason,
    pub detail: String,
}

/// Object counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ObjectCounts {
    /// Objects found in the inputs.
    pub seen: u64,
    /// Objects read and recorded in the manifest.
    pub read: u64,
    /// Objects passed over, by reason.
    pub skipped: BTreeMap<SkipReason, u64>,
    /// Objects that could not be read.
    pub failed: u64,
}

impl ObjectCounts {
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }

    /// Whether every object seen is accounted for.
    pub fn balances(&self) -> bool {
        self.seen == self.read + self.skipped_total() + self.failed
    }
}

/// The summary of an ingest run, printed at its end (`--json` prints this structure).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunSummary {
    pub run_id: Option<String>,
    pub lake: String,
    /// The manifest sequence number of the run's commit; `None` when nothing was committed.
    pub commit: Option<u64>,
    pub objects: ObjectCounts,
    pub events: EventCounts,
    pub skipped_records_by_reason: BTreeMap<String, u64>,
    /// The first skipped records, with object and record index.
    pub skipped_record_samples: Vec<SkippedRecord>,
    pub failures: Vec<Failure>,
    /// Objects skipped for a reason worth reading (changed content, duplicates).
    pub notable_skips: Vec<Skip>,
    pub files_written: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub elapsed_seconds: f64,
    /// Whether some objects could not be read (exit status 1).
    pub partial: bool,
    /// With `--verify-logs`: the validation of the inputs' CloudTrail digest files, and what
    /// it said of each object this run read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custody: Option<CustodySummary>,
    /// With [`crate::Limits::index_keys`]: each object read and the access keys it holds.
    #[serde(skip)]
    pub key_index: Vec<(crate::ObjectRef, Vec<String>)>,
}

impl RunSummary {
    #[cfg(feature = "run")]
    pub(crate) fn skip(&mut self, object: String, reason: SkipReason, detail: Option<String>) {
        *self.objects.skipped.entry(reason).or_default() += 1;
        if let Some(detail) = detail {
            self.notable_skips.push(Skip {
                object,
                reason,
                detail,
            });
        }
    }

    /// Whether the counts add up.
    pub fn balances(&self) -> bool {
        self.objects.balances() && self.events.balances()
    }
}

/// Progress reporting, implemented by the CLI (a progress bar) or nothing.
pub trait Progress: Send + Sync {
    /// The number of objects and stored bytes the run will look at.
    fn start(&self, _objects: u64, _bytes: u64) {}
    /// One object is done (read, skipped or failed).
    fn object_done(&self, _bytes: u64, _events: u64) {}
    /// A phase of the run begins (`"committing"`).
    fn phase(&self, _name: &str) {}
    fn finish(&self) {}
}

/// No progress reporting.
pub struct NoProgress;

impl Progress for NoProgress {}

/// What `ingest --verify-logs` found, in the run summary.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CustodySummary {
    /// The validation found nothing modified, missing, broken or uncovered.
    pub passed: bool,
    /// Rows of the validation at failure and warning level (`keytrail verify-logs` lists them).
    pub failures: u64,
    pub warnings: u64,
    /// Objects this run read, by the status the validation gave their bytes (`valid`: covered
    /// by a valid digest chain).
    pub read: BTreeMap<String, u64>,
    /// The validation's failures: (status, object), the first 50.
    pub problems: Vec<(keytrail_custody::Status, String)>,
}

impl CustodySummary {
    pub fn new(report: &keytrail_custody::Report) -> CustodySummary {
        CustodySummary {
            passed: report.passed,
            failures: report.failures,
            warnings: report.warnings,
            read: BTreeMap::new(),
            problems: report
                .rows
                .iter()
                .filter(|r| r.status.level() == keytrail_custody::Level::Failure)
                .take(50)
                .map(|r| (r.status, r.object.clone()))
                .collect(),
        }
    }

    /// Objects read that a valid digest chain covered.
    pub fn covered(&self) -> u64 {
        self.read
            .get(keytrail_custody::coverage::COVERED)
            .copied()
            .unwrap_or(0)
    }
}
