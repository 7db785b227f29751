//! Detection results as text: findings, then keys ranked by risk. Table, CSV and Markdown
//! come from the same record batches as every other keytrail output; JSON is the whole
//! report as one document.

use std::io::Write;
use std::sync::Arc;

use keytrail_detect::{DetectReport, Finding, KeyRisk, Listed};
use keytrail_engine::arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use keytrail_engine::arrow::datatypes::{Field, Schema, SchemaRef};

use super::Format;

fn strings(v: Vec<Option<String>>) -> ArrayRef {
    Arc::new(StringArray::from(v))
}

fn batch(names: &[&str], cols: Vec<ArrayRef>) -> anyhow::Result<(SchemaRef, RecordBatch)> {
    let fields: Vec<Field> = names
        .iter()
        .zip(&cols)
        .map(|(n, c)| Field::new(*n, c.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let b = RecordBatch::try_new(Arc::clone(&schema), cols)?;
    Ok((schema, b))
}

fn t(ms: i64) -> String {
    keytrail_model::time::format_millis(ms)
}

/// Evidence as text; a table shows the first three IDs and how many more there are.
fn evidence(f: &Finding, short: bool) -> String {
    if short && f.events.len() > 3 {
        format!("{} (+{})", f.events[..3].join(" "), f.events.len() - 3)
    } else {
        f.events.join(" ")
    }
}

/// The findings as one record batch.
pub fn findings_batch(
    findings: &[Finding],
    short: bool,
) -> anyhow::Result<(SchemaRef, RecordBatch)> {
    let col = |f: &dyn Fn(&Finding) -> Option<String>| strings(findings.iter().map(f).collect());
    batch(
        &[
            "time",
            "severity",
            "rule",
            "category",
            "key",
            "principal",
            "source_ip",
            "reason",
            "events",
            "tags",
        ],
        vec![
            col(&|f| Some(t(f.time))),
            col(&|f| Some(f.severity.to_string())),
            col(&|f| Some(f.rule.clone())),
            col(&|f| Some(f.category.clone())),
            col(&|f| f.key.clone()),
            col(&|f| f.principal.clone()),
            col(&|f| f.source_ip.clone()),
            col(&|f| Some(f.reason.clone())),
            col(&|f| Some(evidence(f, short))),
            col(&|f| Some(f.tags.join(" "))),
        ],
    )
}

/// Keys ranked by risk as one record batch.
pub fn keys_batch(keys: &[KeyRisk]) -> anyhow::Result<(SchemaRef, RecordBatch)> {
    let col = |f: &dyn Fn(&KeyRisk) -> Option<String>| strings(keys.iter().map(f).collect());
    batch(
        &[
            "rank",
            "key",
            "principal",
            "max_severity",
            "score",
            "findings",
            "first",
            "last",
            "rules",
        ],
        vec![
            Arc::new(UInt64Array::from_iter_values(1..=keys.len() as u64)),
            col(&|k| k.key.clone()),
            col(&|k| k.principal.clone()),
            col(&|k| Some(k.max_severity.to_string())),
            Arc::new(UInt64Array::from_iter_values(keys.iter().map(|k| k.score))),
            Arc::new(UInt64Array::from_iter_values(
                keys.iter().map(|k| k.findings as u64),
            )),
            col(&|k| Some(t(k.first))),
            col(&|k| Some(t(k.last))),
            col(&|k| Some(k.rules.join(" "))),
        ],
    )
}

/// Write a detection report to `out`. JSON and JSON lines are written finding by finding,
/// never whole in memory (a report at `--min-severity info` over a big lake holds millions);
/// the tables are rendered first. CSV holds the findings only (one table per file); the
/// other formats add the keys ranked by risk.
pub fn write(report: &DetectReport, format: Format, out: &mut dyn Write) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, report)?;
            out.write_all(b"\n")?;
        }
        Format::Jsonl => {
            for f in &report.findings {
                serde_json::to_writer(&mut *out, f)?;
                out.write_all(b"\n")?;
            }
        }
        Format::Csv => {
            let (s, b) = findings_batch(&report.findings, false)?;
            out.write_all(super::batches_text(Format::Csv, &s, &[b], 90)?.as_bytes())?;
        }
        Format::Table | Format::Markdown => {
            out.write_all(tables(report, format == Format::Markdown)?.as_bytes())?;
        }
        Format::Html => anyhow::bail!("use table, csv, json, jsonl or markdown for detections"),
    }
    Ok(())
}

/// The findings and the keys by risk as text tables, or as Markdown when `md`.
fn tables(report: &DetectReport, md: bool) -> anyhow::Result<String> {
    let format = if md { Format::Markdown } else { Format::Table };
    let mut out = String::new();
    let heading = |text: &str| {
        if md {
            format!("## {text}\n\n")
        } else {
            format!("{text}\n\n")
        }
    };
    out.push_str(&heading(&format!(
        "Findings: {} (at or above {}; {} below; {} events, {} rules, {} detectors)",
        report.findings.len(),
        report.min_severity,
        report.below_min_severity,
        report.events,
        report.rules,
        report.detectors
    )));
    if !report.findings.is_empty() {
        let (s, b) = findings_batch(&report.findings, !md)?;
        out.push_str(&super::batches_text(format, &s, &[b], 90)?);
        out.push('\n');
        out.push_str(&heading("Keys by risk"));
        let (s, b) = keys_batch(&report.keys)?;
        out.push_str(&super::batches_text(format, &s, &[b], 90)?);
    }
    Ok(out)
}

/// The listing as a record batch.
pub fn listing_batch(rows: &[Listed]) -> anyhow::Result<(SchemaRef, RecordBatch)> {
    let col = |f: &dyn Fn(&Listed) -> String| strings(rows.iter().map(|r| Some(f(r))).collect());
    batch(
        &[
            "id", "kind", "severity", "category", "title", "tags", "origin",
        ],
        vec![
            col(&|r| r.id.clone()),
            col(&|r| r.kind.to_owned()),
            col(&|r| r.severity.clone()),
            col(&|r| r.category.clone()),
            col(&|r| r.title.clone()),
            col(&|r| r.tags.clone()),
            col(&|r| r.origin.clone()),
        ],
    )
}
