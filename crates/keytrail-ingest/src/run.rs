//! The ingest run: find the objects (local files, S3), skip what the lake already holds, decode
//! the rest in parallel, write Parquet through a bounded buffer, commit (and publish, for a lake
//! in S3).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use keytrail_lake::{Lake, ObjectRecord};
use keytrail_model::FilterSpec;

use crate::pipeline::{Decider, Done, decode_pool, run_local, run_s3};
use crate::process::Limits;
use crate::s3::{S3Options, S3Source, S3Uri};
use crate::s3lake::{S3Lake, S3LakeOptions};
use crate::source::{Location, ObjectRef};
use crate::source::{NameKind, discover_local};
use crate::summary::{CustodySummary, Failure, Progress, RunSummary, SkipReason};
use crate::writer::LakeWriter;
use crate::{IngestError, Shard, custody, s3, source, stream};

/// How many skipped records are listed one by one in a summary.
const MAX_SKIPPED_SAMPLES: usize = 50;

/// What `keytrail ingest` was asked to do, validated.
#[derive(Clone, Debug)]
pub struct IngestOptions {
    /// Local files and directories.
    pub inputs: Vec<Input>,
    /// The lake directory (created if needed).
    pub lake: PathBuf,
    /// Which events to keep.
    pub filter: FilterSpec,
    /// Decoding threads.
    pub threads: usize,
    pub limits: Limits,
    /// Decoded rows held in memory before the largest partition is written out (bytes).
    pub buffer_bytes: usize,
    /// How to reach S3, for `s3://` inputs.
    pub s3: S3Options,
    /// A ready S3 client (tests build their own); otherwise one is built from `s3`.
    pub s3_client: Option<aws_sdk_s3::Client>,
    /// `--shard I/N` or `--shard auto`: read only the objects whose identity hashes to this
    /// share.
    pub shard: Option<Shard>,
    /// A lake in S3. `lake` is then the run's local working copy: an empty directory (see
    /// [`s3lake`]).
    pub remote_lake: Option<S3Uri>,
    pub s3_lake: S3LakeOptions,
    /// `--verify-logs`: validate the inputs against CloudTrail's digest files first, and record
    /// for each object read whether a valid digest chain covers its bytes. The window, accounts
    /// and regions come from `filter` and `s3`.
    pub verify_logs: Option<keytrail_custody::VerifyOptions>,
}

/// Where objects come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A local file or directory.
    Local(PathBuf),
    /// `s3://bucket/prefix`.
    S3(S3Uri),
    /// One object already found (by an earlier listing): read as it is, not listed again.
    Object(ObjectRef),
}

impl Input {
    /// `s3://...` is S3, anything else a local path.
    pub fn parse(text: &str) -> Result<Input, IngestError> {
        match S3Uri::parse(text) {
            Some(uri) => Ok(Input::S3(uri?)),
            None => Ok(Input::Local(PathBuf::from(text))),
        }
    }
}

impl IngestOptions {
    pub fn new(inputs: Vec<PathBuf>, lake: PathBuf) -> IngestOptions {
        IngestOptions::with_inputs(inputs.into_iter().map(Input::Local).collect(), lake)
    }

    pub fn with_inputs(inputs: Vec<Input>, lake: PathBuf) -> IngestOptions {
        IngestOptions {
            inputs,
            lake,
            filter: FilterSpec::all(),
            threads: std::thread::available_parallelism().map_or(2, usize::from),
            limits: Limits::default(),
            buffer_bytes: 96 << 20,
            s3: S3Options::default(),
            s3_client: None,
            shard: None,
            remote_lake: None,
            s3_lake: S3LakeOptions::default(),
            verify_logs: None,
        }
    }
}

/// The S3 side of a run: a runtime, a client, and what listing found.
struct S3Run {
    rt: tokio::runtime::Runtime,
    source: S3Source,
    objects: Vec<ObjectRef>,
}

/// The runtime and client of a run that touches S3 (inputs or the lake).
fn s3_runtime(
    opts: &IngestOptions,
) -> Result<(tokio::runtime::Runtime, aws_sdk_s3::Client), IngestError> {
    let rt = s3::runtime("keytrail-s3")?;
    let client = match &opts.s3_client {
        Some(c) => c.clone(),
        None => rt.block_on(s3::connect(&opts.s3)),
    };
    Ok((rt, client))
}

fn list_s3(
    opts: &IngestOptions,
    runtime: Option<(tokio::runtime::Runtime, aws_sdk_s3::Client)>,
) -> Result<Option<S3Run>, IngestError> {
    let uris: Vec<&S3Uri> = opts
        .inputs
        .iter()
        .filter_map(|i| match i {
            Input::S3(u) => Some(u),
            _ => None,
        })
        .collect();
    let mut objects: Vec<ObjectRef> = opts
        .inputs
        .iter()
        .filter_map(|i| match i {
            Input::Object(o) if matches!(o.location, Location::S3 { .. }) => Some(o.clone()),
            _ => None,
        })
        .collect();
    let (rt, client) = match runtime {
        Some(r) => r,
        None if uris.is_empty() && objects.is_empty() => return Ok(None),
        None => s3_runtime(opts)?,
    };
    let source = S3Source::new(client, opts.s3.clone());
    let window = opts.filter.window();
    for uri in uris {
        let listing = rt.block_on(source.list(uri, &window))?;
        tracing::info!(uri = %uri, objects = listing.objects.len(), requests = listing.requests, "listed");
        objects.extend(listing.objects);
    }
    Ok(Some(S3Run {
        rt,
        source,
        objects,
    }))
}

/// Ingest CloudTrail objects (local files, S3) into a lake.
pub fn ingest(opts: &IngestOptions, progress: &dyn Progress) -> Result<RunSummary, IngestError> {
    let started = Instant::now();
    // A lake in S3: pull its records into the working copy first.
    let mut remote = None;
    let mut runtime = None;
    if let Some(uri) = &opts.remote_lake {
        let (rt, client) = s3_runtime(opts)?;
        let s3lake = S3Lake::new(client.clone(), uri.clone(), opts.s3_lake.clone());
        progress.phase("reading the lake's manifest from S3");
        let pulled = rt.block_on(s3lake.pull(&opts.lake))?;
        for run in &pulled.rolled_forward {
            tracing::warn!(run = %run, "finished publishing a run that had committed before it was stopped");
        }
        for run in &pulled.discarded {
            tracing::warn!(run = %run, "deleted the staged files of a run that never committed");
        }
        remote = Some((s3lake, pulled.manifest));
        runtime = Some((rt, client));
    }
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
        lake: match &opts.remote_lake {
            Some(uri) => uri.to_string(),
            None => opts.lake.display().to_string(),
        },
        ..RunSummary::default()
    };
    // --verify-logs: what the digests say of the inputs, before reading them.
    let coverage = match &opts.verify_logs {
        Some(v) => {
            progress.phase("validating the logs against their digest files");
            let mut v = v.clone();
            v.since = opts.filter.since;
            v.until = opts.filter.until;
            v.accounts = opts.s3.accounts.clone();
            v.regions = opts.s3.regions.clone();
            let report =
                custody::verify_inputs(&opts.inputs, &opts.s3, opts.s3_client.clone(), &v)?;
            summary.custody = Some(CustodySummary::new(&report));
            Some(keytrail_custody::Coverage::from_report(&report))
        }
        None => None,
    };
    let local: Vec<PathBuf> = opts
        .inputs
        .iter()
        .filter_map(|i| match i {
            Input::Local(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    let mut found = discover_local(&local)?;
    found
        .objects
        .extend(opts.inputs.iter().filter_map(|i| match i {
            Input::Object(o) if matches!(o.location, Location::Local(_)) => Some(o.clone()),
            _ => None,
        }));
    let mut s3_run = list_s3(opts, runtime)?;
    let s3_objects = s3_run
        .as_mut()
        .map(|r| std::mem::take(&mut r.objects))
        .unwrap_or_default();
    summary.objects.seen = (found.objects.len() + found.not_logs.len() + s3_objects.len()) as u64;
    for p in &found.not_logs {
        summary.skip(p.display().to_string(), SkipReason::NotALogFile, None);
    }

    let decider = Decider::new(&opts.filter, &index);
    let mut todo = Vec::with_capacity(found.objects.len());
    let mut s3_todo = Vec::with_capacity(s3_objects.len());
    for object in found.objects.into_iter().chain(s3_objects) {
        if let Some(shard) = opts.shard
            && !shard.takes(&object.uri())
        {
            summary.skip(object.display(), SkipReason::OtherShard, None);
        } else if matches!(object.location, Location::S3 { .. })
            && !source::looks_like_log(object.file_name())
        {
            summary.skip(object.display(), SkipReason::NotALogFile, None);
        } else if object.name_kind() == NameKind::Digest {
            summary.skip(object.display(), SkipReason::Digest, None);
        } else if let Some((reason, detail)) = decider.before_read(&object) {
            summary.skip(object.display(), reason, detail);
        } else if matches!(object.location, Location::S3 { .. }) {
            s3_todo.push(object);
        } else {
            todo.push(object);
        }
    }
    // In delivery-time order (CloudTrail puts it in every object name), then name order, so
    // the events of one day arrive together and each day's partition fills, and is written,
    // as a whole rather than in many small files.
    for list in [&mut todo, &mut s3_todo] {
        list.sort_by_cached_key(|o| {
            (
                source::delivery_time(o.file_name()).map(str::to_owned),
                o.location.cmp_key(),
            )
        });
    }
    progress.start(
        (todo.len() + s3_todo.len()) as u64,
        todo.iter().chain(&s3_todo).map(|o| o.size).sum(),
    );

    let pool = decode_pool(opts.threads)?;
    let txn = Arc::new(lake.begin(opts.filter.clone())?);
    // An object read record by record writes its rows as it is read, on writer threads of its
    // own, within a share of a second buffer as large as the run's. Half the run's threads
    // (it shares the cores with its decoding), at most 2: with 4 a 5 GB object at 16 threads
    // was no faster and peaked 70 MiB higher (docs/benchmarks.md).
    let decider = decider.with_staging(stream::Staging::Lake {
        txn: Arc::clone(&txn),
        budget: stream::StreamBudget::new(opts.buffer_bytes),
        writers: (opts.threads / 2).clamp(1, 2),
    });
    summary.run_id = Some(txn.run_id().to_owned());
    let mut writer = LakeWriter::new(Arc::clone(&txn), opts.buffer_bytes, opts.threads);
    let mut records: Vec<ObjectRecord> = Vec::new();
    let mut on_done = |done| {
        match done {
            Done::Read {
                object,
                content_hash,
                mut decoded,
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
                summary.skipped_record_samples.extend(
                    std::mem::take(&mut decoded.skipped_samples)
                        .into_iter()
                        .take(room),
                );
                let verdict = coverage
                    .as_ref()
                    .map(|c| c.status_of(&object.display(), &content_hash).to_owned());
                if let (Some(v), Some(c)) = (&verdict, summary.custody.as_mut()) {
                    *c.read.entry(v.clone()).or_default() += 1;
                }
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
                    custody: verdict,
                });
                summary.objects.read += 1;
                if opts.limits.index_keys {
                    summary
                        .key_index
                        .push((object.clone(), std::mem::take(&mut decoded.keys)));
                }
                let display = object.display();
                if let Some(scope) = decoded.staged.take() {
                    txn.adopt(scope)?;
                }
                for batch in decoded.into_batches() {
                    // An object read whole hands its rows over here (one read record by
                    // record was written as it was read, and adopted above); rows that could
                    // not be had fail the run, as some of the object's are already handed on.
                    let (table, day, batch, bytes) = batch.map_err(|e| IngestError::Object {
                        object: display.clone(),
                        reason: e.to_string(),
                    })?;
                    writer.accept(table, day, batch, bytes)?;
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
    };
    let mut result = run_local(todo, &pool, opts.limits, &decider, progress, &mut on_done);
    if let (Ok(()), Some(run)) = (&result, &s3_run) {
        result = run_s3(
            s3_todo,
            &run.source,
            &run.rt,
            &pool,
            opts.limits,
            &decider,
            progress,
            &mut on_done,
        );
    }
    drop(decider);
    let finished = writer.finish().and_then(|txn| {
        let files = txn.finish_files()?;
        Ok((files.len() as u64, files.iter().map(|f| f.bytes).sum()))
    });
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
    let mut commit = txn.commit(records)?;
    if let (Some(local), Some((s3lake, pulled))) = (&commit, remote) {
        progress.phase("publishing to S3");
        let rt = &s3_run
            .as_ref()
            .ok_or_else(|| IngestError::Config("internal: no S3 runtime".into()))?
            .rt;
        commit = Some(rt.block_on(s3lake.push(&lake, local, pulled))?);
    }
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
