//! Tying validation to the work: which ingested objects a valid digest chain vouched for.
//!
//! `keytrail ingest --verify-logs` validates first, then records for each object it reads the
//! status the validation gave the very bytes it read ([`Coverage::status_of`]: the xxh3 of the
//! stored bytes must be the one the validation hashed). A reader of the lake then counts, for a
//! set of source objects (a timeline's `sourceobject`s), how many were covered
//! ([`source_coverage`]).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::report::{Report, Status, Subject};

/// What `status_of` says of an object the validation did not look at.
pub const NOT_CHECKED: &str = "not-checked";
/// What `status_of` says of an object whose bytes differ from the ones validated.
pub const CHANGED: &str = "changed-after-validation";
/// The status of an object a valid digest chain covers.
pub const COVERED: &str = "valid";

/// The validation's verdict on each log file, by object name.
#[derive(Clone, Debug, Default)]
pub struct Coverage {
    by_object: HashMap<String, (Status, Option<String>)>,
}

impl Coverage {
    /// The log-file rows of a report (when a file has several, the worst).
    pub fn from_report(report: &Report) -> Coverage {
        let mut by_object: HashMap<String, (Status, Option<String>)> = HashMap::new();
        for r in report.rows.iter().filter(|r| r.subject == Subject::LogFile) {
            let e = by_object
                .entry(r.object.clone())
                .or_insert((r.status, r.stored_hash.clone()));
            if r.status.level() > e.0.level() {
                *e = (r.status, r.stored_hash.clone());
            }
        }
        Coverage { by_object }
    }

    /// The status of an object (named as keytrail names objects: a path or `s3://bucket/key`)
    /// whose stored bytes hash to `stored_hash` (`xxh3:<hex>`, as the manifest records it).
    pub fn status_of(&self, object: &str, stored_hash: &str) -> &'static str {
        match self.by_object.get(object) {
            None => NOT_CHECKED,
            Some((_, Some(h))) if h != stored_hash => CHANGED,
            Some((status, _)) => status.as_str(),
        }
    }

    pub fn len(&self) -> usize {
        self.by_object.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_object.is_empty()
    }
}

/// How many of a set of source objects a valid digest chain covered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SourceCoverage {
    /// Distinct source objects.
    pub sources: u64,
    /// Of those, covered by a valid digest chain.
    pub covered: u64,
    /// Every source object by the status recorded for it (`not-checked` when the lake's
    /// manifest records none: ingested without `--verify-logs`, or not found in it).
    pub by_status: BTreeMap<String, u64>,
}

impl std::fmt::Display for SourceCoverage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} source objects were covered by a valid digest chain",
            self.covered, self.sources
        )?;
        let rest: Vec<String> = self
            .by_status
            .iter()
            .filter(|(s, _)| s.as_str() != COVERED)
            .map(|(s, n)| format!("{n} {s}"))
            .collect();
        if !rest.is_empty() {
            write!(f, " ({})", rest.join(", "))?;
        }
        Ok(())
    }
}

/// The name keytrail shows for a manifest source (`file:///path` → `/path`).
pub fn display_name(manifest_source: &str) -> &str {
    manifest_source
        .strip_prefix("file://")
        .unwrap_or(manifest_source)
}

/// Count, for `sources` (object names as in the lake's `sourceobject` column: a path or
/// `s3://bucket/key`), how many a valid digest chain covered, from the manifest's records:
/// `(ObjectRecord.source, ObjectRecord.custody)` pairs of every commit. A source recorded more
/// than once takes its latest record.
pub fn source_coverage<'a>(
    sources: impl IntoIterator<Item = &'a str>,
    records: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> SourceCoverage {
    let mut recorded: HashMap<&str, Option<&str>> = HashMap::new();
    for (source, custody) in records {
        recorded.insert(display_name(source), custody);
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = SourceCoverage::default();
    for s in sources {
        if !seen.insert(s) {
            continue;
        }
        out.sources += 1;
        let status = recorded.get(s).copied().flatten().unwrap_or(NOT_CHECKED);
        if status == COVERED {
            out.covered += 1;
        }
        *out.by_status.entry(status.to_owned()).or_default() += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_counted_once_with_their_latest_record() {
        let records = [
            ("file:///t/a.json.gz", Some("valid")),
            ("s3://b/k1.json.gz", Some("unverified")),
            ("s3://b/k2.json.gz", None),
            ("s3://b/k1.json.gz", Some("valid")),
        ];
        let c = source_coverage(
            [
                "/t/a.json.gz",
                "s3://b/k1.json.gz",
                "s3://b/k2.json.gz",
                "/t/a.json.gz",
                "/elsewhere.json",
            ],
            records.iter().copied(),
        );
        assert_eq!(c.sources, 4);
        assert_eq!(c.covered, 2);
        assert_eq!(c.by_status.get(NOT_CHECKED), Some(&2));
        assert_eq!(
            c.to_string(),
            "2 of 4 source objects were covered by a valid digest chain (2 not-checked)"
        );
    }
}
