//! Time windows as typed predicates: `[since, until)` on `eventtime`, and the `date` partitions
//! it spans, as DataFusion expressions (no SQL text), which the lake's tables prune by.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, col, lit};
use keytrail_model::Millis;
use keytrail_model::schema::{UTC, col as c};
use keytrail_model::time::day_of;

use crate::keyset::key_in;

/// A UTC timestamp literal of the lake's type.
pub fn ts(ms: Millis) -> Expr {
    lit(ScalarValue::TimestampMillisecond(
        Some(ms),
        Some(UTC.into()),
    ))
}

/// A `date` literal.
pub fn date(day: i32) -> Expr {
    lit(ScalarValue::Date32(Some(day)))
}

/// `eventtime` in `[since, until)`, with the partitions it spans; `true` when unbounded.
pub fn window(since: Option<Millis>, until: Option<Millis>) -> Expr {
    let mut parts = Vec::new();
    if let Some(s) = since {
        parts.push(col(c::EVENTTIME).gt_eq(ts(s)));
        parts.push(col(c::DATE).gt_eq(date(day_of(s))));
    }
    if let Some(u) = until {
        parts.push(col(c::EVENTTIME).lt(ts(u)));
        parts.push(col(c::DATE).lt_eq(date(day_of(u - 1))));
    }
    parts.into_iter().reduce(Expr::and).unwrap_or(lit(true))
}

/// Largest list [`any_of`] writes as `IN`: DataFusion's own pruning by row-group and page
/// statistics reads `IN` lists up to this length (and none longer).
pub const IN_LIST_MAX: usize = 20;

/// `column IN (values)`, `false` for no values; see [`any_in`].
pub fn any_of<'a>(column: &str, values: impl IntoIterator<Item = &'a str>) -> Expr {
    any_in(&[column], values)
}

/// One of `columns` in `values` (`c1 IN (values) OR c2 IN (values) …`), `false` for no values;
/// longer lists than [`IN_LIST_MAX`] as one [`key_in`] set, which planning does not rewrite
/// value by value.
pub fn any_in<'a>(columns: &[&str], values: impl IntoIterator<Item = &'a str>) -> Expr {
    let values: Vec<&str> = values.into_iter().collect();
    if values.is_empty() {
        lit(false)
    } else if values.len() > IN_LIST_MAX {
        key_in(columns, values)
    } else {
        columns
            .iter()
            .map(|c| col(*c).in_list(values.iter().map(|v| lit(*v)).collect(), false))
            .reduce(Expr::or)
            .unwrap_or(lit(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prune::analyze;

    #[test]
    fn windows_prune() {
        let filters = [window(Some(86_400_000), Some(3 * 86_400_000))];
        let f = analyze(&filters);
        assert_eq!(f.time.min, Some(86_400_000));
        assert_eq!(f.time.max, Some(3 * 86_400_000));
        assert_eq!(f.days, (Some(1), Some(2)));
        assert!(f.day_allowed(2) && !f.day_allowed(3) && !f.day_allowed(0));
        let filters = [any_of("accesskeyid", ["AKIAA", "AKIAB"])];
        let f = analyze(&filters);
        assert_eq!(f.keys.map(|k| k.held.len()), Some(2));
        // A long list is one set, read by pruning all the same.
        let many: Vec<String> = (0..=IN_LIST_MAX).map(|i| format!("AKIA{i:04}")).collect();
        let e = any_of("targetkeyid", many.iter().map(String::as_str));
        assert!(matches!(e, Expr::ScalarFunction(_)));
        let filters = [e];
        let k = analyze(&filters).keys.expect("keys");
        assert!(k.held.is_empty());
        assert_eq!(k.named, many);
        for n in [2, IN_LIST_MAX + 1] {
            let e = any_in(
                &["accesskeyid", "mintedkeyid"],
                many[..n].iter().map(String::as_str),
            );
            let filters = [e];
            let k = analyze(&filters).keys.expect("keys");
            assert_eq!(k.held.len(), n);
            assert_eq!(k.named.len(), n);
        }
    }
}
