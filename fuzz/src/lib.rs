//! What the fuzz targets share: each target is a binary under `src/bin/` that hands AFL++'s
//! input to one of keytrail's parsers and checks what it must always hold. A panic, an abort
//! (a stack overflow among them) or a hang is a finding; every finding becomes a test of the
//! crate it was found in.

use std::collections::BTreeMap;

use keytrail_ingest::process::{Decoded, Limits, decode_object};
use keytrail_ingest::source::{Location, ObjectRef};
use keytrail_ingest::stream::{outcome, stream_by};
use keytrail_ingest::{ObjectError, content_hash};
use keytrail_model::{Difference, FilterSpec};

/// The object decoder, the function ingest calls for every object: bytes → gzip or plain →
/// any input shape → records → Arrow rows. Its accounting must balance and its rows match it.
pub fn decode(data: &[u8]) {
    split_windows(data);
    let object = ObjectRef {
        location: Location::Local("fuzz.json".into()),
        size: data.len() as u64,
        modified: None,
        etag: None,
    };
    let rule = Difference::new(FilterSpec::all().compile(), &[]);
    let limits = Limits {
        // Small enough that a gzip bomb stops quickly (a bomb is inflated as far as this limit
        // by each of the two reads: at 8 MiB, inflating and CRC-32 took about a seventh of the
        // target's time); large enough for every input (at most 64 KiB) and its largest record.
        max_object_bytes: 1 << 20,
        stream_above: 1 << 20,
        max_event_bytes: 256 << 10,
        index_keys: true,
    };
    let mut scratch = Vec::new();
    let whole = decode_object(&object, data, &rule, limits, &mut scratch);
    if let Ok(decoded) = &whole {
        balances(decoded);
    }
    // Read record by record (what an object past `--stream-above` gets), in stretches whose
    // size comes from the input's middle byte: the same outcome, counts, skipped records and
    // rows, and the content hash of a whole read. Not for text past the limit of a whole
    // read, which only the stream reads.
    if let (false, Some(spool)) = (
        matches!(whole, Err(ObjectError::TooLarge { .. })),
        spool_dir(),
    ) {
        let chunk = usize::from(data.get(data.len() / 2).copied().unwrap_or(0)) * 61 + 1;
        let streamed = stream_by(&object, data, &rule, limits, spool, chunk);
        if let Ok((_, hash)) = &streamed {
            assert_eq!(*hash, content_hash(data), "the stream's content hash");
        }
        let (whole, streamed) = (outcome(whole), outcome(streamed.map(|(d, _)| d)));
        assert_eq!(
            streamed, whole,
            "read in stretches of {chunk} bytes, then read whole"
        );
    }
}

/// Where streamed objects spool their rows: one folder of the system's temporary folder for
/// every fuzzing process (each spool is an unnamed file, gone with its process), so none is
/// left behind however many processes AFL++ starts.
fn spool_dir() -> Option<&'static std::path::Path> {
    static DIR: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join("keytrail-fuzz-spool");
        std::fs::create_dir_all(&dir).ok().map(|()| dir)
    })
    .as_deref()
}

/// An object's accounting balances and its rows match it.
fn balances(decoded: &Decoded) {
    let c = decoded.counts;
    assert_eq!(
        c.read,
        c.written + c.insights + c.filtered + c.already_written + c.skipped,
        "records add up: {c:?}"
    );
    let rows: u64 = decoded
        .batches
        .iter()
        .map(|(_, _, b)| b.num_rows() as u64)
        .sum();
    assert_eq!(rows, c.written + c.insights, "rows match the counts: {c:?}");
    let by_reason: u64 = decoded.skipped_by_reason.values().sum();
    assert_eq!(by_reason, c.skipped, "skipped records by reason");
    let mut days: BTreeMap<_, usize> = BTreeMap::new();
    for (table, day, _) in &decoded.batches {
        *days.entry((*table, *day)).or_default() += 1;
    }
    assert!(
        days.values().all(|n| *n == 1),
        "one batch per table and day"
    );
}

/// The splitter fed the same text whole and in windows (as a streamed object would feed it):
/// the same items, or the same error. `window` comes from the input's last byte.
pub fn split_windows(data: &[u8]) {
    use keytrail_ingest::split::{Splitter, Step};
    let Some((&w, text)) = data.split_last() else {
        return;
    };
    let window = usize::from(w % 64) + 1;
    let whole = {
        let mut s = Splitter::new(1 << 20);
        let mut items = Vec::new();
        loop {
            match s.next(text, 0, true) {
                Ok(Step::Item(i)) => items.push(format!("{i:?}")),
                Ok(Step::End) => break Ok(items),
                Ok(Step::More) => panic!("More at the end of the text"),
                Err(e) => break Err(e),
            }
        }
    };
    let mut s = Splitter::new(1 << 20);
    let mut items = Vec::new();
    let mut base = 0usize;
    let mut end = 0usize;
    let windowed = 'outer: loop {
        let from = usize::try_from(s.keep_from())
            .unwrap_or(usize::MAX)
            .max(base);
        assert!(from <= text.len(), "keep_from past the end");
        base = from;
        end = (end.max(from) + window).min(text.len());
        let eof = end == text.len();
        loop {
            match s.next(&text[from..end], base as u64, eof) {
                Ok(Step::Item(i)) => items.push(format!("{i:?}")),
                Ok(Step::End) => break 'outer Ok(items),
                Ok(Step::More) if eof => panic!("More at the end of the text"),
                Ok(Step::More) => break,
                Err(e) => break 'outer Err(e),
            }
        }
    };
    match (&whole, &windowed) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "window {window}"),
        (Err(_), Err(_)) => {}
        _ => panic!("whole {whole:?}, in windows of {window}: {windowed:?}"),
    }
}

/// Key-ID and account decoding: every text either parses to an ID that parses again to
/// itself, or is refused with a reason; a decoded account is twelve digits.
pub fn key(data: &[u8]) {
    use keytrail_model::key::decode_account;
    use keytrail_model::{AccessKeyId, AccountDecode, IdPrefix, KeyKind, UniqueId};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = (IdPrefix::of(text), KeyKind::of(text));
    if let AccountDecode::Account(a) = decode_account(text) {
        assert!(
            a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()),
            "account {a:?} of {text:?}"
        );
    }
    match UniqueId::parse(text) {
        Ok(id) => {
            assert!((16..=128).contains(&id.as_str().len()), "{id}");
            assert_eq!(UniqueId::parse(id.as_str()).as_ref(), Ok(&id));
            let _ = (id.account(), id.prefix().description());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    if let Ok(k) = AccessKeyId::parse(text) {
        assert!(k.prefix().key_kind().is_some(), "{k}");
        let _ = (k.kind(), k.account());
    }
}

/// Time parsing: event times, `--since`/`--until` bounds and partition days; a day read back
/// from its text is the same day.
pub fn time(data: &[u8]) {
    use keytrail_model::time::{
        Bound, day_of, day_string, format_millis, parse_day, parse_event_time, parse_time_bound,
    };
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(ms) = parse_event_time(text) {
        let day = day_of(ms);
        let _ = format_millis(ms);
        let s = day_string(day);
        if s.len() == 10 {
            assert_eq!(parse_day(&s), Some(day), "{text:?} → {ms} → {s}");
        }
    }
    if let Some(day) = parse_day(text) {
        assert_eq!(parse_day(&day_string(day)), Some(day), "{text:?}");
    }
    // 2024-12-01T00:00:00Z
    let now = 1_733_011_200_000;
    for bound in [Bound::Start, Bound::End] {
        if let Err(e) = parse_time_bound(text, bound, now) {
            let _ = e.to_string();
        }
    }
}

/// The rule loader: a keytrail YAML rule file or a Sigma rule.
pub fn rule(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = keytrail_rules::Rule::parse(text, "fuzz.yaml") {
        let _ = e.to_string();
    }
}

/// The inventory parsers (list-access-keys JSON, a key CSV, the IAM credential report, in
/// text or base64): the file's bytes go through what `--inventory` does after reading it.
pub fn inventory(data: &[u8]) {
    let files = [(std::path::PathBuf::from("inventory"), data.to_vec())];
    match keytrail_inventory::Inventory::parse(&files) {
        Ok(inv) => {
            let _ = (inv.keys_batch(), inv.slots_batch(), inv.describe());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}
