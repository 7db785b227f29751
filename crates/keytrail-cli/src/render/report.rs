//! A report as text: CSV, JSON and JSON lines hold the rows only (every column, always); the
//! table, Markdown and HTML add the title, scope and notes, and leave out columns that are empty
//! in every row.

use keytrail_report::{Report, TABLE_HIDDEN};

use super::Format;

/// The report in `format`. CSV and JSON hold the rows only (every column, always); the
/// table, Markdown and HTML add the title, scope and notes, and leave out columns that are
/// empty in every row.
pub fn render(report: &Report, format: Format) -> anyhow::Result<String> {
    match format {
        Format::Csv | Format::Json | Format::Jsonl => {
            super::batches_text(format, &report.schema, &report.batches, 120)
        }
        Format::Table => {
            let (schema, batches) = report.non_empty_columns(TABLE_HIDDEN)?;
            let mut out = format!("{}\n", report.title());
            for (k, v) in report.scope().iter().skip(2) {
                out.push_str(&format!("  {k}: {v}\n"));
            }
            out.push_str("  (the terminal table leaves out owner_arn, principal_type, last_event and inventory: see --format csv, json or html)\n\n");
            out.push_str(&super::batches_text(Format::Table, &schema, &batches, 120)?);
            for n in &report.notes {
                out.push_str(&format!("\nnote: {n}"));
            }
            if !report.notes.is_empty() {
                out.push('\n');
            }
            Ok(out)
        }
        Format::Markdown => {
            let (schema, batches) = report.non_empty_columns(&[])?;
            let mut out = format!("# {}\n\n", report.title());
            for (k, v) in report.scope() {
                out.push_str(&format!("- **{k}**: {}\n", v.replace('|', "\\|")));
            }
            out.push('\n');
            out.push_str(&super::batches_text(
                Format::Markdown,
                &schema,
                &batches,
                120,
            )?);
            if !report.notes.is_empty() {
                out.push_str("\n**Notes**\n\n");
                for n in &report.notes {
                    out.push_str(&format!("- {n}\n"));
                }
            }
            Ok(out)
        }
        Format::Html => {
            let (schema, batches) = report.non_empty_columns(&[])?;
            super::report_html::render(report, &schema, &batches)
        }
    }
}
