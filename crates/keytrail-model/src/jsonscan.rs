//! Where a JSON value ends and how deeply it nests, found without recursion.
//!
//! The JSON parsers keytrail uses recurse once per level of nesting, and one of them (sonic-rs,
//! when it skips or captures a value whole) has no limit: a record nesting 100,000 arrays
//! overflows the thread's stack and aborts the process. Every text keytrail hands to a parser is
//! therefore scanned here first, byte by byte with an explicit depth counter (strings and their
//! escapes understood, nothing else), and refused when it nests deeper than [`MAX_DEPTH`]. The
//! scan also finds where a value ends, so that the records of an object can be cut out and
//! decoded one by one (and a too-deep one refused on its own).
//!
//! The scan is resumable: a value that runs past the end of a buffer is continued when more
//! bytes arrive, so it works over objects read in pieces.

use memchr::memchr2;

/// The deepest nesting of objects and arrays keytrail reads. A record is one level (its own
/// braces), a member's object or array two, and so on; CloudTrail's deepest real records nest
/// about a dozen levels. serde_json (which rewrites members that hold secrets) stops at 128, so
/// this limit keeps every value it is given within its reach.
pub const MAX_DEPTH: u32 = 128;

/// How a scan of one value ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scanned {
    /// The value ends just before this offset of the buffer.
    End(usize),
    /// The buffer ended inside the value; call again with more bytes.
    More,
    /// A closing bracket that does not match the one it closes, or one that closes nothing,
    /// at this offset: the text is not JSON and where the value ends cannot be known.
    Mismatch(usize),
}

/// What kind of value is being scanned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Nothing seen yet (whitespace is skipped).
    Unknown,
    Container,
    String,
    /// A number, a literal, or garbage: it ends at the next delimiter.
    Scalar,
}

/// The state of a scan of one JSON value; see the module documentation.
#[derive(Clone, Debug)]
pub struct ValueScan {
    kind: Kind,
    /// Current nesting depth.
    depth: u32,
    /// Deepest nesting seen.
    max_depth: u32,
    /// One bit per open container up to depth 128: set for an object, clear for an array.
    /// Deeper levels are only counted.
    stack: u128,
    in_string: bool,
    /// The previous byte was a backslash inside a string.
    escaped: bool,
    /// Whether the value held a line break outside its strings (JSON strings cannot hold
    /// one), i.e. whether it spans lines.
    newline: bool,
}

impl Default for ValueScan {
    fn default() -> Self {
        ValueScan::new()
    }
}

impl ValueScan {
    pub const fn new() -> ValueScan {
        ValueScan {
            kind: Kind::Unknown,
            depth: 0,
            max_depth: 0,
            stack: 0,
            in_string: false,
            escaped: false,
            newline: false,
        }
    }

    /// The deepest nesting of the value seen so far (1 for `{}` or `[]`, 0 for a scalar).
    pub fn max_depth(&self) -> u32 {
        self.max_depth
    }

    /// Whether the value spans lines.
    pub fn spans_lines(&self) -> bool {
        self.newline
    }

    /// Whether the value is an object or an array (known once its first byte was seen).
    pub fn is_container(&self) -> bool {
        self.kind == Kind::Container
    }

    /// Continue the scan over `buf[from..]`, where `from` is 0 for a new buffer or the offset
    /// the value starts at; after [`Scanned::More`], call again with the same buffer extended
    /// and `from` at its old length (or the whole buffer again if it was moved, with `from`
    /// adjusted). `eof` says no more bytes will come: a scalar then ends at the end.
    pub fn resume(&mut self, buf: &[u8], from: usize, eof: bool) -> Scanned {
        let mut i = from;
        let n = buf.len();
        loop {
            match self.kind {
                Kind::Unknown => {
                    while i < n && buf[i].is_ascii_whitespace() {
                        i += 1;
                    }
                    let Some(&b) = buf.get(i) else {
                        return if eof { Scanned::End(n) } else { Scanned::More };
                    };
                    self.kind = match b {
                        b'{' | b'[' => Kind::Container,
                        b'"' => {
                            self.in_string = true;
                            i += 1;
                            Kind::String
                        }
                        _ => Kind::Scalar,
                    };
                }
                Kind::Scalar => {
                    while i < n {
                        match buf[i] {
                            b',' | b']' | b'}' | b' ' | b'\t' | b'\r' | b'\n' | b'"' | b'{'
                            | b'[' | b':' => return Scanned::End(i),
                            _ => i += 1,
                        }
                    }
                    return if eof { Scanned::End(n) } else { Scanned::More };
                }
                Kind::String => {
                    return match self.string(buf, i) {
                        Some(end) => Scanned::End(end),
                        None => Scanned::More,
                    };
                }
                Kind::Container => return self.container(buf, i),
            }
        }
    }

    /// Inside a string at `i`: the offset just past its closing quote, or `None` at the end
    /// of the buffer.
    #[inline]
    fn string(&mut self, buf: &[u8], mut i: usize) -> Option<usize> {
        let n = buf.len();
        if self.escaped {
            if i >= n {
                return None;
            }
            self.escaped = false;
            i += 1;
        }
        loop {
            i = quote_or_backslash(buf, i)?;
            if buf[i] == b'"' {
                self.in_string = false;
                return Some(i + 1);
            }
            // A backslash: the next byte is escaped, whatever it is.
            if i + 1 >= n {
                self.escaped = true;
                return None;
            }
            i += 2;
        }
    }

    fn container(&mut self, buf: &[u8], mut i: usize) -> Scanned {
        let n = buf.len();
        if self.in_string {
            match self.string(buf, i) {
                Some(end) => i = end,
                None => return Scanned::More,
            }
        }
        // The hot loop keeps its state in locals and writes it back when it stops.
        let (mut depth, mut max_depth, mut stack, mut newline) =
            (self.depth, self.max_depth, self.stack, self.newline);
        let result = loop {
            let Some(&b) = buf.get(i) else {
                break Scanned::More;
            };
            i += 1;
            match b {
                b'"' => loop {
                    // Inside a string: to its closing quote, escapes skipped.
                    match quote_or_backslash(buf, i) {
                        Some(k) if buf[k] == b'"' => {
                            i = k + 1;
                            break;
                        }
                        Some(k) if k + 1 < n => i = k + 2,
                        Some(_) => {
                            self.in_string = true;
                            self.escaped = true;
                            i = n;
                            break;
                        }
                        None => {
                            self.in_string = true;
                            i = n;
                            break;
                        }
                    }
                },
                b'{' | b'[' => {
                    if depth < 128 {
                        let bit = 1u128 << depth;
                        if b == b'{' {
                            stack |= bit;
                        } else {
                            stack &= !bit;
                        }
                    }
                    depth += 1;
                    max_depth = max_depth.max(depth);
                }
                b'}' | b']' => {
                    if depth == 0 {
                        break Scanned::Mismatch(i - 1);
                    }
                    depth -= 1;
                    if depth < 128 && (stack & (1u128 << depth) != 0) != (b == b'}') {
                        break Scanned::Mismatch(i - 1);
                    }
                    if depth == 0 {
                        break Scanned::End(i);
                    }
                }
                b'\n' => newline = true,
                _ => {}
            }
            if self.in_string {
                break Scanned::More;
            }
        };
        (self.depth, self.max_depth, self.stack, self.newline) = (depth, max_depth, stack, newline);
        result
    }
}

/// The offset of the first `"` or `\\` at or after `i`. Most JSON strings are short: eight
/// bytes are looked at a time (SWAR), and a string longer than 64 bytes is left to `memchr`'s
/// vector search.
#[inline]
fn quote_or_backslash(buf: &[u8], mut i: usize) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // High bit set in each byte of `w` equal to `b` (exact for the lowest one).
    let eq = |w: u64, b: u8| {
        let x = w ^ (LO * u64::from(b));
        x.wrapping_sub(LO) & !x & HI
    };
    let start = i;
    while let Some(chunk) = buf.get(i..i + 8) {
        let w = u64::from_le_bytes(<[u8; 8]>::try_from(chunk).ok()?);
        let m = eq(w, b'"') | eq(w, b'\\');
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
        if i - start >= 64 {
            return memchr2(b'"', b'\\', buf.get(i..)?).map(|k| i + k);
        }
    }
    buf.get(i..)?
        .iter()
        .position(|b| matches!(b, b'"' | b'\\'))
        .map(|k| i + k)
}

/// Whether `text` nests objects and arrays deeper than `limit` anywhere (strings understood;
/// nothing else checked, the parser that follows validates). Returns the offset where the
/// nesting first passes the limit.
pub fn too_deep(text: &[u8], limit: u32) -> Option<usize> {
    let mut depth: u32 = 0;
    let mut i = 0;
    let n = text.len();
    while i < n {
        match text[i] {
            b'"' => {
                // Skip the string, escapes included.
                i += 1;
                loop {
                    match memchr2(b'"', b'\\', text.get(i..).unwrap_or_default()) {
                        None => return None,
                        Some(k) => {
                            i += k;
                            if text[i] == b'"' {
                                break;
                            }
                            i += 2;
                        }
                    }
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return Some(i);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(text: &str) -> (Scanned, u32) {
        let mut s = ValueScan::new();
        let r = s.resume(text.as_bytes(), 0, true);
        (r, s.max_depth())
    }

    #[test]
    fn values_end_where_they_end() {
        assert_eq!(whole(r#"{"a":[1,{"b":"}]\"x"}]} ,"#), (Scanned::End(23), 3));
        assert_eq!(whole(r#"  "str\"ing" , 1"#), (Scanned::End(12), 0));
        assert_eq!(whole("17, 2"), (Scanned::End(2), 0));
        assert_eq!(whole("true"), (Scanned::End(4), 0));
        assert_eq!(whole("[]"), (Scanned::End(2), 1));
        assert_eq!(whole("[}"), (Scanned::Mismatch(1), 1));
        assert_eq!(whole("{]"), (Scanned::Mismatch(1), 1));
        assert_eq!(whole(r#"{"a":1"#).0, Scanned::More);
        let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
        assert_eq!(whole(&deep), (Scanned::End(400_000), 200_000));
    }

    #[test]
    fn a_scan_resumes_anywhere() {
        let text = r#"{"k\\":"a\"b","l":[{"m":null},[true,"x\u0041"]],"n":"\\"} tail"#;
        let want = whole(text);
        assert_eq!(want.0, Scanned::End(text.len() - 5));
        // Cut the text at every offset, and at every pair of offsets.
        for cut in 0..text.len() {
            let mut s = ValueScan::new();
            let first = s.resume(&text.as_bytes()[..cut], 0, false);
            let r = if first == Scanned::More {
                s.resume(text.as_bytes(), cut, true)
            } else {
                first
            };
            assert_eq!((r, s.max_depth()), want, "cut at {cut}");
        }
        for a in 0..text.len() {
            for b in a..text.len() {
                let mut s = ValueScan::new();
                let mut r = s.resume(&text.as_bytes()[..a], 0, false);
                if r == Scanned::More {
                    r = s.resume(&text.as_bytes()[..b], a, false);
                }
                if r == Scanned::More {
                    r = s.resume(text.as_bytes(), b, true);
                }
                assert_eq!((r, s.max_depth()), want, "cuts at {a}, {b}");
            }
        }
    }

    #[test]
    fn depth_is_counted_outside_strings_only() {
        assert_eq!(too_deep(br#"{"a":"[[[[[[[[[[["}"#, 2), None);
        assert_eq!(too_deep(br#"{"a":[[1]]}"#, 2), Some(6));
        assert_eq!(too_deep(br#"{"a\"[[[":[1]}"#, 2), None);
        let deep = "{\"a\":".repeat(100_000);
        assert_eq!(too_deep(deep.as_bytes(), MAX_DEPTH), Some(128 * 5));
    }
}
