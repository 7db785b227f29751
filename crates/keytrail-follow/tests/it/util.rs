//! A follower in a thread against moto, and what the tests read back.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use keytrail_follow::testkit::{self, Moto};
use keytrail_follow::{Counters, FollowOptions, Source, Status};

/// A bucket of one test, on the shared server.
pub struct Env {
    pub rt: tokio::runtime::Runtime,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub bucket: String,
    pub tmp: tempfile::TempDir,
}

/// A name no other test of this process uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Env {
    pub fn new(name: &str) -> Env {
        let moto = Moto::shared();
        let rt = testkit::runtime();
        let (s3, sqs) = (moto.s3(), moto.sqs());
        let bucket = unique(name);
        rt.block_on(testkit::create_bucket(&s3, &bucket));
        Env {
            rt,
            s3,
            sqs,
            bucket,
            tmp: tempfile::tempdir().expect("tmp"),
        }
    }

    pub fn lake(&self) -> PathBuf {
        self.tmp.path().join("lake")
    }

    pub fn queue(&self, dead_letter: Option<(&str, u32)>) -> String {
        self.rt
            .block_on(testkit::create_queue(&self.sqs, &unique("q"), dead_letter))
    }

    /// Put a log object of `records`; returns (ETag, size).
    pub fn put(&self, key: &str, records: &[serde_json::Value]) -> (String, u64) {
        self.rt.block_on(testkit::put(
            &self.s3,
            &self.bucket,
            key,
            testkit::log_object(records),
        ))
    }

    pub fn send(&self, url: &str, body: &str) {
        self.rt.block_on(testkit::send(&self.sqs, url, body));
    }

    /// (visible, in flight) messages.
    pub fn counts(&self, url: &str) -> (u64, u64) {
        self.rt.block_on(testkit::counts(&self.sqs, url))
    }

    /// Options for a follower of this bucket's objects: fast batches for tests.
    pub fn options(&self, source: Source) -> FollowOptions {
        let mut o = FollowOptions::new(source, self.lake());
        o.ingest.s3_client = Some(self.s3.clone());
        o.ingest.threads = 2;
        o.sqs_client = Some(self.sqs.clone());
        o.batch_window = Duration::from_millis(300);
        o.visibility = Duration::from_secs(2);
        o.poll_interval = Duration::from_millis(300);
        o.idle_status = Duration::from_millis(200);
        o.long_poll = Duration::from_secs(1);
        o.detection.threads = 2;
        o
    }
}

/// A follower running in a thread.
pub struct Running {
    stop: Arc<AtomicBool>,
    statuses: Arc<Mutex<Vec<Status>>>,
    handle: JoinHandle<Result<Counters, keytrail_follow::FollowError>>,
}

pub fn start(opts: FollowOptions) -> Running {
    let stop = Arc::new(AtomicBool::new(false));
    let statuses: Arc<Mutex<Vec<Status>>> = Arc::default();
    let (s, st) = (Arc::clone(&stop), Arc::clone(&statuses));
    let handle = std::thread::spawn(move || {
        keytrail_follow::follow(&opts, &s, &mut |status| {
            st.lock().expect("statuses").push(status.clone());
        })
    });
    Running {
        stop,
        statuses,
        handle,
    }
}

impl Running {
    /// Wait (at most `secs`) until the latest status satisfies `f`.
    pub fn wait(&self, what: &str, secs: u64, f: impl Fn(&Status) -> bool) -> Status {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let last = self.statuses.lock().expect("statuses").last().cloned();
            if let Some(s) = last
                && f(&s)
            {
                return s;
            }
            assert!(
                !self.handle.is_finished(),
                "the follower ended while waiting for {what}"
            );
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last status: {:?}",
                self.statuses.lock().expect("statuses").last()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn statuses(&self) -> Vec<Status> {
        self.statuses.lock().expect("statuses").clone()
    }

    /// Ask it to stop; its counters.
    pub fn stop(self) -> Counters {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .expect("the follower did not panic")
            .expect("the follower ended without error")
    }
}

/// The event IDs of the lake, sorted (repeats kept).
pub fn event_ids(lake: impl Into<keytrail_engine::LakeLocation>) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Row {
        eventid: Option<String>,
    }
    let (_, batches) = keytrail_engine::sql(
        lake,
        "SELECT eventid FROM events ORDER BY eventid",
        &keytrail_engine::SessionOptions {
            threads: 2,
            ..Default::default()
        },
    )
    .expect("sql");
    keytrail_engine::rows::from_batches::<Row>(&batches)
        .expect("rows")
        .into_iter()
        .filter_map(|r| r.eventid)
        .collect()
}

/// The objects the lake's manifest records, sorted.
pub fn manifest_objects(lake: &Path) -> Vec<String> {
    let m = keytrail_lake::Lake::open(lake)
        .expect("lake")
        .manifest()
        .expect("manifest");
    let mut v: Vec<String> = m
        .commits()
        .iter()
        .flat_map(|c| c.objects.iter().map(|o| o.source.clone()))
        .collect();
    v.sort();
    v
}

/// The lines of a findings file, parsed.
pub fn findings(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a findings line is JSON"))
        .collect()
}

/// Event IDs `prefix-0` … `prefix-(n-1)` made with `key`, a minute apart from `t0`.
pub fn records(prefix: &str, key: &str, t0: i64, n: usize) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| {
            testkit::record(
                &format!("{prefix}-{i}"),
                key,
                t0 + i as i64 * 60_000,
                "s3.amazonaws.com",
                "ListBuckets",
            )
        })
        .collect()
}
