//! Rules → SQL over `events`. Each rule becomes one boolean expression; all rules go into one
//! `SELECT` so one scan of the lake evaluates every rule. Tests on plain columns become
//! native DataFusion expressions (`IN`, `starts_with`, `strpos`); tests inside JSON columns
//! call `keytrail_json_match` with the test as a JSON literal. A rule's column tests also
//! guard its JSON tests (`CASE WHEN <columns> THEN <all> ELSE false END`), and the `WHERE`
//! clause is the `OR` of every rule's column tests, so JSON is parsed only for the few events
//! that could match.

use std::collections::BTreeSet;

use keytrail_rules::rule::{Cond, FieldRef, JsonCond, JsonTest, Op, Rule};

/// A SQL text literal.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The SQL expression of a column path (`get_field` for struct members).
pub fn column_sql(path: &[String]) -> String {
    let mut expr = path[0].clone();
    for p in &path[1..] {
        expr = format!("get_field({expr}, {})", quote(p));
    }
    expr
}

/// The event's own account, for `other_account`: the `resourceaccountid` fact.
pub const ACCOUNT_SQL: &str = "resourceaccountid";

/// Text of any field (JSON fields: every value at the path, joined by `, `).
pub fn field_text_sql(f: &FieldRef) -> String {
    match f {
        FieldRef::Column { path, boolean } => {
            if *boolean {
                format!("CAST({} AS VARCHAR)", column_sql(path))
            } else {
                column_sql(path)
            }
        }
        FieldRef::Json { column, path } => format!(
            "keytrail_json_text({column}, {})",
            quote(&serde_json::to_string(path).unwrap_or_default())
        ),
    }
}

/// Parts joined by `op`. A long list is nested as a balanced tree, not one chain: DataFusion
/// works out the type of a chain of `a OR b OR c …` again at every level of it, for every
/// batch (hundreds of rules in the `WHERE` clause made that quadratic cost most of a scan).
fn join(mut parts: Vec<String>, op: &str, empty: &str) -> String {
    const FLAT: usize = 8;
    match parts.len() {
        0 => empty.to_owned(),
        1 => parts.pop().unwrap_or_default(),
        n if n <= FLAT => format!("({})", parts.join(&format!(" {op} "))),
        n => {
            let right = parts.split_off(n / 2);
            format!(
                "({} {op} {})",
                join(parts, op, empty),
                join(right, op, empty)
            )
        }
    }
}

fn column_test_sql(path: &[String], boolean: bool, t: &JsonTest) -> String {
    let c = column_sql(path);
    let expr = if t.nocase {
        format!("lower({c})")
    } else {
        c.clone()
    };
    let joiner = if t.all { "AND" } else { "OR" };
    let each =
        |f: &dyn Fn(&str) -> String| join(t.values.iter().map(|v| f(v)).collect(), joiner, "false");
    let native = match &t.op {
        Op::Equals if boolean => each(&|v| format!("{c} = {v}")),
        Op::Equals if !t.all => format!(
            "{expr} IN ({})",
            t.values
                .iter()
                .map(|v| quote(v))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Op::Equals => each(&|v| format!("{expr} = {}", quote(v))),
        Op::Prefix => each(&|v| format!("starts_with({expr}, {})", quote(v))),
        Op::Suffix => each(&|v| format!("ends_with({expr}, {})", quote(v))),
        Op::Contains => each(&|v| format!("strpos({expr}, {}) > 0", quote(v))),
        Op::Exists(true) if boolean => format!("{c} IS NOT NULL"),
        Op::Exists(false) if boolean => format!("{c} IS NULL"),
        Op::Exists(true) => format!("({c} IS NOT NULL AND {c} <> '')"),
        Op::Exists(false) => format!("({c} IS NULL OR {c} = '')"),
        _ => {
            let spec = serde_json::to_string(&JsonCond::Test(t.clone())).unwrap_or_default();
            return format!("keytrail_text_match({c}, {}, {ACCOUNT_SQL})", quote(&spec));
        }
    };
    format!("coalesce({native}, false)")
}

/// The SQL of a condition: true or false for every event, never null.
pub fn cond_sql(c: &Cond) -> String {
    match c {
        Cond::All(v) => join(v.iter().map(cond_sql).collect(), "AND", "true"),
        Cond::Any(v) => join(v.iter().map(cond_sql).collect(), "OR", "false"),
        Cond::Not(c) => format!("(NOT {})", cond_sql(c)),
        Cond::Column {
            path,
            boolean,
            test,
        } => column_test_sql(path, *boolean, test),
        Cond::Json { column, test } => {
            let spec = serde_json::to_string(&JsonCond::Test(test.clone())).unwrap_or_default();
            format!(
                "keytrail_json_match({column}, {}, {ACCOUNT_SQL})",
                quote(&spec)
            )
        }
        Cond::SameAs {
            left,
            right,
            nocase,
        } => {
            let (l, r) = (field_text_sql(left), field_text_sql(right));
            if *nocase {
                format!("coalesce(lower({l}) = lower({r}), false)")
            } else {
                format!("coalesce({l} = {r}, false)")
            }
        }
    }
}

/// The part of a condition that tests plain columns only and must hold whenever the whole
/// does: a cheap pre-filter. `None` when nothing cheap is implied.
pub fn guard_sql(c: &Cond) -> Option<String> {
    if c.columns_only() {
        return Some(cond_sql(c));
    }
    match c {
        Cond::All(v) => {
            let parts: Vec<String> = v.iter().filter_map(guard_sql).collect();
            (!parts.is_empty()).then(|| join(parts, "AND", "true"))
        }
        Cond::Any(v) => {
            let parts: Option<Vec<String>> = v.iter().map(guard_sql).collect();
            parts.map(|p| join(p, "OR", "false"))
        }
        _ => None,
    }
}

/// The event names (lower case) a condition can only hold on, when it names them: the
/// scan evaluates such a rule only on the events of those calls. `None`: any event.
pub fn event_names(c: &Cond) -> Option<BTreeSet<String>> {
    match c {
        Cond::Column { path, test, .. }
            if path.len() == 1 && path[0] == "eventname" && test.op == Op::Equals =>
        {
            // `all` asks for every value at once: still one of them.
            Some(test.values.iter().map(|v| v.to_lowercase()).collect())
        }
        Cond::All(v) => v
            .iter()
            .filter_map(event_names)
            .reduce(|a, b| a.intersection(&b).cloned().collect()),
        Cond::Any(v) => v
            .iter()
            .map(event_names)
            .try_fold(BTreeSet::new(), |mut a, b| {
                a.extend(b?);
                Some(a)
            }),
        _ => None,
    }
}

/// Events that AWS services make on their own behalf: the `awsservice` fact.
pub const SERVICE_EVENT_SQL: &str = "awsservice";

/// A rule's full expression, with its service-event exclusion and its guard.
pub fn rule_sql(r: &Rule) -> String {
    let mut full = cond_sql(&r.cond);
    if !r.service_events {
        full = format!("(NOT {SERVICE_EVENT_SQL}) AND {full}");
    }
    match guard_sql(&r.cond) {
        Some(g) if !r.cond.columns_only() => {
            format!("CASE WHEN {g} THEN {full} ELSE false END")
        }
        _ => full,
    }
}

/// The `WHERE` clause that lets through every event some rule could match.
pub fn prefilter_sql(rules: &[&Rule]) -> String {
    let mut parts = Vec::new();
    for r in rules {
        match guard_sql(&r.cond) {
            Some(g) => parts.push(g),
            None => return "true".to_owned(),
        }
    }
    join(parts, "OR", "false")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_of_a_rule() {
        let r = Rule::parse(
            r#"
id: t-sql
title: t
severity: low
category: recon
match:
  eventName: [A, "B'c"]
  userAgent|contains|nocase: Kali
  requestParameters.userName|exists: true
"#,
            "t.yaml",
        )
        .expect("rule");
        let sql = rule_sql(&r);
        assert!(sql.starts_with("CASE WHEN (coalesce(eventname IN ('A', 'B''c'), false) AND coalesce(strpos(lower(useragent), 'kali') > 0, false)) THEN"), "{sql}");
        assert!(sql.contains("keytrail_json_match(requestparameters, '{\"test\":{\"path\":[\"userName\"],\"op\":\"exists\",\"arg\":true}}'"), "{sql}");
        assert_eq!(
            column_sql(&[
                "useridentity".into(),
                "sessioncontext".into(),
                "ec2roledelivery".into()
            ]),
            "get_field(get_field(useridentity, 'sessioncontext'), 'ec2roledelivery')"
        );
    }

    fn names_of(matches: &str) -> Option<Vec<String>> {
        let r = Rule::parse(
            &format!("id: t-n\ntitle: t\nseverity: low\ncategory: recon\nmatch:\n{matches}"),
            "t.yaml",
        )
        .expect("rule");
        event_names(&r.cond).map(|s| s.into_iter().collect())
    }

    #[test]
    fn the_event_names_a_rule_can_only_hold_on() {
        assert_eq!(
            names_of("  eventName: [CreateUser, DeleteUser]\n  errorCode|exists: false\n"),
            Some(vec!["createuser".to_owned(), "deleteuser".to_owned()])
        );
        // Either branch names its calls: the union.
        assert_eq!(
            names_of("  any:\n    - eventName: A\n    - {eventName: B, userAgent: x}\n"),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        // A branch that holds on any call: any call.
        assert_eq!(
            names_of("  any:\n    - eventName: A\n    - userAgent: x\n"),
            None
        );
        // Both must hold: the calls both allow.
        assert_eq!(
            names_of("  all:\n    - eventName: [A, B]\n    - eventName: [b, C]\n"),
            Some(vec!["b".to_owned()])
        );
        assert_eq!(names_of("  not:\n    eventName: A\n"), None);
        assert_eq!(names_of("  eventName|startswith: Delete\n"), None);
    }

    #[test]
    fn a_long_list_is_a_balanced_tree() {
        let parts = |n: usize| (0..n).map(|i| format!("c{i}")).collect::<Vec<_>>();
        assert_eq!(join(parts(3), "OR", "false"), "(c0 OR c1 OR c2)");
        let long = join(parts(20), "OR", "false");
        assert_eq!(
            long,
            "(((c0 OR c1 OR c2 OR c3 OR c4) OR (c5 OR c6 OR c7 OR c8 OR c9)) OR ((c10 OR c11 OR c12 OR c13 OR c14) OR (c15 OR c16 OR c17 OR c18 OR c19)))"
        );
        // Nesting depth grows with log(n), not n.
        let deep = join(parts(1000), "OR", "false");
        let mut depth = 0i32;
        let mut max = 0;
        for ch in deep.chars() {
            depth += match ch {
                '(' => 1,
                ')' => -1,
                _ => 0,
            };
            max = max.max(depth);
        }
        assert!(max <= 8, "depth {max}");
    }
}
