//! Objects read record by record: a JSON-lines export, a JSON array or a `{"Records": [...]}`
//! object of any size, gzipped or plain, from a file, an S3 body or bytes in memory.
//!
//! The text is decompressed as it is read and cut by the resumable [`Splitter`] through a
//! window of bounded size: a stretch of [`CHUNK`] bytes, plus whatever the splitter must still
//! hold (a record cut at the window's end, or a document without an array of records, which is
//! read whole up to `--max-object-size`). While the records of one stretch are decoded, on
//! every idle worker of the pool, the next stretch is read.
//!
//! An object is all or nothing, whatever its size. In a run ([`Staging::Lake`]) its rows are
//! written as they are decoded, sorted and encoded on a writer thread of its own while the
//! next stretches are decoded, into Parquet files of a [`Scope`] of the run's transaction: the
//! run adopts them when the object was read to its end and was not already read, and they are
//! deleted otherwise (or go with the run's staging folder if the process dies). Elsewhere (the
//! fuzz target, tests) they go to a spool ([`Staging::Spool`]), unnamed files read back once
//! the object is whole. The content hash is computed over the stored bytes as they pass, so
//! the manifest records the object exactly as one read whole.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use keytrail_lake::{Scope, Transaction};
use keytrail_model::redact::is_suspicious;
use keytrail_model::{Difference, EventSeed, Table};
use rayon::prelude::*;
use xxhash_rust::xxh3::Xxh3;

use crate::decode::{Shape, Split, Text, add_item};
use crate::error::ObjectError;
use crate::process::{Decoded, Limits, Rows, SkippedRecord, decode_records};
use crate::source::ObjectRef;
use crate::split::{Item, Splitter, Step};
use crate::writer::LakeWriter;

/// Where an object read record by record keeps its rows until it was read to its end.
pub enum Staging {
    /// An Arrow IPC spool of unnamed files in this folder; the rows come back as
    /// [`Decoded::spooled`].
    Spool(PathBuf),
    /// Parquet files of a [`Scope`] of this transaction, written while the object is read
    /// by `writers` threads, within a share of `budget`; they come back as
    /// [`Decoded::staged`], for the run to adopt.
    Lake {
        txn: Arc<Transaction>,
        budget: StreamBudget,
        writers: usize,
    },
}

/// Least share of a [`StreamBudget`] an object gets, however many are read at once (or half
/// the budget, if that is less).
pub const MIN_SHARE: usize = 8 << 20;

/// The bytes of buffered rows that objects read record by record at the same time share: each
/// takes half of what the others left (at least [`MIN_SHARE`]) and gives it back when it is
/// done. One object alone gets half the budget; any number of them hold at most the budget
/// plus [`MIN_SHARE`] per object past the first few.
#[derive(Clone, Debug)]
pub struct StreamBudget {
    left: Arc<std::sync::Mutex<usize>>,
    min: usize,
}

impl StreamBudget {
    pub fn new(bytes: usize) -> StreamBudget {
        StreamBudget {
            left: Arc::new(std::sync::Mutex::new(bytes)),
            min: MIN_SHARE.min(bytes / 2).max(1),
        }
    }

    fn left(&self) -> std::sync::MutexGuard<'_, usize> {
        self.left
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(&self) -> Share {
        let mut left = self.left();
        let taken = (*left / 2).max(self.min.min(*left));
        *left -= taken;
        Share {
            budget: self.clone(),
            taken,
            bytes: taken.max(self.min),
        }
    }
}

/// One object's share of a [`StreamBudget`], given back when dropped.
struct Share {
    budget: StreamBudget,
    /// What was taken from the budget.
    taken: usize,
    /// What the object may buffer.
    bytes: usize,
}

impl Drop for Share {
    fn drop(&mut self) {
        *self.budget.left() += self.taken;
    }
}

/// How much text is read per stretch.
pub const CHUNK: usize = 8 << 20;

/// How many samples of skipped records one object keeps (as for objects read whole).
const SAMPLES: usize = 5;

/// What a reader of stored bytes fails with (as the inner error of a [`std::io::Error`]) when
/// the object is no longer the version it was reading: the object fails as
/// [`ObjectError::Changed`].
#[derive(Debug, thiserror::Error)]
#[error("the object changed while it was read")]
pub struct ObjectChanged;

/// The stored bytes, hashed as they pass; an error of the reader underneath is kept, so it is
/// told apart from corrupt gzip.
struct Hashing<R> {
    inner: R,
    hasher: Xxh3,
    failed: Option<ObjectError>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                Ok(n)
            }
            Err(e) => {
                self.failed = Some(if e.get_ref().is_some_and(|i| i.is::<ObjectChanged>()) {
                    ObjectError::Changed
                } else {
                    ObjectError::Read(e.to_string())
                });
                Err(e)
            }
        }
    }
}

/// Read until `buf` has grown by `want` bytes or the text ends; `true` at the end.
fn fill(text: &mut dyn Read, buf: &mut Vec<u8>, want: usize) -> std::io::Result<bool> {
    let start = buf.len();
    let goal = start + want;
    buf.resize(goal, 0);
    let mut at = start;
    let eof = loop {
        if at == goal {
            break false;
        }
        match text.read(&mut buf[at..]) {
            Ok(0) => break true,
            Ok(n) => at += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                buf.truncate(at);
                return Err(e);
            }
        }
    };
    buf.truncate(at);
    Ok(eof)
}

/// The rows of a streamed object, in the order they were decoded, on disk until the object is
/// whole.
pub struct Spooled {
    order: std::vec::IntoIter<(Table, i32, usize)>,
    readers: BTreeMap<Table, StreamReader<BufReader<File>>>,
}

impl std::fmt::Debug for Spooled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Spooled({} batches)", self.order.len())
    }
}

impl Iterator for Spooled {
    type Item = Result<Rows, ObjectError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (table, day, bytes) = self.order.next()?;
        let batch = match self.readers.get_mut(&table).and_then(Iterator::next) {
            Some(Ok(b)) => Ok((table, day, b, bytes)),
            Some(Err(e)) => Err(spool_error(e)),
            None => Err(ObjectError::Read(
                "internal: the spool holds fewer batches than were written".into(),
            )),
        };
        if batch.is_err() {
            // Nothing more can be trusted.
            self.order = Vec::new().into_iter();
        }
        Some(batch)
    }
}

fn spool_error(e: impl std::fmt::Display) -> ObjectError {
    ObjectError::Read(format!("the spool of its rows failed: {e}"))
}

/// Where a streamed object's rows wait: one Arrow IPC stream per table.
struct Spool<'d> {
    dir: &'d Path,
    writers: BTreeMap<Table, StreamWriter<BufWriter<File>>>,
    order: Vec<(Table, i32, usize)>,
}

impl Spool<'_> {
    fn add(&mut self, table: Table, day: i32, batch: &RecordBatch) -> Result<(), ObjectError> {
        let writer = match self.writers.entry(table) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                std::fs::create_dir_all(self.dir).map_err(spool_error)?;
                let file = tempfile::tempfile_in(self.dir).map_err(spool_error)?;
                let w =
                    StreamWriter::try_new(BufWriter::with_capacity(1 << 20, file), &batch.schema())
                        .map_err(spool_error)?;
                e.insert(w)
            }
        };
        writer.write(batch).map_err(spool_error)?;
        self.order.push((table, day, batch.get_array_memory_size()));
        Ok(())
    }

    fn finish(self) -> Result<Option<Spooled>, ObjectError> {
        if self.order.is_empty() {
            return Ok(None);
        }
        let mut readers = BTreeMap::new();
        for (table, mut w) in self.writers {
            w.finish().map_err(spool_error)?;
            let mut file = w
                .into_inner()
                .map_err(spool_error)?
                .into_inner()
                .map_err(|e| spool_error(e.error()))?;
            file.rewind().map_err(spool_error)?;
            let r = StreamReader::try_new(BufReader::with_capacity(1 << 20, file), None)
                .map_err(spool_error)?;
            readers.insert(table, r);
        }
        Ok(Some(Spooled {
            order: self.order.into_iter(),
            readers,
        }))
    }
}

/// Where the rows of the stretches decoded so far went.
enum Destination<'d> {
    Spool(Spool<'d>),
    /// The writer drops before the share it buffers within.
    Lake(LakeWriter<Scope>, Share),
}

fn write_error(e: impl std::fmt::Display) -> ObjectError {
    ObjectError::Read(format!("writing its rows failed: {e}"))
}

impl Destination<'_> {
    fn add(&mut self, table: Table, day: i32, batch: RecordBatch) -> Result<(), ObjectError> {
        match self {
            Destination::Spool(spool) => spool.add(table, day, &batch),
            Destination::Lake(writer, _) => {
                let bytes = batch.get_array_memory_size();
                writer.accept(table, day, batch, bytes).map_err(write_error)
            }
        }
    }

    /// Everything written; the rows are then `decoded`'s.
    fn finish(self, decoded: &mut Decoded) -> Result<(), ObjectError> {
        match self {
            Destination::Spool(spool) => decoded.spooled = spool.finish()?,
            Destination::Lake(writer, _share) => {
                let scope = writer.finish().map_err(write_error)?;
                let scope = Arc::try_unwrap(scope).map_err(|_| {
                    ObjectError::Read("internal: its rows' writers still hold them".into())
                })?;
                decoded.staged = Some(scope);
            }
        }
        Ok(())
    }
}

/// What the stretches decoded so far add up to.
struct Sum<'d> {
    decoded: Decoded,
    keys: BTreeSet<String>,
    destination: Destination<'d>,
}

impl Sum<'_> {
    fn add(&mut self, part: Decoded) -> Result<(), ObjectError> {
        let d = &mut self.decoded;
        let first = d.counts.read;
        d.counts += part.counts;
        for (reason, n) in part.skipped_by_reason {
            *d.skipped_by_reason.entry(reason).or_default() += n;
        }
        let room = SAMPLES.saturating_sub(d.skipped_samples.len());
        d.skipped_samples
            .extend(
                part.skipped_samples
                    .into_iter()
                    .take(room)
                    .map(|s| SkippedRecord {
                        record: s.record + first,
                        ..s
                    }),
            );
        self.keys.extend(part.keys);
        for (table, day, batch) in part.batches {
            self.destination.add(table, day, batch)?;
            keytrail_lake::crash_point("mid-stream");
        }
        Ok(())
    }
}

/// The cores this process may run on, asked once (on Linux the answer reads cgroup files).
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Decode the items of one stretch on the pool's idle workers, in order.
fn decode_stretch(
    object: &ObjectRef,
    items: Vec<Item<'_>>,
    window: &[u8],
    rule: &Difference,
    limits: Limits,
) -> Result<(Vec<Decoded>, Option<Shape>), ObjectError> {
    let text = Text::new(window);
    let seed = EventSeed {
        scrub: is_suspicious(window),
        max_bytes: limits.max_event_bytes,
    };
    // Four parts per worker that can run at once: more threads than cores only cut the
    // stretch into smaller batches for the writer to put together again.
    let workers = rayon::current_num_threads().min(cores()).max(1);
    let per = items.len().div_ceil(4 * workers).max(64);
    let mut groups: Vec<Vec<Item<'_>>> = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        groups.push(items.by_ref().take(per).collect());
    }
    let parts: Vec<Result<(Decoded, Option<Shape>), ObjectError>> = groups
        .into_par_iter()
        .map(|group| {
            let mut split = Split::default();
            let mut shape = None;
            for item in group {
                if let Some(s) = add_item(item, &text, seed, &mut split)? {
                    shape = Some(s);
                }
            }
            Ok((decode_records(object, split, rule, limits)?, shape))
        })
        .collect();
    let mut shape = None;
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        let (d, s) = p?;
        shape = shape.or(s);
        out.push(d);
    }
    Ok((out, shape))
}

/// Read one object from `stored` (its bytes as stored: gzip or plain) record by record; the
/// rows go where `staging` says. Returns what was decoded and the content hash of the stored
/// bytes.
pub fn stream<R: Read + Send>(
    object: &ObjectRef,
    stored: R,
    rule: &Difference,
    limits: Limits,
    staging: &Staging,
) -> Result<(Decoded, String), ObjectError> {
    stream_into(object, stored, rule, limits, staging, CHUNK)
}

/// [`stream`] to a spool under `spool_dir`, reading `chunk` bytes of text per stretch (for
/// tests and the fuzz target: any stretch must give what a whole read gives).
#[doc(hidden)]
pub fn stream_by<R: Read + Send>(
    object: &ObjectRef,
    stored: R,
    rule: &Difference,
    limits: Limits,
    spool_dir: &Path,
    chunk: usize,
) -> Result<(Decoded, String), ObjectError> {
    let staging = Staging::Spool(spool_dir.to_owned());
    stream_into(object, stored, rule, limits, &staging, chunk)
}

fn stream_into<R: Read + Send>(
    object: &ObjectRef,
    stored: R,
    rule: &Difference,
    limits: Limits,
    staging: &Staging,
    chunk: usize,
) -> Result<(Decoded, String), ObjectError> {
    let mut stored = Hashing {
        inner: stored,
        hasher: Xxh3::new(),
        failed: None,
    };
    let mut head = Vec::with_capacity(2);
    if let Err(e) = fill(&mut stored, &mut head, 2) {
        return Err(stored
            .failed
            .take()
            .unwrap_or_else(|| ObjectError::Read(e.to_string())));
    }
    if head.is_empty() {
        return Err(ObjectError::Empty);
    }
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    let result = {
        let raw = std::io::Cursor::new(head).chain(&mut stored);
        let mut text: Box<dyn Read + Send + '_> = if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
                1 << 20,
                raw,
            )))
        } else {
            Box::new(raw)
        };
        match read_records(object, &mut *text, rule, limits, staging, chunk) {
            // A gzipped object whose text failed: if its container is broken as well, that
            // is the reason, as a whole read (which inflates and checks the CRC before it
            // parses) gives it. The rest is read only as far as a whole read could inflate.
            Err(Failure::Object(e)) if gzip => {
                let mut rest = (&mut *text).take(limits.whole_read_bytes() as u64);
                match std::io::copy(&mut rest, &mut std::io::sink()) {
                    Err(io) => Err(Failure::Io(io)),
                    Ok(_) => Err(Failure::Object(e)),
                }
            }
            other => other,
        }
    };
    let decoded = result.map_err(|e| match e {
        Failure::Object(e) => e,
        Failure::Io(e) => match stored.failed.take() {
            Some(failed) => failed,
            None if gzip => ObjectError::Gzip(e.to_string()),
            None => ObjectError::Read(e.to_string()),
        },
    })?;
    let hash = format!("xxh3:{:032x}", stored.hasher.digest128());
    Ok((decoded, hash))
}

enum Failure {
    Object(ObjectError),
    Io(std::io::Error),
}

impl From<ObjectError> for Failure {
    fn from(e: ObjectError) -> Self {
        Failure::Object(e)
    }
}

fn read_records(
    object: &ObjectRef,
    text: &mut (dyn Read + Send),
    rule: &Difference,
    limits: Limits,
    staging: &Staging,
    chunk: usize,
) -> Result<Decoded, Failure> {
    let mut splitter = Splitter::new(limits.max_object_bytes);
    let mut sum = Sum {
        decoded: Decoded {
            shape: Shape::Event,
            batches: Vec::new(),
            counts: Default::default(),
            skipped_by_reason: BTreeMap::new(),
            skipped_samples: Vec::new(),
            keys: Vec::new(),
            spooled: None,
            staged: None,
        },
        keys: BTreeSet::new(),
        destination: match staging {
            Staging::Spool(dir) => Destination::Spool(Spool {
                dir,
                writers: BTreeMap::new(),
                order: Vec::new(),
            }),
            Staging::Lake {
                txn,
                budget,
                writers,
            } => {
                let share = budget.take();
                let writer = LakeWriter::new(Arc::new(txn.scope()), share.bytes, *writers);
                Destination::Lake(writer, share)
            }
        },
    };
    let mut doc_shape = None;
    let chunk = chunk.max(1);
    let mut buf: Vec<u8> = Vec::with_capacity(chunk);
    let mut next: Vec<u8> = Vec::new();
    // Absolute offset of `buf[0]` in the text.
    let mut base = 0u64;
    let mut eof = fill(text, &mut buf, chunk).map_err(Failure::Io)?;
    loop {
        let mut items = Vec::new();
        let mut end = false;
        loop {
            match splitter.next(&buf, base, eof) {
                Ok(Step::Item(item)) => items.push(item),
                Ok(Step::More) => break,
                Ok(Step::End) => {
                    end = true;
                    break;
                }
                Err(e) => {
                    // The items cut before the text broke come before it: a failure of the
                    // object among them (a document whose `Records` is not an array) is the
                    // one a whole read, which decodes each item as it is cut, meets first.
                    if !items.is_empty() {
                        decode_stretch(object, items, &buf, rule, limits)?;
                    }
                    return Err(e.into());
                }
            }
        }
        let keep = usize::try_from(splitter.keep_from().saturating_sub(base))
            .unwrap_or(buf.len())
            .min(buf.len());
        if end || items.is_empty() {
            let decoded = if items.is_empty() {
                Vec::new()
            } else {
                let (parts, shape) = decode_stretch(object, items, &buf, rule, limits)?;
                doc_shape = doc_shape.or(shape);
                parts
            };
            for part in decoded {
                sum.add(part)?;
            }
            if end {
                break;
            }
            if eof {
                return Err(ObjectError::NotJson(
                    "internal: the splitter asked for more at the end of the text".into(),
                )
                .into());
            }
            // Nothing complete in the window: read on into it, twice as far each time, so a
            // long text held whole is read in linear time.
            buf.drain(..keep);
            base += keep as u64;
            let want = buf.len().max(chunk);
            eof = fill(text, &mut buf, want).map_err(Failure::Io)?;
            continue;
        }
        // Decode this stretch while the next one is read behind what must be kept.
        next.clear();
        next.extend_from_slice(&buf[keep..]);
        let (decoded, filled) = rayon::join(
            || decode_stretch(object, items, &buf, rule, limits),
            || fill(text, &mut next, chunk),
        );
        let (parts, shape) = decoded?;
        doc_shape = doc_shape.or(shape);
        for part in parts {
            sum.add(part)?;
        }
        eof = filled.map_err(Failure::Io)?;
        std::mem::swap(&mut buf, &mut next);
        base += keep as u64;
    }
    let Sum {
        mut decoded,
        keys,
        destination,
    } = sum;
    decoded.shape = splitter.shape().or(doc_shape).unwrap_or(Shape::Event);
    decoded.keys = keys.into_iter().collect();
    destination.finish(&mut decoded)?;
    Ok(decoded)
}

/// Everything a reader of an object's decoding sees, as text to compare (for tests and the
/// fuzz target): the outcome (the failure's reason), shape, counts, skipped records, keys and
/// the rows per table and day.
#[doc(hidden)]
pub fn outcome(d: Result<Decoded, ObjectError>) -> String {
    let d = match d {
        Ok(d) => d,
        Err(e) => return format!("failed: {}", e.reason()),
    };
    let mut rows: BTreeMap<(Table, i32), Vec<RecordBatch>> = BTreeMap::new();
    let head = format!(
        "{:?} {:?} {:?} {:?} {:?}",
        d.shape, d.counts, d.skipped_by_reason, d.skipped_samples, d.keys
    );
    for b in d.into_batches() {
        match b {
            Ok((t, day, b, _)) => rows.entry((t, day)).or_default().push(b),
            Err(e) => return format!("spool failed: {e}"),
        }
    }
    let rows: Vec<String> = rows
        .into_iter()
        .map(
            |((t, day), bs)| match arrow::compute::concat_batches(&bs[0].schema(), &bs) {
                Ok(b) => format!("{t:?} {day} {} rows {:?}", b.num_rows(), b.columns()),
                Err(e) => format!("{t:?} {day} batches differ in schema: {e}"),
            },
        )
        .collect();
    format!("{head}\n{}", rows.join("\n"))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use keytrail_model::FilterSpec;

    use super::*;
    use crate::process::decode_object;
    use crate::source::Location;

    fn testdata() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
    }

    fn object(name: &str, size: usize) -> ObjectRef {
        ObjectRef {
            location: Location::Local(PathBuf::from(name)),
            size: size as u64,
            modified: None,
            etag: None,
        }
    }

    #[test]
    fn any_stretch_gives_what_reading_whole_gives() {
        let mut files: Vec<PathBuf> = Vec::new();
        for dir in ["corrupt", "stratus", "otrf"] {
            let mut found: Vec<PathBuf> = std::fs::read_dir(testdata().join(dir))
                .expect("testdata")
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e != "md" && e != "py"))
                .collect();
            found.sort();
            files.extend(found.into_iter().take(12));
        }
        let spool = tempfile::tempdir().expect("tmp");
        let rule = Difference::new(FilterSpec::all().compile(), &[]);
        let limits = Limits {
            max_event_bytes: 4096,
            index_keys: true,
            ..Limits::default()
        };
        let mut checked = 0;
        for path in &files {
            let bytes = std::fs::read(path).expect("read");
            let o = object(&path.display().to_string(), bytes.len());
            let mut scratch = Vec::new();
            let whole = outcome(decode_object(&o, &bytes, &rule, limits, &mut scratch));
            let small = scratch.len() < 64 << 10;
            let chunks: &[usize] = if small {
                &[1, 7, 100, 4096, 1 << 20]
            } else {
                &[4096, 1 << 16]
            };
            for &chunk in chunks {
                let streamed = stream_by(&o, &bytes[..], &rule, limits, spool.path(), chunk);
                let hash = streamed.as_ref().ok().map(|(_, h)| h.clone());
                let streamed = outcome(streamed.map(|(d, _)| d));
                assert_eq!(
                    streamed,
                    whole,
                    "{} in stretches of {chunk}",
                    path.display()
                );
                if let Some(h) = hash {
                    assert_eq!(h, crate::pipeline::content_hash(&bytes));
                }
            }
            checked += 1;
        }
        assert!(checked >= 20, "{checked} files");
        // The spool's files are gone with their readers.
        assert_eq!(std::fs::read_dir(spool.path()).expect("dir").count(), 0);
    }

    #[test]
    fn records_too_large_to_hold_are_skipped_and_documents_fail() {
        let event = |i: usize, pad: usize| {
            format!(
                r#"{{"eventVersion":"1.09","eventTime":"2024-01-01T00:00:{i:02}Z","eventName":"E{i}","eventSource":"s3.amazonaws.com","requestParameters":{{"pad":"{}"}}}}"#,
                "x".repeat(pad)
            )
        };
        let records = format!(
            r#"{{"Records":[{},{},{}]}}"#,
            event(1, 10),
            event(2, 5000),
            event(3, 10)
        );
        let spool = tempfile::tempdir().expect("tmp");
        let rule = Difference::new(FilterSpec::all().compile(), &[]);
        let limits = Limits {
            max_object_bytes: 1000,
            ..Limits::default()
        };
        let o = object("big.json", records.len());
        let (d, _) = stream_by(&o, records.as_bytes(), &rule, limits, spool.path(), 64)
            .expect("read record by record");
        assert_eq!(d.counts.read, 3);
        assert_eq!(d.counts.written, 2);
        assert_eq!(d.skipped_samples[0].record, 1);
        // One event of 5 kB read whole: more than may be held, whether the window holds it
        // whole or not.
        let one = event(4, 5000);
        for chunk in [64, 1 << 20] {
            let e = stream_by(&o, one.as_bytes(), &rule, limits, spool.path(), chunk);
            assert!(
                matches!(e, Err(ObjectError::TooLarge { limit: 1000 })),
                "{e:?}"
            );
        }
    }

    #[test]
    fn a_text_cut_short_fails_the_object_and_keeps_nothing() {
        let lines: String = (0..200)
            .map(|i| {
                format!(
                    "{{\"eventTime\":\"2024-01-01T00:{:02}:{:02}Z\",\"eventName\":\"E\"}}\n",
                    i / 60,
                    i % 60
                )
            })
            .collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, lines.as_bytes()).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let cut = &gz[..gz.len() * 9 / 10];
        let spool = tempfile::tempdir().expect("tmp");
        let rule = Difference::new(FilterSpec::all().compile(), &[]);
        let o = object("cut.jsonl.gz", cut.len());
        let e = stream_by(&o, cut, &rule, Limits::default(), spool.path(), 256);
        assert!(matches!(e, Err(ObjectError::Gzip(_))), "{e:?}");
        assert_eq!(std::fs::read_dir(spool.path()).expect("dir").count(), 0);
        let (d, _) =
            stream_by(&o, &gz[..], &rule, Limits::default(), spool.path(), 256).expect("whole");
        assert_eq!(d.counts.written, 200);
    }

    /// Found by the `decode` fuzz target: a gzip member whose CRC is wrong around text that
    /// is no JSON failed as `not-json` read record by record and as `corrupt-gzip` read whole.
    #[test]
    fn a_broken_gzip_around_bad_text_is_a_gzip_error_as_when_read_whole() {
        let text = format!(
            "3 Records\": [{}]}}",
            "{\"eventName\": \"E\"}, ".repeat(5000)
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, text.as_bytes()).expect("gzip");
        let good = gz.finish().expect("gzip");
        let mut bad = good.clone();
        let crc = bad.len() - 8;
        bad[crc] ^= 0xff;
        let spool = tempfile::tempdir().expect("tmp");
        let rule = Difference::new(FilterSpec::all().compile(), &[]);
        let o = object("bad.json.gz", bad.len());
        let whole =
            crate::process::decode_object(&o, &bad, &rule, Limits::default(), &mut Vec::new());
        assert!(matches!(whole, Err(ObjectError::Gzip(_))), "{whole:?}");
        for chunk in [1, 256, 1 << 20] {
            let e = stream_by(&o, &bad[..], &rule, Limits::default(), spool.path(), chunk);
            assert!(matches!(e, Err(ObjectError::Gzip(_))), "{chunk}: {e:?}");
            // With its CRC right, the text is what fails.
            let e = stream_by(&o, &good[..], &rule, Limits::default(), spool.path(), chunk);
            assert!(matches!(e, Err(ObjectError::NotJson(_))), "{chunk}: {e:?}");
        }
    }

    /// Found by the `decode` fuzz target: a document whose `Records` is not an array, followed
    /// by text that is not JSON, failed as `records-not-array` read whole (the document is
    /// decoded as soon as it is cut out) and as `not-json` read record by record (the stretch's
    /// items were dropped when the splitter met the trailing text).
    #[test]
    fn a_failure_met_before_the_text_breaks_is_the_objects_reason_as_when_read_whole() {
        let spool = tempfile::tempdir().expect("tmp");
        let rule = Difference::new(FilterSpec::all().compile(), &[]);
        for (text, reason) in [
            (r#"{"Records":"x"}}"#, "records-not-array"),
            (r#"{"Records":{}} trailing"#, "records-not-array"),
            (r#"{"Events":7,"Records":[]}]"#, "not-json"),
            (r#"{"Records":[{"eventName":"E"}]}}"#, "not-json"),
        ] {
            let o = object("bad.json", text.len());
            let whole = decode_object(
                &o,
                text.as_bytes(),
                &rule,
                Limits::default(),
                &mut Vec::new(),
            );
            assert_eq!(
                whole.as_ref().map_err(ObjectError::reason).err(),
                Some(reason),
                "{text}"
            );
            for chunk in [1, 3, 16, 1 << 20] {
                let e = stream_by(
                    &o,
                    text.as_bytes(),
                    &rule,
                    Limits::default(),
                    spool.path(),
                    chunk,
                );
                assert_eq!(
                    e.as_ref().map_err(ObjectError::reason).err(),
                    Some(reason),
                    "{text} in stretches of {chunk}"
                );
            }
        }
    }

    /// Found by the `decode` fuzz target: libdeflate inflates only the first member of a
    /// gzip object, and the whole read took that member for the object when its size equalled
    /// the last member's: the other members' records were lost without a word (read record by
    /// record, every member was read).
    #[test]
    fn gzip_members_of_the_same_size_are_all_read() {
        let line = |name: &str| {
            format!("{{\"eventName\":\"{name}\",\"eventTime\":\"2024-11-30T08:00:00Z\"}}\n")
        };
        let member = |text: &str| {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut gz, text.as_bytes()).expect("gzip");
            gz.finish().expect("gzip")
        };
        let (a, b, c) = (line("GetUser"), line("PutUser"), line("ListKey"));
        assert_eq!((a.len(), b.len()), (c.len(), c.len()));
        let spool = tempfile::tempdir().expect("tmp");
        let rule = Difference::new(FilterSpec::all().compile(), &[]);
        // Two members, three, and one member followed by bytes that are no member.
        let mut junk = member(&a);
        junk.extend_from_slice(b"junk");
        junk.extend_from_within(junk.len() - 8..junk.len() - 4);
        for (bytes, read) in [
            ([member(&a), member(&b)].concat(), Some(2)),
            ([member(&a), member(&b), member(&c)].concat(), Some(3)),
            (junk, None),
        ] {
            let o = object("members.json.gz", bytes.len());
            let whole = decode_object(&o, &bytes, &rule, Limits::default(), &mut Vec::new());
            let counts = whole.as_ref().map(|d| d.counts);
            assert_eq!(counts.as_ref().ok().map(|c| c.read), read, "{counts:?}");
            let streamed = stream_by(&o, &bytes[..], &rule, Limits::default(), spool.path(), 7);
            assert_eq!(
                outcome(streamed.map(|(d, _)| d)),
                outcome(whole),
                "read in stretches, then whole"
            );
        }
    }

    #[test]
    fn objects_read_at_once_share_the_budget_and_give_it_back() {
        const MIB: usize = 1 << 20;
        let budget = StreamBudget::new(96 * MIB);
        let shares: Vec<Share> = (0..6).map(|_| budget.take()).collect();
        let bytes: Vec<usize> = shares.iter().map(|s| s.bytes / MIB).collect();
        assert_eq!(bytes, [48, 24, 12, 8, 8, 8]);
        // What they buffer past the budget: the least share of those that found none left.
        assert_eq!(shares.iter().map(|s| s.taken).sum::<usize>(), 96 * MIB);
        assert_eq!(*budget.left(), 0);
        drop(shares);
        assert_eq!(*budget.left(), 96 * MIB);
        assert_eq!(budget.take().bytes, 48 * MIB);
    }

    /// Parquet files under a run's staging folder.
    fn staged_files(dir: &Path) -> usize {
        let mut n = 0;
        let mut todo = vec![dir.to_owned()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    todo.push(p);
                } else if p.extension().is_some_and(|x| x == "parquet") {
                    n += 1;
                }
            }
        }
        n
    }

    #[test]
    fn into_a_lake_rows_are_written_as_read_and_a_failed_object_leaves_none() {
        // About 7 MB of rows over two days, written through a 1 MiB buffer in stretches of
        // 64 kB: the object's writer writes while it reads.
        let lines: String = (0..3000)
            .map(|i| {
                format!(
                    "{{\"eventTime\":\"2024-01-0{}T00:{:02}:{:02}Z\",\"eventID\":\"e{i}\",\"eventName\":\"E\",\"userIdentity\":{{\"accessKeyId\":\"AKIA{:04}\"}},\"requestParameters\":{{\"pad\":\"{}\"}}}}\n",
                    1 + i % 2,
                    i / 60 % 60,
                    i % 60,
                    i % 7,
                    "x".repeat(2000)
                )
            })
            .collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, lines.as_bytes()).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let dir = tempfile::tempdir().expect("tmp");
        let lake = keytrail_lake::Lake::create(dir.path()).expect("lake");
        let txn = Arc::new(lake.begin(FilterSpec::all()).expect("begin"));
        let staging = Staging::Lake {
            txn: Arc::clone(&txn),
            // A share of 1 MiB.
            budget: StreamBudget::new(2 << 20),
            writers: 1,
        };
        let rule = Difference::new(FilterSpec::all().compile(), &[]);
        let staging_dir = dir.path().join("_keytrail/staging");

        let cut = &gz[..gz.len() * 9 / 10];
        let o = object("cut.jsonl.gz", cut.len());
        let e = stream_into(&o, cut, &rule, Limits::default(), &staging, 64 << 10);
        assert!(matches!(e, Err(ObjectError::Gzip(_))), "{e:?}");
        assert_eq!(staged_files(&staging_dir), 0);

        let o = object("whole.jsonl.gz", gz.len());
        let (mut d, hash) =
            stream_into(&o, &gz[..], &rule, Limits::default(), &staging, 64 << 10).expect("whole");
        assert_eq!(hash, crate::pipeline::content_hash(&gz));
        assert_eq!(d.counts.written, 3000);
        assert!(d.batches.is_empty() && d.spooled.is_none());
        let scope = d.staged.take().expect("staged");
        // One file per day.
        assert_eq!(staged_files(&staging_dir), 2);
        txn.adopt(scope).expect("adopt");
        drop(staging);
        let txn = Arc::try_unwrap(txn)
            .map_err(|_| "shared")
            .expect("one owner");
        let files = txn.finish_files().expect("files");
        assert_eq!(files.iter().map(|f| f.rows).sum::<u64>(), 3000);
        txn.abort().expect("abort");
    }
}
