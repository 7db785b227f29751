//! A lake in S3: batches commit to the bucket through working copies, findings read the lake
//! in place, and the findings cursor lives in the lake's bucket.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::future::ProvideCredentials as CredentialsFuture;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use keytrail_engine::{LakeLocation, S3Access, S3Location};
use keytrail_follow::testkit::{self, ACCOUNT, Moto, REGION};
use keytrail_follow::{FollowOptions, Sink, Source};
use keytrail_ingest::s3::S3Uri;
use keytrail_ingest::s3access::SdkCredentials;
use keytrail_ingest::{IngestOptions, Input};
use keytrail_model::time::now_millis;
use serde_json::Value;

use crate::findings::{MIN, deactivate, detection, stop_logging, summary, use_key};
use crate::util::*;

const PREFIX: &str = "lakes/main";

fn lake_uri(env: &Env) -> S3Uri {
    S3Uri {
        bucket: env.bucket.clone(),
        prefix: PREFIX.to_owned(),
    }
}

/// A follower of `url` into the lake under `s3://BUCKET/lakes/main`, findings to `out`.
fn options(env: &Env, url: &str, out: &std::path::Path) -> FollowOptions {
    let moto = Moto::shared();
    let mut o = env.options(Source::Queue(url.to_owned()));
    o.ingest.remote_lake = Some(lake_uri(env));
    o.ingest.s3.endpoint_url = Some(moto.endpoint());
    o.lake_credentials = Some(moto.credentials());
    let work = env.tmp.path().join("work");
    std::fs::create_dir_all(&work).expect("work dir");
    o.work_dir = Some(work);
    o.findings = Some(Sink::File(out.to_path_buf()));
    o.detection = detection();
    o
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

/// `keytrail ingest --lake s3://...` of one log object of `records` delivered at `t`, as
/// another writer of the lake; the commit it made.
fn ingest_object(env: &Env, tag: &str, t: i64, records: &[Value]) -> Option<u64> {
    let dir = env.tmp.path().join("by-ingest").join(tag);
    std::fs::create_dir_all(&dir).expect("dir");
    let name = testkit::log_key(ACCOUNT, REGION, t, tag);
    let file = dir.join(name.rsplit('/').next().expect("file name"));
    std::fs::write(&file, testkit::log_object(records)).expect("write");
    let mut o = IngestOptions::with_inputs(vec![Input::Local(file)], dir.join("work"));
    o.remote_lake = Some(lake_uri(env));
    o.s3_client = Some(env.s3.clone());
    keytrail_ingest::ingest(&o, &keytrail_ingest::NoProgress)
        .expect("ingest")
        .commit
}

/// The findings cursor the lake's bucket holds: (seq, written).
fn cursor(env: &Env) -> (u64, u64) {
    let listed = env
        .rt
        .block_on(
            env.s3
                .list_objects_v2()
                .bucket(&env.bucket)
                .prefix(format!("{PREFIX}/_keytrail/follow/"))
                .send(),
        )
        .expect("list");
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys.len(), 1, "one findings cursor: {keys:?}");
    let body = env
        .rt
        .block_on(async {
            env.s3
                .get_object()
                .bucket(&env.bucket)
                .key(keys[0])
                .send()
                .await
                .expect("get")
                .body
                .collect()
                .await
        })
        .expect("body")
        .to_vec();
    let c: keytrail_follow::findings::Cursor = serde_json::from_slice(&body).expect("cursor");
    (c.seq, c.written)
}

#[test]
fn a_lake_in_s3_is_followed_and_its_findings_cursor_kept_in_the_bucket() {
    let env = Env::new("s3lake");
    let url = env.queue(None);
    let t0 = now_millis() - 6 * 3_600_000;
    let out = env.tmp.path().join("findings.jsonl");
    let lake = Moto::shared().lake(&env.bucket, PREFIX);
    let send = |tag: &str, t: i64, records: &[Value]| {
        let key = testkit::log_key(ACCOUNT, REGION, t, tag);
        env.put(&key, records);
        env.send(&url, &testkit::cloudtrail_notice(&env.bucket, &[&key]));
    };

    // 1: a follower creates the lake in the bucket; logging stopped raises a finding.
    let f = start(options(&env, &url, &out));
    send(
        "B1",
        t0,
        &[use_key("b1-0", t0), stop_logging("b1-stop", t0 + 5 * MIN)],
    );
    f.wait("the first batch committed", 60, |s| {
        s.totals.commits == 1 && s.findings_commit == Some(1)
    });
    f.stop();
    assert_eq!(
        summary(&findings(&out)),
        pairs(&[("cloudtrail-stopped", "b1-stop")])
    );
    assert_eq!(event_ids(&lake), ["b1-0", "b1-stop"]);
    assert_eq!(cursor(&env), (1, 1));

    // 2: another writer commits while no follower runs (`keytrail ingest --lake s3://...`).
    let commit = ingest_object(
        &env,
        "B2",
        t0 + 10 * MIN,
        &[
            deactivate("b2-deact", t0 + 10 * MIN),
            use_key("b2-use-0", t0 + 11 * MIN),
        ],
    );
    assert_eq!(commit, Some(2));

    // 3: started again, the follower writes that commit's findings (its cursor, read back
    // from the bucket, is at 1), then goes on with the queue.
    let f = start(options(&env, &url, &out));
    f.wait("the other writer's findings", 60, |s| {
        s.findings_commit == Some(2)
    });
    send(
        "B3",
        t0 + 20 * MIN,
        &[stop_logging("b3-stop", t0 + 20 * MIN)],
    );
    f.wait("the third batch committed", 60, |s| {
        s.totals.commits == 1 && s.findings_commit == Some(3)
    });
    f.stop();
    let lines = findings(&out);
    assert_eq!(
        summary(&lines),
        pairs(&[
            ("cloudtrail-stopped", "b1-stop"),
            ("kt-abused-call", "b2-deact"),
            ("kt-key-used-after-deactivation", "b2-use-0"),
            ("cloudtrail-stopped", "b3-stop"),
        ])
    );
    assert_eq!(
        lines
            .iter()
            .map(|l| l["commit"].as_u64())
            .collect::<Vec<_>>(),
        [Some(1), Some(2), Some(2), Some(3)]
    );
    assert_eq!(cursor(&env), (3, 4));
    assert_eq!(
        event_ids(&lake),
        ["b1-0", "b1-stop", "b2-deact", "b2-use-0", "b3-stop"]
    );
    // Each batch's working copy is gone; every message was deleted.
    assert_eq!(
        std::fs::read_dir(env.tmp.path().join("work"))
            .expect("work dir")
            .count(),
        0
    );
    assert_eq!(env.counts(&url), (0, 0));
}

/// Temporary credentials valid for `valid` from each call (moto checks none), counting the
/// calls: a new key ID each time, as a role's session gives.
#[derive(Debug)]
struct Expiring {
    valid: Duration,
    calls: Arc<AtomicUsize>,
}

impl ProvideCredentials for Expiring {
    fn provide_credentials<'a>(&'a self) -> CredentialsFuture<'a>
    where
        Self: 'a,
    {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        CredentialsFuture::ready(Ok(Credentials::new(
            format!("ASIATESTSESSION{n:05}"),
            "session-secret",
            Some("session-token".to_owned()),
            Some(SystemTime::now() + self.valid),
            "keytrail-test",
        )))
    }
}

#[test]
fn a_query_of_a_lake_in_s3_renews_credentials_about_to_expire() {
    let env = Env::new("s3creds");
    let t0 = now_millis() - 6 * 3_600_000;
    let commit = ingest_object(
        &env,
        "C1",
        t0,
        &[use_key("c-0", t0), use_key("c-1", t0 + MIN)],
    );
    assert_eq!(commit, Some(1));

    // Valid for an hour: asked for once for the whole query. Valid for a minute (less than
    // the five minutes kept in hand): asked for again before each request.
    let mut calls = Vec::new();
    for valid in [Duration::from_secs(3600), Duration::from_secs(60)] {
        let counted = Arc::new(AtomicUsize::new(0));
        let creds = SdkCredentials::new(
            SharedCredentialsProvider::new(Expiring {
                valid,
                calls: Arc::clone(&counted),
            }),
            None,
        );
        let access =
            S3Access::with_credentials(REGION, Some(Moto::shared().endpoint()), Arc::new(creds));
        let lake = LakeLocation::S3(S3Location::new(env.bucket.clone(), PREFIX, access));
        assert_eq!(event_ids(lake), ["c-0", "c-1"]);
        calls.push(counted.load(Ordering::SeqCst));
    }
    assert_eq!(calls[0], 1, "{calls:?}");
    // Once per request: at least the lake's description, the manifest's listing and the
    // commit record before any data is read.
    assert!(calls[1] >= 3, "{calls:?}");
}
