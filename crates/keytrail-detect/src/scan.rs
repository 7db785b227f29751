//! One scan of `events` that evaluates every rule, and the rows it returns.

use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::prelude::SessionContext;

use super::DetectError;
use super::compile::{ACCOUNT_SQL, field_text_sql, prefilter_sql, quote, rule_sql};
use super::rule::{FieldRef, Rule};

/// What every finding says about an event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventInfo {
    pub time: i64,
    pub id: String,
    pub key: Option<String>,
    pub principal: Option<String>,
    pub identity_type: Option<String>,
    pub account: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub region: Option<String>,
    pub error: Option<String>,
    pub source: Option<String>,
    pub name: Option<String>,
}

/// A rule matched an event.
#[derive(Clone, Debug)]
pub struct Hit {
    pub rule: usize,
    pub event: EventInfo,
    /// The rule's `show` fields, in its order.
    pub shown: Vec<(String, Option<String>)>,
}

/// Register keytrail's functions (and the JSON functions) in a session.
pub fn register(ctx: &mut SessionContext) -> Result<(), DetectError> {
    if !ctx.state().scalar_functions().contains_key("json_get_str") {
        datafusion_functions_json::register_all(ctx).map_err(keytrail_engine::EngineError::from)?;
    }
    for f in super::eval::functions() {
        ctx.register_udf(f);
    }
    Ok(())
}

/// A time window on `eventtime` as SQL, plus partition pruning on `date` when the table has it.
pub fn window_sql(since: Option<i64>, until: Option<i64>, partitioned: bool) -> String {
    let mut parts = vec!["true".to_owned()];
    if let Some(s) = since {
        parts.push(format!("eventtime >= to_timestamp_millis({s})"));
        if partitioned {
            parts.push(format!(
                "date >= DATE {}",
                quote(&keytrail_model::time::day_string(
                    keytrail_model::time::day_of(s)
                ))
            ));
        }
    }
    if let Some(u) = until {
        parts.push(format!("eventtime < to_timestamp_millis({u})"));
        if partitioned {
            parts.push(format!(
                "date <= DATE {}",
                quote(&keytrail_model::time::day_string(
                    keytrail_model::time::day_of(u - 1)
                ))
            ));
        }
    }
    parts.join(" AND ")
}

/// Text of a column of a batch (any string type), by name.
pub fn texts(b: &RecordBatch, name: &str) -> Result<Vec<Option<String>>, DetectError> {
    let col = b
        .column_by_name(name)
        .ok_or_else(|| DetectError::Internal(format!("no column {name} in the result")))?;
    let col = if col.data_type() == &DataType::Utf8 {
        Arc::clone(col)
    } else {
        arrow::compute::cast(col, &DataType::Utf8)?
    };
    let s = col.as_string::<i32>();
    Ok((0..s.len())
        .map(|i| s.is_valid(i).then(|| s.value(i).to_owned()))
        .collect())
}

/// Milliseconds of a timestamp column.
pub fn millis(b: &RecordBatch, name: &str) -> Result<Vec<i64>, DetectError> {
    let col = b
        .column_by_name(name)
        .ok_or_else(|| DetectError::Internal(format!("no column {name} in the result")))?;
    let col = arrow::compute::cast(col, &DataType::Int64)?;
    let a = col.as_primitive::<Int64Type>();
    Ok((0..a.len())
        .map(|i| if a.is_valid(i) { a.value(i) } else { 0 })
        .collect())
}

/// The SQL of the scan.
pub fn scan_sql(rules: &[&Rule], table: &str, window: &str) -> (String, Vec<FieldRef>) {
    let mut shows: Vec<FieldRef> = Vec::new();
    for r in rules {
        for (_, f) in &r.show {
            if !shows.contains(f) {
                shows.push(f.clone());
            }
        }
    }
    let mut cols = vec![
        "eventtime AS kt_time".to_owned(),
        "eventid AS kt_id".to_owned(),
        "accesskeyid AS kt_key".to_owned(),
        "coalesce(get_field(useridentity, 'arn'), get_field(useridentity, 'principalid'), get_field(useridentity, 'invokedby')) AS kt_principal".to_owned(),
        "get_field(useridentity, 'type') AS kt_itype".to_owned(),
        format!("{ACCOUNT_SQL} AS kt_account"),
        "sourceipaddress AS kt_ip".to_owned(),
        "useragent AS kt_agent".to_owned(),
        "awsregion AS kt_region".to_owned(),
        "errorcode AS kt_error".to_owned(),
        "eventsource AS kt_source".to_owned(),
        "eventname AS kt_name".to_owned(),
    ];
    for (i, f) in shows.iter().enumerate() {
        cols.push(format!("{} AS kt_show_{i}", field_text_sql(f)));
    }
    for (i, r) in rules.iter().enumerate() {
        cols.push(format!("{} AS kt_rule_{i}", rule_sql(r)));
    }
    let sql = format!(
        "SELECT {} FROM {table} WHERE {window} AND {}",
        cols.join(",\n  "),
        prefilter_sql(rules)
    );
    (sql, shows)
}

/// Evaluate `rules` over `table` in one scan; return every (rule, event) match.
pub async fn scan(
    ctx: &SessionContext,
    rules: &[&Rule],
    table: &str,
    window: &str,
) -> Result<Vec<Hit>, DetectError> {
    if rules.is_empty() {
        return Ok(Vec::new());
    }
    let (sql, shows) = scan_sql(rules, table, window);
    let batches = ctx
        .sql(&sql)
        .await
        .map_err(keytrail_engine::EngineError::from)?
        .collect()
        .await
        .map_err(keytrail_engine::EngineError::from)?;
    let mut hits = Vec::new();
    for b in &batches {
        let times = millis(b, "kt_time")?;
        let t = |name| texts(b, name);
        let (ids, keys, principals, itypes, accounts) = (
            t("kt_id")?,
            t("kt_key")?,
            t("kt_principal")?,
            t("kt_itype")?,
            t("kt_account")?,
        );
        let (ips, agents, regions, errors, sources, names) = (
            t("kt_ip")?,
            t("kt_agent")?,
            t("kt_region")?,
            t("kt_error")?,
            t("kt_source")?,
            t("kt_name")?,
        );
        let show_cols: Vec<Vec<Option<String>>> = (0..shows.len())
            .map(|i| texts(b, &format!("kt_show_{i}")))
            .collect::<Result<_, _>>()?;
        for (ri, r) in rules.iter().enumerate() {
            let col = b
                .column_by_name(&format!("kt_rule_{ri}"))
                .ok_or_else(|| DetectError::Internal("missing rule column".into()))?;
            let Some(flags) = col.as_any().downcast_ref::<BooleanArray>() else {
                return Err(DetectError::Internal(format!(
                    "rule {} did not compile to a boolean",
                    r.id
                )));
            };
            if flags.true_count() == 0 {
                continue;
            }
            // The rows where the rule holds (most rules hold on few rows).
            for row in flags.values().set_indices() {
                if !flags.is_valid(row) {
                    continue;
                }
                let event = EventInfo {
                    time: times[row],
                    id: ids[row].clone().unwrap_or_default(),
                    key: keys[row].clone(),
                    principal: principals[row].clone(),
                    identity_type: itypes[row].clone(),
                    account: accounts[row].clone(),
                    source_ip: ips[row].clone(),
                    user_agent: agents[row].clone(),
                    region: regions[row].clone(),
                    error: errors[row].clone(),
                    source: sources[row].clone(),
                    name: names[row].clone(),
                };
                let shown = r
                    .show
                    .iter()
                    .map(|(label, f)| {
                        let i = shows.iter().position(|s| s == f).unwrap_or(0);
                        (label.clone(), show_cols[i][row].clone())
                    })
                    .collect();
                hits.push(Hit {
                    rule: ri,
                    event,
                    shown,
                });
            }
        }
    }
    hits.sort_by(|a, b| {
        (a.event.time, &a.event.id, a.rule).cmp(&(b.event.time, &b.event.id, b.rule))
    });
    Ok(hits)
}
