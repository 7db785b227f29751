//! One scan of `events` that evaluates every rule, and the rows it returns.

use std::sync::Arc;

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_plan::PhysicalExpr;
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use super::DetectError;
use super::compile::{ACCOUNT_SQL, event_names, field_text_sql, prefilter_sql, quote, rule_sql};
use keytrail_rules::rule::{FieldRef, Rule};

/// What every finding says about an event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventInfo {
    pub time: i64,
    pub id: String,
    pub key: Option<String>,
    pub principal: Option<String>,
    pub account: Option<String>,
    pub source_ip: Option<String>,
    pub error: Option<String>,
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
    let col = text_column(b, name)?;
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

/// The SQL of the scan's rows: what every finding says about an event, the rules' `show`
/// fields, and the `columns` the rules test, for the events some rule could match.
pub fn scan_sql(
    rules: &[&Rule],
    columns: &[String],
    table: &str,
    window: &str,
) -> (String, Vec<FieldRef>) {
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
        format!("{ACCOUNT_SQL} AS kt_account"),
        "sourceipaddress AS kt_ip".to_owned(),
        "errorcode AS kt_error".to_owned(),
        "eventname AS kt_name".to_owned(),
    ];
    for (i, f) in shows.iter().enumerate() {
        cols.push(format!("{} AS kt_show_{i}", field_text_sql(f)));
    }
    for c in columns {
        cols.push(format!("\"{}\"", c.replace('"', "\"\"")));
    }
    let sql = format!(
        "SELECT {} FROM {table} WHERE {window} AND {}",
        cols.join(",\n  "),
        prefilter_sql(rules)
    );
    (sql, shows)
}

/// The rules compiled against the scan's rows, and which rows each must see.
struct Compiled {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// Rules that can only hold on some event names, grouped by that set of names: the
    /// group's rules are evaluated on the rows with one of those names only.
    groups: Vec<Vec<usize>>,
    /// Lower-case event name → the groups that name lets in.
    by_name: HashMap<String, Vec<usize>>,
    /// Rules that can hold on any event name: evaluated on every row of the scan.
    general: Vec<usize>,
    /// Each rule's `show` fields: (label, index of the scan's `kt_show_` column).
    shows: Vec<Vec<(String, usize)>>,
    /// How many `kt_show_` columns the scan has.
    show_columns: usize,
}

/// Evaluate `rules` over `table` in one scan; return every (rule, event) match.
///
/// The lake is read once (only the columns some rule tests, only the events some rule could
/// match, every partition in parallel) and nothing but the matches is kept. Most rules name
/// the calls they are about: those are evaluated only on the rows of those calls, so the cost
/// is the events read plus the candidate rows, not events × rules.
pub async fn scan(
    ctx: &SessionContext,
    rules: &[&Rule],
    table: &str,
    window: &str,
) -> Result<Vec<Hit>, DetectError> {
    if rules.is_empty() {
        return Ok(Vec::new());
    }
    let engine = keytrail_engine::EngineError::from;
    // The columns the rules test, from their expressions over the table.
    let table_schema = ctx.table(table).await.map_err(engine)?.schema().clone();
    let mut columns = std::collections::BTreeSet::new();
    let rule_sqls: Vec<String> = rules.iter().map(|r| rule_sql(r)).collect();
    for sql in &rule_sqls {
        let expr = ctx.parse_sql_expr(sql, &table_schema).map_err(engine)?;
        columns.extend(expr.column_refs().into_iter().map(|c| c.name.clone()));
    }
    let columns: Vec<String> = columns.into_iter().collect();
    let (sql, shows) = scan_sql(rules, &columns, table, window);
    let df = ctx.sql(&sql).await.map_err(engine)?;
    let schema = df.schema().clone();
    // As the planner would: coerced and simplified (DataFusion runs `coalesce` as a `CASE`
    // it writes while simplifying), then planned.
    let simplifier = ExprSimplifier::new(
        SimplifyContext::builder()
            .with_schema(Arc::new(schema.clone()))
            .with_config_options(Arc::clone(ctx.state().config_options()))
            .build(),
    );
    let mut exprs = Vec::with_capacity(rules.len());
    for sql in &rule_sqls {
        let expr = ctx.parse_sql_expr(sql, &schema).map_err(engine)?;
        let expr = simplifier
            .coerce(expr, &schema)
            .and_then(|e| simplifier.simplify(e))
            .map_err(engine)?;
        exprs.push(ctx.create_physical_expr(expr, &schema).map_err(engine)?);
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut sets: HashMap<Vec<String>, usize> = HashMap::new();
    let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
    let mut general = Vec::new();
    for (ri, r) in rules.iter().enumerate() {
        match event_names(&r.cond) {
            Some(names) => {
                let names: Vec<String> = names.into_iter().collect();
                let next = groups.len();
                let g = *sets.entry(names.clone()).or_insert(next);
                if g == next {
                    groups.push(Vec::new());
                    for n in names {
                        by_name.entry(n).or_default().push(g);
                    }
                }
                groups[g].push(ri);
            }
            None => general.push(ri),
        }
    }
    tracing::debug!(
        rules = rules.len(),
        by_call = rules.len() - general.len(),
        on_every_row = general.len(),
        "rules evaluated on the rows of the calls they name, and on every row"
    );
    let compiled = Arc::new(Compiled {
        exprs,
        groups,
        by_name,
        general,
        shows: rules
            .iter()
            .map(|r| {
                r.show
                    .iter()
                    .map(|(label, f)| {
                        (
                            label.clone(),
                            shows.iter().position(|s| s == f).unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .collect(),
        show_columns: shows.len(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for mut stream in df.execute_stream_partitioned().await.map_err(engine)? {
        let compiled = Arc::clone(&compiled);
        tasks.spawn(async move {
            let mut hits = Vec::new();
            while let Some(b) = stream.next().await {
                let b = b.map_err(engine)?;
                hits_of(&compiled, &b, &mut hits)?;
            }
            Ok::<_, DetectError>(hits)
        });
    }
    let mut hits = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let part = done.map_err(|e| DetectError::Internal(format!("a scan task failed: {e}")))?;
        hits.extend(part?);
    }
    hits.sort_by(|a, b| {
        (a.event.time, &a.event.id, a.rule).cmp(&(b.event.time, &b.event.id, b.rule))
    });
    Ok(hits)
}

/// The rows of `b` where the rule `expr` holds.
fn rows_where(expr: &Arc<dyn PhysicalExpr>, b: &RecordBatch) -> Result<Vec<usize>, DetectError> {
    let engine = keytrail_engine::EngineError::from;
    let v = expr
        .evaluate(b)
        .and_then(|v| v.into_array(b.num_rows()))
        .map_err(engine)?;
    let Some(flags) = v.as_any().downcast_ref::<BooleanArray>() else {
        return Err(DetectError::Internal(
            "a rule did not compile to a boolean".into(),
        ));
    };
    if flags.true_count() == 0 {
        return Ok(Vec::new());
    }
    Ok(flags
        .values()
        .set_indices()
        .filter(|&row| flags.is_valid(row))
        .collect())
}

/// The matches of one batch of the scan, appended to `hits`.
fn hits_of(c: &Compiled, b: &RecordBatch, hits: &mut Vec<Hit>) -> Result<(), DetectError> {
    // (rule, row) of every match in the batch.
    let mut matched: Vec<(usize, usize)> = Vec::new();
    for &ri in &c.general {
        matched.extend(
            rows_where(&c.exprs[ri], b)?
                .into_iter()
                .map(|row| (ri, row)),
        );
    }
    if !c.groups.is_empty() {
        let names = text_column(b, "kt_name")?;
        let names = names.as_string::<i32>();
        let mut rows: Vec<Vec<u32>> = vec![Vec::new(); c.groups.len()];
        let mut seen: HashMap<&str, Option<&Vec<usize>>> = HashMap::new();
        for row in 0..names.len() {
            if !names.is_valid(row) {
                continue;
            }
            let name = names.value(row);
            let gs = *seen
                .entry(name)
                .or_insert_with(|| c.by_name.get(&name.to_lowercase()));
            for &g in gs.into_iter().flatten() {
                rows[g].push(row as u32);
            }
        }
        for (g, idx) in rows.into_iter().enumerate() {
            if idx.is_empty() {
                continue;
            }
            let idx = arrow::array::UInt32Array::from(idx);
            let sub = arrow::compute::take_record_batch(b, &idx)?;
            for &ri in &c.groups[g] {
                let rows = rows_where(&c.exprs[ri], &sub)?;
                matched.extend(rows.into_iter().map(|j| (ri, idx.value(j) as usize)));
            }
        }
    }
    if matched.is_empty() {
        return Ok(());
    }
    let times = millis(b, "kt_time")?;
    let col = |name: &str| text_column(b, name);
    let (id, key, principal) = (col("kt_id")?, col("kt_key")?, col("kt_principal")?);
    let (account, ip, error) = (col("kt_account")?, col("kt_ip")?, col("kt_error")?);
    let shows: Vec<ArrayRef> = (0..c.show_columns)
        .map(|i| col(&format!("kt_show_{i}")))
        .collect::<Result<_, _>>()?;
    let text = |a: &ArrayRef, row: usize| {
        let s = a.as_string::<i32>();
        s.is_valid(row).then(|| s.value(row).to_owned())
    };
    for (ri, row) in matched {
        hits.push(Hit {
            rule: ri,
            event: EventInfo {
                time: times[row],
                id: text(&id, row).unwrap_or_default(),
                key: text(&key, row),
                principal: text(&principal, row),
                account: text(&account, row),
                source_ip: text(&ip, row),
                error: text(&error, row),
            },
            shown: c.shows[ri]
                .iter()
                .map(|(label, i)| (label.clone(), text(&shows[*i], row)))
                .collect(),
        });
    }
    Ok(())
}

/// A column of a batch (any string type) as `Utf8`, by name.
fn text_column(b: &RecordBatch, name: &str) -> Result<ArrayRef, DetectError> {
    let col = b
        .column_by_name(name)
        .ok_or_else(|| DetectError::Internal(format!("no column {name} in the result")))?;
    Ok(if col.data_type() == &DataType::Utf8 {
        Arc::clone(col)
    } else {
        arrow::compute::cast(col, &DataType::Utf8)?
    })
}
