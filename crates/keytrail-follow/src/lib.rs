//! `keytrail follow`: keep a lake current as CloudTrail delivers, and raise findings as events
//! arrive.
//!
//! Two ways to learn of new objects:
//!
//! - **SQS** ([`Source::Queue`]): long-poll a queue that receives CloudTrail's SNS
//!   notifications or S3 event notifications (raw or in an SNS envelope; [`notice`]). What
//!   arrives within the batch window becomes one batch; while it is read, its messages'
//!   visibility timeout is extended ([`queue::Heartbeat`]). A message is deleted only once
//!   every object it names is committed (or was already in the lake, or is not a log: digests,
//!   other names). A message whose objects could not be read, or that is not understood, is
//!   left hidden for a time that doubles with each receive ([`queue::backoff`]) and is then
//!   received again, until the queue's redrive policy moves it aside.
//! - **Polling** ([`Source::Poll`]): list the day folders that can still receive objects
//!   (yesterday's and today's, UTC, in every account and region of the delivery layout) every
//!   poll interval and read what the manifest does not hold.
//!
//! Each batch is one ordinary, exactly-once `keytrail ingest` commit of the objects the batch
//! names ([`keytrail_ingest::ingest`] with [`Input::Object`]). After it, the rules and
//! detectors run over the new events ([`fresh`]) and each new finding is appended once to the
//! findings output ([`findings`]), across restarts.
//!
//! The lake is a directory or a lake in S3 (`ingest.remote_lake`): then each batch commits
//! through a working copy made for it and published as `keytrail ingest --lake s3://...`
//! publishes ([`keytrail_ingest::s3lake`]), the findings read the lake in place, and the
//! findings cursor is kept in the lake's bucket.
//!
//! Nothing here holds state that the lake, the queue and the findings cursor do not: a follower
//! killed at any point and started again loses nothing and writes nothing twice.

pub mod error;
pub mod findings;
pub mod fresh;
pub mod notice;
pub mod queue;
#[doc(hidden)]
pub mod testkit;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use keytrail_engine::{LakeLocation, S3Access, S3Location};
use keytrail_ingest::s3::{S3Source, S3Uri};
use keytrail_ingest::s3access::S3Credentials;
use keytrail_ingest::s3lake::S3Lake;
use keytrail_ingest::source::{NameKind, looks_like_log};
use keytrail_ingest::{Decider, IngestOptions, Input, Location, NoProgress, ObjectRef, RunSummary};
use keytrail_lake::{Lake, crash_point};
use keytrail_model::TimeWindow;
use keytrail_model::time::{day_of, format_millis, now_millis};
use serde::Serialize;

pub use error::FollowError;
pub use findings::{CursorHome, FindingsLog, Sink};
pub use fresh::{Detection, Fresh, Raised};
pub use notice::{Named, Notice};
pub use queue::Queue;

/// Where new objects are learnt of.
#[derive(Clone, Debug)]
pub enum Source {
    /// An SQS queue URL.
    Queue(String),
    /// Buckets (and prefixes) to list.
    Poll(Vec<S3Uri>),
}

/// What `keytrail follow` was asked to do, validated.
#[derive(Clone, Debug)]
pub struct FollowOptions {
    pub source: Source,
    /// How every batch is ingested: the lake, the filter, threads, limits, and how to reach S3
    /// (`inputs` is set per batch; `s3.accounts` and `s3.regions` also filter notifications).
    /// With `remote_lake` set the lake is in S3, and `lake` is set per batch to its working
    /// copy.
    pub ingest: IngestOptions,
    /// A lake in S3: where each batch's working copy is made (the system's temporary
    /// directory when `None`).
    pub work_dir: Option<PathBuf>,
    /// A lake in S3: the region, endpoint and credentials the query engine reads it with when
    /// the findings are computed; found as `ingest.s3` says when `None` (tests give their
    /// own). Temporary credentials are renewed before they expire.
    pub lake_credentials: Option<S3Credentials>,
    /// Where findings go; `None`: no detection.
    pub findings: Option<Sink>,
    pub detection: Detection,
    /// How long to gather messages after the first one of a batch.
    pub batch_window: Duration,
    /// Polling: the pause between rounds.
    pub poll_interval: Duration,
    /// SQS: how long a received message stays hidden from other receivers; extended while its
    /// batch is read, and the base of the backoff of messages left for a retry.
    pub visibility: Duration,
    /// SQS: the most messages in one batch.
    pub max_batch: usize,
    /// SQS: an endpoint for an SQS-compatible service (otherwise the region's).
    pub sqs_endpoint: Option<String>,
    /// A ready SQS client (tests build their own).
    pub sqs_client: Option<aws_sdk_sqs::Client>,
    /// A status line at least this often while nothing arrives.
    pub idle_status: Duration,
    /// SQS: the longest wait of one receive while no batch is open (SQS allows 20 s).
    pub long_poll: Duration,
}

impl FollowOptions {
    pub fn new(source: Source, lake: PathBuf) -> FollowOptions {
        FollowOptions {
            source,
            ingest: IngestOptions::with_inputs(Vec::new(), lake),
            work_dir: None,
            lake_credentials: None,
            findings: None,
            detection: Detection::default(),
            batch_window: Duration::from_secs(10),
            poll_interval: Duration::from_secs(60),
            visibility: Duration::from_secs(120),
            max_batch: 2000,
            sqs_endpoint: None,
            sqs_client: None,
            idle_status: Duration::from_secs(60),
            long_poll: queue::MAX_WAIT,
        }
    }
}

/// Counters since the follower started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Batches read (SQS: with at least one object to read; polling: rounds that found one).
    pub batches: u64,
    /// Commits made.
    pub commits: u64,
    /// Messages received (a message received again counts again).
    pub messages: u64,
    /// Messages deleted.
    pub deleted: u64,
    /// Messages not understood, left for the queue's redrive policy.
    pub not_understood: u64,
    /// Messages left for a retry because an object they name could not be read.
    pub retried: u64,
    /// Objects read and committed.
    pub objects_read: u64,
    /// Objects passed over: already in the lake, digests, not log files, other accounts or
    /// regions.
    pub objects_skipped: u64,
    /// Objects that could not be read (each is tried again when its message returns).
    pub objects_failed: u64,
    /// Events written to the lake.
    pub events: u64,
    /// Findings written.
    pub findings: u64,
    /// Batches that failed as a whole and were tried again.
    pub errors: u64,
}

/// What one batch did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BatchReport {
    pub messages: u64,
    pub objects: u64,
    pub read: u64,
    pub skipped: u64,
    pub failed: u64,
    pub events: u64,
    pub findings: u64,
    /// The commit made, if any.
    pub commit: Option<u64>,
    /// Seconds from the first message (or the round's start) to the findings written.
    pub seconds: f64,
    /// Objects that could not be read, with the reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<keytrail_ingest::Failure>,
}

/// Why a status is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusKind {
    Started,
    Batch,
    Idle,
    Error,
    Stopped,
}

/// The follower's status, after each batch and while idle.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub status: StatusKind,
    /// RFC 3339.
    pub time: String,
    /// `sqs` or `poll`.
    pub mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchReport>,
    pub totals: Counters,
    /// For the last batch: seconds from the delivery of its oldest object (SQS: the
    /// notification's arrival in the queue; polling: the object's `LastModified`) to its
    /// commit.
    pub lag_seconds: Option<f64>,
    /// The newest delivery committed so far (RFC 3339), and how long ago it was.
    pub newest_delivery: Option<String>,
    pub newest_delivery_age_seconds: Option<f64>,
    /// SQS: messages waiting in the queue, as SQS approximates it.
    pub queue_waiting: Option<u64>,
    /// The last commit whose findings are written.
    pub findings_commit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Account and region of a key in CloudTrail's delivery layout
/// (`…/AWSLogs/[o-…/]<account>/CloudTrail/<region>/…`).
pub fn account_and_region(key: &str) -> Option<(&str, &str)> {
    let rest = &key[key.find("AWSLogs/")? + "AWSLogs/".len()..];
    let mut parts = rest.split('/');
    let mut account = parts.next()?;
    if account.starts_with("o-") {
        account = parts.next()?;
    }
    let _kind = parts.next()?;
    let region = parts.next()?;
    Some((account, region))
}

/// One message of a batch.
struct Held {
    msg: queue::Received,
    /// Indexes into the batch's objects.
    objects: Vec<usize>,
}

/// A batch gathered from the queue.
#[derive(Default)]
struct Batch {
    held: Vec<Held>,
    objects: Vec<ObjectRef>,
    at: HashMap<Location, usize>,
    /// When each object was delivered (ms), the earliest notification naming it.
    delivered: Vec<Option<i64>>,
    started: Option<Instant>,
    /// Keeps the messages hidden while the batch is gathered and read.
    heartbeat: Option<queue::Heartbeat>,
}

struct Follower<'a> {
    opts: &'a FollowOptions,
    rt: tokio::runtime::Runtime,
    s3: aws_sdk_s3::Client,
    /// The lake, when it is in S3, and how the query engine signs its reads of it.
    remote: Option<(S3Lake, S3Credentials)>,
    log: Option<FindingsLog>,
    totals: Counters,
    lag: Option<f64>,
    newest: Option<i64>,
    waiting: Option<u64>,
    stop: &'a AtomicBool,
    observer: &'a mut dyn FnMut(&Status),
    mode: &'static str,
    /// Consecutive failed batches (the pause before the next attempt doubles).
    failures: u32,
}

/// Follow until `stop` is set (SIGTERM, SIGINT); report each batch to `observer`.
///
/// Errors while starting (the lake, the queue, the findings output) are returned; once
/// running, a batch that fails is logged, reported and tried again after a pause.
pub fn follow(
    opts: &FollowOptions,
    stop: &AtomicBool,
    observer: &mut dyn FnMut(&Status),
) -> Result<Counters, FollowError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("keytrail-follow")
        .enable_all()
        .build()
        .map_err(FollowError::Runtime)?;
    let s3 = match &opts.ingest.s3_client {
        Some(c) => c.clone(),
        None => rt.block_on(keytrail_ingest::s3::connect(&opts.ingest.s3)),
    };
    let remote = match &opts.ingest.remote_lake {
        None => None,
        Some(uri) => {
            let creds = match &opts.lake_credentials {
                Some(c) => c.clone(),
                None => rt.block_on(keytrail_ingest::s3access::resolve(&opts.ingest.s3))?,
            };
            let lake = S3Lake::new(s3.clone(), uri.clone(), opts.ingest.s3_lake.clone());
            Some((lake, creds))
        }
    };
    // Create the lake if it does not exist, finish or clean up runs stopped half-way.
    let (rolled_forward, discarded, last_seq) = match &remote {
        None => {
            let lake = Lake::create(&opts.ingest.lake)?;
            let recovery = lake.recover()?;
            let last = lake.manifest()?.last_seq();
            (recovery.rolled_forward, recovery.discarded, last)
        }
        Some((lake, ..)) => {
            let work = working_copy(opts.work_dir.as_deref())?;
            let pulled = rt.block_on(lake.pull(&work.path().join("lake")))?;
            let last = pulled.manifest.last_seq();
            (pulled.rolled_forward, pulled.discarded, last)
        }
    };
    for run in &rolled_forward {
        tracing::warn!(run = %run, "finished publishing a run that had committed before it was stopped");
    }
    for run in &discarded {
        tracing::warn!(run = %run, "deleted the files of a run that was stopped before it committed");
    }
    let log = match &opts.findings {
        Some(sink) => {
            let home = match &remote {
                None => CursorHome::Dir(opts.ingest.lake.clone()),
                Some((lake, ..)) => CursorHome::S3 {
                    lake: lake.clone(),
                    rt: rt.handle().clone(),
                },
            };
            Some(FindingsLog::open(home, sink.clone(), last_seq)?)
        }
        None => None,
    };
    let mode = match opts.source {
        Source::Queue(_) => "sqs",
        Source::Poll(_) => "poll",
    };
    let mut f = Follower {
        opts,
        rt,
        s3,
        remote,
        log,
        totals: Counters::default(),
        lag: None,
        newest: None,
        waiting: None,
        stop,
        observer,
        mode,
        failures: 0,
    };
    // Findings of commits made before a stop (by this follower, or by `keytrail ingest`)
    // that were not written yet.
    f.findings()?;
    match &opts.source {
        Source::Queue(url) => {
            let client = match &opts.sqs_client {
                Some(c) => c.clone(),
                None => f.rt.block_on(queue::connect(
                    &opts.ingest.s3,
                    opts.sqs_endpoint.as_deref(),
                    url,
                )),
            };
            let q = Queue::new(client, url.clone());
            f.waiting = f.rt.block_on(q.waiting())?;
            f.report(StatusKind::Started, None, None);
            f.run_queue(&q);
        }
        Source::Poll(uris) => {
            if uris.is_empty() {
                return Err(FollowError::Config(
                    "polling needs at least one s3://BUCKET[/PREFIX]".into(),
                ));
            }
            f.report(StatusKind::Started, None, None);
            f.run_poll(uris);
        }
    }
    f.report(StatusKind::Stopped, None, None);
    Ok(f.totals)
}

impl Follower<'_> {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleep up to `d`, waking when asked to stop.
    fn pause(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopped() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }

    fn report(&mut self, kind: StatusKind, batch: Option<BatchReport>, error: Option<String>) {
        let now = now_millis();
        let status = Status {
            status: kind,
            time: format_millis(now),
            mode: self.mode,
            batch,
            totals: self.totals.clone(),
            lag_seconds: self.lag,
            newest_delivery: self.newest.map(format_millis),
            newest_delivery_age_seconds: self.newest.map(|t| (now - t).max(0) as f64 / 1000.0),
            queue_waiting: self.waiting,
            findings_commit: self.log.as_ref().map(FindingsLog::seq),
            error,
        };
        (self.observer)(&status);
    }

    /// After a batch failed as a whole: log it, report it, and pause (1 s, doubling, at most a
    /// minute).
    fn failed(&mut self, e: &FollowError) {
        self.totals.errors += 1;
        self.failures += 1;
        let wait = Duration::from_secs(1 << self.failures.min(6)).min(Duration::from_secs(60));
        tracing::error!("{e}; trying again in {} s", wait.as_secs());
        self.report(StatusKind::Error, None, Some(e.to_string()));
        self.pause(wait);
    }

    /// Write the findings of the commits after the findings cursor.
    fn findings(&mut self) -> Result<u64, FollowError> {
        let Some(log) = self.log.as_mut() else {
            return Ok(0);
        };
        let (lake, manifest) = match &self.remote {
            None => (LakeLocation::Dir(self.opts.ingest.lake.clone()), None),
            Some((remote, c)) => {
                let access = S3Access::with_credentials(
                    c.region.clone(),
                    c.endpoint_url.clone(),
                    Arc::new(c.credentials.clone()),
                );
                let uri = remote.uri();
                // The commit records this follower has read before come from its cache: only
                // the batch's own (and any other writer's since) are fetched.
                let manifest = self.rt.block_on(remote.read_manifest())?;
                (
                    LakeLocation::S3(S3Location::new(uri.bucket.clone(), &uri.prefix, access)),
                    Some(manifest),
                )
            }
        };
        let fresh = fresh::fresh_as_of(lake, manifest, log.seq(), &self.opts.detection)?;
        let n = log.append(&fresh)? as u64;
        self.totals.findings += n;
        Ok(n)
    }

    /// One ordinary ingest commit of `objects` (into a lake in S3: through a working copy made
    /// for it, deleted after).
    fn ingest(&mut self, objects: Vec<ObjectRef>) -> Result<RunSummary, FollowError> {
        let mut o = self.opts.ingest.clone();
        o.inputs = objects.into_iter().map(Input::Object).collect();
        o.s3_client = Some(self.s3.clone());
        let work = match &self.remote {
            Some(_) => {
                let w = working_copy(self.opts.work_dir.as_deref())?;
                o.lake = w.path().join("lake");
                Some(w)
            }
            None => None,
        };
        let s = keytrail_ingest::ingest(&o, &NoProgress)?;
        drop(work);
        crash_point("follow-after-commit");
        self.totals.commits += u64::from(s.commit.is_some());
        self.totals.objects_read += s.objects.read;
        self.totals.objects_skipped += s.objects.skipped_total();
        self.totals.objects_failed += s.objects.failed;
        self.totals.events += s.events.written + s.events.insights;
        for f in &s.failures {
            tracing::warn!(object = %f.object, "{}", f.reason);
        }
        Ok(s)
    }

    /// Whether the follower reads this object at all: not digests, and within `--account` and
    /// `--trail-region`.
    fn wanted(&self, key: &str) -> bool {
        if keytrail_ingest::source::classify_name(key) == NameKind::Digest {
            return false;
        }
        let s3 = &self.opts.ingest.s3;
        if s3.accounts.is_empty() && s3.regions.is_empty() {
            return true;
        }
        match account_and_region(key) {
            Some((account, region)) => {
                (s3.accounts.is_empty() || s3.accounts.iter().any(|a| a == account))
                    && (s3.regions.is_empty() || s3.regions.iter().any(|r| r == region))
            }
            None => true,
        }
    }

    // ---------------------------------------------------------------------------------------
    // SQS

    fn run_queue(&mut self, q: &Queue) {
        let mut last_status = Instant::now();
        while !self.stopped() {
            match self.gather(q) {
                Ok(Some(batch)) => {
                    match self.process(q, batch) {
                        Ok(report) => {
                            self.failures = 0;
                            self.waiting = self.rt.block_on(q.waiting()).ok().flatten();
                            self.report(StatusKind::Batch, Some(report), None);
                        }
                        Err(e) => self.failed(&e),
                    }
                    last_status = Instant::now();
                }
                Ok(None) => {
                    if last_status.elapsed() >= self.opts.idle_status && !self.stopped() {
                        self.waiting = self.rt.block_on(q.waiting()).ok().flatten();
                        self.report(StatusKind::Idle, None, None);
                        last_status = Instant::now();
                    }
                }
                Err(e) => {
                    self.failed(&e);
                    last_status = Instant::now();
                }
            }
        }
    }

    /// Receive `n` calls' worth of messages at once; `None` when asked to stop meanwhile.
    fn receive(
        &self,
        q: &Queue,
        n: usize,
        wait: Duration,
    ) -> Result<Option<Vec<queue::Received>>, FollowError> {
        let stop = self.stop;
        let vis = self.opts.visibility;
        self.rt.block_on(async {
            let calls = futures::future::join_all((0..n.max(1)).map(|_| q.receive(wait, vis)));
            let watch = async {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            };
            tokio::select! {
                got = calls => {
                    let mut out = Vec::new();
                    let mut first_err = None;
                    for r in got {
                        match r {
                            Ok(v) => out.extend(v),
                            Err(e) => { first_err.get_or_insert(e); }
                        }
                    }
                    match (out.is_empty(), first_err) {
                        (true, Some(e)) => Err(e),
                        _ => Ok(Some(out)),
                    }
                }
                () = watch => Ok(None),
            }
        })
    }

    /// Gather one batch: wait for a first message, then take what arrives within the batch
    /// window. `None` when nothing arrived (or the follower was asked to stop: then what was
    /// gathered is handed back to the queue).
    fn gather(&mut self, q: &Queue) -> Result<Option<Batch>, FollowError> {
        let mut batch = Batch::default();
        let mut calls = 1;
        loop {
            if self.stopped() {
                self.release(q, &mut batch);
                return Ok(None);
            }
            let wait = match batch.started {
                None => self.opts.long_poll.min(queue::MAX_WAIT),
                Some(t) => {
                    let left = self.opts.batch_window.saturating_sub(t.elapsed());
                    if left.is_zero() || batch.held.len() >= self.opts.max_batch {
                        break;
                    }
                    // Whole seconds of long polling; under a second, a short poll.
                    Duration::from_secs(left.as_secs())
                }
            };
            let got = match self.receive(q, calls, wait) {
                Ok(Some(got)) => got,
                Ok(None) => continue, // asked to stop: handled at the top
                Err(e) => {
                    self.release(q, &mut batch);
                    return Err(e);
                }
            };
            calls = if got.len() >= 10 * calls {
                (calls * 2).min(8)
            } else {
                1
            };
            if got.is_empty() {
                match batch.started {
                    None => return Ok(None),
                    Some(t) => {
                        let left = self.opts.batch_window.saturating_sub(t.elapsed());
                        self.pause(left.min(Duration::from_millis(200)));
                        continue;
                    }
                }
            }
            self.totals.messages += got.len() as u64;
            let mut done_now = Vec::new();
            let mut later = Vec::new();
            for msg in got {
                match notice::parse(&msg.body) {
                    Err(e) => {
                        self.totals.not_understood += 1;
                        let hide = queue::backoff(self.opts.visibility, msg.receives);
                        tracing::warn!(
                            sqs_message = %msg.id, receives = msg.receives,
                            "message not understood, left for the queue's redrive policy (hidden for {} s): {e}",
                            hide.as_secs()
                        );
                        later.push((msg.receipt, hide));
                    }
                    Ok(Notice::Test) => {
                        tracing::info!(sqs_message = %msg.id, "S3 test event");
                        done_now.push(msg.receipt);
                    }
                    Ok(Notice::Ignored(why)) => {
                        tracing::info!(sqs_message = %msg.id, "nothing to read: {why}");
                        done_now.push(msg.receipt);
                    }
                    Ok(Notice::Objects(named)) => {
                        let mut objects = Vec::new();
                        for n in named {
                            if !self.wanted(&n.key) {
                                tracing::debug!(bucket = %n.bucket, key = %n.key, "passed over (digest, or another account or region)");
                                self.totals.objects_skipped += 1;
                                continue;
                            }
                            let location = Location::S3 {
                                bucket: n.bucket,
                                key: n.key,
                            };
                            let i = match batch.at.get(&location) {
                                Some(&i) => i,
                                None => {
                                    batch.at.insert(location.clone(), batch.objects.len());
                                    batch.objects.push(ObjectRef {
                                        location,
                                        // Unknown sizes (CloudTrail's notifications) are
                                        // asked of S3 before reading.
                                        size: n.size.unwrap_or(0),
                                        modified: None,
                                        etag: n.etag.filter(|_| n.size.is_some()),
                                    });
                                    batch.delivered.push(None);
                                    batch.objects.len() - 1
                                }
                            };
                            if let Some(t) = msg.sent {
                                let d = &mut batch.delivered[i];
                                *d = Some(d.map_or(t, |x| x.min(t)));
                            }
                            objects.push(i);
                        }
                        if objects.is_empty() {
                            done_now.push(msg.receipt);
                        } else {
                            batch
                                .heartbeat
                                .get_or_insert_with(|| {
                                    queue::Heartbeat::start(
                                        self.rt.handle(),
                                        q.clone(),
                                        self.opts.visibility,
                                    )
                                })
                                .add([msg.receipt.clone()]);
                            batch.started.get_or_insert_with(Instant::now);
                            batch.held.push(Held { msg, objects });
                        }
                    }
                }
            }
            // Should SQS refuse these, the messages return after their visibility timeout and
            // are handled again: nothing is lost.
            if !done_now.is_empty() {
                match self.rt.block_on(q.delete(&done_now)) {
                    Ok(refused) => self.totals.deleted += (done_now.len() - refused) as u64,
                    Err(e) => {
                        tracing::warn!("{e}");
                        self.totals.errors += 1;
                    }
                }
            }
            if !later.is_empty()
                && let Err(e) = self.rt.block_on(q.set_visibility(&later))
            {
                tracing::warn!("{e}");
                self.totals.errors += 1;
            }
            if batch.started.is_none() {
                // Only messages with nothing to read: no batch yet.
                return Ok(None);
            }
        }
        Ok(Some(batch))
    }

    /// Hand a batch's messages back to the queue at once (asked to stop while gathering).
    fn release(&self, q: &Queue, batch: &mut Batch) {
        drop(batch.heartbeat.take());
        let entries: Vec<(String, Duration)> = batch
            .held
            .iter()
            .map(|h| (h.msg.receipt.clone(), Duration::ZERO))
            .collect();
        if !entries.is_empty()
            && let Err(e) = self.rt.block_on(q.set_visibility(&entries))
        {
            tracing::warn!(
                "could not hand the gathered messages back (they return after their visibility timeout): {e}"
            );
        }
    }

    /// Ask S3 the size, ETag and time of objects a notification named without them.
    fn head(&self, objects: &mut [ObjectRef]) -> HashMap<usize, String> {
        let s3 = self.s3.clone();
        let concurrency = self.opts.ingest.s3.concurrency.max(1);
        let todo: Vec<(usize, String, String)> = objects
            .iter()
            .enumerate()
            .filter(|(_, o)| o.etag.is_none())
            .filter_map(|(i, o)| match &o.location {
                Location::S3 { bucket, key } => Some((i, bucket.clone(), key.clone())),
                Location::Local(_) => None,
            })
            .collect();
        let results = self.rt.block_on(
            futures::stream::iter(todo)
                .map(|(i, bucket, key)| {
                    let s3 = s3.clone();
                    async move {
                        let r = s3.head_object().bucket(&bucket).key(&key).send().await;
                        (i, bucket, key, r)
                    }
                })
                .buffer_unordered(concurrency)
                .collect::<Vec<_>>(),
        );
        let mut failed = HashMap::new();
        for (i, bucket, key, r) in results {
            match r {
                Ok(h) => {
                    let o = &mut objects[i];
                    o.size = h
                        .content_length()
                        .and_then(|n| u64::try_from(n).ok())
                        .unwrap_or(0);
                    o.etag = h.e_tag().map(|e| e.trim_matches('"').to_owned());
                    o.modified = h.last_modified().and_then(|t| t.to_millis().ok());
                }
                Err(e) => {
                    let reason = format!(
                        "cannot read its size (HEAD): {}",
                        aws_sdk_s3::error::DisplayErrorContext(&e)
                    );
                    tracing::warn!(object = %format!("s3://{bucket}/{key}"), "{reason}");
                    failed.insert(i, reason);
                }
            }
        }
        failed
    }

    /// Read a batch: one commit, then delete the messages whose objects are all done, hold
    /// back the others, and write the findings.
    fn process(&mut self, q: &Queue, mut batch: Batch) -> Result<BatchReport, FollowError> {
        let started = batch.started.unwrap_or_else(Instant::now);
        let heartbeat = batch.heartbeat.take();
        self.totals.batches += 1;
        let mut failed_at = self.head(&mut batch.objects);
        let to_read: Vec<ObjectRef> = batch
            .objects
            .iter()
            .enumerate()
            .filter(|(i, _)| !failed_at.contains_key(i))
            .map(|(_, o)| o.clone())
            .collect();
        let mut report = BatchReport {
            messages: batch.held.len() as u64,
            objects: batch.objects.len() as u64,
            ..BatchReport::default()
        };
        let summary = if to_read.is_empty() {
            None
        } else {
            match self.ingest(to_read) {
                Ok(s) => Some(s),
                Err(e) => {
                    // Nothing was committed: every message is received again after a pause.
                    drop(heartbeat);
                    let back: Vec<(String, Duration)> = batch
                        .held
                        .iter()
                        .map(|h| {
                            (
                                h.msg.receipt.clone(),
                                queue::backoff(self.opts.visibility, h.msg.receives),
                            )
                        })
                        .collect();
                    if let Err(e2) = self.rt.block_on(q.set_visibility(&back)) {
                        tracing::warn!("{e2}");
                    }
                    return Err(e);
                }
            }
        };
        if let Some(s) = &summary {
            let by_name: HashMap<String, usize> = batch
                .objects
                .iter()
                .enumerate()
                .map(|(i, o)| (o.display(), i))
                .collect();
            for f in &s.failures {
                if let Some(&i) = by_name.get(&f.object) {
                    failed_at.insert(i, f.reason.clone());
                }
            }
            report.read = s.objects.read;
            report.skipped = s.objects.skipped_total();
            report.events = s.events.written + s.events.insights;
            report.commit = s.commit;
            report.failures = s.failures.clone();
        }
        for (i, reason) in &failed_at {
            if !report
                .failures
                .iter()
                .any(|f| f.object == batch.objects[*i].display())
            {
                report.failures.push(keytrail_ingest::Failure {
                    object: batch.objects[*i].display(),
                    reason: reason.clone(),
                    code: "head-failed".into(),
                });
                self.totals.objects_failed += 1;
            }
        }
        report.failed = failed_at.len() as u64;
        // Lag: from the oldest delivery of the batch to its commit.
        let now = now_millis();
        let committed = batch
            .delivered
            .iter()
            .enumerate()
            .filter(|(i, _)| !failed_at.contains_key(i))
            .filter_map(|(_, t)| *t);
        let (oldest, newest) =
            committed.fold((None, None), |(lo, hi): (Option<i64>, Option<i64>), t| {
                (
                    Some(lo.map_or(t, |x| x.min(t))),
                    Some(hi.map_or(t, |x| x.max(t))),
                )
            });
        if let Some(o) = oldest {
            self.lag = Some((now - o).max(0) as f64 / 1000.0);
        }
        if let Some(n) = newest {
            self.newest = Some(self.newest.map_or(n, |x| x.max(n)));
        }
        // The messages: done, or held back for a retry.
        drop(heartbeat);
        let mut done = Vec::new();
        let mut back = Vec::new();
        for h in &batch.held {
            if h.objects.iter().any(|i| failed_at.contains_key(i)) {
                back.push((
                    h.msg.receipt.clone(),
                    queue::backoff(self.opts.visibility, h.msg.receives),
                ));
            } else {
                done.push(h.msg.receipt.clone());
            }
        }
        self.totals.retried += back.len() as u64;
        if !back.is_empty() {
            tracing::warn!(
                messages = back.len(),
                "messages left for a retry: an object they name could not be read"
            );
            if let Err(e) = self.rt.block_on(q.set_visibility(&back)) {
                // They return after their visibility timeout instead.
                tracing::warn!("{e}");
                self.totals.errors += 1;
            }
        }
        // The batch is committed: should a delete fail, the messages return and their objects
        // are found in the manifest.
        match self.rt.block_on(q.delete(&done)) {
            Ok(refused) => self.totals.deleted += (done.len() - refused) as u64,
            Err(e) => {
                tracing::warn!("{e}; the messages return and are deleted then");
                self.totals.errors += 1;
            }
        }
        report.findings = match self.findings() {
            Ok(n) => n,
            Err(e) => {
                // The lake and the queue are right; the findings cursor did not move, so
                // the next batch (or the next start) writes these findings.
                tracing::error!("{e}; the findings of this batch are written after the next one");
                self.totals.errors += 1;
                0
            }
        };
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    // ---------------------------------------------------------------------------------------
    // Polling

    fn run_poll(&mut self, uris: &[S3Uri]) {
        let mut last_status = Instant::now();
        while !self.stopped() {
            let round = Instant::now();
            match self.poll_round(uris) {
                Ok(Some(report)) => {
                    self.failures = 0;
                    self.report(StatusKind::Batch, Some(report), None);
                    last_status = Instant::now();
                }
                Ok(None) => {
                    self.failures = 0;
                    if last_status.elapsed() >= self.opts.idle_status {
                        self.report(StatusKind::Idle, None, None);
                        last_status = Instant::now();
                    }
                }
                Err(e) => {
                    self.failed(&e);
                    last_status = Instant::now();
                }
            }
            self.pause(self.opts.poll_interval.saturating_sub(round.elapsed()));
        }
    }

    /// List yesterday's and today's day folders, read what the manifest does not hold.
    fn poll_round(&mut self, uris: &[S3Uri]) -> Result<Option<BatchReport>, FollowError> {
        let started = Instant::now();
        let now = now_millis();
        let window = TimeWindow {
            since: Some(i64::from(day_of(now) - 1) * 86_400_000),
            until: None,
        };
        let source = S3Source::new(self.s3.clone(), self.opts.ingest.s3.clone());
        let mut found: BTreeMap<String, ObjectRef> = BTreeMap::new();
        for uri in uris {
            let listing = self.rt.block_on(source.list(uri, &window))?;
            tracing::debug!(uri = %uri, objects = listing.objects.len(), requests = listing.requests, "listed");
            for o in listing.objects {
                found.insert(o.uri(), o);
            }
        }
        let manifest = match &self.remote {
            None => Lake::open(&self.opts.ingest.lake)?.manifest()?,
            Some((lake, ..)) => self.rt.block_on(lake.read_manifest())?,
        };
        let index = manifest.index();
        let decider = Decider::new(&self.opts.ingest.filter, &index);
        let new: Vec<ObjectRef> = found
            .into_values()
            .filter(|o| {
                looks_like_log(o.file_name())
                    && o.name_kind() != NameKind::Digest
                    && match &o.location {
                        Location::S3 { key, .. } => self.wanted(key),
                        Location::Local(_) => true,
                    }
                    && decider.before_read(o).is_none()
            })
            .collect();
        if new.is_empty() {
            return Ok(None);
        }
        self.totals.batches += 1;
        let oldest = new.iter().filter_map(|o| o.modified).min();
        let newest = new.iter().filter_map(|o| o.modified).max();
        let s = self.ingest(new.clone())?;
        let failed: std::collections::HashSet<&str> =
            s.failures.iter().map(|f| f.object.as_str()).collect();
        if failed.is_empty() {
            if let Some(o) = oldest {
                self.lag = Some((now_millis() - o).max(0) as f64 / 1000.0);
            }
            if let Some(n) = newest {
                self.newest = Some(self.newest.map_or(n, |x| x.max(n)));
            }
        } else {
            let ok = new
                .iter()
                .filter(|o| !failed.contains(o.display().as_str()))
                .filter_map(|o| o.modified);
            if let Some(n) = ok.max() {
                self.newest = Some(self.newest.map_or(n, |x| x.max(n)));
            }
        }
        let mut report = BatchReport {
            messages: 0,
            objects: s.objects.seen,
            read: s.objects.read,
            skipped: s.objects.skipped_total(),
            failed: s.objects.failed,
            events: s.events.written + s.events.insights,
            commit: s.commit,
            failures: s.failures.clone(),
            ..BatchReport::default()
        };
        report.findings = match self.findings() {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("{e}; the findings of this round are written after the next one");
                self.totals.errors += 1;
                0
            }
        };
        report.seconds = started.elapsed().as_secs_f64();
        Ok(Some(report))
    }
}

/// An empty directory for a working copy of a lake in S3, in `dir` or the system's temporary
/// directory; deleted when dropped.
fn working_copy(dir: Option<&std::path::Path>) -> Result<tempfile::TempDir, FollowError> {
    let mut b = tempfile::Builder::new();
    b.prefix("keytrail-follow-");
    match dir {
        Some(d) => b.tempdir_in(d),
        None => b.tempdir(),
    }
    .map_err(|e| FollowError::Config(format!("cannot make a working copy of the lake: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_and_regions_from_keys() {
        assert_eq!(
            account_and_region("p/AWSLogs/111122223333/CloudTrail/eu-west-1/2024/11/30/x.json.gz"),
            Some(("111122223333", "eu-west-1"))
        );
        assert_eq!(
            account_and_region(
                "AWSLogs/o-abc123/111122223333/CloudTrail/us-east-1/2024/11/30/x.json.gz"
            ),
            Some(("111122223333", "us-east-1"))
        );
        assert_eq!(account_and_region("logs/x.json.gz"), None);
    }
}
