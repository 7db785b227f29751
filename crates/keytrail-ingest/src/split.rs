//! Cutting an object's text into its records, without recursion and without holding it whole.
//!
//! The splitter walks the top level of an object byte by byte (a small state machine: the
//! document's members, the separators of its arrays) and scans each record with
//! [`ValueScan`], which finds where the record ends and how deeply it nests. Each record's text
//! is then decoded on its own, so a record that nests too deeply, or is too large to hold, is
//! refused alone and its neighbours are read.
//!
//! Shapes, as [`crate::decode`] lists them: `{"Records": [...]}` and `[...]` give one item per
//! element; lookup-events output (`{"Events": [...]}`) one per element of `Events`; JSON lines
//! one per line after the first document; any other top-level object (one event, a digest
//! file, or one whose `Records` is not an array) is handed over whole, to be read the way it
//! always was.
//!
//! The splitter is resumable: fed a buffer that ends mid-record, it asks for more, and it says
//! which bytes it still needs ([`Splitter::keep_from`]), so an object of any size is read
//! through a window of bounded size. Offsets are absolute (from the object's first byte);
//! [`Splitter::next`] is given the window and the absolute offset of its first byte.

use keytrail_model::EventError;
use keytrail_model::jsonscan::{MAX_DEPTH, Scanned, ValueScan, too_deep};

use crate::decode::Shape;
use crate::error::ObjectError;

/// One piece of an object.
#[derive(Debug, PartialEq)]
pub enum Item<'b> {
    /// One record's text: an element of `Records` or of a top-level array.
    Record(&'b [u8]),
    /// One element of lookup-events' `Events`.
    Lookup(&'b [u8]),
    /// A whole top-level object that holds no array of records: one event, a digest file, or
    /// a document the document reader refuses with its reason.
    Document(&'b [u8]),
    /// One line of JSON lines (a document of its own), trimmed at the start.
    Line(&'b [u8]),
    /// A record (or line) refused before it was parsed.
    Refused(EventError),
}

/// What [`Splitter::next`] found.
#[derive(Debug, PartialEq)]
pub enum Step<'b> {
    Item(Item<'b>),
    /// The window ends inside the text; give a longer window (starting at or before
    /// [`Splitter::keep_from`]).
    More,
    /// The object is read to its end.
    End,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Start,
    /// A top-level array: after `[`, after `,`, after an element.
    ArrFirst,
    ArrValue,
    ArrNext,
    /// A top-level object: after `{`, after `,`, after a key, after `:`, after a value.
    DocFirst,
    DocKey,
    DocColon,
    DocValue,
    DocNext,
    /// The streamed array member (`Records` or `Events`) of a document.
    InFirst,
    InValue,
    InNext,
    /// After the first document: JSON lines, or nothing but whitespace.
    AfterDoc,
    /// JSON lines: the start of a line.
    Lines,
    End,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Member {
    Records,
    Events,
    Other,
}

/// A value being scanned: where it started, its scan, and whether its bytes are still held.
#[derive(Debug)]
struct Value {
    start: u64,
    scan: ValueScan,
    /// Grown past the hold limit: scanned to its end but not kept.
    skipping: bool,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Splitter {
    state: State,
    /// Absolute offset of the next byte to look at.
    pos: u64,
    value: Option<Value>,
    /// Start of the current top-level document, and whether it is held whole (no array of
    /// records found in it yet).
    doc_start: u64,
    doc_held: bool,
    member: Member,
    /// The streamed array is `Events` (lookup-events).
    lookup: bool,
    /// Member names seen so far in the document that make it a single event or a digest
    /// (then `Events` is a member of it, not lookup-events output).
    event_like: bool,
    /// The first document spans lines (then it cannot be the first of JSON lines).
    doc_newline: bool,
    shape: Option<Shape>,
    /// The largest text held whole (a record, a line, a document without an array of
    /// records): `--max-object-size`.
    hold: usize,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn not_json(msg: impl Into<String>) -> ObjectError {
    ObjectError::NotJson(msg.into())
}

impl Splitter {
    /// A splitter for one object; texts larger than `hold` bytes are not held.
    pub fn new(hold: usize) -> Splitter {
        Splitter {
            state: State::Start,
            pos: 0,
            value: None,
            doc_start: 0,
            doc_held: false,
            member: Member::Other,
            lookup: false,
            event_like: false,
            doc_newline: false,
            shape: None,
            hold: hold.max(1),
        }
    }

    /// The object's shape, once known. JSON lines are known as such after the first line.
    pub fn shape(&self) -> Option<Shape> {
        self.shape
    }

    /// The absolute offset before which no byte is needed any more.
    pub fn keep_from(&self) -> u64 {
        if self.doc_held {
            return self.doc_start;
        }
        match &self.value {
            Some(v) if !v.skipping => v.start,
            _ => self.pos,
        }
    }

    /// The next piece of the object. `buf` holds the object's bytes from absolute offset
    /// `base` (at most [`Splitter::keep_from`]) on; `eof` says it holds the object's end.
    pub fn next<'b>(
        &mut self,
        buf: &'b [u8],
        base: u64,
        eof: bool,
    ) -> Result<Step<'b>, ObjectError> {
        let step = self.step(buf, base, eof)?;
        if step == Step::More
            && self.doc_held
            && (base + buf.len() as u64).saturating_sub(self.doc_start) > self.hold as u64
        {
            // A document with no array of records is read whole; this one is too large.
            return Err(ObjectError::TooLarge { limit: self.hold });
        }
        Ok(step)
    }

    fn step<'b>(&mut self, buf: &'b [u8], base: u64, eof: bool) -> Result<Step<'b>, ObjectError> {
        loop {
            let at = usize::try_from(self.pos.saturating_sub(base)).unwrap_or(usize::MAX);
            if at > buf.len() {
                return Err(not_json(
                    "internal: the window does not hold the splitter's position",
                ));
            }
            match self.state {
                State::End => return Ok(Step::End),
                State::Start => {
                    let rest = &buf[at..];
                    // A byte-order mark, then whitespace.
                    let skip_bom = if self.pos == 0 && rest.starts_with(b"\xEF\xBB\xBF") {
                        3
                    } else if self.pos == 0 && b"\xEF\xBB\xBF".starts_with(rest) && !eof {
                        return Ok(Step::More);
                    } else {
                        0
                    };
                    let Some(k) = rest[skip_bom..]
                        .iter()
                        .position(|b| !b.is_ascii_whitespace())
                    else {
                        if eof {
                            return Err(not_json("no content"));
                        }
                        self.pos += rest.len() as u64;
                        return Ok(Step::More);
                    };
                    self.pos += (skip_bom + k) as u64;
                    match rest[skip_bom + k] {
                        b'[' => {
                            self.shape = Some(Shape::Array);
                            self.pos += 1;
                            self.state = State::ArrFirst;
                        }
                        b'{' => {
                            self.doc_start = self.pos;
                            self.doc_held = true;
                            self.pos += 1;
                            self.state = State::DocFirst;
                        }
                        _ => {
                            let text = &rest[skip_bom + k..];
                            let msg = match sonic_rs::from_slice::<serde::de::IgnoredAny>(text) {
                                Ok(_) => "not a JSON object or array".to_owned(),
                                Err(e) => crate::decode::short(e),
                            };
                            return Err(not_json(msg));
                        }
                    }
                }
                State::ArrFirst | State::ArrValue | State::InFirst | State::InValue => {
                    if self.value.is_none() {
                        let Some(b) = self.skip_ws(buf, base, eof)? else {
                            return Ok(Step::More);
                        };
                        if b == b']' && matches!(self.state, State::ArrFirst | State::InFirst) {
                            self.pos += 1;
                            self.state = if self.state == State::ArrFirst {
                                State::AfterDoc
                            } else {
                                State::DocNext
                            };
                            continue;
                        }
                        if b == b']' {
                            return Err(not_json(format!("a `,` before `]` at byte {}", self.pos)));
                        }
                    }
                    let Some((start, end, scan)) = self.scan_value(buf, base, eof)? else {
                        return Ok(Step::More);
                    };
                    let in_doc = matches!(self.state, State::InFirst | State::InValue);
                    self.state = if in_doc {
                        State::InNext
                    } else {
                        State::ArrNext
                    };
                    return Ok(Step::Item(
                        self.element(buf, base, start, end, &scan, in_doc),
                    ));
                }
                State::ArrNext | State::InNext => {
                    let Some(b) = self.skip_ws(buf, base, eof)? else {
                        return Ok(Step::More);
                    };
                    let in_doc = self.state == State::InNext;
                    self.pos += 1;
                    self.state = match (b, in_doc) {
                        (b',', false) => State::ArrValue,
                        (b',', true) => State::InValue,
                        (b']', false) => State::AfterDoc,
                        (b']', true) => State::DocNext,
                        _ => {
                            return Err(not_json(format!(
                                "expected `,` or `]` at byte {}",
                                self.pos - 1
                            )));
                        }
                    };
                }
                State::DocFirst | State::DocKey => {
                    if self.value.is_none() {
                        let Some(b) = self.skip_ws(buf, base, eof)? else {
                            return Ok(Step::More);
                        };
                        if b == b'}' && self.state == State::DocFirst {
                            self.pos += 1;
                            if let Some(step) = self.end_doc(buf, base)? {
                                return Ok(step);
                            }
                            continue;
                        }
                        if b != b'"' {
                            return Err(not_json(format!(
                                "expected a member name at byte {}",
                                self.pos
                            )));
                        }
                    }
                    let Some((start, end, _)) = self.scan_value(buf, base, eof)? else {
                        return Ok(Step::More);
                    };
                    self.member = if end - start > self.hold as u64 {
                        // A member name too long to hold (outside a document held whole,
                        // which fails when it passes the limit) names nothing keytrail reads.
                        Member::Other
                    } else {
                        self.member_of(&buf[(start - base) as usize..(end - base) as usize])?
                    };
                    self.state = State::DocColon;
                }
                State::DocColon => {
                    let Some(b) = self.skip_ws(buf, base, eof)? else {
                        return Ok(Step::More);
                    };
                    if b != b':' {
                        return Err(not_json(format!("expected `:` at byte {}", self.pos)));
                    }
                    self.pos += 1;
                    self.state = State::DocValue;
                }
                State::DocValue => {
                    if self.value.is_none() {
                        let Some(b) = self.skip_ws(buf, base, eof)? else {
                            return Ok(Step::More);
                        };
                        let stream = match self.member {
                            Member::Records => true,
                            // lookup-events output, unless the document already looks like
                            // an event or a digest (then `Events` is one of its members).
                            Member::Events => !self.event_like && (self.doc_held || self.lookup),
                            Member::Other => false,
                        };
                        if b == b'[' && stream {
                            self.lookup = self.member == Member::Events;
                            if self.shape.is_none() {
                                self.shape = Some(if self.lookup {
                                    Shape::LookupEvents
                                } else {
                                    Shape::Records
                                });
                            }
                            self.doc_held = false;
                            self.pos += 1;
                            self.state = State::InFirst;
                            continue;
                        }
                    }
                    let Some((_, _, scan)) = self.scan_value(buf, base, eof)? else {
                        return Ok(Step::More);
                    };
                    // Inside a document held whole, every member is parsed later: none may
                    // nest too deeply (the document's own level counts).
                    if self.doc_held && scan.max_depth() + 1 > MAX_DEPTH {
                        return Err(ObjectError::TooDeep { limit: MAX_DEPTH });
                    }
                    self.doc_newline |= scan.spans_lines();
                    self.state = State::DocNext;
                }
                State::DocNext => {
                    let Some(b) = self.skip_ws(buf, base, eof)? else {
                        return Ok(Step::More);
                    };
                    self.pos += 1;
                    match b {
                        b',' => self.state = State::DocKey,
                        b'}' => {
                            if let Some(step) = self.end_doc(buf, base)? {
                                return Ok(step);
                            }
                        }
                        _ => {
                            return Err(not_json(format!(
                                "expected `,` or `}}` at byte {}",
                                self.pos - 1
                            )));
                        }
                    }
                }
                State::AfterDoc => {
                    // The rest of the first line must be blank; then either nothing but
                    // whitespace follows, or (when the first document is on one line) JSON
                    // lines.
                    let rest = &buf[at..];
                    match rest.iter().position(|b| !matches!(b, b' ' | b'\t' | b'\r')) {
                        None if eof => {
                            self.state = State::End;
                        }
                        None => {
                            self.pos += rest.len() as u64;
                            return Ok(Step::More);
                        }
                        Some(k) if rest[k] == b'\n' => {
                            self.pos += k as u64;
                            // Anything after the line break?
                            let after = &rest[k..];
                            match after.iter().position(|b| !b.is_ascii_whitespace()) {
                                None if eof => self.state = State::End,
                                None => {
                                    // Keep the line break in view; decide when more comes.
                                    return Ok(Step::More);
                                }
                                Some(j) if self.doc_newline || self.shape == Some(Shape::Array) => {
                                    return Err(not_json(format!(
                                        "trailing characters after the document, at byte {}",
                                        self.pos + j as u64
                                    )));
                                }
                                Some(_) => {
                                    self.shape = Some(Shape::JsonLines);
                                    self.state = State::Lines;
                                }
                            }
                        }
                        Some(k) => {
                            return Err(not_json(format!(
                                "trailing characters after the document, at byte {}",
                                self.pos + k as u64
                            )));
                        }
                    }
                }
                State::Lines => {
                    if let Some(v) = &self.value {
                        // A line too long to hold, being skipped to its end.
                        let start = v.start;
                        match memchr::memchr(b'\n', &buf[at..]) {
                            Some(k) => {
                                let end = self.pos + k as u64;
                                self.pos = end;
                                self.value = None;
                                return Ok(Step::Item(Item::Refused(EventError::TooLarge {
                                    size: usize::try_from(end - start).unwrap_or(usize::MAX),
                                    limit: self.hold,
                                })));
                            }
                            None if eof => {
                                let end = base + buf.len() as u64;
                                self.pos = end;
                                self.value = None;
                                return Ok(Step::Item(Item::Refused(EventError::TooLarge {
                                    size: usize::try_from(end - start).unwrap_or(usize::MAX),
                                    limit: self.hold,
                                })));
                            }
                            None => {
                                self.pos = base + buf.len() as u64;
                                return Ok(Step::More);
                            }
                        }
                    }
                    let rest = &buf[at..];
                    let Some(k) = rest.iter().position(|b| !b.is_ascii_whitespace()) else {
                        if eof {
                            self.state = State::End;
                            continue;
                        }
                        self.pos += rest.len() as u64;
                        return Ok(Step::More);
                    };
                    let line = &rest[k..];
                    let (line, bom) = match line.strip_prefix(b"\xEF\xBB\xBF") {
                        Some(l) => (l, 3),
                        None => (line, 0),
                    };
                    let end = memchr::memchr(b'\n', line);
                    let Some(end) = end.or(eof.then_some(line.len())) else {
                        self.pos += k as u64;
                        if line.len() > self.hold {
                            // Too long to hold: skip to its end.
                            self.value = Some(Value {
                                start: self.pos,
                                scan: ValueScan::new(),
                                skipping: true,
                            });
                            self.pos = base + buf.len() as u64;
                        }
                        return Ok(Step::More);
                    };
                    self.pos += (k + bom + end) as u64;
                    let line = &line[..end];
                    if line.len() > self.hold {
                        return Ok(Step::Item(Item::Refused(EventError::TooLarge {
                            size: line.len(),
                            limit: self.hold,
                        })));
                    }
                    if too_deep(line, MAX_DEPTH).is_some() {
                        return Ok(Step::Item(Item::Refused(EventError::TooDeep {
                            limit: MAX_DEPTH,
                        })));
                    }
                    return Ok(Step::Item(Item::Line(line)));
                }
            }
        }
    }

    /// Skip whitespace from the current position; the next byte, or `None` when the window
    /// ends first (an error at the object's end).
    fn skip_ws(&mut self, buf: &[u8], base: u64, eof: bool) -> Result<Option<u8>, ObjectError> {
        let at = (self.pos - base) as usize;
        let rest = &buf[at..];
        match rest.iter().position(|b| !is_ws(*b)) {
            Some(k) => {
                // Only called inside the first document: does it span lines?
                if rest[..k].contains(&b'\n') {
                    self.doc_newline = true;
                }
                self.pos += k as u64;
                Ok(Some(rest[k]))
            }
            None if eof => Err(not_json(format!(
                "the text ends at byte {} before the document does (cut short?)",
                base + buf.len() as u64
            ))),
            None => {
                if rest.contains(&b'\n') {
                    self.doc_newline = true;
                }
                self.pos += rest.len() as u64;
                Ok(None)
            }
        }
    }

    /// Scan (or go on scanning) the value at the current position. `Some((start, end,
    /// scan))` once it ends; `None` when the window ends first.
    fn scan_value(
        &mut self,
        buf: &[u8],
        base: u64,
        eof: bool,
    ) -> Result<Option<(u64, u64, ValueScan)>, ObjectError> {
        let at = (self.pos - base) as usize;
        let mut v = self.value.take().unwrap_or(Value {
            start: self.pos,
            scan: ValueScan::new(),
            skipping: false,
        });
        match v.scan.resume(buf, at, eof) {
            Scanned::End(end) => {
                let end = base + end as u64;
                self.pos = end;
                self.doc_newline |= v.scan.spans_lines();
                Ok(Some((v.start, end, v.scan)))
            }
            Scanned::More if eof => Err(not_json(format!(
                "the text ends at byte {} inside a value that starts at byte {} (cut short?)",
                base + buf.len() as u64,
                v.start
            ))),
            Scanned::More => {
                let end = base + buf.len() as u64;
                if end - v.start > self.hold as u64 {
                    // Too large to hold: scanned to its end, but its bytes are let go.
                    v.skipping = true;
                }
                self.pos = end;
                self.value = Some(v);
                Ok(None)
            }
            Scanned::Mismatch(k) => Err(not_json(format!(
                "a bracket that closes nothing it opened, at byte {}",
                base + k as u64
            ))),
        }
    }

    /// An element of an array of records, scanned from `start` to `end`.
    fn element<'b>(
        &self,
        buf: &'b [u8],
        base: u64,
        start: u64,
        end: u64,
        scan: &ValueScan,
        in_doc: bool,
    ) -> Item<'b> {
        let size = end - start;
        if size > self.hold as u64 {
            return Item::Refused(EventError::TooLarge {
                size: usize::try_from(size).unwrap_or(usize::MAX),
                limit: self.hold,
            });
        }
        if scan.max_depth() > MAX_DEPTH {
            return Item::Refused(EventError::TooDeep { limit: MAX_DEPTH });
        }
        let text = &buf[(start - base) as usize..(end - base) as usize];
        if in_doc && self.lookup {
            Item::Lookup(text)
        } else {
            Item::Record(text)
        }
    }

    /// The member a key names, noting names that make the document an event or a digest.
    fn member_of(&mut self, key: &[u8]) -> Result<Member, ObjectError> {
        // The key as a string: raw when it holds no escapes, decoded otherwise.
        let inner = &key[1..key.len().saturating_sub(1).max(1)];
        let decoded;
        let name: &[u8] = if inner.contains(&b'\\') {
            decoded = sonic_rs::from_slice::<String>(key)
                .map_err(|e| not_json(crate::decode::short(e)))?;
            decoded.as_bytes()
        } else {
            inner
        };
        Ok(match name {
            b"Records" => Member::Records,
            b"Events" => Member::Events,
            b"eventTime"
            | b"eventName"
            | b"eventID"
            | b"eventVersion"
            | b"@timestamp"
            | b"digestStartTime"
            | b"digestEndTime"
            | b"digestPublicKeyFingerprint"
            | b"digestSignatureAlgorithm" => {
                self.event_like = true;
                Member::Other
            }
            _ => Member::Other,
        })
    }

    /// The document closed (its `}` consumed): hand it over whole if it held no array of
    /// records, then look at what follows.
    fn end_doc<'b>(&mut self, buf: &'b [u8], base: u64) -> Result<Option<Step<'b>>, ObjectError> {
        self.state = State::AfterDoc;
        if self.doc_held {
            self.doc_held = false;
            if self.pos - self.doc_start > self.hold as u64 {
                // Whole in this window, but more than may be held.
                return Err(ObjectError::TooLarge { limit: self.hold });
            }
            let doc = &buf[(self.doc_start - base) as usize..(self.pos - base) as usize];
            return Ok(Some(Step::Item(Item::Document(doc))));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(text: &[u8]) -> Result<(Vec<String>, Option<Shape>), ObjectError> {
        let mut s = Splitter::new(1 << 20);
        let mut out = Vec::new();
        loop {
            match s.next(text, 0, true)? {
                Step::Item(i) => out.push(show(&i)),
                Step::More => panic!("More at eof"),
                Step::End => return Ok((out, s.shape())),
            }
        }
    }

    fn show(i: &Item<'_>) -> String {
        match i {
            Item::Record(t) => format!("R {}", String::from_utf8_lossy(t)),
            Item::Lookup(t) => format!("L {}", String::from_utf8_lossy(t)),
            Item::Document(t) => format!("D {}", String::from_utf8_lossy(t)),
            Item::Line(t) => format!("N {}", String::from_utf8_lossy(t)),
            Item::Refused(e) => format!("X {}", e.reason()),
        }
    }

    /// The same text fed in windows of `w` bytes (each window holding what the splitter keeps
    /// plus `w` new bytes), as the streaming reader does.
    fn windowed(
        text: &[u8],
        w: usize,
        hold: usize,
    ) -> Result<(Vec<String>, Option<Shape>), ObjectError> {
        let mut s = Splitter::new(hold);
        let mut out = Vec::new();
        let mut base = 0u64;
        let mut end = 0usize;
        loop {
            let from = usize::try_from(s.keep_from())
                .expect("offset")
                .max(base as usize);
            base = from as u64;
            end = (end.max(from) + w).min(text.len());
            let eof = end == text.len();
            let buf = &text[from..end];
            loop {
                match s.next(buf, base, eof)? {
                    Step::Item(i) => out.push(show(&i)),
                    Step::More => break,
                    Step::End => return Ok((out, s.shape())),
                }
            }
            assert!(!eof, "More at eof");
        }
    }

    const CASES: &[&str] = &[
        r#"{"Records":[{"a":1},{"b":"x]"} , 7,[1]]}"#,
        "\u{feff} [ {\"a\":1} ]\n",
        "{\"a\":1}\n\n{broken\n  {\"Records\":[{\"b\":2}]}\n{\"c\":3}",
        r#"{"Events":[{"CloudTrailEvent":"{\"x\":1}"},{"EventId":"y"}],"NextToken":"t"}"#,
        "{\n  \"eventName\": \"A\",\n  \"eventTime\": \"2024-01-01T00:00:00Z\"\n}\n",
        r#"{"eventTime":"t","Events":[1,2]}"#,
        r#"{"x":{"y":[1,2]},"Records":[{"a":1}],"z":[[[]]],"Records":[{"b":2}]}"#,
        r#"{"Records":{}}"#,
        r#"[]"#,
        r#"{}"#,
    ];

    #[test]
    fn shapes_and_items() {
        let (i, s) = items(CASES[0].as_bytes()).expect("records");
        assert_eq!(s, Some(Shape::Records));
        assert_eq!(i, [r#"R {"a":1}"#, r#"R {"b":"x]"}"#, "R 7", "R [1]"]);
        let (i, s) = items(CASES[1].as_bytes()).expect("array");
        assert_eq!(s, Some(Shape::Array));
        assert_eq!(i, [r#"R {"a":1}"#]);
        let (i, s) = items(CASES[2].as_bytes()).expect("lines");
        assert_eq!(s, Some(Shape::JsonLines));
        assert_eq!(
            i,
            [
                r#"D {"a":1}"#,
                "N {broken",
                r#"N {"Records":[{"b":2}]}"#,
                r#"N {"c":3}"#
            ]
        );
        let (i, s) = items(CASES[3].as_bytes()).expect("lookup");
        assert_eq!(s, Some(Shape::LookupEvents));
        assert_eq!(
            i,
            [
                r#"L {"CloudTrailEvent":"{\"x\":1}"}"#,
                r#"L {"EventId":"y"}"#
            ]
        );
        let (i, s) = items(CASES[4].as_bytes()).expect("one event");
        assert_eq!(s, None);
        assert_eq!(i.len(), 1);
        assert!(i[0].starts_with("D {\n"));
        let (i, _) = items(CASES[5].as_bytes()).expect("event with Events");
        assert_eq!(i, [r#"D {"eventTime":"t","Events":[1,2]}"#]);
        let (i, s) = items(CASES[6].as_bytes()).expect("two Records");
        assert_eq!(s, Some(Shape::Records));
        assert_eq!(i, [r#"R {"a":1}"#, r#"R {"b":2}"#]);
        let (i, _) = items(CASES[7].as_bytes()).expect("Records not an array");
        assert_eq!(i, [r#"D {"Records":{}}"#]);
    }

    #[test]
    fn broken_structure_fails_the_object() {
        for (text, want) in [
            (r#"{"Records":[{"a":1},"#, "cut short"),
            (r#"{"Records":[{"a":1}"#, "cut short"),
            (r#"{"Records":[]} trailing"#, "trailing"),
            (r#"{"Records":[{"a":1} {"b":2}]}"#, "expected `,` or `]`"),
            (r#"{"Records":[{"a":1},]}"#, "a `,` before `]`"),
            (r#"{"Records":[{"a":1]]}"#, "closes nothing"),
            ("[1]\n[2]", "trailing"),
            ("{\n\"a\":1}\n{\"b\":2}", "trailing"),
            ("{\"a\" 1}", "expected `:`"),
            ("{1:2}", "member name"),
            ("", "no content"),
            ("   ", "no content"),
            ("hello", "not JSON"),
        ] {
            let err = items(text.as_bytes()).expect_err(text).to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_per_record_or_per_object() {
        let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
        let text = format!(r#"{{"Records":[{{"a":1}},{deep},{{"b":2}}]}}"#);
        let (i, _) = items(text.as_bytes()).expect("records");
        assert_eq!(i, [r#"R {"a":1}"#, "X too-deep", r#"R {"b":2}"#]);
        // Exactly the limit is read; one more level is refused.
        let at = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let text = format!("[{},{}]", at(128), at(129));
        let (i, _) = items(text.as_bytes()).expect("array");
        assert!(i[0].starts_with("R [[["), "{:?}", &i[0][..8]);
        assert_eq!(i[1], "X too-deep");
        // A document held whole that nests too deeply fails the object.
        let text = format!(r#"{{"eventTime":"t","x":{}}}"#, at(128));
        assert_eq!(
            items(text.as_bytes()).expect_err("deep doc"),
            ObjectError::TooDeep { limit: MAX_DEPTH }
        );
        // A line that nests too deeply is one refused record.
        let text = format!("{{\"a\":1}}\n{{\"x\":{}}}\n{{\"b\":2}}\n", at(150));
        let (i, _) = items(text.as_bytes()).expect("lines");
        assert_eq!(i, [r#"D {"a":1}"#, "X too-deep", r#"N {"b":2}"#]);
    }

    #[test]
    fn any_window_gives_the_same_items() {
        for text in CASES {
            let want = items(text.as_bytes());
            for w in 1..text.len() + 2 {
                let got = windowed(text.as_bytes(), w, 1 << 20);
                assert_eq!(got, want, "{text:?} in windows of {w}");
            }
        }
    }

    #[test]
    fn texts_too_large_to_hold_are_refused_alone() {
        let text =
            r#"{"Records":[{"a":1},{"b":"0123456789012345678901234567890123456789"},{"c":3}]}"#;
        for w in [1, 3, 8, 100] {
            let (i, _) = windowed(text.as_bytes(), w, 20).expect("records");
            assert_eq!(
                i,
                [r#"R {"a":1}"#, "X too-large", r#"R {"c":3}"#],
                "window {w}"
            );
        }
        let text = "{\"a\":1}\n{\"b\":\"0123456789012345678901234567890123456789\"}\n{\"c\":3}\n";
        for w in [1, 3, 8, 100] {
            let (i, _) = windowed(text.as_bytes(), w, 20).expect("lines");
            assert_eq!(
                i,
                [r#"D {"a":1}"#, "X too-large", r#"N {"c":3}"#],
                "window {w}"
            );
        }
        // A document held whole (no array of records) larger than the limit fails the object.
        let text = r#"{"eventTime":"t","x":"0123456789012345678901234567890123456789"}"#;
        assert_eq!(
            windowed(text.as_bytes(), 7, 20).expect_err("too large"),
            ObjectError::TooLarge { limit: 20 }
        );
    }
}
