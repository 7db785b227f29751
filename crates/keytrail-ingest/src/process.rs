//! One object's bytes → Arrow batches, with every record accounted for.
//!
//! An object is all or nothing: its batches are built only after every record was cut out,
//! so a corrupt object contributes no rows and is tried again by a later run.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use keytrail_model::time::day_of;
use keytrail_model::{
    Difference, Event, EventBatchBuilder, EventError, Table, Verdict, decode_event,
};

use crate::decode::{Shape, Split, decompress, split};
use crate::error::ObjectError;
use crate::source::{NameKind, ObjectRef};
use crate::summary::EventCounts;

/// Limits applied to every object.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest text held whole (bytes): a document without an array of records, one line of
    /// JSON lines, one record. Objects themselves may be of any size.
    pub max_object_bytes: usize,
    /// Objects stored larger than this, or whose text is, are read record by record
    /// ([`crate::stream`]) instead of whole.
    pub stream_above: usize,
    /// Largest single record (bytes of JSON); CloudTrail's own limit is 256 KB.
    pub max_event_bytes: usize,
    /// Also list the distinct access keys each object holds, kept or not (the index that lets
    /// `investigate` re-read only the objects of keys it finds later).
    pub index_keys: bool,
}

impl Limits {
    /// The most text a whole read inflates; past it the object is read record by record.
    pub fn whole_read_bytes(&self) -> usize {
        self.max_object_bytes.min(self.stream_above)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_object_bytes: 1 << 30,
            stream_above: 64 << 20,
            max_event_bytes: 1 << 20,
            index_keys: false,
        }
    }
}

/// A record that was not taken, for the summary.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SkippedRecord {
    pub object: String,
    pub record: u64,
    pub reason: String,
}

/// What reading one object produced.
#[derive(Debug)]
pub struct Decoded {
    pub shape: Shape,
    /// `(table, UTC day, rows)`, one batch per table and day.
    pub batches: Vec<(Table, i32, RecordBatch)>,
    pub counts: EventCounts,
    /// Skipped records by reason code.
    pub skipped_by_reason: BTreeMap<&'static str, u64>,
    /// The first few skipped records, with their index and reason.
    pub skipped_samples: Vec<SkippedRecord>,
    /// With [`Limits::index_keys`]: the distinct access keys of the object's events, sorted.
    pub keys: Vec<String>,
    /// The rows of an object read record by record ([`crate::stream`]) to a spool, kept on
    /// disk until the object was read to its end; `batches` is then empty.
    pub spooled: Option<crate::stream::Spooled>,
    /// The rows of an object read record by record in a run, already written to files of
    /// their own: the run adopts them ([`keytrail_lake::Transaction::adopt`]); dropped, they
    /// are deleted. `batches` is then empty.
    pub staged: Option<keytrail_lake::Scope>,
}

/// One batch of an object's rows for the writer: its table, UTC day, rows, and the bytes of
/// memory it held when it was decoded (what the writer's budget counts; a batch read back
/// from a spool shares one buffer between its columns, which Arrow would count once per
/// column).
pub type Rows = (Table, i32, RecordBatch, usize);

impl Decoded {
    /// Every batch of the object: those held, then those spooled.
    pub fn into_batches(self) -> impl Iterator<Item = Result<Rows, ObjectError>> {
        self.batches
            .into_iter()
            .map(|(t, d, b)| {
                let bytes = b.get_array_memory_size();
                Ok((t, d, b, bytes))
            })
            .chain(self.spooled.into_iter().flatten())
    }
}

/// The `accessKeyId` a request's JSON text names.
fn named_key(request: &str) -> Option<&str> {
    let at = request.find("\"accessKeyId\"")? + "\"accessKeyId\"".len();
    let rest = request[at..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    let end = rest.find('"')?;
    Some(&rest[..end])
}

/// How many skipped records of one object are listed by index in the summary.
const SAMPLES_PER_OBJECT: usize = 5;

/// Decompress, cut and decode one object; `scratch` is a reusable buffer. Fails with
/// [`ObjectError::TooLarge`] when the text passes [`Limits::stream_above`] (or
/// `--max-object-size`, if smaller): such an object is read record by record instead.
pub fn decode_object(
    object: &ObjectRef,
    bytes: &[u8],
    rule: &Difference,
    limits: Limits,
    scratch: &mut Vec<u8>,
) -> Result<Decoded, ObjectError> {
    decompress(bytes, scratch, limits.whole_read_bytes())?;
    let split = split(scratch, limits.max_event_bytes)?;
    let shape = split.shape.unwrap_or(Shape::Event);
    let mut decoded = decode_records(object, split, rule, limits)?;
    decoded.shape = shape;
    Ok(decoded)
}

/// The rows, counts and skipped records of records cut out of an object (all of it, or a
/// stretch of it when it is read record by record). Record numbers in the samples count from
/// the first record of `split`.
pub(crate) fn decode_records(
    object: &ObjectRef,
    split: Split<'_>,
    rule: &Difference,
    limits: Limits,
) -> Result<Decoded, ObjectError> {
    let shape = split.shape.unwrap_or(Shape::Event);
    let display = object.display();
    let insight_file = object.name_kind() == NameKind::Insight;

    let mut counts = EventCounts {
        read: split.total(),
        ..EventCounts::default()
    };
    let mut skipped_by_reason: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut skipped_samples = Vec::new();
    let mut skip = |index: u64, e: &EventError| {
        *skipped_by_reason.entry(e.reason()).or_default() += 1;
        if skipped_samples.len() < SAMPLES_PER_OBJECT {
            skipped_samples.push(SkippedRecord {
                object: display.clone(),
                record: index,
                reason: e.to_string(),
            });
        }
    };

    // Lookup-events output holds each record as JSON text inside a string.
    let texts: Vec<(u64, Result<Event<'_>, EventError>)> = split
        .texts
        .iter()
        .map(|(i, t)| {
            let r = if t.len() > limits.max_event_bytes {
                Err(EventError::TooLarge {
                    size: t.len(),
                    limit: limits.max_event_bytes,
                })
            } else {
                decode_event(t)
            };
            (*i, r)
        })
        .collect();

    let mut keys: Vec<String> = Vec::new();
    let mut kept = Vec::with_capacity(split.records.len());
    let mut all: Vec<(u64, Result<Event<'_>, EventError>)> = split.records;
    all.extend(texts);
    for (index, decoded) in all {
        let event = match decoded {
            Ok(e) => e,
            Err(e) => {
                skip(index, &e);
                continue;
            }
        };
        if limits.index_keys {
            if let Some(k) = event.access_key_id()
                && keys.last().is_none_or(|last| last.as_str() != k)
            {
                keys.push(k.to_owned());
            }
            // A key's deactivation or deletion, made by someone else, names it.
            if matches!(
                event.event_name.as_deref(),
                Some("UpdateAccessKey" | "DeleteAccessKey")
            ) && let Some(named) = event.request_parameters.as_deref().and_then(named_key)
            {
                keys.push(named.to_owned());
            }
        }
        match rule.matches(&event) {
            Verdict::Filtered => counts.filtered += 1,
            Verdict::AlreadyWritten => counts.already_written += 1,
            Verdict::Write => {
                let table = if insight_file || event.is_insight() {
                    Table::Insights
                } else {
                    Table::Events
                };
                kept.push(((table, day_of(event.event_time)), event));
            }
        }
    }
    counts.skipped = skipped_by_reason.values().sum();

    kept.sort_by_key(|(k, _)| *k);
    let mut batches = Vec::new();
    let mut start = 0;
    while start < kept.len() {
        let (table, day) = kept[start].0;
        let end = start
            + kept[start..]
                .iter()
                .take_while(|(k, _)| *k == (table, day))
                .count();
        let mut b = EventBatchBuilder::with_capacity(table, end - start);
        for (_, e) in &kept[start..end] {
            b.append(e, &display);
        }
        let batch = b
            .finish()
            .map_err(|e| ObjectError::NotJson(format!("internal: building rows failed: {e}")))?;
        match table {
            Table::Insights => counts.insights += batch.num_rows() as u64,
            _ => counts.written += batch.num_rows() as u64,
        }
        batches.push((table, day, batch));
        start = end;
    }
    Ok(Decoded {
        shape,
        batches,
        counts,
        skipped_by_reason,
        skipped_samples,
        keys: {
            keys.sort_unstable();
            keys.dedup();
            keys
        },
        spooled: None,
        staged: None,
    })
}
