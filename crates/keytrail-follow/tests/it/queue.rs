//! SQS mode: every message format, poison messages, objects that cannot be read yet.

use keytrail_follow::Source;
use keytrail_follow::testkit::{self, ACCOUNT, REGION};
use keytrail_model::time::now_millis;

use crate::util::*;

const KEY: &str = "AKIA2FOLLOWTESTKEY01";

#[test]
fn every_message_format_is_read_and_every_message_deleted() {
    let env = Env::new("formats");
    let url = env.queue(None);
    let t = now_millis() - 3_600_000;
    let b = &env.bucket;
    // One object per format; the S3 events' keys need URL-encoding (a space, `=` and `é`).
    let ct_raw = testkit::log_key(ACCOUNT, REGION, t, "RAW");
    let ct_sns = testkit::log_key(ACCOUNT, REGION, t + 60_000, "SNS");
    let ev_raw = testkit::log_key(ACCOUNT, REGION, t + 120_000, "EV T=1é");
    let ev_sns = testkit::log_key(ACCOUNT, REGION, t + 180_000, "EV+SNS");
    env.put(&ct_raw, &records("ct-raw", KEY, t, 3));
    env.put(&ct_sns, &records("ct-sns", KEY, t, 2));
    let (e1, s1) = env.put(&ev_raw, &records("ev-raw", KEY, t, 4));
    let (e2, s2) = env.put(&ev_sns, &records("ev-sns", KEY, t, 1));
    // A digest: named by an S3 event, never read.
    let digest = testkit::digest_key(ACCOUNT, REGION, t);
    let (e3, s3) = env
        .rt
        .block_on(testkit::put(&env.s3, b, &digest, b"{}".to_vec()));

    env.send(&url, &testkit::cloudtrail_notice(b, &[&ct_raw]));
    env.send(
        &url,
        &testkit::sns(&testkit::cloudtrail_notice(b, &[&ct_sns])),
    );
    env.send(&url, &testkit::s3_event(b, &ev_raw, s1, &e1));
    env.send(&url, &testkit::sns(&testkit::s3_event(b, &ev_sns, s2, &e2)));
    env.send(&url, &testkit::s3_test_event(b));
    env.send(&url, &testkit::sns(&testkit::s3_test_event(b)));
    env.send(&url, &testkit::s3_event(b, &digest, s3, &e3));
    // The same object named twice (CloudTrail's notification and S3's event): read once.
    env.send(
        &url,
        &testkit::s3_event(b, &ct_raw, 0, "").replace("\"size\":0", "\"size\":null"),
    );

    let f = start(env.options(Source::Queue(url.clone())));
    let s = f.wait("every message deleted", 60, |s| s.totals.deleted == 8);
    assert_eq!(s.totals.not_understood, 0);
    let totals = f.stop();
    assert_eq!(totals.messages, 8, "{totals:?}");
    assert_eq!(totals.objects_failed, 0, "{totals:?}");
    assert_eq!(env.counts(&url), (0, 0), "the queue is empty");

    let mut want: Vec<String> = records("ct-raw", KEY, t, 3)
        .iter()
        .chain(&records("ct-sns", KEY, t, 2))
        .chain(&records("ev-raw", KEY, t, 4))
        .chain(&records("ev-sns", KEY, t, 1))
        .map(|r| r["eventID"].as_str().expect("id").to_owned())
        .collect();
    want.sort();
    assert_eq!(event_ids(env.lake()), want);
    let mut objects: Vec<String> = [&ct_raw, &ct_sns, &ev_raw, &ev_sns]
        .iter()
        .map(|k| format!("s3://{b}/{k}"))
        .collect();
    objects.sort();
    assert_eq!(
        manifest_objects(&env.lake()),
        objects,
        "decoded keys, read once each"
    );
}

#[test]
fn a_poison_message_goes_to_the_dead_letter_queue_and_the_follower_goes_on() {
    let env = Env::new("poison");
    let dlq = env.queue(None);
    let dlq_arn = env.rt.block_on(testkit::queue_arn(&env.sqs, &dlq));
    let url = env.queue(Some((&dlq_arn, 2)));
    let t = now_millis() - 3_600_000;
    let key = testkit::log_key(ACCOUNT, REGION, t, "GOOD");
    env.put(&key, &records("good", KEY, t, 2));
    env.send(&url, "this is not a notification");
    env.send(&url, &testkit::cloudtrail_notice(&env.bucket, &[&key]));

    let mut opts = env.options(Source::Queue(url.clone()));
    opts.visibility = std::time::Duration::from_secs(1);
    let f = start(opts);
    f.wait("the good message deleted", 60, |s| s.totals.deleted == 1);
    // Received, hidden for 1 s, received again, hidden for 2 s; on the third receive the
    // redrive policy moves it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while env.counts(&dlq).0 != 1 {
        assert!(std::time::Instant::now() < deadline, "moved to the DLQ");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Still following: a new object is read.
    let key2 = testkit::log_key(ACCOUNT, REGION, t + 60_000, "LATER");
    env.put(&key2, &records("later", KEY, t, 1));
    env.send(&url, &testkit::cloudtrail_notice(&env.bucket, &[&key2]));
    f.wait("the later message deleted", 60, |s| s.totals.deleted == 2);
    let totals = f.stop();
    // Not received in a hot loop: twice before the redrive policy took it.
    assert_eq!(totals.not_understood, 2, "{totals:?}");
    assert_eq!(env.counts(&url), (0, 0));
    assert_eq!(
        event_ids(env.lake()),
        ["good-0", "good-1", "later-0"].map(String::from)
    );
}

#[test]
fn a_message_is_deleted_only_once_its_object_is_committed() {
    let env = Env::new("retry");
    let url = env.queue(None);
    let t = now_millis() - 3_600_000;
    let key = testkit::log_key(ACCOUNT, REGION, t, "LATE");
    // Named before it exists (or before the follower may read it): GET fails.
    env.send(&url, &testkit::cloudtrail_notice(&env.bucket, &[&key]));
    let mut opts = env.options(Source::Queue(url.clone()));
    opts.visibility = std::time::Duration::from_secs(1);
    let f = start(opts);
    let s = f.wait("the message held back", 30, |s| s.totals.retried >= 1);
    assert_eq!(s.totals.deleted, 0);
    assert!(s.totals.objects_failed >= 1);
    let (visible, hidden) = env.counts(&url);
    assert_eq!(visible + hidden, 1, "still in the queue");
    env.put(&key, &records("late", KEY, t, 2));
    let s = f.wait("the message deleted", 60, |s| s.totals.deleted == 1);
    assert_eq!(s.totals.objects_read, 1);
    f.stop();
    assert_eq!(env.counts(&url), (0, 0));
    assert_eq!(
        event_ids(env.lake()),
        ["late-0", "late-1"].map(String::from)
    );
}

#[test]
fn a_poison_message_is_not_received_in_a_loop() {
    let env = Env::new("backoff");
    // No redrive policy: the message stays in the queue for good.
    let url = env.queue(None);
    env.send(&url, r#"{"Records": "not a list"}"#);
    let mut opts = env.options(Source::Queue(url.clone()));
    opts.visibility = std::time::Duration::from_secs(1);
    let f = start(opts);
    f.wait("received", 30, |s| s.totals.not_understood >= 1);
    std::thread::sleep(std::time::Duration::from_millis(4500));
    let totals = f.stop();
    // Hidden 1 s, then 2 s, then 4 s: received at 0, ~1 and ~3 s (fewer on a slow machine;
    // never more).
    assert!(
        (1..=3).contains(&totals.not_understood),
        "received {} times in 4.5 s",
        totals.not_understood
    );
    assert_eq!(totals.deleted, 0);
    let (visible, hidden) = env.counts(&url);
    assert_eq!(visible + hidden, 1, "still in the queue");
}
