//! Every bundled rule loads, lints clean and passes its fixture events.

use keytrail_detect::{CATEGORIES, RuleSet, lint, test_rules};

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

mod service_events {
    use keytrail_detect::fixture::{batch_of, complete, session_with};
    use keytrail_detect::{DetectOptions, Rule, RuleSet, Severity, block_on, detect_in};
    use serde_json::{Value, json};

    fn stop_logging(id: &str, identity: Value) -> (String, Value) {
        (
            id.to_owned(),
            complete(
                &json!({"eventSource": "cloudtrail.amazonaws.com", "eventName": "StopLogging",
                        "requestParameters": {"name": "t"}, "userIdentity": identity}),
                id,
            ),
        )
    }

    fn found(rules: RuleSet) -> Vec<String> {
        let records = vec![
            stop_logging(
                "by-user",
                json!({"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/u", "accountId": "111122223333", "accessKeyId": "AKIAFIXTUREKEY000001"}),
            ),
            stop_logging(
                "by-service",
                json!({"type": "AWSService", "invokedBy": "cloudformation.amazonaws.com"}),
            ),
            stop_logging(
                "invoked-by",
                json!({"type": "AssumedRole", "arn": "arn:aws:sts::111122223333:assumed-role/deployer/s", "accountId": "111122223333", "accessKeyId": "ASIAFIXTUREKEY000002", "invokedBy": "cloudformation.amazonaws.com"}),
            ),
            stop_logging(
                "service-linked",
                json!({"type": "AssumedRole", "arn": "arn:aws:sts::111122223333:assumed-role/AWSServiceRoleForConfig/s", "accountId": "111122223333", "accessKeyId": "ASIAFIXTUREKEY000003",
                       "sessionContext": {"sessionIssuer": {"type": "Role", "arn": "arn:aws:iam::111122223333:role/aws-service-role/config.amazonaws.com/AWSServiceRoleForConfig"}}}),
            ),
        ];
        let batch = batch_of(&records).expect("records");
        let mut ctx = session_with(batch, 1).expect("session");
        let opts = DetectOptions {
            rules,
            detectors: false,
            min_severity: Severity::Info,
            threads: 1,
            ..DetectOptions::default()
        };
        let report =
            block_on(1, async move { detect_in(&mut ctx, true, &opts).await }).expect("detect");
        let mut ids: Vec<String> = report
            .findings
            .iter()
            .flat_map(|f| f.events.clone())
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn aws_services_own_events_match_only_rules_that_ask_for_them() {
        let bundled = RuleSet::bundled().expect("rules");
        let stop = bundled.get("cloudtrail-stopped").expect("rule").clone();
        assert_eq!(
            found(RuleSet {
                rules: vec![stop.clone()],
                ..RuleSet::default()
            }),
            vec!["by-user"]
        );
        let text = "id: any-stop\ntitle: t\nseverity: low\ncategory: logging-tampering\nservice_events: true\nmatch: {eventName: StopLogging}\n";
        let all = Rule::parse(text, "any-stop.yaml").expect("rule");
        assert_eq!(
            found(RuleSet {
                rules: vec![all],
                ..RuleSet::default()
            }),
            vec!["by-service", "by-user", "invoked-by", "service-linked"]
        );
    }
}
