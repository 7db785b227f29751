//! For tests and benchmarks: moto's S3 and SQS server on 127.0.0.1, explicit clients for it,
//! CloudTrail log objects in the delivery layout, and the notifications CloudTrail and S3 send.
//! Never used by `keytrail` itself.

use std::io::{BufRead, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_config::Region;
use serde_json::{Value, json};

/// Credentials moto accepts (it checks none); not a secret.
pub const ACCESS_KEY: &str = "testing";
const SECRET: &str = "testing";
pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";

/// moto's server (`moto.server`, from PyPI: `moto[server]`) on a free port of 127.0.0.1. It
/// stops when this process ends, however it ends: it watches its parent.
pub struct Moto {
    pub port: u16,
    child: Child,
}

/// The Python that runs moto's threaded server and exits when its parent is gone.
const LAUNCH: &str = r#"
import os, sys, time
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False)
server.start()
print("ready", flush=True)
parent = os.getppid()
while os.getppid() == parent:
    time.sleep(0.2)
server.stop()
"#;

impl Moto {
    /// Start a server and wait until it answers (panics with moto's output when it cannot).
    pub fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port on 127.0.0.1");
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(LAUNCH)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs (moto's server needs `pip install -r requirements-test.txt`)");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        if line.trim() != "ready" {
            let _ = child.kill();
            panic!(
                "moto's server did not start on 127.0.0.1:{port} (is `moto[server]` installed? `pip install -r requirements-test.txt`)"
            );
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto does not accept connections"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Moto { port, child }
    }

    /// One server for the whole test process (tests use their own buckets and queues).
    pub fn shared() -> &'static Moto {
        static ONE: OnceLock<Moto> = OnceLock::new();
        ONE.get_or_init(Moto::start)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An S3 client of the server: static credentials, region, endpoint, path style.
    pub fn s3(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::Config::builder()
            .http_client(keytrail_ingest::s3::http_client())
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                ACCESS_KEY,
                SECRET,
                None,
                None,
                "keytrail-testkit",
            ))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// An SQS client of the server.
    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        let conf = aws_sdk_sqs::Config::builder()
            .http_client(keytrail_ingest::s3::http_client())
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                ACCESS_KEY,
                SECRET,
                None,
                None,
                "keytrail-testkit",
            ))
            .endpoint_url(self.endpoint())
            .build();
        aws_sdk_sqs::Client::from_conf(conf)
    }

    /// The server's region, endpoint and credentials, as a follower of a lake in S3 takes them.
    pub fn credentials(&self) -> keytrail_ingest::s3access::S3Credentials {
        keytrail_ingest::s3access::S3Credentials {
            region: REGION.to_owned(),
            endpoint_url: Some(self.endpoint()),
            credentials: keytrail_ingest::s3access::SdkCredentials::new(
                aws_sdk_s3::config::SharedCredentialsProvider::new(
                    aws_sdk_s3::config::Credentials::new(
                        ACCESS_KEY,
                        SECRET,
                        None,
                        None,
                        "keytrail-testkit",
                    ),
                ),
                None,
            ),
        }
    }

    /// The lake under `s3://bucket/prefix` of the server, as the query engine reaches it.
    pub fn lake(&self, bucket: &str, prefix: &str) -> keytrail_engine::LakeLocation {
        let mut access = keytrail_engine::S3Access::new(REGION, ACCESS_KEY, SECRET);
        access.endpoint = Some(self.endpoint());
        keytrail_engine::LakeLocation::S3(keytrail_engine::S3Location::new(bucket, prefix, access))
    }

    /// The environment a `keytrail` process needs to reach the server with the default
    /// credential chain (nothing waits on instance metadata).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("AWS_CONFIG_FILE", "/dev/null".to_owned()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_owned()),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A runtime for driving the clients from synchronous tests.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Create a bucket.
pub async fn create_bucket(s3: &aws_sdk_s3::Client, bucket: &str) {
    s3.create_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("create bucket");
}

/// Put an object; returns its ETag (quotes removed) and size.
pub async fn put(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, body: Vec<u8>) -> (String, u64) {
    let size = body.len() as u64;
    let out = s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into())
        .send()
        .await
        .expect("put object");
    (
        out.e_tag().unwrap_or_default().trim_matches('"').to_owned(),
        size,
    )
}

/// Create a queue (with `dead_letter`: its ARN and the receives before a message moves
/// there); returns its URL.
pub async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    dead_letter: Option<(&str, u32)>,
) -> String {
    let mut b = sqs.create_queue().queue_name(name);
    if let Some((arn, max)) = dead_letter {
        b = b.attributes(
            aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": arn, "maxReceiveCount": max.to_string()}).to_string(),
        );
    }
    b.send()
        .await
        .expect("create queue")
        .queue_url()
        .expect("url")
        .to_owned()
}

/// A queue's ARN.
pub async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes");
    out.attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .expect("arn")
        .clone()
}

/// Send a message.
pub async fn send(sqs: &aws_sdk_sqs::Client, url: &str, body: &str) {
    sqs.send_message()
        .queue_url(url)
        .message_body(body)
        .send()
        .await
        .expect("send message");
}

/// Send many messages, ten per request.
pub async fn send_all(sqs: &aws_sdk_sqs::Client, url: &str, bodies: &[String]) {
    for chunk in bodies.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, b)| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(b)
                    .build()
                    .expect("entry")
            })
            .collect();
        let out = sqs
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("send messages");
        assert!(out.failed().is_empty(), "messages refused");
    }
}

/// Messages visible and in flight (`ApproximateNumberOfMessages`, `…NotVisible`).
pub async fn counts(sqs: &aws_sdk_sqs::Client, url: &str) -> (u64, u64) {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("queue attributes");
    let get = |a: A| {
        out.attributes()
            .and_then(|m| m.get(&a))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (
        get(A::ApproximateNumberOfMessages),
        get(A::ApproximateNumberOfMessagesNotVisible),
    )
}

/// A CloudTrail record made with `key` (an IAM user's key), at `time` (ms).
pub fn record(id: &str, key: &str, time: i64, source: &str, name: &str) -> Value {
    json!({
        "eventVersion": "1.09",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": "AIDAEXAMPLEPRINCIPAL",
            "arn": format!("arn:aws:iam::{ACCOUNT}:user/alice"),
            "accountId": ACCOUNT,
            "accessKeyId": key,
            "userName": "alice"
        },
        "eventTime": keytrail_model::time::format_millis(time),
        "eventSource": source,
        "eventName": name,
        "awsRegion": REGION,
        "sourceIPAddress": "198.51.100.7",
        "userAgent": "aws-cli/2.15.0 Python/3.11",
        "requestParameters": null,
        "responseElements": null,
        "requestID": format!("req-{id}"),
        "eventID": id,
        "readOnly": true,
        "eventType": "AwsApiCall",
        "managementEvent": true,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management"
    })
}

/// A gzipped delivery file of `records`.
pub fn log_object(records: &[Value]) -> Vec<u8> {
    let text = json!({ "Records": records }).to_string();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(text.as_bytes()).expect("gzip");
    gz.finish().expect("gzip")
}

/// A log object's key in the delivery layout, delivered at `time` (ms).
pub fn log_key(account: &str, region: &str, time: i64, tag: &str) -> String {
    let t = chrono::DateTime::from_timestamp_millis(time).expect("time");
    format!(
        "AWSLogs/{account}/CloudTrail/{region}/{}/{account}_CloudTrail_{region}_{}_{tag}.json.gz",
        t.format("%Y/%m/%d"),
        t.format("%Y%m%dT%H%MZ"),
    )
}

/// A digest object's key in the delivery layout.
pub fn digest_key(account: &str, region: &str, time: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(time).expect("time");
    format!(
        "AWSLogs/{account}/CloudTrail-Digest/{region}/{}/{account}_CloudTrail-Digest_{region}_trail_{region}_{}.json.gz",
        t.format("%Y/%m/%d"),
        t.format("%Y%m%dT%H%M%SZ"),
    )
}

/// CloudTrail's own notification (the SNS message body).
pub fn cloudtrail_notice(bucket: &str, keys: &[&str]) -> String {
    json!({"s3Bucket": bucket, "s3ObjectKey": keys}).to_string()
}

/// Encode a key as S3 event notifications do (`application/x-www-form-urlencoded`).
pub fn url_encode(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        match b {
            b' ' => out.push('+'),
            b if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) => out.push(b as char),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// An S3 event notification of one object created.
pub fn s3_event(bucket: &str, key: &str, size: u64, etag: &str) -> String {
    json!({"Records": [{
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": REGION,
        "eventTime": "2024-11-30T08:05:00.000Z",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "keytrail",
            "bucket": {"name": bucket, "arn": format!("arn:aws:s3:::{bucket}")},
            "object": {"key": url_encode(key), "size": size, "eTag": etag, "sequencer": "0A1B2C3D4E5F678901"}
        }
    }]})
    .to_string()
}

/// S3's test event.
pub fn s3_test_event(bucket: &str) -> String {
    json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2024-11-30T08:05:00.000Z",
           "Bucket": bucket, "RequestId": "R", "HostId": "H"})
    .to_string()
}

/// `message` in an SNS envelope (an SQS subscription without raw message delivery).
pub fn sns(message: &str) -> String {
    json!({
        "Type": "Notification",
        "MessageId": "7a3c0d3e-0000-4000-8000-000000000000",
        "TopicArn": format!("arn:aws:sns:{REGION}:{ACCOUNT}:cloudtrail"),
        "Message": message,
        "Timestamp": "2024-11-30T08:05:00.000Z",
        "SignatureVersion": "1",
        "Signature": "c2lnbmF0dXJl",
        "SigningCertURL": "https://sns.example/cert.pem",
        "UnsubscribeURL": "https://sns.example/unsubscribe"
    })
    .to_string()
}
