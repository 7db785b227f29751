//! What a queue message says: the delivery notifications CloudTrail and S3 send, read without
//! trusting them.
//!
//! Understood, raw or inside an SNS envelope (`{"Type": "Notification", "Message": "…"}`):
//!
//! - CloudTrail's own notification: `{"s3Bucket": "b", "s3ObjectKey": ["AWSLogs/…", …]}`
//!   (keys as they are);
//! - S3 event notifications: `{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket":
//!   {"name": "b"}, "object": {"key": "…", "size": 1, "eTag": "…"}}}]}` (keys URL-encoded, a
//!   space as `+`); records of other events (removals, restores) are passed over;
//! - S3's test event (`"Event": "s3:TestEvent"`), sent when a notification is configured;
//! - EventBridge's `Object Created` events from S3 (keys as they are).
//!
//! Anything else is an error naming what was wrong: the message is left for the queue's redrive
//! policy.

use serde_json::Value;

/// An object a notification names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    pub bucket: String,
    pub key: String,
    /// Size in bytes, when the notification says (S3 and EventBridge events).
    pub size: Option<u64>,
    /// ETag without quotes, when the notification says.
    pub etag: Option<String>,
}

/// What a message asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Objects delivered.
    Objects(Vec<Named>),
    /// S3's test event: nothing to read.
    Test,
    /// Understood, and nothing to read (removals only, an SNS subscription message).
    Ignored(String),
}

/// Why a message is not understood.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoticeError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("not a CloudTrail or S3 delivery notification (nor an SNS envelope of one): {0}")]
    Unknown(String),
    #[error("{0}")]
    Invalid(String),
}

/// Read a message body.
pub fn parse(body: &str) -> Result<Notice, NoticeError> {
    let v: Value = serde_json::from_str(body).map_err(|e| NoticeError::NotJson(e.to_string()))?;
    read(&v, 0)
}

fn text<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get(field).and_then(Value::as_str)
}

fn read(v: &Value, depth: u8) -> Result<Notice, NoticeError> {
    let Some(obj) = v.as_object() else {
        return Err(NoticeError::Unknown(format!(
            "the body is {}, not an object",
            kind(v)
        )));
    };
    // An SNS envelope (a subscription without raw message delivery).
    if let Some(t) = text(v, "Type")
        && obj.contains_key("TopicArn")
    {
        return match t {
            "Notification" if depth == 0 => {
                let inner = text(v, "Message").ok_or_else(|| {
                    NoticeError::Invalid("an SNS notification without a `Message` text".into())
                })?;
                let inner: Value = serde_json::from_str(inner).map_err(|e| {
                    NoticeError::NotJson(format!("the SNS notification's Message: {e}"))
                })?;
                read(&inner, depth + 1)
            }
            "Notification" => Err(NoticeError::Invalid(
                "an SNS envelope inside an SNS envelope".into(),
            )),
            "SubscriptionConfirmation" | "UnsubscribeConfirmation" => Ok(Notice::Ignored(format!(
                "an SNS {t} message (SQS subscriptions confirm themselves)"
            ))),
            other => Err(NoticeError::Unknown(format!(
                "an SNS message of type {other}"
            ))),
        };
    }
    // CloudTrail's own notification.
    if let Some(bucket) = obj.get("s3Bucket") {
        let bucket = bucket
            .as_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| NoticeError::Invalid("`s3Bucket` is not a bucket name".into()))?;
        let keys = obj
            .get("s3ObjectKey")
            .and_then(Value::as_array)
            .ok_or_else(|| NoticeError::Invalid("`s3ObjectKey` is not an array".into()))?;
        let mut out = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            let key = k.as_str().filter(|k| !k.is_empty()).ok_or_else(|| {
                NoticeError::Invalid(format!("`s3ObjectKey[{i}]` is not an object key"))
            })?;
            out.push(Named {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                size: None,
                etag: None,
            });
        }
        if out.is_empty() {
            return Ok(Notice::Ignored(
                "a CloudTrail notification naming no object".into(),
            ));
        }
        return Ok(Notice::Objects(out));
    }
    // S3's test event.
    if text(v, "Event") == Some("s3:TestEvent") {
        return Ok(Notice::Test);
    }
    // S3 event notifications.
    if let Some(records) = obj.get("Records") {
        let records = records
            .as_array()
            .ok_or_else(|| NoticeError::Invalid("`Records` is not an array".into()))?;
        let mut out = Vec::new();
        let mut passed = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let (Some(name), Some(s3)) = (text(r, "eventName"), r.get("s3")) else {
                return Err(NoticeError::Unknown(format!(
                    "Records[{i}] is not an S3 event (no `eventName` and `s3`)"
                )));
            };
            if !name.starts_with("ObjectCreated:") {
                passed.push(name.to_owned());
                continue;
            }
            let bucket = s3
                .get("bucket")
                .and_then(|b| text(b, "name"))
                .filter(|b| !b.is_empty())
                .ok_or_else(|| {
                    NoticeError::Invalid(format!("Records[{i}].s3.bucket.name is missing"))
                })?;
            let object = s3.get("object").ok_or_else(|| {
                NoticeError::Invalid(format!("Records[{i}].s3.object is missing"))
            })?;
            let raw = text(object, "key")
                .filter(|k| !k.is_empty())
                .ok_or_else(|| {
                    NoticeError::Invalid(format!("Records[{i}].s3.object.key is missing"))
                })?;
            let key = url_decode(raw).map_err(|e| {
                NoticeError::Invalid(format!("Records[{i}].s3.object.key `{raw}`: {e}"))
            })?;
            out.push(Named {
                bucket: bucket.to_owned(),
                key,
                size: object.get("size").and_then(Value::as_u64),
                etag: text(object, "eTag").map(|e| e.trim_matches('"').to_owned()),
            });
        }
        if out.is_empty() {
            passed.sort();
            passed.dedup();
            return Ok(Notice::Ignored(if passed.is_empty() {
                "an S3 event notification with no records".to_owned()
            } else {
                format!("S3 events that create no object ({})", passed.join(", "))
            }));
        }
        return Ok(Notice::Objects(out));
    }
    // EventBridge's events from S3.
    if text(v, "source") == Some("aws.s3") && obj.contains_key("detail-type") {
        let dt = text(v, "detail-type").unwrap_or_default();
        if dt != "Object Created" {
            return Ok(Notice::Ignored(format!("an EventBridge `{dt}` event")));
        }
        let detail = obj
            .get("detail")
            .ok_or_else(|| NoticeError::Invalid("an EventBridge event without `detail`".into()))?;
        let bucket = detail
            .get("bucket")
            .and_then(|b| text(b, "name"))
            .filter(|b| !b.is_empty())
            .ok_or_else(|| NoticeError::Invalid("detail.bucket.name is missing".into()))?;
        let object = detail
            .get("object")
            .ok_or_else(|| NoticeError::Invalid("detail.object is missing".into()))?;
        let key = text(object, "key")
            .filter(|k| !k.is_empty())
            .ok_or_else(|| NoticeError::Invalid("detail.object.key is missing".into()))?;
        return Ok(Notice::Objects(vec![Named {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            size: object.get("size").and_then(Value::as_u64),
            etag: text(object, "etag").map(|e| e.trim_matches('"').to_owned()),
        }]));
    }
    let mut fields: Vec<&str> = obj.keys().map(String::as_str).take(6).collect();
    fields.sort_unstable();
    Err(NoticeError::Unknown(format!(
        "an object with the fields {}",
        fields.join(", ")
    )))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Decode an S3 event's object key: `application/x-www-form-urlencoded`, as S3 writes it
/// (`+` a space, `%XX` a byte; the bytes UTF-8).
pub fn url_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        format!("a `%` at byte {i} is not followed by two hex digits")
                    })?;
                out.push(hex);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "the decoded key is not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AWSLogs/111122223333/CloudTrail/us-east-1/2024/11/30/111122223333_CloudTrail_us-east-1_20241130T0805Z_AbCd.json.gz";

    fn named(bucket: &str, key: &str, size: Option<u64>, etag: Option<&str>) -> Named {
        Named {
            bucket: bucket.into(),
            key: key.into(),
            size,
            etag: etag.map(str::to_owned),
        }
    }

    #[test]
    fn cloudtrail_notification_raw_and_in_sns() {
        let raw = format!(r#"{{"s3Bucket":"trail","s3ObjectKey":["{KEY}","a+b%20c"]}}"#);
        let want = Notice::Objects(vec![
            named("trail", KEY, None, None),
            // CloudTrail's keys are not URL-encoded.
            named("trail", "a+b%20c", None, None),
        ]);
        assert_eq!(parse(&raw), Ok(want.clone()));
        let sns = serde_json::json!({
            "Type": "Notification", "MessageId": "m", "TopicArn": "arn:aws:sns:us-east-1:1:t",
            "Message": raw, "Timestamp": "2024-11-30T08:05:00.000Z",
        });
        assert_eq!(parse(&sns.to_string()), Ok(want));
    }

    #[test]
    fn s3_event_keys_are_url_decoded() {
        let body = serde_json::json!({"Records": [
            {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"},
             "object": {"key": "AWSLogs/x/my+file%3D1%C3%A9.json.gz", "size": 42, "eTag": "\"e1\""}}},
            {"eventName": "ObjectRemoved:Delete", "s3": {"bucket": {"name": "b"},
             "object": {"key": "gone"}}},
        ]});
        assert_eq!(
            parse(&body.to_string()),
            Ok(Notice::Objects(vec![named(
                "b",
                "AWSLogs/x/my file=1é.json.gz",
                Some(42),
                Some("e1")
            )]))
        );
        let removed = serde_json::json!({"Records": [{"eventName": "ObjectRemoved:Delete",
            "s3": {"bucket": {"name": "b"}, "object": {"key": "k"}}}]});
        assert!(matches!(
            parse(&removed.to_string()),
            Ok(Notice::Ignored(_))
        ));
    }

    #[test]
    fn test_event_and_eventbridge() {
        let t = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2024-11-30T08:05:00Z","Bucket":"b","RequestId":"r","HostId":"h"}"#;
        assert_eq!(parse(t), Ok(Notice::Test));
        let sns = serde_json::json!({"Type": "Notification", "TopicArn": "t", "Message": t});
        assert_eq!(parse(&sns.to_string()), Ok(Notice::Test));
        let eb = serde_json::json!({"version": "0", "detail-type": "Object Created",
            "source": "aws.s3", "detail": {"bucket": {"name": "b"},
            "object": {"key": "a b.json.gz", "size": 7, "etag": "e"}}});
        assert_eq!(
            parse(&eb.to_string()),
            Ok(Notice::Objects(vec![named(
                "b",
                "a b.json.gz",
                Some(7),
                Some("e")
            )]))
        );
    }

    #[test]
    fn poison_is_an_error_that_says_why() {
        for (body, says) in [
            ("not json", "not JSON"),
            ("[1,2]", "an array"),
            (r#"{"hello":"world"}"#, "fields hello"),
            (r#"{"s3Bucket":"b","s3ObjectKey":"k"}"#, "not an array"),
            (
                r#"{"Records":[{"eventVersion":"1.08","eventSource":"iam.amazonaws.com"}]}"#,
                "not an S3 event",
            ),
            (
                r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"bad%zz"}}}]}"#,
                "two hex digits",
            ),
            (
                r#"{"Type":"Notification","TopicArn":"t","Message":"{oops"}"#,
                "Message",
            ),
            (
                r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"%FF"}}}]}"#,
                "not UTF-8",
            ),
        ] {
            let e = parse(body).expect_err(body).to_string();
            assert!(e.contains(says), "{body}: {e}");
        }
    }

    #[test]
    fn sns_subscription_messages_are_ignored() {
        let m = serde_json::json!({"Type": "SubscriptionConfirmation", "TopicArn": "t",
            "Message": "You have chosen to subscribe"});
        assert!(matches!(parse(&m.to_string()), Ok(Notice::Ignored(_))));
    }
}
