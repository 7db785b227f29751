//! Which events a run keeps: `--key`/`--key-file` and `--since`/`--until`.
//!
//! The spec is stored with every commit of the lake, because "this object was ingested" is
//! only true for the events the run's filter kept. A later run over the same object with
//! another filter writes exactly the events its filter keeps and no earlier filter kept (see
//! `docs/exactly-once.md`).

use std::collections::BTreeSet;

use aho_corasick::AhoCorasick;
use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::time::{Millis, TimeWindow};

/// A filter as stored in the manifest: absolute times, sorted keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterSpec {
    /// Keep only events made with one of these keys or naming one of them in their request
    /// or response; `None` keeps every key (and events made without a key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<BTreeSet<String>>,
    /// Keep events at or after this time (UTC ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Millis>,
    /// Keep events before this time (UTC ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Millis>,
}

impl FilterSpec {
    /// Keeps everything.
    pub fn all() -> FilterSpec {
        FilterSpec::default()
    }

    pub fn is_all(&self) -> bool {
        self.keys.is_none() && self.since.is_none() && self.until.is_none()
    }

    pub fn window(&self) -> TimeWindow {
        TimeWindow {
            since: self.since,
            until: self.until,
        }
    }

    /// Whether every event `other` keeps, `self` keeps too.
    pub fn covers(&self, other: &FilterSpec) -> bool {
        let keys = match (&self.keys, &other.keys) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => theirs.is_subset(mine),
        };
        let since = match (self.since, other.since) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a <= b,
        };
        let until = match (self.until, other.until) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a >= b,
        };
        keys && since && until
    }

    pub fn compile(&self) -> EventFilter {
        let refs = self.keys.as_ref().and_then(|keys| {
            if keys.is_empty() {
                return None;
            }
            AhoCorasick::new(keys.iter()).ok()
        });
        EventFilter {
            spec: self.clone(),
            refs,
        }
    }
}

/// A [`FilterSpec`] ready to test events.
#[derive(Clone, Debug)]
pub struct EventFilter {
    spec: FilterSpec,
    refs: Option<AhoCorasick>,
}

impl EventFilter {
    pub fn spec(&self) -> &FilterSpec {
        &self.spec
    }

    pub fn matches(&self, e: &Event<'_>) -> bool {
        if !self.spec.window().contains(e.event_time) {
            return false;
        }
        let Some(keys) = &self.spec.keys else {
            return true;
        };
        if e.access_key_id().is_some_and(|k| keys.contains(k)) {
            return true;
        }
        // Events about the key (its creation, deactivation, deletion) name it in their
        // request or response; a responder needs those too.
        let Some(ac) = &self.refs else { return false };
        [&e.request_parameters, &e.response_elements]
            .into_iter()
            .flatten()
            .any(|text| ac.is_match(text.as_ref()))
    }
}

/// The filter of this run minus those of earlier runs over the same object: an event is
/// written when `current` keeps it and no earlier filter did.
#[derive(Clone, Debug)]
pub struct Difference {
    current: EventFilter,
    earlier: Vec<EventFilter>,
}

impl Difference {
    pub fn new(current: EventFilter, earlier: &[FilterSpec]) -> Difference {
        Difference {
            current,
            earlier: earlier.iter().map(FilterSpec::compile).collect(),
        }
    }

    /// Whether an earlier filter already kept everything this one keeps.
    pub fn is_empty(&self) -> bool {
        self.earlier
            .iter()
            .any(|e| e.spec.covers(&self.current.spec))
    }

    pub fn matches(&self, e: &Event<'_>) -> Verdict {
        if !self.current.matches(e) {
            Verdict::Filtered
        } else if self.earlier.iter().any(|f| f.matches(e)) {
            Verdict::AlreadyWritten
        } else {
            Verdict::Write
        }
    }
}

/// What happens to one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Write,
    /// The run's filter does not keep it.
    Filtered,
    /// An earlier run over the same object already wrote it.
    AlreadyWritten,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::decode_event;

    fn keys(k: &[&str]) -> Option<BTreeSet<String>> {
        Some(k.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn covers() {
        let all = FilterSpec::all();
        let a = FilterSpec {
            keys: keys(&["AKIAA"]),
            ..FilterSpec::default()
        };
        let ab = FilterSpec {
            keys: keys(&["AKIAA", "AKIAB"]),
            ..FilterSpec::default()
        };
        let late = FilterSpec {
            since: Some(100),
            ..FilterSpec::default()
        };
        assert!(all.covers(&a) && all.covers(&late) && all.covers(&all));
        assert!(ab.covers(&a) && !a.covers(&ab) && !a.covers(&all));
        assert!(!late.covers(&all));
        let later = FilterSpec {
            since: Some(200),
            until: Some(300),
            ..FilterSpec::default()
        };
        assert!(late.covers(&later) && !later.covers(&late));
    }

    #[test]
    fn key_filter_keeps_calls_made_with_and_about_the_key() {
        let f = FilterSpec {
            keys: keys(&["AKIAIOSFODNN7EXAMPLE"]),
            ..FilterSpec::default()
        }
        .compile();
        let made = decode_event(r#"{"eventTime":"2024-01-01T00:00:00Z","userIdentity":{"accessKeyId":"AKIAIOSFODNN7EXAMPLE"}}"#).expect("e");
        let about = decode_event(r#"{"eventTime":"2024-01-01T00:00:00Z","eventName":"UpdateAccessKey","requestParameters":{"accessKeyId":"AKIAIOSFODNN7EXAMPLE","status":"Inactive"}}"#).expect("e");
        let other = decode_event(
            r#"{"eventTime":"2024-01-01T00:00:00Z","userIdentity":{"accessKeyId":"AKIAOTHER"}}"#,
        )
        .expect("e");
        assert!(f.matches(&made) && f.matches(&about) && !f.matches(&other));
    }

    #[test]
    fn difference_writes_only_what_no_earlier_filter_kept() {
        let earlier = FilterSpec {
            keys: keys(&["AKIAA"]),
            ..FilterSpec::default()
        };
        let now = FilterSpec {
            keys: keys(&["AKIAA", "AKIAB"]),
            ..FilterSpec::default()
        };
        let d = Difference::new(now.compile(), std::slice::from_ref(&earlier));
        assert!(!d.is_empty());
        let a = decode_event(
            r#"{"eventTime":"2024-01-01T00:00:00Z","userIdentity":{"accessKeyId":"AKIAA"}}"#,
        )
        .expect("a");
        let b = decode_event(
            r#"{"eventTime":"2024-01-01T00:00:00Z","userIdentity":{"accessKeyId":"AKIAB"}}"#,
        )
        .expect("b");
        let c = decode_event(
            r#"{"eventTime":"2024-01-01T00:00:00Z","userIdentity":{"accessKeyId":"AKIAC"}}"#,
        )
        .expect("c");
        assert_eq!(d.matches(&a), Verdict::AlreadyWritten);
        assert_eq!(d.matches(&b), Verdict::Write);
        assert_eq!(d.matches(&c), Verdict::Filtered);
        let same = Difference::new(earlier.compile(), std::slice::from_ref(&earlier));
        assert!(same.is_empty());
    }
}
