//! The findings a run reports: those in its window at or above its minimum severity. The
//! detectors hand each finding here as they make it, so findings below the minimum (most of
//! them at info on a large lake) are counted, never held.

use super::{Finding, Severity};

/// Findings kept for the report, and how many were left out for their severity.
#[derive(Debug)]
pub struct Kept {
    min: Severity,
    since: Option<i64>,
    until: Option<i64>,
    findings: Vec<Finding>,
    below: usize,
}

impl Kept {
    /// Keep findings at or above `min` whose first event is in `[since, until)`.
    pub fn new(min: Severity, since: Option<i64>, until: Option<i64>) -> Kept {
        Kept {
            min,
            since,
            until,
            findings: Vec::new(),
            below: 0,
        }
    }

    /// Whether a finding at `severity` would be kept (so one that would not need not be made).
    pub fn wants(&self, severity: Severity) -> bool {
        severity >= self.min
    }

    fn in_window(&self, time: i64) -> bool {
        self.since.is_none_or(|s| time >= s) && self.until.is_none_or(|u| time < u)
    }

    /// Keep `f`, or count it as below the minimum severity; a finding outside the window is
    /// neither.
    pub fn push(&mut self, f: Finding) {
        if !self.in_window(f.time) {
            return;
        }
        if self.wants(f.severity) {
            self.findings.push(f);
        } else {
            self.below += 1;
        }
    }

    /// Count a finding below the minimum severity whose first event is at `time`, not made
    /// because it would not be kept.
    pub fn count_below(&mut self, time: i64) {
        if self.in_window(time) {
            self.below += 1;
        }
    }

    /// The findings kept, in the order they came, and the count of those below the minimum.
    pub fn finish(self) -> (Vec<Finding>, usize) {
        (self.findings, self.below)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Source;

    fn at(time: i64, severity: Severity) -> Finding {
        Finding {
            rule: "r".into(),
            title: "t".into(),
            severity,
            category: "c".into(),
            source: Source::Detector,
            time,
            last: time,
            key: None,
            principal: None,
            account: None,
            source_ip: None,
            reason: String::new(),
            events: vec![format!("e{time}")],
            details: Default::default(),
            tags: Vec::new(),
        }
    }

    #[test]
    fn keeps_the_window_at_or_above_the_minimum_and_counts_the_rest_of_the_window() {
        let mut k = Kept::new(Severity::Low, Some(10), Some(20));
        for (t, s) in [
            (9, Severity::High),
            (10, Severity::Low),
            (11, Severity::Info),
            (15, Severity::Critical),
            (19, Severity::Info),
            (20, Severity::High),
        ] {
            k.push(at(t, s));
        }
        k.count_below(9);
        k.count_below(12);
        k.count_below(20);
        let (kept, below) = k.finish();
        let times: Vec<(i64, Severity)> = kept.iter().map(|f| (f.time, f.severity)).collect();
        assert_eq!(times, vec![(10, Severity::Low), (15, Severity::Critical)]);
        assert_eq!(below, 3);
    }
}
