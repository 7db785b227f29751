//! Every bundled rule loads, lints clean and passes its fixture events.

use keytrail_query::detect::{CATEGORIES, RuleSet, lint, test_rules};

#[test]
fn every_bundled_rule_passes_its_fixtures() {
    let set = RuleSet::bundled().expect("bundled rules load");
    assert!(set.rules.len() >= 30, "only {} rules", set.rules.len());
    let results = test_rules(&set, 2).expect("fixtures run");
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| format!("{} {}[{}]: {}", r.rule, r.kind, r.index, r.message))
        .collect();
    assert!(
        failed.is_empty(),
        "failing fixtures:\n{}",
        failed.join("\n")
    );
    for r in &set.rules {
        assert!(
            results
                .iter()
                .any(|x| x.rule == r.id && x.kind == "positive"),
            "{} has no positive fixture",
            r.id
        );
        assert!(
            results
                .iter()
                .any(|x| x.rule == r.id && x.kind == "negative"),
            "{} has no negative fixture",
            r.id
        );
    }
}

#[test]
fn every_bundled_rule_lints_clean() {
    let set = RuleSet::bundled().expect("bundled rules load");
    let issues: Vec<String> = set
        .rules
        .iter()
        .flat_map(lint::lint)
        .map(|i| format!("{} ({}): {}", i.rule, i.origin, i.message))
        .collect();
    assert!(issues.is_empty(), "{}", issues.join("\n"));
}

#[test]
fn every_category_has_rules() {
    let set = RuleSet::bundled().expect("bundled rules load");
    for c in CATEGORIES {
        assert!(
            set.rules.iter().any(|r| r.category == c),
            "no rule in category {c}"
        );
    }
}
