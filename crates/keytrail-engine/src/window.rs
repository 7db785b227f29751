//! Time windows as typed predicates: `[since, until)` on `eventtime`, and the `date` partitions
//! it spans, as DataFusion expressions (no SQL text), which the lake's tables prune by.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, col, lit};
use keytrail_model::Millis;
use keytrail_model::schema::{UTC, col as c};
use keytrail_model::time::day_of;

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

/// `column IN (values)`, `false` for no values.
pub fn any_of<'a>(column: &str, values: impl IntoIterator<Item = &'a str>) -> Expr {
    let list: Vec<Expr> = values.into_iter().map(lit).collect();
    if list.is_empty() {
        lit(false)
    } else {
        col(column).in_list(list, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prune::analyze;

    #[test]
    fn windows_prune() {
        let f = analyze(&[window(Some(86_400_000), Some(3 * 86_400_000))]);
        assert_eq!(f.time.min, Some(86_400_000));
        assert_eq!(f.time.max, Some(3 * 86_400_000));
        assert_eq!(f.days, (Some(1), Some(2)));
        assert!(f.day_allowed(2) && !f.day_allowed(3) && !f.day_allowed(0));
        let f = analyze(&[any_of("accesskeyid", ["AKIAA", "AKIAB"])]);
        assert_eq!(f.keys.map(|k| k.held.len()), Some(2));
    }
}
