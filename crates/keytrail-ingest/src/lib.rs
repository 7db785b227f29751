//! keytrail ingestion: CloudTrail objects from local files (and S3) → the Parquet lake.
//!
//! [`ingest`] is the one entry point the CLI calls: it finds the objects, skips what the lake
//! already holds, decodes the rest in parallel, writes Parquet through a bounded buffer, and
//! commits the run to the lake's manifest. Its [`RunSummary`] accounts for every object and
//! every record.

pub mod decode;
mod error;
pub mod pipeline;
pub mod process;
pub mod source;
pub mod summary;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use keytrail_lake::{Lake, ObjectRecord};
use keytrail_model::FilterSpec;

pub use error::{IngestError, ObjectError};
pub use pipeline::{Decider, Done, content_hash};
pub use process::{Limits, SkippedRecord};
pub use source::{Location, ObjectRef};
pub use summary::{EventCounts, Failure, NoProgress, Progress, RunSummary, SkipReason};

use crate::pipeline::{decode_pool, run_local};
use crate::source::{NameKind, discover_local};
use crate::writer::LakeWriter;

/// How many skipped records are listed one by one in a summary.
const MAX_SKIPPED_SAMPLES: usize = 50;

/// What `keytrail ingest` was asked to do, validated.
#[derive(Clone, Debug)]
pub struct IngestOptions {
    /// Local files and directories.
    pub inputs: Vec<PathBuf>,
    /// The lake directory (created if needed).
    pub lake: PathBuf,
    /// Which events to keep.
    pub filter: FilterSpec,
    /// Decoding threads.
    pub threads: usize,
    pub limits: Limits,
    /// Decoded rows held in memory before the largest partition is written out (bytes).
    pub buffer_bytes: usize,
}

impl IngestOptions {
    pub fn new(inputs: Vec<PathBuf>, lake: PathBuf) -> IngestOptions {
        IngestOptions {
            inputs,
            lake,
            filter: FilterSpec::all(),
            threads: std::thread::available_parallelism().map_or(2, usize::from),
            limits: Limits::default(),
            buffer_bytes: 96 << 20,
        }
    }
}

/// Ingest local CloudTrail files into a lake.
pub fn ingest(opts: &IngestOptions, progress: &dyn Progress) -> Result<RunSummary, IngestError> {
    let started = Instant::now();
    let lake = Lake::create(&opts.lake)?;
    let recovery = lake.recover()?;
    for run in &recovery.rolled_forward {
        tracing::warn!(run = %run, "finished publishing a run that had committed before it was stopped");
    }
    for run in &recovery.discarded {
        tracing::warn!(run = %run, "deleted the files of a run that was stopped before it committed");
    }
    let manifest = lake.manifest()?;
    let index = manifest.index();

    let mut summary = RunSummary {
        lake: opts.lake.display().to_string(),
        ..RunSummary::default()
    };
    let found = discover_local(&opts.inputs)?;
    summary.objects.seen = (found.objects.len() + found.not_logs.len()) as u64;
    for p in &found.not_logs {
        summary.skip(p.display().to_string(), SkipReason::NotALogFile, None);
    }

    let decider = Decider::new(&opts.filter, &index);
    let mut todo = Vec::with_capacity(found.objects.len());
    for object in found.objects {
        if object.name_kind() == NameKind::Digest {
            summary.skip(object.display(), SkipReason::Digest, None);
        } else if let Some((reason, detail)) = decider.before_read(&object) {
            summary.skip(object.display(), reason, detail);
        } else {
            todo.push(object);
        }
    }
    // In delivery-time order (CloudTrail puts it in every object name), then name order, so
    // the events of one day arrive together and each day's partition fills, and is written,
    // as a whole rather than in many small files.
    todo.sort_by_cached_key(|o| {
        (
            source::delivery_time(o.file_name()).map(str::to_owned),
            o.location.cmp_key(),
        )
    });
    progress.start(todo.len() as u64, todo.iter().map(|o| o.size).sum());

    let pool = decode_pool(opts.threads)?;
    let txn = Arc::new(lake.begin(opts.filter.clone())?);
    summary.run_id = Some(txn.run_id().to_owned());
    let mut writer = LakeWriter::new(Arc::clone(&txn), opts.buffer_bytes, opts.threads);
    let mut records: Vec<ObjectRecord> = Vec::new();
    let result = run_local(todo, &pool, opts.limits, &decider, progress, |done| {
        match done {
            Done::Read {
                object,
                content_hash,
                decoded,
            } => {
                summary.bytes_read += object.size;
                summary.events += decoded.counts;
                for (reason, n) in &decoded.skipped_by_reason {
                    *summary
                        .skipped_records_by_reason
                        .entry((*reason).to_owned())
                        .or_default() += n;
                }
                let room = MAX_SKIPPED_SAMPLES.saturating_sub(summary.skipped_record_samples.len());
                summary
                    .skipped_record_samples
                    .extend(decoded.skipped_samples.into_iter().take(room));
                records.push(ObjectRecord {
                    source: object.uri(),
                    size: object.size,
                    modified: object.modified,
                    etag: object.etag.clone(),
                    content_hash,
                    events: decoded.counts.read,
                    written: decoded.counts.written,
                    insights: decoded.counts.insights,
                    filtered: decoded.counts.filtered,
                    already_written: decoded.counts.already_written,
                    skipped: decoded.counts.skipped,
                });
                summary.objects.read += 1;
                for (table, day, batch) in decoded.batches {
                    writer.accept(table, day, batch)?;
                }
            }
            Done::Skipped {
                object,
                reason,
                detail,
            } => summary.skip(object.display(), reason, detail),
            Done::Failed { object, error } => {
                tracing::debug!(object = %object.display(), "{error}");
                summary.objects.failed += 1;
                summary.failures.push(Failure {
                    object: object.display(),
                    code: error.reason().to_owned(),
                    reason: error.to_string(),
                });
            }
        }
        Ok(())
    });
    let finished = writer.finish(&pool);
    let txn = Arc::try_unwrap(txn)
        .map_err(|_| IngestError::Config("internal: the transaction is still shared".into()))?;
    match result.and(finished) {
        Ok((files, bytes)) => {
            summary.files_written = files;
            summary.bytes_written = bytes;
        }
        Err(e) => {
            // Nothing of a failed run is committed; its staged files go.
            if let Err(abort) = txn.abort() {
                tracing::warn!("could not remove the staged files of the failed run: {abort}");
            }
            return Err(e);
        }
    }
    progress.phase("committing");
    let commit = txn.commit(records)?;
    summary.commit = commit.as_ref().map(|c| c.seq);
    if let Some(c) = &commit {
        let kd: u64 = c
            .files
            .iter()
            .filter(|f| f.table == "key_daily")
            .map(|f| f.bytes)
            .sum();
        summary.bytes_written += kd;
        summary.files_written += c.files.iter().filter(|f| f.table == "key_daily").count() as u64;
    }
    summary.failures.sort_by(|a, b| a.object.cmp(&b.object));
    summary.partial = summary.objects.failed > 0;
    summary.elapsed_seconds = started.elapsed().as_secs_f64();
    progress.finish();
    Ok(summary)
}

impl Location {
    /// A sort key that orders local paths and S3 keys stably.
    fn cmp_key(&self) -> String {
        match self {
            Location::Local(p) => p.display().to_string(),
            Location::S3 { bucket, key } => format!("s3://{bucket}/{key}"),
        }
    }
}
