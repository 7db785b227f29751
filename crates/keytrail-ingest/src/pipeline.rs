//! The parallel, streaming core: objects are fetched and decoded on a pool of `threads`
//! workers; their batches flow through a bounded channel to one collector, which hands them to
//! a sink. The channel's bound is the back-pressure: when the sink (the Parquet writer) is
//! slower than the decoders, they wait, so memory stays bounded whatever the input size.

use std::collections::HashMap;
use std::io::Read;
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
    /// Where objects read record by record keep their rows until they are whole.
    staging: crate::stream::Staging,
}

impl<'a> Decider<'a> {
    pub fn new(filter: &FilterSpec, index: &'a ManifestIndex) -> Decider<'a> {
        Decider {
            filter: filter.compile(),
            index,
            claimed: Mutex::new(HashMap::new()),
            staging: crate::stream::Staging::Spool(std::env::temp_dir()),
        }
    }

    /// Keep the rows of objects read record by record where `staging` says instead of a
    /// spool in the system's temporary folder.
    pub fn with_staging(mut self, staging: crate::stream::Staging) -> Decider<'a> {
        self.staging = staging;
        self
    }

    /// The rule for content the lake has never seen: what an object read record by record is
    /// decoded with before its hash is known.
    fn rule_for_new_content(&self) -> Difference {
        Difference::new(self.filter.clone(), &[])
    }

    /// Whether the lake holds this content already (read before, under some filter).
    fn knows_content(&self, hash: &str) -> bool {
        self.index.content(hash).is_some()
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

/// Turn fetched bytes into an outcome: decoded under one of `decoders`, or, when the text is
/// too large to hold, read again record by record without one.
fn handle_bytes(
    object: ObjectRef,
    bytes: Result<Vec<u8>, ObjectError>,
    decider: &Decider<'_>,
    limits: Limits,
    decoders: &Decoders,
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
    panic_point("decode", &object);
    let decoded =
        match decoders.run(|scratch| decode_object(&object, &bytes, &rule, limits, scratch)) {
            // Too much text to hold: read it again, record by record, with the decoder given back
            // (the stream decodes on the pool, which may run other objects that wait for one).
            Err(ObjectError::TooLarge { .. }) => {
                crate::stream::stream(&object, &bytes[..], &rule, limits, &decider.staging)
                    .map(|(d, _)| d)
            }
            other => other,
        };
    match decoded {
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

/// Read an object record by record ([`crate::stream`]) from what `open` gives (its stored
/// bytes from the start; called again if the object must be read twice). The content hash is
/// only known at the end, so it is decoded as content the lake lacks, then checked as
/// [`handle_bytes`] checks it first: content already in the lake under another name, or
/// already read in this run, is skipped (its spooled rows dropped); content the lake read
/// before under other filters is read again with the rule that writes only what it lacks.
pub fn handle_stream(
    object: ObjectRef,
    open: &mut dyn FnMut() -> Result<Box<dyn Read + Send + 'static>, ObjectError>,
    decider: &Decider<'_>,
    limits: Limits,
) -> Done {
    panic_point("decode", &object);
    let mut read = |rule: &Difference| {
        let stored = open()?;
        crate::stream::stream(&object, stored, rule, limits, &decider.staging)
    };
    let (decoded, hash) = match read(&decider.rule_for_new_content()) {
        Ok(r) => r,
        Err(error) => return Done::Failed { object, error },
    };
    if decoded.shape == crate::decode::Shape::Digest {
        return Done::Skipped {
            object,
            reason: SkipReason::Digest,
            detail: None,
        };
    }
    let known = decider.knows_content(&hash);
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
    let decoded = if known {
        drop(decoded);
        match read(&rule) {
            Ok((d, again)) if again == hash => d,
            Ok(_) => {
                return Done::Failed {
                    object,
                    error: ObjectError::Changed,
                };
            }
            Err(error) => return Done::Failed { object, error },
        }
    } else {
        decoded
    };
    Done::Read {
        object,
        content_hash: hash,
        decoded,
    }
}

/// Read a local object: whole, or record by record when it is stored larger than
/// [`Limits::stream_above`].
fn handle_local(
    object: ObjectRef,
    decider: &Decider<'_>,
    limits: Limits,
    decoders: &Decoders,
) -> Done {
    match &object.location {
        Location::Local(path) if object.size > limits.stream_above as u64 => {
            let path = path.clone();
            let mut open = || -> Result<Box<dyn Read + Send>, ObjectError> {
                let f = std::fs::File::open(&path).map_err(|e| ObjectError::Read(e.to_string()))?;
                Ok(Box::new(f))
            };
            handle_stream(object, &mut open, decider, limits)
        }
        _ => {
            let bytes = read_local(&object);
            handle_bytes(object, bytes, decider, limits, decoders)
        }
    }
}

/// A panic while one object is read or decoded (a bug in keytrail or a library it uses) fails
/// that object, with the panic's message as its reason, instead of the whole run: the decode
/// workers and the S3 fetch tasks run every object's work through this. It does not protect
/// the collector, the Parquet writers or the commit: a panic there still stops the run, with
/// nothing of it committed.
pub fn guarded(object: &ObjectRef, work: impl FnOnce() -> Done) -> Done {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        Ok(done) => done,
        Err(payload) => Done::Failed {
            object: object.clone(),
            error: ObjectError::Panic(panic_message(payload.as_ref())),
        },
    }
}

/// The text a panic was raised with.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Fault injection for tests: `KEYTRAIL_PANIC_AT=<stage>:<file name>` panics in that stage
/// (`fetch` or `decode`) of the object of that name, as a bug would.
#[doc(hidden)]
pub fn panic_point(stage: &str, object: &ObjectRef) {
    static AT: std::sync::LazyLock<Option<String>> =
        std::sync::LazyLock::new(|| std::env::var("KEYTRAIL_PANIC_AT").ok());
    if let Some(at) = AT.as_deref()
        && at.split_once(':') == Some((stage, object.file_name()))
    {
        panic!(
            "KEYTRAIL_PANIC_AT: a panic in {stage} of {}",
            object.display()
        );
    }
}

/// Leave to decode an object read whole: one per core (at most one per thread), each with the
/// buffer of decompressed text its holder decodes into. Threads beyond the cores decode no
/// faster; they read the next objects' bytes meanwhile, and what decoding holds (an object's
/// text and its Arrow builders) stays one object's per core whatever `--threads` is. An object
/// read record by record ([`handle_stream`], or after its text proved too large) takes none: it
/// decodes on the pool's idle threads itself. A holder must never wait for the pool: a thread
/// waiting there runs other objects, which would wait for a decoder that may never come back.
pub(crate) struct Decoders {
    free: crossbeam_channel::Receiver<Vec<u8>>,
    back: crossbeam_channel::Sender<Vec<u8>>,
}

impl Decoders {
    /// Leave for `threads` decoding threads: as many as cores, or `threads` if fewer.
    pub(crate) fn new(threads: usize) -> Decoders {
        let n = threads.min(crate::stream::cores()).max(1);
        let (back, free) = crossbeam_channel::bounded(n);
        for _ in 0..n {
            let _ = back.send(Vec::new());
        }
        Decoders { free, back }
    }

    /// Wait for a free decoder and run `work` with its buffer. The buffer goes back even when
    /// `work` panics (freed if an object grew it past [`KEEP_SCRATCH`]).
    fn run<R>(&self, work: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        struct Held<'a> {
            buf: Vec<u8>,
            back: &'a crossbeam_channel::Sender<Vec<u8>>,
        }
        impl Drop for Held<'_> {
            fn drop(&mut self) {
                let mut buf = std::mem::take(&mut self.buf);
                if buf.capacity() > KEEP_SCRATCH {
                    buf = Vec::new();
                }
                let _ = self.back.send(buf);
            }
        }
        // `self` keeps a sender, so this waits until a buffer comes back.
        let mut held = Held {
            buf: self.free.recv().unwrap_or_default(),
            back: &self.back,
        };
        work(&mut held.buf)
    }
}

/// Decode S3 objects: up to `concurrency` GETs in flight, each a task on the tokio runtime
/// `rt`; bodies decoded on `pool`; outcomes handed to `on_done` on the calling thread in
/// completion order.
///
/// Memory stays bounded: a GET keeps its place among the `concurrency` until its body has a
/// place among the `2 × threads` objects waiting for or in decoding, so at most
/// `concurrency + 2 × threads` bodies are held at once whatever the bucket holds.
#[cfg(feature = "run")]
#[allow(clippy::too_many_arguments)]
pub fn run_s3(
    objects: Vec<ObjectRef>,
    source: &crate::s3::S3Source,
    rt: &tokio::runtime::Runtime,
    pool: &rayon::ThreadPool,
    limits: Limits,
    decider: &Decider<'_>,
    progress: &dyn Progress,
    mut on_done: impl FnMut(Done) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    use std::sync::Arc;
    use tokio::sync::Semaphore;
    let backlog = pool.current_num_threads() * 2;
    let decoders = &Decoders::new(pool.current_num_threads());
    let (tx, rx) = crossbeam_channel::bounded::<Done>(backlog);
    let gets = Arc::new(Semaphore::new(source.options().concurrency.max(1)));
    let places = Arc::new(Semaphore::new(backlog));
    let mut result = Ok(());
    std::thread::scope(|scope| {
        let (gets_, places_) = (Arc::clone(&gets), Arc::clone(&places));
        scope.spawn(move || {
            let (gets, places) = (gets_, places_);
            pool.in_place_scope(|decode| {
                rt.block_on(async {
                    let (fetched_tx, mut fetched) = tokio::sync::mpsc::unbounded_channel();
                    let feeder = {
                        let (source, gets, places) =
                            (source.clone(), Arc::clone(&gets), Arc::clone(&places));
                        tokio::spawn(async move {
                            for object in objects {
                                // A closed semaphore: the run was cancelled.
                                let Ok(get) = Arc::clone(&gets).acquire_owned().await else {
                                    break;
                                };
                                let (source, places, fetched_tx) =
                                    (source.clone(), Arc::clone(&places), fetched_tx.clone());
                                tokio::spawn(async move {
                                    use futures::FutureExt;
                                    let bytes = std::panic::AssertUnwindSafe(async {
                                        panic_point("fetch", &object);
                                        fetch(&source, &object, limits).await
                                    })
                                    .catch_unwind()
                                    .await
                                    .unwrap_or_else(|payload| {
                                        Some(Err(ObjectError::Panic(panic_message(
                                            payload.as_ref(),
                                        ))))
                                    });
                                    let Ok(place) = places.acquire_owned().await else {
                                        return;
                                    };
                                    drop(get);
                                    let _ = fetched_tx.send((object, bytes, place));
                                });
                            }
                        })
                    };
                    while let Some((mut object, bytes, place)) = fetched.recv().await {
                        if places.is_closed() {
                            break;
                        }
                        let tx = tx.clone();
                        let (source, handle) = (source.clone(), rt.handle().clone());
                        decode.spawn(move |_| {
                            let Some(bytes) = bytes else {
                                // Large: read record by record from the body.
                                let done = guarded(&object.clone(), || {
                                    let Location::S3 { bucket, key } = object.location.clone()
                                    else {
                                        return Done::Failed {
                                            object,
                                            error: ObjectError::Read("not an S3 object".into()),
                                        };
                                    };
                                    let etag = object.etag.clone();
                                    let mut open =
                                        || -> Result<Box<dyn Read + Send>, ObjectError> {
                                            Ok(Box::new(source.reader(
                                                &bucket,
                                                &key,
                                                etag.clone(),
                                                handle.clone(),
                                            )))
                                        };
                                    handle_stream(object, &mut open, decider, limits)
                                });
                                let _ = tx.send(done);
                                drop(place);
                                return;
                            };
                            let bytes = bytes.map(|(b, etag)| {
                                // The ETag of what was read, should the object have changed
                                // since it was listed.
                                if etag.is_some() {
                                    object.etag = etag;
                                }
                                b
                            });
                            let done = guarded(&object.clone(), || {
                                handle_bytes(object, bytes, decider, limits, decoders)
                            });
                            let _ = tx.send(done);
                            drop(place);
                        });
                    }
                    feeder.abort();
                });
            });
            drop(tx);
        });
        result = collect(&rx, progress, &mut on_done, || {
            // Stop starting GETs and decodes; what is in flight ends unread.
            gets.close();
            places.close();
        });
    });
    result
}

/// One GET of an object read whole; `None` for an object the listing says is larger than
/// [`Limits::stream_above`], which is read record by record from its body instead.
#[cfg(feature = "run")]
async fn fetch(
    source: &crate::s3::S3Source,
    object: &ObjectRef,
    limits: Limits,
) -> Option<Result<(Vec<u8>, Option<String>), ObjectError>> {
    match &object.location {
        Location::S3 { .. } if object.size > limits.stream_above as u64 => None,
        Location::S3 { bucket, key } => Some(source.get(bucket, key).await),
        Location::Local(_) => Some(Err(ObjectError::Read("not an S3 object".into()))),
    }
}

/// The collector: hand each outcome to `on_done` until it fails (then `stop` the producers and
/// only drain what is left), reporting progress for every object.
fn collect(
    rx: &crossbeam_channel::Receiver<Done>,
    progress: &dyn Progress,
    on_done: &mut impl FnMut(Done) -> Result<(), IngestError>,
    mut stop: impl FnMut(),
) -> Result<(), IngestError> {
    let mut result = Ok(());
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
                stop();
            }
        }
        progress.object_done(bytes, events);
    }
    result
}

/// A decoder ([`Decoders`]) keeps its buffer of decompressed text between objects up to this
/// size; one a large object grew past it is freed, so that the decoders do not each keep the
/// largest object they have seen.
const KEEP_SCRATCH: usize = 8 << 20;

/// How many decoded local objects wait for the collector: two per decoding thread that can run
/// at once. Threads beyond the cores decode no faster, so more room would only keep their
/// objects waiting longer, in memory.
fn queue_depth(pool: &rayon::ThreadPool) -> usize {
    2 * pool.current_num_threads().min(crate::stream::cores())
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
    let (tx, rx) = crossbeam_channel::bounded::<Done>(queue_depth(pool));
    let decoders = &Decoders::new(pool.current_num_threads());
    let cancelled = AtomicBool::new(false);
    let mut result = Ok(());
    std::thread::scope(|scope| {
        let cancelled = &cancelled;
        scope.spawn(move || {
            pool.install(|| {
                // `par_bridge` hands objects out in order, so the objects of one day are
                // decoded together and its partition fills as a whole.
                objects.into_iter().par_bridge().for_each(|object| {
                    if cancelled.load(Ordering::Relaxed) {
                        return;
                    }
                    let done = guarded(&object.clone(), || {
                        handle_local(object, decider, limits, decoders)
                    });
                    // The collector hung up only when it stopped on an error.
                    let _ = tx.send(done);
                });
            });
            drop(tx);
        });
        result = collect(&rx, progress, &mut on_done, || {
            cancelled.store(true, Ordering::Relaxed);
        });
    });
    result
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn decoders_run_at_most_one_per_core_at_once() {
        let n = crate::stream::cores();
        let decoders = Decoders::new(4 * n);
        let (live, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..4 * n {
                s.spawn(|| {
                    decoders.run(|_| {
                        let now = live.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        live.fetch_sub(1, Ordering::SeqCst);
                    });
                });
            }
        });
        let most = most.load(Ordering::SeqCst);
        assert!(
            (1..=n).contains(&most),
            "{most} decoded at once on {n} cores"
        );
        // Fewer threads than cores: as many as the threads.
        assert_eq!(Decoders::new(1).free.len(), 1);
    }

    #[test]
    fn a_decoder_that_panics_gives_its_buffer_back_and_a_grown_buffer_is_freed() {
        let decoders = Decoders::new(1);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decoders.run(|buf: &mut Vec<u8>| {
                buf.reserve(KEEP_SCRATCH + 1);
                panic!("a bug while decoding");
            })
        }));
        assert!(panicked.is_err());
        // The one buffer came back, freed.
        assert_eq!(decoders.free.len(), 1);
        assert_eq!(decoders.run(|buf| buf.capacity()), 0);
        decoders.run(|buf| buf.extend_from_slice(b"kept"));
        assert!(decoders.run(|buf| buf.capacity()) >= 4);
    }
}
