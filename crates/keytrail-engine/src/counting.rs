//! What a session fetched from its lake: every request and every byte received, per object,
//! counted by [`crate::store::LakeStore`], so a test, `keytrail sql --stats` or the benchmark
//! can say what a question cost.

use std::collections::BTreeMap;

use serde::Serialize;

/// What was fetched from a remote lake.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IoStats {
    /// Requests as the reader made them: GETs (whole objects and byte ranges) and listings
    /// (one per listing; S3 answers 1,000 keys a page). Retries of a failed request are
    /// object_store's and are not counted again.
    pub requests: u64,
    /// Bytes of the bodies received.
    pub bytes: u64,
    /// Per object, by its path relative to the lake's root.
    pub objects: BTreeMap<String, ObjectIo>,
}

/// Requests to one object and the bytes they received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ObjectIo {
    pub requests: u64,
    pub bytes: u64,
}

impl IoStats {
    /// The objects read under `prefix` (e.g. `events/`), with what they cost.
    pub fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a ObjectIo)> {
        self.objects
            .iter()
            .filter(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), v))
    }

    /// Requests and bytes of the objects under `prefix`.
    pub fn total_under(&self, prefix: &str) -> ObjectIo {
        self.under(prefix)
            .fold(ObjectIo::default(), |acc, (_, o)| ObjectIo {
                requests: acc.requests + o.requests,
                bytes: acc.bytes + o.bytes,
            })
    }
}
