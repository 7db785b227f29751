//! Objects read record by record (stored, or decompressed, larger than
//! `Limits::stream_above`): the same rows, counts and manifest as reading them whole, all or
//! nothing, from files and from S3 (its GETs retried when they break).
//! The threshold is lowered here so that small objects take the streaming path.

use std::path::Path;

use keytrail_ingest::s3::S3Options;
use keytrail_ingest::{IngestOptions, Input, NoProgress, RunSummary, SkipReason, ingest};
use keytrail_model::FilterSpec;

use crate::s3::gzip;
use crate::s3server::{Fault, S3Server};
use crate::util::*;

const KEYS: [&str; 3] = [
    "AKIAIOSFODNN7STREAM1",
    "AKIAIOSFODNN7STREAM2",
    "ASIAIOSFODNN7STREAM3",
];

/// `n` events over three days, made with the three keys in turn.
fn events(n: usize, tag: &str) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| {
            let key = KEYS[i % 3];
            serde_json::json!({
                "eventVersion": "1.09",
                "userIdentity": {
                    "type": "IAMUser",
                    "principalId": "AIDAEXAMPLEPRINCIPAL",
                    "arn": "arn:aws:iam::111111111111:user/alice",
                    "accountId": "111111111111",
                    "accessKeyId": key,
                    "userName": "alice"
                },
                "eventTime": format!("2024-03-{:02}T{:02}:{:02}:{:02}Z", 1 + i % 3, (i / 3600) % 24, (i / 60) % 60, i % 60),
                "eventSource": "s3.amazonaws.com",
                "eventName": "GetObject",
                "awsRegion": "us-east-1",
                "sourceIPAddress": "198.51.100.1",
                "userAgent": "aws-cli/2.15.0",
                "requestParameters": {"bucketName": "b", "key": format!("{tag}/{i}")},
                "responseElements": null,
                "requestID": format!("req-{tag}-{i}"),
                "eventID": format!("{tag}-{i:08}"),
                "readOnly": true,
                "eventType": "AwsApiCall",
                "managementEvent": false,
                "recipientAccountId": "111111111111",
                "eventCategory": "Data"
            })
        })
        .collect()
}

/// JSON lines, one of them broken.
fn lines(events: &[serde_json::Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if i == events.len() / 2 {
            out.extend_from_slice(b"{\"eventTime\": broken\n");
        }
        out.extend_from_slice(&serde_json::to_vec(e).expect("json"));
        out.push(b'\n');
    }
    out
}

fn records(events: &[serde_json::Value]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "Records": events })).expect("json")
}

/// A folder of large objects of every streamed shape.
fn large_objects(dir: &Path) {
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(dir.join("export.jsonl"), lines(&events(3000, "lines"))).expect("write");
    std::fs::write(
        dir.join("delivery.json.gz"),
        gzip(&records(&events(2000, "records"))),
    )
    .expect("write");
    std::fs::write(
        dir.join("array.json"),
        serde_json::to_vec(&events(1000, "array")).expect("json"),
    )
    .expect("write");
}

fn run(inputs: Vec<Input>, lake: &Path, stream_above: usize, filter: FilterSpec) -> RunSummary {
    let mut o = IngestOptions::with_inputs(inputs, lake.to_path_buf());
    o.threads = 2;
    o.limits.stream_above = stream_above;
    o.filter = filter;
    let s = ingest(&o, &NoProgress).expect("ingest");
    assert!(s.balances(), "{s:#?}");
    s
}

fn local(dir: &Path) -> Vec<Input> {
    vec![Input::Local(dir.to_path_buf())]
}

const WHOLE: usize = 64 << 20;
const STREAM: usize = 1024;

#[test]
fn large_objects_write_what_reading_them_whole_writes_and_are_not_read_twice() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("in");
    large_objects(&dir);
    let (whole, streamed) = (tmp.path().join("whole"), tmp.path().join("streamed"));
    let w = run(local(&dir), &whole, WHOLE, FilterSpec::all());
    let s = run(local(&dir), &streamed, STREAM, FilterSpec::all());
    assert_eq!(s.events.read, 6001);
    assert_eq!(s.events.written, 6000);
    assert_eq!(s.events, w.events);
    assert_eq!(s.skipped_records_by_reason, w.skipped_records_by_reason);
    assert_eq!(s.skipped_record_samples[0].record, 1500);
    assert_eq!(s.objects.read, 3);
    let rows_w = rows(&whole, "events");
    assert_eq!(rows_w.len(), 6000);
    assert_eq!(rows(&streamed, "events"), rows_w);
    assert_eq!(
        table_text(&streamed, "key_daily"),
        table_text(&whole, "key_daily")
    );

    // The manifest holds the objects as read whole (same content hashes): a run that reads
    // whole finds them all in the lake, and a copy of one under another name is a duplicate.
    std::fs::copy(dir.join("export.jsonl"), dir.join("export-copy.jsonl")).expect("copy");
    let again = run(local(&dir), &streamed, WHOLE, FilterSpec::all());
    assert_eq!(again.objects.read, 0);
    assert_eq!(again.objects.skipped[&SkipReason::AlreadyIngested], 3);
    assert_eq!(again.objects.skipped[&SkipReason::Duplicate], 1);
    let again = run(local(&dir), &whole, STREAM, FilterSpec::all());
    assert_eq!(again.objects.read, 0);
    assert_eq!(again.objects.skipped[&SkipReason::Duplicate], 1);
    assert_eq!(rows(&streamed, "events"), rows_w);
    crate::s3::verify_copy(&streamed, tmp.path(), "verify");
}

/// Objects stored small whose text is too large to hold are read again record by record after
/// a whole read stopped; with more of them than decoders (one per core), every one is read, as
/// a run that holds them whole reads them.
#[test]
fn objects_whose_text_is_too_large_are_read_again_record_by_record_many_at_once() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("in");
    std::fs::create_dir_all(&dir).expect("dir");
    let mut stored = 0;
    for i in 0..12 {
        let gz = gzip(&records(&events(400, &format!("many{i}"))));
        stored = stored.max(gz.len());
        std::fs::write(dir.join(format!("d{i:02}.json.gz")), gz).expect("write");
    }
    let text = records(&events(400, "many0")).len();
    // Stored below the stream threshold, text above it: a whole read that stops.
    let above = stored + 1;
    assert!(text > above, "text {text}, stored {stored}");
    let (whole, again) = (tmp.path().join("whole"), tmp.path().join("again"));
    let w = run(local(&dir), &whole, WHOLE, FilterSpec::all());
    let mut o = IngestOptions::with_inputs(local(&dir), again.clone());
    o.threads = 8;
    o.limits.stream_above = above;
    let s = ingest(&o, &NoProgress).expect("ingest");
    assert!(s.balances(), "{s:#?}");
    assert_eq!(s.objects.read, 12);
    assert_eq!(s.events.written, 12 * 400);
    assert_eq!(s.events, w.events);
    assert_eq!(rows(&again, "events"), rows(&whole, "events"));
}

#[test]
fn a_large_object_read_for_one_key_is_read_again_for_the_others() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("in");
    large_objects(&dir);
    let lake = tmp.path().join("lake");
    let one = FilterSpec {
        keys: Some([KEYS[0].to_owned()].into()),
        ..FilterSpec::all()
    };
    // The first key made every third event of each object: 1,000 + 667 + 334.
    let s = run(local(&dir), &lake, STREAM, one);
    assert_eq!(s.events.written, 2001);
    // Renamed, so only the content hash (known only at the end) tells it was read before.
    let moved = tmp.path().join("moved");
    std::fs::rename(&dir, &moved).expect("rename");
    let s = run(local(&moved), &lake, STREAM, FilterSpec::all());
    assert_eq!(s.events.already_written, 2001);
    assert_eq!(s.events.written, 3999);
    let whole = tmp.path().join("whole");
    run(local(&moved), &whole, WHOLE, FilterSpec::all());
    assert_eq!(rows(&lake, "events"), rows(&whole, "events"));
}

#[test]
fn a_large_object_cut_short_writes_nothing_and_the_run_goes_on() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("in");
    std::fs::create_dir_all(&dir).expect("dir");
    let gz = gzip(&lines(&events(3000, "cut")));
    std::fs::write(dir.join("cut.jsonl.gz"), &gz[..gz.len() * 9 / 10]).expect("write");
    std::fs::write(
        dir.join("good.json.gz"),
        gzip(&records(&events(30, "good"))),
    )
    .expect("w");
    let lake = tmp.path().join("lake");
    let mut o = IngestOptions::with_inputs(local(&dir), lake.clone());
    o.threads = 2;
    o.limits.stream_above = STREAM;
    let s = ingest(&o, &NoProgress).expect("ingest");
    assert!(s.balances(), "{s:#?}");
    assert_eq!(s.objects.failed, 1);
    assert_eq!(s.failures[0].code, "corrupt-gzip");
    assert!(s.failures[0].object.ends_with("cut.jsonl.gz"));
    assert_eq!(s.events.written, 30);
    let written = rows(&lake, "events");
    assert_eq!(written.len(), 30);
    assert!(written.iter().all(|r| {
        r.event_id
            .as_deref()
            .is_some_and(|i| i.starts_with("good-"))
    }));
    // Nothing of the run is left behind in the lake's staging folder.
    let staging = lake.join("_keytrail/staging");
    assert_eq!(std::fs::read_dir(&staging).map_or(0, |d| d.count()), 0);
}

#[test]
fn a_large_s3_object_is_read_from_its_body_and_broken_gets_are_retried() {
    let server = S3Server::start();
    let key = "AWSLogs/111111111111/CloudTrail/us-east-1/2024/03/01/111111111111_CloudTrail_us-east-1_20240301T0000Z_EXPORT.json.gz";
    let body = gzip(&records(&events(3000, "s3")));
    server.put("trail", key, &body);
    server.fault(key, &[Fault::Truncate, Fault::Truncate]);
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let s = s3_run(&server, &lake);
    assert!(s.failures.is_empty(), "{:#?}", s.failures);
    assert_eq!(s.events.written, 3000);
    assert_eq!(server.unused_faults(), 0);
    let gets = server
        .take_log()
        .iter()
        .filter(|l| l.get_key() == Some(key))
        .count();
    // The test server's truncation closes the connection before the client has any of the
    // body, so the SDK sends the GET again (a body broken after part of it was read is the
    // next test's).
    assert_eq!(gets, 3, "the first GET and one more for each broken one");
    let file = tmp.path().join("local.json.gz");
    std::fs::write(&file, &body).expect("write");
    let whole = tmp.path().join("whole");
    run(vec![Input::Local(file)], &whole, WHOLE, FilterSpec::all());
    assert_eq!(rows(&lake, "events"), rows(&whole, "events"));
}

/// An ingest of `s3://trail` into `lake` through the test server, reading large objects from
/// their bodies.
fn s3_run(server: &S3Server, lake: &Path) -> RunSummary {
    let s3 = S3Options::default();
    let mut o = IngestOptions::with_inputs(
        vec![Input::parse("s3://trail").expect("input")],
        lake.to_path_buf(),
    );
    o.threads = 2;
    o.limits.stream_above = STREAM;
    o.s3_client = Some(server.client(&s3));
    o.s3 = s3;
    let s = ingest(&o, &NoProgress).expect("ingest");
    assert!(s.balances(), "{s:#?}");
    s
}

#[test]
fn a_large_s3_body_broken_midway_is_read_on_from_the_byte_it_broke_at() {
    let server = S3Server::start();
    let key = "AWSLogs/111111111111/CloudTrail/us-east-1/2024/03/01/111111111111_CloudTrail_us-east-1_20240301T0000Z_LINES.json";
    let body = lines(&events(3000, "mid"));
    assert!(body.len() > 1_000_000, "{}", body.len());
    server.put("trail", key, &body);
    // Broken after 700,000 bytes, then again 100,000 bytes further on.
    server.fault(
        key,
        &[Fault::BreakAfter(700_000), Fault::BreakAfter(100_000)],
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let s = s3_run(&server, &lake);
    assert!(s.failures.is_empty(), "{:#?}", s.failures);
    assert_eq!(s.events.written, 3000);
    assert_eq!(server.unused_faults(), 0);
    let gets: Vec<_> = server
        .take_log()
        .into_iter()
        .filter(|l| l.get_key() == Some(key))
        .collect();
    let ranges: Vec<Option<&str>> = gets.iter().map(|l| l.range.as_deref()).collect();
    assert_eq!(
        ranges,
        [None, Some("bytes=700000-"), Some("bytes=800000-")],
        "asked again from the byte each body broke at"
    );
    // The later GETs insist on the version read first.
    let etag = gets[1].if_match.clone().expect("If-Match");
    assert!(etag.len() > 2, "{etag}");
    assert_eq!(gets[2].if_match.as_deref(), Some(etag.as_str()));
    let file = tmp.path().join("local.json");
    std::fs::write(&file, &body).expect("write");
    let whole = tmp.path().join("whole");
    run(vec![Input::Local(file)], &whole, WHOLE, FilterSpec::all());
    let written = rows(&lake, "events");
    assert_eq!(written.len(), 3000);
    assert_eq!(written, rows(&whole, "events"));
}

#[test]
fn a_large_s3_body_that_keeps_breaking_fails_alone_and_writes_nothing() {
    let server = S3Server::start();
    let prefix = "AWSLogs/111111111111/CloudTrail/us-east-1/2024/03/01/";
    let bad = format!("{prefix}111111111111_CloudTrail_us-east-1_20240301T0000Z_BAD.json");
    let good = format!("{prefix}111111111111_CloudTrail_us-east-1_20240301T0005Z_GOOD.json.gz");
    server.put("trail", &bad, &lines(&events(3000, "bad")));
    server.put("trail", &good, &gzip(&records(&events(30, "good"))));
    // As many breaks as the reader allows (S3Options::body_attempts, 4), each further on.
    server.fault(&bad, &[Fault::BreakAfter(200_000); 4]);
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let s = s3_run(&server, &lake);
    assert_eq!(server.unused_faults(), 0);
    assert_eq!(s.objects.failed, 1);
    assert!(
        s.failures[0].object.ends_with("_BAD.json"),
        "{:#?}",
        s.failures
    );
    assert_eq!(s.failures[0].code, "read-error");
    assert!(
        s.failures[0].reason.contains("failed 4 times"),
        "{:#?}",
        s.failures
    );
    assert_eq!(s.events.written, 30);
    let written = rows(&lake, "events");
    assert_eq!(written.len(), 30);
    assert!(written.iter().all(|r| {
        r.event_id
            .as_deref()
            .is_some_and(|i| i.starts_with("good-"))
    }));
}

#[test]
fn a_large_s3_object_changed_while_read_fails_as_changed_and_writes_nothing() {
    let server = S3Server::start();
    let key = "AWSLogs/111111111111/CloudTrail/us-east-1/2024/03/01/111111111111_CloudTrail_us-east-1_20240301T0000Z_CHANGED.json";
    server.put("trail", key, &lines(&events(3000, "changed")));
    server.fault(key, &[Fault::BreakAfterAndChange(500_000)]);
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let s = s3_run(&server, &lake);
    assert_eq!(server.unused_faults(), 0);
    assert_eq!(s.objects.failed, 1, "{s:#?}");
    assert_eq!(
        s.failures[0].code, "changed-while-read",
        "{:#?}",
        s.failures
    );
    assert_eq!(s.events.written, 0);
    let gets: Vec<_> = server
        .take_log()
        .into_iter()
        .filter(|l| l.get_key() == Some(key))
        .map(|l| (l.range, l.if_match.is_some()))
        .collect();
    // The first GET takes the version there is; the next insists on it.
    assert_eq!(gets, [(None, false), (Some("bytes=500000-".into()), true)]);
    assert!(rows(&lake, "events").is_empty());
}
