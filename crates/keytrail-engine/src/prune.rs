//! What a scan's filters say about which files and rows can match: the access keys it asks
//! for (made with, or named by, the event), and its time and day range. Only what is certain is
//! taken; anything else is left to DataFusion, which applies every filter to the rows read.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};
use keytrail_model::Millis;
use keytrail_model::schema::col;
use keytrail_model::time::day_of;

use crate::keyset::KeySet;

/// The keys a scan is restricted to: an event can match only if it was made with a key of
/// `held` or names a key of `named`. Each list is sorted, without repeats, and borrowed from
/// the scan's filters: a chain's filters hold tens of thousands of keys, and a scan made a copy
/// of every one of them to plan which files to open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyFilter<'a> {
    pub held: Vec<&'a str>,
    pub named: Vec<&'a str>,
}

impl KeyFilter<'_> {
    /// Whether events made with `key` can match.
    pub fn holds(&self, key: &str) -> bool {
        self.held.binary_search(&key).is_ok()
    }

    /// Whether events naming `key` can match.
    pub fn names(&self, key: &str) -> bool {
        self.named.binary_search(&key).is_ok()
    }

    /// Whether a key of `held` lies in `lo..=hi`.
    pub fn holds_between(&self, lo: &str, hi: &str) -> bool {
        let i = self.held.partition_point(|k| *k < lo);
        self.held.get(i).is_some_and(|k| *k <= hi)
    }
}

/// The keys of one condition, borrowed from it: a scan's planning asks whether each of its
/// filters is a key condition, and copying the tens of thousands of keys of a large set only
/// to answer that cost more than the answer.
#[derive(Default)]
struct Keys<'a> {
    held: Vec<&'a str>,
    named: Vec<&'a str>,
}

impl<'a> Keys<'a> {
    fn of(named: bool, keys: impl IntoIterator<Item = &'a str>) -> Keys<'a> {
        let mut out = Keys::default();
        if named {
            out.named.extend(keys);
        } else {
            out.held.extend(keys);
        }
        out
    }

    fn len(&self) -> usize {
        self.held.len() + self.named.len()
    }

    fn union(mut self, other: Keys<'a>) -> Keys<'a> {
        self.held.extend(other.held);
        self.named.extend(other.named);
        self
    }

    fn into_filter(self) -> KeyFilter<'a> {
        let sorted = |mut v: Vec<&'a str>| {
            v.sort_unstable();
            v.dedup();
            v
        };
        KeyFilter {
            held: sorted(self.held),
            named: sorted(self.named),
        }
    }
}

/// An inclusive range of times (ms, UTC); `None` is unbounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub min: Option<Millis>,
    pub max: Option<Millis>,
}

impl TimeRange {
    /// Whether `[lo, hi]` can hold a time of the range.
    pub fn overlaps(&self, lo: Millis, hi: Millis) -> bool {
        self.min.is_none_or(|m| hi >= m) && self.max.is_none_or(|m| lo <= m)
    }

    fn and(self, other: TimeRange) -> TimeRange {
        TimeRange {
            min: max_opt(self.min, other.min),
            max: min_opt(self.max, other.max),
        }
    }
}

fn max_opt<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn min_opt<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What a scan's filters allow (borrowing their keys).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanFilter<'a> {
    pub keys: Option<KeyFilter<'a>>,
    /// Range of `eventtime`.
    pub time: TimeRange,
    /// Range of the `date` partition (inclusive day numbers).
    pub days: (Option<i32>, Option<i32>),
    /// Only rows recording a key's status change can match (`keystatus` is not null): a file
    /// whose commit record counts none of them is skipped.
    pub key_changes: bool,
}

impl ScanFilter<'_> {
    /// Whether a file of partition `day` can hold a matching row.
    pub fn day_allowed(&self, day: i32) -> bool {
        let (lo, hi) = self.days;
        let by_time = self.time.min.is_none_or(|m| day >= day_of(m))
            && self.time.max.is_none_or(|m| day <= day_of(m));
        by_time && lo.is_none_or(|l| day >= l) && hi.is_none_or(|h| day <= h)
    }
}

/// Whether `e` is a key condition the key index answers exactly: a key column equal to a
/// literal, in a list of literals or in a [`crate::keyset::key_in`] set, or an `OR` of such.
pub fn is_key_filter(e: &Expr) -> bool {
    keys_of(e).is_some()
}

/// Whether `e` is a condition on the `date` partition alone that choosing files by their day
/// applies exactly: `date` compared (`=`, `<`, `<=`, `>`, `>=`) with a date, or an `AND` of
/// such. Every row of a file has the file's day, so a scan that opens only the files of the
/// days allowed returns exactly the rows that hold.
pub fn is_day_filter(e: &Expr) -> bool {
    split_conjunction(e).into_iter().all(|c| {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = c else {
            return false;
        };
        let is_date = |e: &Expr| matches!(e, Expr::Column(c) if c.name == col::DATE);
        let is_day = |e: &Expr| matches!(e, Expr::Literal(ScalarValue::Date32(Some(_)), _));
        let compares = matches!(
            op,
            Operator::Eq | Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq
        );
        compares && ((is_date(left) && is_day(right)) || (is_day(left) && is_date(right)))
    })
}

/// Read the filters of a scan (each a conjunct, or conjunctions of them).
pub fn analyze(filters: &[Expr]) -> ScanFilter<'_> {
    let mut out = ScanFilter::default();
    let mut keys: Option<Keys<'_>> = None;
    for f in filters {
        for c in split_conjunction(f) {
            if let Some(k) = keys_of(c)
                && keys.as_ref().is_none_or(|cur| k.len() < cur.len())
            {
                keys = Some(k);
            }
            out.time = out.time.and(time_of(c));
            out.key_changes |= needs_key_status(c);
            let (lo, hi) = days_of(c);
            out.days = (max_opt(out.days.0, lo), min_opt(out.days.1, hi));
        }
    }
    out.keys = keys.map(Keys::into_filter);
    out
}

fn column_name(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(c) => column_name(&c.expr),
        Expr::TryCast(c) => column_name(&c.expr),
        _ => None,
    }
}

fn text(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
            _,
        ) => Some(s.as_str()),
        Expr::Cast(c) => text(&c.expr),
        _ => None,
    }
}

/// Which relation a key column stands for.
fn key_column(name: &str) -> Option<bool> {
    match name {
        n if n == col::ACCESSKEYID => Some(false),
        n if n == col::TARGETKEYID || n == col::MINTEDKEYID => Some(true),
        _ => None,
    }
}

fn keys_of(e: &Expr) -> Option<Keys<'_>> {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::Eq => {
                let (c, v) = match (column_name(left), text(right)) {
                    (Some(c), Some(v)) => (c, v),
                    _ => (column_name(right)?, text(left)?),
                };
                Some(Keys::of(key_column(c)?, [v]))
            }
            Operator::Or => Some(keys_of(left)?.union(keys_of(right)?)),
            _ => None,
        },
        Expr::InList(l) if !l.negated => {
            let named = key_column(column_name(&l.expr)?)?;
            let values: Option<Vec<&str>> = l.list.iter().map(text).collect();
            Some(Keys::of(named, values?))
        }
        Expr::ScalarFunction(f) => {
            let set = f.func.inner().downcast_ref::<KeySet>()?;
            let [arg] = f.args.as_slice() else {
                return None;
            };
            let named = key_column(column_name(arg)?)?;
            Some(Keys::of(named, set.keys()))
        }
        _ => None,
    }
}

/// Whether `e` is false or null wherever `keystatus` is null: `keystatus IS NOT NULL`, or
/// `keystatus` equal to or in a list of literals.
fn needs_key_status(e: &Expr) -> bool {
    let is_status = |e: &Expr| column_name(e) == Some(col::KEYSTATUS);
    match e {
        Expr::IsNotNull(x) => is_status(x),
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => {
            (is_status(left) && text(right).is_some()) || (is_status(right) && text(left).is_some())
        }
        Expr::InList(l) => !l.negated && is_status(&l.expr),
        _ => false,
    }
}

/// Milliseconds of a timestamp literal, rounded down (`floor`) or up.
fn millis(e: &Expr, floor: bool) -> Option<Millis> {
    let (v, per_ms) = match e {
        Expr::Literal(ScalarValue::TimestampMillisecond(Some(v), _), _) => (*v, 1),
        Expr::Literal(ScalarValue::TimestampSecond(Some(v), _), _) => {
            return v.checked_mul(1000);
        }
        Expr::Literal(ScalarValue::TimestampMicrosecond(Some(v), _), _) => (*v, 1000),
        Expr::Literal(ScalarValue::TimestampNanosecond(Some(v), _), _) => (*v, 1_000_000),
        Expr::Cast(c) => return millis(&c.expr, floor),
        _ => return None,
    };
    Some(if floor {
        v.div_euclid(per_ms)
    } else {
        v.div_euclid(per_ms) + i64::from(v.rem_euclid(per_ms) != 0)
    })
}

fn time_of(e: &Expr) -> TimeRange {
    let any = TimeRange::default();
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (op, lit) = match (column_name(left), column_name(right)) {
                (Some(c), _) if c == col::EVENTTIME => (*op, right.as_ref()),
                (_, Some(c)) if c == col::EVENTTIME => match op.swap() {
                    Some(op) => (op, left.as_ref()),
                    None => return any,
                },
                _ => return any,
            };
            match op {
                Operator::Gt | Operator::GtEq => TimeRange {
                    min: millis(lit, true),
                    max: None,
                },
                Operator::Lt | Operator::LtEq => TimeRange {
                    min: None,
                    max: millis(lit, false),
                },
                Operator::Eq => TimeRange {
                    min: millis(lit, true),
                    max: millis(lit, false),
                },
                _ => any,
            }
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if column_name(expr) == Some(col::EVENTTIME) => TimeRange {
            min: millis(low, true),
            max: millis(high, false),
        },
        _ => any,
    }
}

fn day(e: &Expr) -> Option<i32> {
    match e {
        Expr::Literal(ScalarValue::Date32(Some(d)), _) => Some(*d),
        Expr::Cast(c) => day(&c.expr),
        _ => None,
    }
}

fn days_of(e: &Expr) -> (Option<i32>, Option<i32>) {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
        return (None, None);
    };
    let (op, lit) = match (column_name(left), column_name(right)) {
        (Some(c), _) if c == col::DATE => (*op, right.as_ref()),
        (_, Some(c)) if c == col::DATE => match op.swap() {
            Some(op) => (op, left.as_ref()),
            None => return (None, None),
        },
        _ => return (None, None),
    };
    let Some(d) = day(lit) else {
        return (None, None);
    };
    match op {
        Operator::Gt => (Some(d + 1), None),
        Operator::GtEq => (Some(d), None),
        Operator::Lt => (None, Some(d - 1)),
        Operator::LtEq => (None, Some(d)),
        Operator::Eq => (Some(d), Some(d)),
        _ => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col as c, lit};

    fn ts(ms: i64) -> Expr {
        Expr::Literal(
            ScalarValue::TimestampMillisecond(Some(ms), Some("UTC".into())),
            None,
        )
    }

    #[test]
    fn day_filters_are_the_comparisons_of_date_with_a_date() {
        let d = |n| Expr::Literal(ScalarValue::Date32(Some(n)), None);
        assert!(is_day_filter(&c("date").lt(d(3))));
        assert!(is_day_filter(
            &d(3).lt_eq(c("date")).and(c("date").eq(d(5)))
        ));
        // Not certain by the file's day alone.
        assert!(!is_day_filter(&c("date").not_eq(d(3))));
        assert!(!is_day_filter(&c("date").lt(d(3)).or(c("date").gt(d(9)))));
        assert!(!is_day_filter(
            &c("date").lt(d(3)).and(c("eventtime").gt(ts(1)))
        ));
        assert!(!is_day_filter(&c("eventtime").gt(ts(1))));
        assert!(!is_day_filter(
            &Expr::Cast(datafusion::logical_expr::Cast::new(
                Box::new(c("date")),
                arrow::datatypes::DataType::Utf8
            ))
            .eq(lit("2024-01-01"))
        ));
    }

    #[test]
    fn keys_times_and_days() {
        let filters = [
            c("accesskeyid").eq(lit("AKIAA")),
            c("eventtime")
                .gt_eq(ts(1000))
                .and(c("eventtime").lt(ts(5000))),
            Expr::Literal(ScalarValue::Date32(Some(3)), None).lt_eq(c("date")),
        ];
        let f = analyze(&filters);
        let k = f.keys.expect("keys");
        assert_eq!(k.held, ["AKIAA"]);
        assert!(k.named.is_empty());
        assert_eq!(
            f.time,
            TimeRange {
                min: Some(1000),
                max: Some(5000)
            }
        );
        assert_eq!(f.days, (Some(3), None));
        assert!(!f.key_changes);

        let filters = [c("accesskeyid")
            .in_list(vec![lit("AKIAA"), lit("AKIAB")], false)
            .or(c("targetkeyid").in_list(vec![lit("AKIAC")], false))];
        let f = analyze(&filters);
        let k = f.keys.expect("keys");
        assert_eq!(k.held.len(), 2);
        assert_eq!(k.named, ["AKIAC"]);

        // Sorted without repeats, and asked by binary search.
        let filters = [c("accesskeyid").in_list(
            vec![lit("AKIAD"), lit("AKIAB"), lit("AKIAD"), lit("AKIAF")],
            false,
        )];
        let f = analyze(&filters);
        let k = f.keys.expect("keys");
        assert_eq!(k.held, ["AKIAB", "AKIAD", "AKIAF"]);
        assert!(k.holds("AKIAD") && !k.holds("AKIAC") && !k.names("AKIAD"));
        assert!(k.holds_between("AKIAC", "AKIAD") && k.holds_between("AKIAF", "AKIAZ"));
        assert!(!k.holds_between("AKIAA", "AKIAA") && !k.holds_between("AKIAG", "AKIAZ"));

        // Not certain: no key restriction.
        let filters = [c("accesskeyid")
            .eq(lit("AKIAA"))
            .or(c("eventname").eq(lit("X")))];
        let f = analyze(&filters);
        assert_eq!(f.keys, None);
        let filters = [c("accesskeyid").in_list(vec![lit("AKIAA")], true)];
        let f = analyze(&filters);
        assert_eq!(f.keys, None);
    }

    #[test]
    fn key_changes() {
        let only = |e: Expr| analyze(std::slice::from_ref(&e)).key_changes;
        assert!(only(c("keystatus").is_not_null()));
        assert!(only(
            c("keystatus").is_not_null().and(c("eventtime").lt(ts(9)))
        ));
        assert!(only(lit("Inactive").eq(c("keystatus"))));
        assert!(only(c("keystatus").in_list(vec![lit("Active")], false)));
        // Rows without a status can match these.
        assert!(!only(c("keystatus").is_null()));
        assert!(!only(c("keystatus").in_list(vec![lit("Active")], true)));
        assert!(!only(
            c("keystatus")
                .is_not_null()
                .or(c("mintedkeyid").is_not_null())
        ));
        assert!(!only(c("targetkeyid").is_not_null()));
    }
}
