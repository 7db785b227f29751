//! Bytes → record texts: decompression by evidence, then the shape of the JSON.
//!
//! Shapes, detected per object:
//! - S3 delivery files: `{"Records": [event, ...]}`
//! - a JSON array of events: `[event, ...]`
//! - JSON lines: one document per line (an event, or any document below)
//! - `aws cloudtrail lookup-events` output: `{"Events": [{"CloudTrailEvent": "<json>"}, ...]}`
//! - a single event object
//! - CloudTrail digest files (`digestStartTime`, ...): recognised, no records.

use std::borrow::Cow;
use std::io::Read;

use keytrail_model::EventError;
use sonic_rs::{JsonType, JsonValueTrait, LazyValue};

use crate::error::ObjectError;

/// How an object's bytes are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    None,
}

/// Decide the compression from the bytes themselves (the gzip magic number); names and
/// content types lie more often than magic numbers do.
pub fn detect_compression(bytes: &[u8]) -> Compression {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else {
        Compression::None
    }
}

/// Decompress `input` into `out` (cleared first), refusing more than `limit` bytes. Gzip
/// streams of several members and headers with a file name are read whole.
pub fn decompress(input: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), ObjectError> {
    out.clear();
    if input.is_empty() {
        return Err(ObjectError::Empty);
    }
    match detect_compression(input) {
        Compression::None => {
            if input.len() > limit {
                return Err(ObjectError::TooLarge { limit });
            }
            out.extend_from_slice(input);
        }
        Compression::Gzip => {
            let decoder = flate2::read::MultiGzDecoder::new(input);
            let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
            decoder
                .take(cap)
                .read_to_end(out)
                .map_err(|e| ObjectError::Gzip(e.to_string()))?;
            if out.len() > limit {
                out.clear();
                return Err(ObjectError::TooLarge { limit });
            }
        }
    }
    Ok(())
}

/// The shape an object's JSON had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `{"Records": [...]}`.
    Records,
    /// `[...]`.
    Array,
    /// One document per line.
    JsonLines,
    /// `{"Events": [{"CloudTrailEvent": "..."}]}`.
    LookupEvents,
    /// One event object.
    Event,
    /// A CloudTrail digest file.
    Digest,
}

/// The records of one object, as JSON texts, and the records that were not even JSON.
#[derive(Debug, Default)]
pub struct Split<'a> {
    pub shape: Option<Shape>,
    /// `(record index, JSON text)`; the index counts every record of the object from 0.
    pub records: Vec<(u64, Cow<'a, str>)>,
    /// Records that could not be cut out (a JSON-lines line that is not JSON, a
    /// lookup-events entry without `CloudTrailEvent`).
    pub bad: Vec<(u64, EventError)>,
    next: u64,
}

impl<'a> Split<'a> {
    fn push(&mut self, text: Cow<'a, str>) {
        self.records.push((self.next, text));
        self.next += 1;
    }

    fn push_bad(&mut self, e: EventError) {
        self.bad.push((self.next, e));
        self.next += 1;
    }

    /// Records found, readable or not.
    pub fn total(&self) -> u64 {
        self.next
    }
}

fn type_name(t: JsonType) -> &'static str {
    match t {
        JsonType::Null => "null",
        JsonType::Boolean => "a boolean",
        JsonType::Number => "a number",
        JsonType::String => "a string",
        JsonType::Object => "an object",
        JsonType::Array => "an array",
    }
}

fn trim_start(buf: &[u8]) -> &[u8] {
    let buf = buf.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(buf);
    let start = buf
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(buf.len());
    &buf[start..]
}

/// Whether `text` is exactly one JSON value (with optional surrounding whitespace).
fn is_one_value(text: &[u8]) -> bool {
    sonic_rs::from_slice::<serde::de::IgnoredAny>(text).is_ok()
}

/// Cut an object's text into records.
pub fn split(buf: &[u8]) -> Result<Split<'_>, ObjectError> {
    let body = trim_start(buf);
    let mut out = Split::default();
    match body.first() {
        None => return Err(ObjectError::NotJson("no content".into())),
        Some(b'[') => {
            out.shape = Some(Shape::Array);
            if !is_one_value(body) {
                return Err(ObjectError::NotJson(first_error(body)));
            }
            for item in sonic_rs::to_array_iter(body) {
                let v = item.map_err(|e| ObjectError::NotJson(e.to_string()))?;
                out.push(v.as_raw_cow());
            }
        }
        Some(b'{') => {
            let first_line = memchr::memchr(b'\n', body).map_or(body, |n| &body[..n]);
            let more =
                first_line.len() < body.len() && !trim_start(&body[first_line.len()..]).is_empty();
            if more && is_one_value(first_line) {
                out.shape = Some(Shape::JsonLines);
                for line in body.split(|b| *b == b'\n') {
                    let line = trim_start(line);
                    if line.is_empty() {
                        continue;
                    }
                    if !is_one_value(line) {
                        out.push_bad(EventError::Json(first_error(line)));
                        continue;
                    }
                    if let Err(e) = document(line, &mut out) {
                        out.push_bad(EventError::Json(e.to_string()));
                    }
                }
            } else {
                if !is_one_value(body) {
                    return Err(ObjectError::NotJson(first_error(body)));
                }
                out.shape = Some(document(body, &mut out)?);
            }
        }
        Some(_) => {
            return Err(ObjectError::NotJson(first_error(body)));
        }
    }
    Ok(out)
}

/// A short description of why a text is not JSON.
fn first_error(text: &[u8]) -> String {
    match sonic_rs::from_slice::<serde::de::IgnoredAny>(text) {
        Ok(_) => "not a JSON object or array".into(),
        Err(e) => {
            let msg = e.to_string();
            // sonic-rs quotes the text around the error; keep the message short.
            msg.lines().next().unwrap_or("invalid JSON").to_owned()
        }
    }
}

/// Read one JSON document (already known to be valid JSON) and add its records.
fn document<'a>(doc: &'a [u8], out: &mut Split<'a>) -> Result<Shape, ObjectError> {
    let mut records: Option<LazyValue<'a>> = None;
    let mut events: Option<LazyValue<'a>> = None;
    let mut digest = false;
    let mut event_like = false;
    for item in sonic_rs::to_object_iter(doc) {
        let (k, v) = item.map_err(|e| ObjectError::NotJson(e.to_string()))?;
        match &*k {
            "Records" => records = Some(v),
            "Events" => events = Some(v),
            "digestStartTime"
            | "digestEndTime"
            | "digestPublicKeyFingerprint"
            | "digestSignatureAlgorithm" => digest = true,
            "eventTime" | "eventName" | "eventID" | "eventVersion" | "@timestamp" => {
                event_like = true;
            }
            _ => {}
        }
    }
    if let Some(r) = records {
        let t = r.get_type();
        let Some(iter) = r.into_array_iter() else {
            return Err(ObjectError::RecordsNotArray {
                found: type_name(t),
            });
        };
        for item in iter {
            let v = item.map_err(|e| ObjectError::NotJson(e.to_string()))?;
            out.push(v.as_raw_cow());
        }
        return Ok(Shape::Records);
    }
    if digest && !event_like {
        return Ok(Shape::Digest);
    }
    if let Some(ev) = events.filter(|_| !event_like) {
        let t = ev.get_type();
        let Some(iter) = ev.into_array_iter() else {
            return Err(ObjectError::EventsNotArray {
                found: type_name(t),
            });
        };
        for item in iter {
            let v = item.map_err(|e| ObjectError::NotJson(e.to_string()))?;
            match v
                .get("CloudTrailEvent")
                .and_then(|s| s.as_str().map(str::to_owned))
            {
                Some(text) => out.push(Cow::Owned(text)),
                None => out.push_bad(EventError::WrongType {
                    field: "Events[].CloudTrailEvent",
                    found: "missing or not a string",
                    expected: "the event's JSON text",
                }),
            }
        }
        return Ok(Shape::LookupEvents);
    }
    // Any other object is taken as one event; decoding says whether it is one.
    out.push(Cow::Borrowed(
        std::str::from_utf8(doc).map_err(|e| ObjectError::NotJson(e.to_string()))?,
    ));
    Ok(Shape::Event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    fn texts(s: &Split<'_>) -> Vec<String> {
        s.records.iter().map(|(_, t)| t.to_string()).collect()
    }

    #[test]
    fn gzip_with_several_members_and_a_file_name() {
        let mut two = gzip(b"{\"Records\":[{\"a\":1},");
        two.extend(gzip(b"{\"b\":2}]}"));
        let mut out = Vec::new();
        decompress(&two, &mut out, 1 << 20).expect("multi-member");
        assert_eq!(out, b"{\"Records\":[{\"a\":1},{\"b\":2}]}");

        let mut named = flate2::GzBuilder::new()
            .filename("x.json")
            .write(Vec::new(), flate2::Compression::fast());
        named.write_all(b"[1]").expect("w");
        let named = named.finish().expect("f");
        decompress(&named, &mut out, 1 << 20).expect("fname");
        assert_eq!(out, b"[1]");
    }

    #[test]
    fn broken_or_oversized_input_is_an_object_error() {
        let mut out = Vec::new();
        let full = gzip(&[b'x'; 4096]);
        let truncated = &full[..full.len() / 2];
        assert!(matches!(
            decompress(truncated, &mut out, 1 << 20),
            Err(ObjectError::Gzip(_))
        ));
        assert_eq!(decompress(&[], &mut out, 10), Err(ObjectError::Empty));
        assert_eq!(
            decompress(&full, &mut out, 100),
            Err(ObjectError::TooLarge { limit: 100 })
        );
        assert_eq!(
            decompress(b"[1,2,3]", &mut out, 3),
            Err(ObjectError::TooLarge { limit: 3 })
        );
    }

    #[test]
    fn shapes() {
        let s =
            split(b"{\"Records\":[{\"eventName\":\"A\"},{\"eventName\":\"B\"}]}").expect("records");
        assert_eq!(s.shape, Some(Shape::Records));
        assert_eq!(texts(&s), [r#"{"eventName":"A"}"#, r#"{"eventName":"B"}"#]);

        let s = split(b"\xEF\xBB\xBF [ {\"eventName\":\"A\"} ]").expect("array");
        assert_eq!(s.shape, Some(Shape::Array));
        assert_eq!(s.records.len(), 1);

        let s = split(b"{\"eventName\":\"A\"}\n\nnot json\n{\"Records\":[{\"eventName\":\"B\"},{\"eventName\":\"C\"}]}\n").expect("lines");
        assert_eq!(s.shape, Some(Shape::JsonLines));
        assert_eq!(
            texts(&s),
            [
                r#"{"eventName":"A"}"#,
                r#"{"eventName":"B"}"#,
                r#"{"eventName":"C"}"#
            ]
        );
        assert_eq!(s.bad.len(), 1);
        assert_eq!(s.bad[0].0, 1, "the bad line is record 1");
        assert_eq!(s.total(), 4);

        let s = split(br#"{"Events":[{"EventId":"x","CloudTrailEvent":"{\"eventName\":\"A\"}"},{"EventId":"y"}],"NextToken":"t"}"#).expect("lookup");
        assert_eq!(s.shape, Some(Shape::LookupEvents));
        assert_eq!(texts(&s), [r#"{"eventName":"A"}"#]);
        assert_eq!(s.bad.len(), 1);

        let s = split(b"{\n  \"eventName\": \"A\",\n  \"eventTime\": \"x\"\n}\n")
            .expect("one pretty event");
        assert_eq!(s.shape, Some(Shape::Event));
        assert_eq!(s.records.len(), 1);

        let s = split(br#"{"awsAccountId":"1","digestStartTime":"2024-01-01T00:00:00Z","digestPublicKeyFingerprint":"f","logFiles":[]}"#).expect("digest");
        assert_eq!(s.shape, Some(Shape::Digest));
        assert!(s.records.is_empty());
    }

    #[test]
    fn hostile_documents_fail_with_a_reason() {
        let cases: [(&[u8], &str); 6] = [
            (b"", "no content"),
            (b"hello", "not JSON"),
            (b"{\"Records\":{}}", "`Records` is an object"),
            (b"{\"Records\":\"x\"}", "`Records` is a string"),
            (b"{\"Records\":[{\"a\":1},", "not JSON"),
            (b"{\"Records\":[]} trailing", "not JSON"),
        ];
        for (input, want) in cases {
            let err = split(input)
                .expect_err(&String::from_utf8_lossy(input))
                .to_string();
            assert!(
                err.contains(want),
                "{}: {err}",
                String::from_utf8_lossy(input)
            );
        }
        assert!(
            split(b"{\"Events\":3}")
                .expect_err("events")
                .to_string()
                .contains("`Events` is a number")
        );
    }
}
