//! Polling mode: yesterday's and today's day folders, listed every round.

use keytrail_follow::Source;
use keytrail_follow::testkit::{ACCOUNT, REGION};
use keytrail_ingest::s3::S3Uri;
use keytrail_model::time::now_millis;

use crate::util::*;

const KEY: &str = "AKIA2FOLLOWTESTKEY02";
const DAY: i64 = 86_400_000;

#[test]
fn polling_reads_yesterday_and_today_and_picks_up_late_objects() {
    let env = Env::new("poll");
    let now = now_millis();
    let today = now - now % DAY + 60_000;
    let yesterday = today - DAY;
    let old = today - 3 * DAY;
    let key = |t: i64, tag: &str| keytrail_follow::testkit::log_key(ACCOUNT, REGION, t, tag);
    env.put(&key(today, "TODAY"), &records("today", KEY, today, 2));
    env.put(
        &key(yesterday, "YESTERDAY"),
        &records("yesterday", KEY, yesterday, 2),
    );
    // Three days old: outside the folders that can still receive objects.
    env.put(&key(old, "OLD"), &records("old", KEY, old, 1));
    // A digest in today's folder is never read.
    env.rt.block_on(keytrail_follow::testkit::put(
        &env.s3,
        &env.bucket,
        &keytrail_follow::testkit::digest_key(ACCOUNT, REGION, today),
        b"{}".to_vec(),
    ));

    let uri = S3Uri {
        bucket: env.bucket.clone(),
        prefix: String::new(),
    };
    let f = start(env.options(Source::Poll(vec![uri])));
    let s = f.wait("two objects read", 60, |s| s.totals.objects_read == 2);
    assert_eq!(s.totals.commits, 1);
    // A late delivery into yesterday's folder.
    env.put(
        &key(yesterday + 3_600_000, "LATE"),
        &records("late", KEY, yesterday, 3),
    );
    let s = f.wait("the late object read", 60, |s| s.totals.objects_read == 3);
    assert_eq!(s.totals.commits, 2);
    assert!(
        s.lag_seconds.is_some() && s.newest_delivery.is_some(),
        "{s:?}"
    );
    // Later rounds find nothing new: no commit, no object read twice.
    let rounds = f.statuses().len();
    f.wait("more rounds", 30, |_| f.statuses().len() >= rounds + 3);
    let totals = f.stop();
    assert_eq!(totals.commits, 2, "{totals:?}");
    assert_eq!(totals.objects_read, 3, "{totals:?}");
    assert_eq!(
        event_ids(env.lake()),
        [
            "late-0",
            "late-1",
            "late-2",
            "today-0",
            "today-1",
            "yesterday-0",
            "yesterday-1"
        ]
        .map(String::from)
    );
}
