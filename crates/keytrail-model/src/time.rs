//! Event times and the `--since` / `--until` / `--as-of` forms every subcommand accepts.
//!
//! All times are UTC milliseconds since the Unix epoch (the unit of the lake's timestamp
//! columns).

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// Parse a CloudTrail `eventTime` (`2024-11-30T08:43:17Z`, `2020-09-14T00:44:23.000Z`,
/// or any RFC 3339 time with an offset). A time without an offset is read as UTC.
pub fn parse_event_time(s: &str) -> Option<Millis> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    None
}

/// Parse a time as CloudTrail writes it inside responses: RFC 3339 like `eventTime`, or the
/// human form of `credentials.expiration` and `accessKey.createDate`
/// (`Nov 30, 2024, 8:43:17 PM`, `Aug 1, 2024 1:33:28 PM`), which is UTC.
pub fn parse_cloudtrail_time(s: &str) -> Option<Millis> {
    if let Some(t) = parse_event_time(s) {
        return Some(t);
    }
    let s = s.trim();
    for fmt in ["%b %d, %Y, %I:%M:%S %p", "%b %d, %Y %I:%M:%S %p"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    None
}

/// Milliseconds in a day.
pub const DAY_MS: Millis = 86_400_000;

/// The UTC calendar day of a time, as days since 1970-01-01 (Arrow's `Date32`).
pub fn day_of(ms: Millis) -> i32 {
    // Floor division so times before 1970 land on the right day.
    ms.div_euclid(DAY_MS) as i32
}

/// `YYYY-MM-DD` of a day number, as used in partition directory names.
pub fn day_string(day: i32) -> String {
    let date = NaiveDate::from_num_days_from_ce_opt(day + 719_163).unwrap_or(NaiveDate::MIN);
    date.format("%Y-%m-%d").to_string()
}

/// The day number of a `YYYY-MM-DD` string.
pub fn parse_day(s: &str) -> Option<i32> {
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(day_of(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis()))
}

/// Format milliseconds as RFC 3339 with a `Z` (seconds, or milliseconds when present).
pub fn format_millis(ms: Millis) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) if ms % 1000 == 0 => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => ms.to_string(),
    }
}

/// The current time.
pub fn now_millis() -> Millis {
    Utc::now().timestamp_millis()
}

/// Which end of a window a time bound is for; a bare date means the start of that day for
/// `--since` and the end of that day for `--until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    Start,
    End,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not a time: use a date (2024-11-30), an RFC 3339 time (2024-11-30T08:00:00Z) or a relative time (90m, 36h, 7d, 2w)"
)]
pub struct TimeParseError {
    pub input: String,
}

/// Parse a user-given time: `now`, a date, an RFC 3339 time, or `N` followed by `s`, `m`,
/// `h`, `d` or `w` (that long before `now`). Returns milliseconds; for [`Bound::End`] a date
/// means the first instant after that day, so the window is `[since, until)`.
pub fn parse_time_bound(input: &str, bound: Bound, now: Millis) -> Result<Millis, TimeParseError> {
    let s = input.trim();
    let err = || TimeParseError {
        input: input.to_owned(),
    };
    if s.eq_ignore_ascii_case("now") {
        return Ok(now);
    }
    if let Some(day) = parse_day(s) {
        let start = i64::from(day) * 86_400_000;
        return Ok(match bound {
            Bound::Start => start,
            Bound::End => start + 86_400_000,
        });
    }
    if let Some(t) = parse_event_time(s) {
        return Ok(t);
    }
    Ok(now - parse_span(s).ok_or_else(err)?)
}

/// A length of time, a number followed by `ms`, `s`, `m` (or `min`), `h`, `d` or `w`, in
/// milliseconds: the relative times above, the detectors' windows, `follow`'s intervals. The
/// number may have a fraction (`1.5h`, `0.5s`) when it comes to whole milliseconds; a number
/// without a unit is refused (seconds or minutes?).
pub fn parse_span(input: &str) -> Option<Millis> {
    let s = input.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.')?);
    let size: Millis = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => return None,
    };
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (num.contains('.') && !digits(frac)) || frac.len() > 9 {
        return None;
    }
    let ms = whole.parse::<Millis>().ok()?.checked_mul(size)?;
    if frac.is_empty() {
        return Some(ms);
    }
    // frac < 10^9 and size < 10^9: the product fits.
    let part = frac.parse::<Millis>().ok()? * size;
    let scale = 10_i64.pow(frac.len() as u32);
    if part % scale != 0 {
        return None;
    }
    ms.checked_add(part / scale)
}

/// A length of time in the largest unit [`parse_span`] reads that states it exactly
/// (`86400000` → `1d`, `5400000` → `90m`).
pub fn format_span(ms: Millis) -> String {
    const UNITS: [(Millis, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    UNITS
        .iter()
        .find(|(size, _)| ms != 0 && ms % size == 0)
        .map_or_else(
            || format!("{ms}ms"),
            |(size, unit)| format!("{}{unit}", ms / size),
        )
}

/// A half-open window of event times, `[since, until)`; either end may be open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeWindow {
    pub since: Option<Millis>,
    pub until: Option<Millis>,
}

impl TimeWindow {
    pub fn contains(&self, t: Millis) -> bool {
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
    }

    pub fn is_unbounded(&self) -> bool {
        self.since.is_none() && self.until.is_none()
    }

    /// The inclusive range of UTC days the window touches, when both ends are set.
    pub fn days(&self) -> (Option<i32>, Option<i32>) {
        (self.since.map(day_of), self.until.map(|u| day_of(u - 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_and_written() {
        assert_eq!(parse_span("90m"), Some(5_400_000));
        assert_eq!(parse_span("90min"), Some(5_400_000));
        assert_eq!(parse_span("36h"), Some(129_600_000));
        assert_eq!(parse_span("2w"), Some(14 * 86_400_000));
        assert_eq!(parse_span("250ms"), Some(250));
        assert_eq!(parse_span("15"), None);
        assert_eq!(parse_span("m"), None);
        assert_eq!(parse_span("1.5h"), Some(5_400_000));
        assert_eq!(parse_span("0.25s"), Some(250));
        assert_eq!(parse_span("2.0m"), Some(120_000));
        for bad in [
            "1.5ms", "0.0001s", "1.", ".5s", "1..5s", "1.5.2s", "1.5", "",
        ] {
            assert_eq!(parse_span(bad), None, "{bad}");
        }
        assert_eq!(parse_span("99999999999999999w"), None);
        assert_eq!(parse_span("-5m"), None);
        assert_eq!(parse_span("5y"), None);
        for (ms, text) in [
            (86_400_000, "1d"),
            (5_400_000, "90m"),
            (1_000, "1s"),
            (1_500, "1500ms"),
            (0, "0ms"),
        ] {
            assert_eq!(format_span(ms), text);
            assert_eq!(parse_span(text), Some(ms));
        }
    }

    #[test]
    fn event_times() {
        assert_eq!(parse_event_time("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(
            parse_event_time("2020-09-14T00:44:23.000Z"),
            Some(1_600_044_263_000)
        );
        assert_eq!(
            parse_event_time("2020-09-14T02:44:23+02:00"),
            Some(1_600_044_263_000)
        );
        assert_eq!(
            parse_event_time("2020-09-14T00:44:23"),
            Some(1_600_044_263_000)
        );
        assert_eq!(parse_event_time("yesterday"), None);
        assert_eq!(format_millis(1_600_044_263_000), "2020-09-14T00:44:23Z");
        assert_eq!(format_millis(1_600_044_263_250), "2020-09-14T00:44:23.250Z");
    }

    #[test]
    fn cloudtrail_response_times() {
        assert_eq!(
            parse_cloudtrail_time("Nov 30, 2024, 8:43:17 PM"),
            Some(1_732_999_397_000)
        );
        assert_eq!(
            parse_cloudtrail_time("Aug 1, 2024 1:33:28 PM"),
            Some(1_722_519_208_000)
        );
        assert_eq!(
            parse_cloudtrail_time("2024-12-01T15:17:00Z"),
            Some(1_733_066_220_000)
        );
        assert_eq!(parse_cloudtrail_time("Nov 31, 2024, 8:43:17 PM"), None);
    }

    #[test]
    fn days() {
        assert_eq!(day_string(day_of(1_600_044_263_000)), "2020-09-14");
        assert_eq!(day_string(day_of(-1)), "1969-12-31");
        assert_eq!(parse_day("2020-09-14"), Some(day_of(1_600_044_263_000)));
        assert_eq!(parse_day("2020-9-14x"), None);
    }

    #[test]
    fn bounds() {
        let now = 1_600_044_263_000;
        let day = 1_600_041_600_000; // 2020-09-14T00:00:00Z
        assert_eq!(parse_time_bound("2020-09-14", Bound::Start, now), Ok(day));
        assert_eq!(
            parse_time_bound("2020-09-14", Bound::End, now),
            Ok(day + 86_400_000)
        );
        assert_eq!(
            parse_time_bound("7d", Bound::Start, now),
            Ok(now - 7 * 86_400_000)
        );
        assert_eq!(
            parse_time_bound("36h", Bound::Start, now),
            Ok(now - 36 * 3_600_000)
        );
        assert_eq!(
            parse_time_bound("2w", Bound::Start, now),
            Ok(now - 14 * 86_400_000)
        );
        assert_eq!(parse_time_bound("now", Bound::End, now), Ok(now));
        assert_eq!(
            parse_time_bound("2020-09-14T00:44:23Z", Bound::End, now),
            Ok(now)
        );
        for bad in ["7", "d", "7y", "", "-3d", "2020-13-01"] {
            assert!(parse_time_bound(bad, Bound::Start, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn window() {
        let w = TimeWindow {
            since: Some(10),
            until: Some(20),
        };
        assert!(w.contains(10) && w.contains(19));
        assert!(!w.contains(9) && !w.contains(20));
        assert!(TimeWindow::default().contains(i64::MIN));
    }
}
