//! `keytrail rules lint`: what parsing does not catch. Errors make a rule unusable or
//! untested; warnings make it slow or hard to find.

use serde::Serialize;

use super::compile::guard_sql;
use super::fixture::{batch_of, complete};
use keytrail_rules::rule::{CATEGORIES, Rule, RuleFormat};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Warning,
    Error,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Issue {
    pub level: Level,
    /// The rule's id, or the file when it could not be parsed.
    pub rule: String,
    pub origin: String,
    pub message: String,
}

/// Check one parsed rule.
pub fn lint(r: &Rule) -> Vec<Issue> {
    let mut out = Vec::new();
    let mut say = |level, message: String| {
        out.push(Issue {
            level,
            rule: r.id.clone(),
            origin: r.origin.clone(),
            message,
        })
    };
    let sigma = r.format == RuleFormat::Sigma;
    // A Sigma rule from another suite has no test events: that is worth a warning, not a
    // refusal.
    let untested = if sigma { Level::Warning } else { Level::Error };
    if r.tests.positive.is_empty() {
        say(untested, "no positive test event (tests.positive)".into());
    }
    if r.tests.negative.is_empty() {
        say(untested, "no negative test event (tests.negative)".into());
    }
    for (kind, list) in [
        ("positive", &r.tests.positive),
        ("negative", &r.tests.negative),
    ] {
        for (i, v) in list.iter().enumerate() {
            if !v.is_object() {
                say(
                    Level::Error,
                    format!("tests.{kind}[{i}] is not a mapping of CloudTrail fields"),
                );
                continue;
            }
            let e = complete(v, "lint");
            if let Err(err) = batch_of(&[(format!("tests.{kind}[{i}]"), e)]) {
                say(Level::Error, err.to_string());
            }
        }
    }
    if r.description.is_empty() {
        say(
            Level::Warning,
            "no description: say what the rule finds and why it matters".into(),
        );
    }
    if r.title.chars().count() > 80 {
        say(Level::Warning, "title longer than 80 characters".into());
    }
    if guard_sql(&r.cond).is_none() {
        say(
            Level::Warning,
            "no test on a plain column (eventSource, eventName, ...): every event's JSON is parsed to evaluate it".into(),
        );
    }
    let path = r.origin.replace('\\', "/");
    let mut parts = path.rsplit('/');
    let file = parts.next().unwrap_or_default();
    let dir = parts.next().unwrap_or_default();
    let stem = file
        .strip_suffix(".yaml")
        .or_else(|| file.strip_suffix(".yml"))
        .unwrap_or(file);
    if !sigma && stem != r.id {
        say(
            Level::Warning,
            format!("file name `{file}` differs from the id `{}`", r.id),
        );
    }
    if !sigma && CATEGORIES.contains(&dir) && dir != r.category {
        say(
            Level::Error,
            format!("category `{}` differs from its folder `{dir}`", r.category),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint_finds_missing_tests_and_misplaced_files() {
        let text = "id: t-lint\ntitle: t\nseverity: low\ncategory: recon\nmatch: {requestParameters.x: y}\ntests:\n  positive:\n    - [not, a, record]\n";
        let r = Rule::parse(text, "rules/ec2/other-name.yaml").expect("rule");
        let got: Vec<(Level, String)> =
            lint(&r).into_iter().map(|i| (i.level, i.message)).collect();
        assert_eq!(
            got,
            vec![
                (Level::Error, "no negative test event (tests.negative)".to_owned()),
                (Level::Error, "tests.positive[0] is not a mapping of CloudTrail fields".to_owned()),
                (Level::Warning, "no description: say what the rule finds and why it matters".to_owned()),
                (Level::Warning, "no test on a plain column (eventSource, eventName, ...): every event's JSON is parsed to evaluate it".to_owned()),
                (Level::Warning, "file name `other-name.yaml` differs from the id `t-lint`".to_owned()),
                (Level::Error, "category `recon` differs from its folder `ec2`".to_owned()),
            ]
        );
    }
}
