//! The parallel, streaming core: objects are fetched and decoded on a pool of `threads`
//! workers; their batches flow through a bounded channel to one collector, which hands them to
//! a sink. The channel's bound is the back-pressure: when the sink (the Parquet writer) is
//! slower than the decoders, they wait, so memory stays bounded whatever the input size.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use keytrail_lake::ManifestIndex;
use keytrail_model::{Difference, EventFilter, FilterSpec};
use rayon::prelude::*;

use crate::error::{IngestError, ObjectError};
use crate::process::{Decoded, Limits, decode_object};
use crate::source::{Location, ObjectRef};
use crate::summary::{Progress, SkipReason};

/// The outcome of one object.
#[derive(Debug)]
pub enum Done {
    Read {
        object: ObjectRef,
        content_hash: String,
        decoded: Decoded,
    },
    Skipped {
        object: ObjectRef,
        reason: SkipReason,
        detail: Option<String>,
    },
    Failed {
        object: ObjectRef,
        error: ObjectError,
    },
}

impl Done {
    pub fn object(&self) -> &ObjectRef {
        match self {
            Done::Read { object, .. }
            | Done::Skipped { object, .. }
            | Done::Failed { object, .. } => object,
        }
    }
}

/// The content hash recorded in the manifest: xxh3-128 of the stored bytes.
pub fn content_hash(bytes: &[u8]) -> String {
    format!("xxh3:{:032x}", xxhash_rust::xxh3::xxh3_128(bytes))
}

/// Decides, per object, what to write and what the lake already has.
pub struct Decider<'a> {
    filter: EventFilter,
    index: &'a ManifestIndex,
    claimed: Mutex<HashMap<String, String>>,
}

impl<'a> Decider<'a> {
    pub fn new(filter: &FilterSpec, index: &'a ManifestIndex) -> Decider<'a> {
        Decider {
            filter: filter.compile(),
            index,
            claimed: Mutex::new(HashMap::new()),
        }
    }

    /// Before reading: skip an object the lake holds under the same name and version.
    pub fn before_read(&self, object: &ObjectRef) -> Option<(SkipReason, Option<String>)> {
        let uri = object.uri();
        let version = self.index.source(&uri).iter().find(|v| {
            v.size == object.size
                && match (&object.etag, &v.etag) {
                    (Some(a), Some(b)) => a == b,
                    _ => v.modified == object.modified,
                }
        })?;
        let (_, filters) = self.index.content(&version.content_hash)?;
        let diff = Difference::new(self.filter.clone(), filters);
        diff.is_empty()
            .then_some((SkipReason::AlreadyIngested, None))
    }

    /// After reading the bytes: the rule for writing its events, or why it is skipped.
    pub fn after_read(
        &self,
        object: &ObjectRef,
        hash: &str,
    ) -> Result<Difference, (SkipReason, Option<String>)> {
        let uri = object.uri();
        let earlier: &[FilterSpec] = match self.index.content(hash) {
            Some((first, filters)) => {
                let diff = Difference::new(self.filter.clone(), filters);
                if diff.is_empty() {
                    return Err(if first == uri {
                        (SkipReason::AlreadyIngested, None)
                    } else {
                        (
                            SkipReason::Duplicate,
                            Some(format!("same content as {first}, already in the lake")),
                        )
                    });
                }
                filters
            }
            None if !self.index.source(&uri).is_empty() => {
                return Err((
                    SkipReason::Changed,
                    Some("the lake holds other content under this name; it was not read again so no event is doubled".into()),
                ));
            }
            None => &[],
        };
        let mut claimed = self
            .claimed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(first) = claimed.get(hash) {
            return Err((
                SkipReason::Duplicate,
                Some(format!("same content as {first}, read in this run")),
            ));
        }
        claimed.insert(hash.to_owned(), object.display());
        Ok(Difference::new(self.filter.clone(), earlier))
    }
}

/// Read one local object whole.
fn read_local(object: &ObjectRef) -> Result<Vec<u8>, ObjectError> {
    match &object.location {
        Location::Local(path) => std::fs::read(path).map_err(|e| ObjectError::Read(e.to_string())),
        Location::S3 { .. } => Err(ObjectError::Read("not a local file".into())),
    }
}

/// Turn fetched bytes into an outcome.
pub fn handle_bytes(
    object: ObjectRef,
    bytes: Result<Vec<u8>, ObjectError>,
    decider: &Decider<'_>,
    limits: Limits,
    scratch: &mut Vec<u8>,
) -> Done {
    let bytes = match bytes {
        Ok(b) => b,
        Err(error) => return Done::Failed { object, error },
    };
    if bytes.is_empty() {
        return Done::Failed {
            object,
            error: ObjectError::Empty,
        };
    }
    let hash = content_hash(&bytes);
    let rule = match decider.after_read(&object, &hash) {
        Ok(rule) => rule,
        Err((reason, detail)) => {
            return Done::Skipped {
                object,
                reason,
                detail,
            };
        }
    };
    match decode_object(&object, &bytes, &rule, limits, scratch) {
        Ok(decoded) if decoded.shape == crate::decode::Shape::Digest => Done::Skipped {
            object,
            reason: SkipReason::Digest,
            detail: None,
        },
        Ok(decoded) => Done::Read {
            object,
            content_hash: hash,
            decoded,
        },
        Err(error) => Done::Failed { object, error },
    }
}

/// The pool of decoding threads.
pub fn decode_pool(threads: usize) -> Result<rayon::ThreadPool, IngestError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("keytrail-decode-{i}"))
        .build()
        .map_err(|e| IngestError::Config(format!("cannot start {threads} threads: {e}")))
}

/// Decode `objects` (local files) on the workers of `pool` and hand each outcome, in completion
/// order, to `on_done` on the calling thread. Stops early, without error from the workers,
/// when `on_done` fails; that error is returned.
pub fn run_local(
    objects: Vec<ObjectRef>,
    pool: &rayon::ThreadPool,
    limits: Limits,
    decider: &Decider<'_>,
    progress: &dyn Progress,
    mut on_done: impl FnMut(Done) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    let (tx, rx) = crossbeam_channel::bounded::<Done>(pool.current_num_threads() * 2);
    let cancelled = AtomicBool::new(false);
    let mut result = Ok(());
    std::thread::scope(|scope| {
        let cancelled = &cancelled;
        scope.spawn(move || {
            pool.install(|| {
                // `par_bridge` hands objects out in order, so the objects of one day are
                // decoded together and its partition fills as a whole.
                objects
                    .into_iter()
                    .par_bridge()
                    .for_each_init(Vec::new, |scratch, object| {
                        if cancelled.load(Ordering::Relaxed) {
                            return;
                        }
                        let bytes = read_local(&object);
                        let done = handle_bytes(object, bytes, decider, limits, scratch);
                        // The collector hung up only when it stopped on an error.
                        let _ = tx.send(done);
                        // Do not keep a huge buffer alive for the rest of the run.
                        if scratch.capacity() > 64 << 20 {
                            *scratch = Vec::new();
                        }
                    });
            });
            drop(tx);
        });
        for done in rx.iter() {
            let (bytes, events) = match &done {
                Done::Read {
                    object, decoded, ..
                } => (object.size, decoded.counts.read),
                other => (other.object().size, 0),
            };
            if result.is_ok() {
                result = on_done(done);
                if result.is_err() {
                    cancelled.store(true, Ordering::Relaxed);
                }
            }
            progress.object_done(bytes, events);
        }
    });
    result
}
