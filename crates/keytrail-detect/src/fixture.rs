//! Rule fixtures: every rule carries positive events (each must match) and negative events
//! (none may match). They are decoded by the same code that ingests CloudTrail, put into an
//! in-memory `events` table, and evaluated by the same SQL as a lake, so a passing fixture
//! proves the rule as it runs.

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use keytrail_model::{EventBatchBuilder, Table, decode_event};
use serde::Serialize;
use serde_json::{Value, json};

use super::DetectError;
use super::scan::{register, scan};
use keytrail_rules::rule::Rule;

/// The account, key and identity fixture events get when they do not say.
pub const FIXTURE_ACCOUNT: &str = "111122223333";

/// Complete a fixture event with what a CloudTrail record always has.
pub fn complete(v: &Value, id: &str) -> Value {
    let mut e = v.clone();
    let Some(m) = e.as_object_mut() else {
        return e;
    };
    let defaults = [
        ("eventVersion", json!("1.08")),
        (
            "userIdentity",
            json!({"type": "IAMUser", "principalId": "AIDAFIXTUREUSER00001", "arn": format!("arn:aws:iam::{FIXTURE_ACCOUNT}:user/fixture"), "accountId": FIXTURE_ACCOUNT, "accessKeyId": "AKIAFIXTUREKEY000001", "userName": "fixture"}),
        ),
        ("eventTime", json!("2024-11-30T12:00:00Z")),
        ("awsRegion", json!("us-east-1")),
        ("sourceIPAddress", json!("203.0.113.5")),
        (
            "userAgent",
            json!("aws-cli/2.15.30 Python/3.11.8 Linux/6.1 exe/x86_64.amzn.2023"),
        ),
        ("eventID", json!(id)),
        ("eventType", json!("AwsApiCall")),
        ("recipientAccountId", json!(FIXTURE_ACCOUNT)),
    ];
    for (k, d) in defaults {
        if !m.contains_key(k) {
            m.insert(k.to_owned(), d);
        }
    }
    e
}

/// Decode CloudTrail records into an `events` batch (with a `date` column, as the lake has).
pub fn batch_of(records: &[(String, Value)]) -> Result<RecordBatch, DetectError> {
    let mut b = EventBatchBuilder::new(Table::Events);
    let texts: Vec<String> = records.iter().map(|(_, v)| v.to_string()).collect();
    for ((label, _), text) in records.iter().zip(&texts) {
        let e = decode_event(text).map_err(|e| DetectError::Fixture {
            rule: label.clone(),
            reason: e.to_string(),
        })?;
        b.append(&e, label);
    }
    let batch = b.finish()?;
    with_date(batch)
}

fn with_date(batch: RecordBatch) -> Result<RecordBatch, DetectError> {
    let times = super::scan::millis(&batch, "eventtime")?;
    let days: arrow::array::Date32Array = times
        .iter()
        .map(|t| Some(keytrail_model::time::day_of(*t)))
        .collect();
    let mut fields: Vec<_> = batch.schema().fields().iter().cloned().collect();
    fields.push(Arc::new(arrow::datatypes::Field::new(
        "date",
        arrow::datatypes::DataType::Date32,
        true,
    )));
    let mut cols = batch.columns().to_vec();
    cols.push(Arc::new(days));
    Ok(RecordBatch::try_new(
        Arc::new(arrow::datatypes::Schema::new(fields)),
        cols,
    )?)
}

/// A session whose `events` table holds `batch`.
pub fn session_with(batch: RecordBatch, threads: usize) -> Result<SessionContext, DetectError> {
    let config = datafusion::prelude::SessionConfig::new().with_target_partitions(threads.max(1));
    let mut ctx = SessionContext::new_with_config(config);
    register(&mut ctx)?;
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]])
        .map_err(keytrail_engine::EngineError::from)?;
    ctx.register_table("events", Arc::new(table))
        .map_err(keytrail_engine::EngineError::from)?;
    Ok(ctx)
}

/// The outcome of one fixture event.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FixtureResult {
    pub rule: String,
    /// `positive` or `negative`.
    pub kind: &'static str,
    pub index: usize,
    pub passed: bool,
    pub message: String,
}

/// Run every fixture of `rule`.
pub async fn test_rule(rule: &Rule, threads: usize) -> Result<Vec<FixtureResult>, DetectError> {
    let mut records = Vec::new();
    for (kind, list) in [
        ("positive", &rule.tests.positive),
        ("negative", &rule.tests.negative),
    ] {
        for (i, v) in list.iter().enumerate() {
            let id = format!("{kind}-{i}");
            records.push((format!("{}:{id}", rule.id), complete(v, &id)));
        }
    }
    let mut out = Vec::new();
    if rule.format == keytrail_rules::RuleFormat::Sigma && records.is_empty() {
        // A Sigma rule without test events (another suite's): nothing to run; `rules lint`
        // warns about it.
        return Ok(out);
    }
    if rule.tests.positive.is_empty() {
        out.push(FixtureResult {
            rule: rule.id.clone(),
            kind: "positive",
            index: 0,
            passed: false,
            message: "the rule has no positive test event".into(),
        });
    }
    if rule.tests.negative.is_empty() {
        out.push(FixtureResult {
            rule: rule.id.clone(),
            kind: "negative",
            index: 0,
            passed: false,
            message: "the rule has no negative test event".into(),
        });
    }
    if records.is_empty() {
        return Ok(out);
    }
    let batch = batch_of(&records)?;
    let ctx = session_with(batch, threads)?;
    let hits = scan(&ctx, &[rule], "events", "true").await?;
    let matched: std::collections::BTreeSet<&str> =
        hits.iter().map(|h| h.event.id.as_str()).collect();
    for (kind, list) in [
        ("positive", &rule.tests.positive),
        ("negative", &rule.tests.negative),
    ] {
        for i in 0..list.len() {
            let id = format!("{kind}-{i}");
            let hit = matched.contains(id.as_str());
            let passed = hit == (kind == "positive");
            out.push(FixtureResult {
                rule: rule.id.clone(),
                kind,
                index: i,
                passed,
                message: match (kind, passed) {
                    (_, true) => "ok".into(),
                    ("positive", false) => "did not match".into(),
                    _ => "matched, but must not".into(),
                },
            });
        }
    }
    Ok(out)
}
