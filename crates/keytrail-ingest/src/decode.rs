//! Bytes → record texts: decompression by evidence, then the shape of the JSON.
//!
//! Shapes, detected per object:
//! - S3 delivery files: `{"Records": [event, ...]}`
//! - a JSON array of events: `[event, ...]`
//! - JSON lines: one document per line (an event, or any document below)
//! - `aws cloudtrail lookup-events` output: `{"Events": [{"CloudTrailEvent": "<json>"}, ...]}`
//! - a single event object
//! - CloudTrail digest files (`digestStartTime`, ...): recognised, no records.

use std::io::Read;

use keytrail_model::event::Key;
use keytrail_model::redact::is_suspicious;
use keytrail_model::{Event, EventError, EventFields, EventSeed};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use sonic_rs::{JsonType, JsonValueTrait, LazyValue};

use crate::error::ObjectError;
use crate::split::{Item, Splitter, Step};

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
///
/// A single-member gzip object (what CloudTrail writes) is inflated in one call by libdeflate
/// into a buffer sized from the gzip trailer; anything else (several members, a trailer that
/// lies, corrupt data) goes through flate2's streaming decoder, which also says precisely what
/// is wrong.
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
            if inflate_whole(input, out, limit) {
                return Ok(());
            }
            out.clear();
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

thread_local! {
    static INFLATER: std::cell::RefCell<libdeflater::Decompressor> =
        std::cell::RefCell::new(libdeflater::Decompressor::new());
}

/// The fast path: one gzip member whose trailer gives its size. `false` means "use the
/// streaming decoder".
fn inflate_whole(input: &[u8], out: &mut Vec<u8>, limit: usize) -> bool {
    let Some(trailer) = input.len().checked_sub(4).and_then(|i| input.get(i..)) else {
        return false;
    };
    let size = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]) as usize;
    if size == 0 || size > limit {
        return false;
    }
    // libdeflate reads the first member and ignores whatever follows it. Its member must
    // inflate to `size`, so that member's own trailer ends in these four bytes too; unless the
    // member ends where the object ends, that trailer lies wholly before the object's last
    // byte. Four bytes found nowhere there prove the object is one member. Found there (a
    // second member, bytes after the member, or rarely chance), the streaming decoder reads
    // it all.
    if memchr::memmem::find(&input[..input.len() - 1], trailer).is_some() {
        return false;
    }
    out.resize(size, 0);
    let ok =
        INFLATER.with(|d| matches!(d.borrow_mut().gzip_decompress(input, out), Ok(n) if n == size));
    if !ok {
        out.clear();
    }
    ok
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

/// The records of one object, decoded, in the order they appear.
#[derive(Debug, Default)]
pub struct Split<'a> {
    pub shape: Option<Shape>,
    /// `(record index, decoded event or why not)`; the index counts every record of the
    /// object from 0.
    pub records: Vec<(u64, Result<Event<'a>, EventError>)>,
    /// Records that are JSON text inside a string (lookup-events output), to decode next.
    pub texts: Vec<(u64, String)>,
    next: u64,
}

impl<'a> Split<'a> {
    fn push(&mut self, r: Result<Event<'a>, EventError>) {
        self.records.push((self.next, r));
        self.next += 1;
    }

    fn push_text(&mut self, t: String) {
        self.texts.push((self.next, t));
        self.next += 1;
    }

    /// Records found, readable or not.
    pub fn total(&self) -> u64 {
        self.next
    }

    /// Forget what was added since `mark` (a JSON-lines line that turned out broken).
    fn rollback(&mut self, mark: (usize, usize, u64)) {
        self.records.truncate(mark.0);
        self.texts.truncate(mark.1);
        self.next = mark.2;
    }

    fn mark(&self) -> (usize, usize, u64) {
        (self.records.len(), self.texts.len(), self.next)
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

pub(crate) fn short(e: sonic_rs::Error) -> String {
    // sonic-rs quotes the text around the error; keep the first line.
    e.to_string()
        .lines()
        .next()
        .unwrap_or("invalid JSON")
        .to_owned()
}

/// Read an object's text into decoded records. The splitter ([`crate::split`]) cuts it into
/// records without recursion, refusing those that nest too deeply or are too large to hold;
/// each record is then parsed and decoded on its own, in one validating pass.
pub fn split(buf: &[u8], max_event_bytes: usize) -> Result<Split<'_>, ObjectError> {
    let seed = EventSeed {
        scrub: is_suspicious(buf),
        max_bytes: max_event_bytes,
    };
    let mut out = Split::default();
    let mut splitter = Splitter::new(usize::MAX);
    let mut doc_shape = None;
    let text = Text::new(buf);
    loop {
        match splitter.next(buf, 0, true)? {
            Step::Item(item) => {
                if let Some(shape) = add_item(item, &text, seed, &mut out)? {
                    doc_shape = Some(shape);
                }
            }
            Step::End => break,
            Step::More => {
                return Err(ObjectError::NotJson(
                    "internal: the splitter asked for more of a whole object".into(),
                ));
            }
        }
    }
    out.shape = splitter.shape().or(doc_shape);
    Ok(out)
}

/// An object's text, checked for UTF-8 once. sonic-rs must only ever be given valid UTF-8:
/// a value it captures or skips whole (`requestParameters`, unknown members) is not checked by
/// it, and becomes a `&str` holding invalid UTF-8 (found by the `decode` fuzz target, as a
/// failed debug assertion inside sonic-rs). Valid text (the rule) costs one SIMD pass; in
/// text that is not, each record is checked on its own and refused alone.
pub(crate) struct Text<'a> {
    buf: &'a [u8],
    whole: Option<&'a str>,
}

impl<'a> Text<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Text<'a> {
        Text {
            buf,
            whole: simdutf8::basic::from_utf8(buf).ok(),
        }
    }

    /// `part` (a slice of this text) as a string, or why not.
    fn str_of(&self, part: &'a [u8]) -> Result<&'a str, EventError> {
        let start = (part.as_ptr() as usize).wrapping_sub(self.buf.as_ptr() as usize);
        if let Some(s) = self
            .whole
            .and_then(|w| w.get(start..start.saturating_add(part.len())))
        {
            return Ok(s);
        }
        std::str::from_utf8(part)
            .map_err(|e| EventError::Json(format!("invalid UTF-8 at byte {}", e.valid_up_to())))
    }
}

/// Decode one item the splitter cut out into `out`. A document's shape is returned.
pub(crate) fn add_item<'a>(
    item: Item<'a>,
    text: &Text<'a>,
    seed: EventSeed,
    out: &mut Split<'a>,
) -> Result<Option<Shape>, ObjectError> {
    match item {
        Item::Record(t) => out.push(text.str_of(t).and_then(|t| decode_record(t, seed))),
        Item::Lookup(t) => match text.str_of(t) {
            Ok(t) => lookup_element(t, out),
            Err(e) => out.push(Err(e)),
        },
        Item::Document(doc) => {
            let doc = text
                .str_of(doc)
                .map_err(|e| ObjectError::NotJson(e.to_string()))?;
            return document(doc, seed, out).map(Some);
        }
        Item::Line(line) => match text.str_of(line) {
            Ok(line) => {
                let mark = out.mark();
                if let Err(e) = document(line, seed, out) {
                    out.rollback(mark);
                    out.push(Err(EventError::Json(e.to_string())));
                }
            }
            Err(e) => out.push(Err(e)),
        },
        Item::Refused(e) => out.push(Err(e)),
    }
    Ok(None)
}

/// Decode one record from its text (an element the splitter cut out); invalid JSON is this
/// record's problem only.
fn decode_record(text: &str, seed: EventSeed) -> Result<Event<'_>, EventError> {
    let mut de = sonic_rs::Deserializer::from_str(text);
    match seed.deserialize(&mut de).and_then(|r| de.end().map(|()| r)) {
        Ok(r) => r,
        Err(e) => Err(EventError::Json(short(e))),
    }
}

/// One element of lookup-events' `Events`: the event is the JSON text of its
/// `CloudTrailEvent`, decoded later.
fn lookup_element<'a>(text: &'a str, out: &mut Split<'a>) {
    let v = match sonic_rs::from_str::<LazyValue<'_>>(text) {
        Ok(v) => v,
        Err(e) => return out.push(Err(EventError::Json(short(e)))),
    };
    match v
        .get("CloudTrailEvent")
        .and_then(|s| s.as_str().map(str::to_owned))
    {
        Some(text) => out.push_text(text),
        None => out.push(Err(EventError::WrongType {
            field: "Events[].CloudTrailEvent",
            found: "missing or not a string",
            expected: "the event's JSON text",
        })),
    }
}

/// Read one JSON document (an object) and add its records.
fn document<'a>(doc: &'a str, seed: EventSeed, out: &mut Split<'a>) -> Result<Shape, ObjectError> {
    if trim_start(doc.as_bytes()).first() != Some(&b'{') {
        return Err(ObjectError::NotJson("not a JSON object".into()));
    }
    let mut de = sonic_rs::Deserializer::from_str(doc);
    DocSeed { out, seed }
        .deserialize(&mut de)
        .and_then(|r| de.end().map(|()| r))
        .map_err(|e| ObjectError::NotJson(short(e)))?
}

/// A top-level object: a delivery file (`Records`), lookup-events output (`Events`), a digest
/// file, or one event. Read in one pass: the members of an event are decoded as they come, so
/// a single event costs no second parse.
struct DocSeed<'s, 'a> {
    out: &'s mut Split<'a>,
    seed: EventSeed,
}

impl<'de, 's> DeserializeSeed<'de> for DocSeed<'s, 'de> {
    type Value = Result<Shape, ObjectError>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 's> Visitor<'de> for DocSeed<'s, 'de> {
    type Value = Result<Shape, ObjectError>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = EventFields::new(self.seed.scrub);
        let mut records: Option<Result<(), &'static str>> = None;
        let mut events: Option<LazyValue<'de>> = None;
        let mut digest = false;
        let mut event_like = false;
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            match &*k {
                "Records" => {
                    records = Some(map.next_value_seed(RecordsSeed {
                        out: &mut *self.out,
                        seed: self.seed,
                    })?);
                }
                "Events" => events = Some(map.next_value()?),
                key => {
                    digest |= matches!(
                        key,
                        "digestStartTime"
                            | "digestEndTime"
                            | "digestPublicKeyFingerprint"
                            | "digestSignatureAlgorithm"
                    );
                    event_like |= matches!(
                        key,
                        "eventTime" | "eventName" | "eventID" | "eventVersion" | "@timestamp"
                    );
                    fields.take(key, &mut map)?;
                }
            }
        }
        if let Some(found) = records {
            return Ok(match found {
                Ok(()) => Ok(Shape::Records),
                Err(found) => Err(ObjectError::RecordsNotArray { found }),
            });
        }
        if digest && !event_like {
            return Ok(Ok(Shape::Digest));
        }
        if let Some(ev) = events.filter(|_| !event_like) {
            let t = ev.get_type();
            let Some(iter) = ev.into_array_iter() else {
                return Ok(Err(ObjectError::EventsNotArray {
                    found: type_name(t),
                }));
            };
            for item in iter {
                let v = match item {
                    Ok(v) => v,
                    Err(e) => return Ok(Err(ObjectError::NotJson(short(e)))),
                };
                match v
                    .get("CloudTrailEvent")
                    .and_then(|s| s.as_str().map(str::to_owned))
                {
                    Some(text) => self.out.push_text(text),
                    None => self.out.push(Err(EventError::WrongType {
                        field: "Events[].CloudTrailEvent",
                        found: "missing or not a string",
                        expected: "the event's JSON text",
                    })),
                }
            }
            return Ok(Ok(Shape::LookupEvents));
        }
        // Any other object is one event; decoding says whether it is one.
        self.out.push(fields.finish(self.seed.max_bytes));
        Ok(Ok(Shape::Event))
    }
}

/// An array of events (`Records`, or a whole file): each element decoded in place. `Err`
/// names the JSON type found when it is not an array.
struct RecordsSeed<'s, 'a> {
    out: &'s mut Split<'a>,
    seed: EventSeed,
}

impl<'de, 's> DeserializeSeed<'de> for RecordsSeed<'s, 'de> {
    type Value = Result<(), &'static str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, 's> Visitor<'de> for RecordsSeed<'s, 'de> {
    type Value = Result<(), &'static str>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of events")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        if let Some(n) = seq.size_hint() {
            self.out.records.reserve(n);
        }
        while let Some(r) = seq.next_element_seed(self.seed)? {
            self.out.push(r);
        }
        Ok(Ok(()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Err("an object"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err("a string"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err("a number"))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err("null"))
    }
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

    fn names(s: &Split<'_>) -> Vec<String> {
        s.records
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .map(|e| e.event_name.as_deref().unwrap_or("").to_owned())
            .collect()
    }

    fn bad(s: &Split<'_>) -> Vec<u64> {
        s.records
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(i, _)| *i)
            .collect()
    }

    const T: &str = r#""eventTime":"2024-01-01T00:00:00Z""#;

    fn split(buf: &[u8]) -> Result<Split<'_>, ObjectError> {
        super::split(buf, 1 << 20)
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
        let text = format!(r#"{{"Records":[{{"eventName":"A",{T}}},{{"eventName":"B",{T}}}]}}"#);
        let s = split(text.as_bytes()).expect("records");
        assert_eq!(s.shape, Some(Shape::Records));
        assert_eq!(names(&s), ["A", "B"]);

        let text = format!("\u{feff} [ {{\"eventName\":\"A\",{T}}} ]");
        let s = split(text.as_bytes()).expect("array");
        assert_eq!(s.shape, Some(Shape::Array));
        assert_eq!(names(&s), ["A"]);

        let text = format!(
            "{{\"eventName\":\"A\",{T}}}\n\nnot json\n{{\"Records\":[{{\"eventName\":\"B\",{T}}},{{\"eventName\":\"C\",{T}}}]}}\n{{\"Records\":[{{\"eventName\":\"D\",{T}}},{{\"cut\n"
        );
        let s = split(text.as_bytes()).expect("lines");
        assert_eq!(s.shape, Some(Shape::JsonLines));
        assert_eq!(names(&s), ["A", "B", "C"]);
        assert_eq!(
            bad(&s),
            [1, 4],
            "the two bad lines, each one record; D is not kept"
        );
        assert_eq!(s.total(), 5);

        let inner = format!(r#"{{\"eventName\":\"A\",{}}}"#, T.replace('"', "\\\""));
        let text = format!(
            r#"{{"Events":[{{"EventId":"x","CloudTrailEvent":"{inner}"}},{{"EventId":"y"}}],"NextToken":"t"}}"#
        );
        let s = split(text.as_bytes()).expect("lookup");
        assert_eq!(s.shape, Some(Shape::LookupEvents));
        assert_eq!(s.texts.len(), 1);
        assert!(s.texts[0].1.contains("eventName"), "{:?}", s.texts);
        assert_eq!(bad(&s), [1]);

        let s =
            split(b"{\n  \"eventName\": \"A\",\n  \"eventTime\": \"2024-01-01T00:00:00Z\"\n}\n")
                .expect("one pretty event");
        assert_eq!(s.shape, Some(Shape::Event));
        assert_eq!(names(&s), ["A"]);

        let s = split(br#"{"awsAccountId":"1","digestStartTime":"2024-01-01T00:00:00Z","digestPublicKeyFingerprint":"f","logFiles":[]}"#).expect("digest");
        assert_eq!(s.shape, Some(Shape::Digest));
        assert!(s.records.is_empty());

        // One record of the wrong type does not cost its neighbours.
        let text = format!(
            r#"{{"Records":[{{"eventName":"A",{T}}},{{"eventName":{{"x":1}},{T}}},7,{{"eventName":"D",{T}}}]}}"#
        );
        let s = split(text.as_bytes()).expect("records");
        assert_eq!(names(&s), ["A", "D"]);
        assert_eq!(bad(&s), [1, 2]);
    }

    #[test]
    fn invalid_utf8_inside_a_value_kept_as_json_is_that_records_problem() {
        // Found by the `decode` fuzz target: a member name that is not UTF-8 inside
        // `requestParameters` reached sonic-rs's capture of the value unchecked.
        let mut text = format!(r#"[{{"eventName":"A",{T}}},{{{T},"requestParameters":{{"\x84ryRun":false}}}},{{"eventName":"C",{T}}}]"#)
            .into_bytes();
        let at = text.windows(2).position(|w| w == b"\\x").expect("marker");
        text.splice(at..at + 4, [0x84]);
        let s = split(&text).expect("array");
        assert_eq!(names(&s), ["A", "C"]);
        assert_eq!(bad(&s), [1]);
        let e = s.records[1].1.as_ref().expect_err("refused");
        assert!(e.to_string().contains("invalid UTF-8"), "{e}");
        // The same in JSON lines and in a document read whole.
        let mut lines = b"{\"eventName\":\"A\",".to_vec();
        lines.extend_from_slice(T.as_bytes());
        lines.extend_from_slice(b"}\n{\"x\":\"\xff\"}\n");
        let s = split(&lines).expect("lines");
        assert_eq!(bad(&s), [1]);
        assert!(split(b"{\"x\":\"\xff\"}").is_err());
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
