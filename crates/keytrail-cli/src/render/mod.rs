//! Results as text, written as they arrive: an aligned table for people, CSV, JSON and JSON
//! lines for programs, Markdown for tickets, and HTML pages for the reports and the
//! investigation. Every format is written from the same record batches, so they agree, and a
//! writer holds at most one batch, so an answer of any size streams.

pub mod detect;
pub mod investigate;
pub mod report;
pub mod report_html;

use std::io::Write;

use anyhow::Context as _;
use clap::ValueEnum;
use keytrail_engine::arrow::array::RecordBatch;
use keytrail_engine::arrow::datatypes::SchemaRef;
use keytrail_engine::datafusion::execution::SendableRecordBatchStream;

/// An output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned table (the default on a terminal)
    Table,
    /// RFC 4180 CSV with a header row (the default in a pipe or a file)
    Csv,
    /// One JSON document
    Json,
    /// One JSON object per line
    Jsonl,
    /// GitHub-flavoured Markdown
    #[value(alias = "md")]
    Markdown,
    /// One self-contained HTML page (reports and investigations)
    Html,
}

impl Format {
    /// The format an output file's extension names.
    pub fn from_extension(ext: &str) -> Option<Format> {
        match ext.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            "jsonl" | "ndjson" => Some(Format::Jsonl),
            "md" | "markdown" => Some(Format::Markdown),
            "html" | "htm" => Some(Format::Html),
            "txt" => Some(Format::Table),
            _ => None,
        }
    }
}

/// Every cell of a batch as text, row by row (nulls empty, timestamps RFC 3339).
pub fn batch_cells(b: &RecordBatch) -> anyhow::Result<Vec<Vec<String>>> {
    Ok(
        keytrail_engine::rows::cells(&b.schema(), std::slice::from_ref(b))
            .context("formatting results")?
            .1,
    )
}

fn header(schema: &SchemaRef) -> Vec<String> {
    schema.fields().iter().map(|f| f.name().clone()).collect()
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn cut(s: &str, max: usize) -> String {
    let one_line = s.replace(['\n', '\r'], " ");
    if one_line.chars().count() > max {
        let mut t: String = one_line.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    } else {
        one_line
    }
}

/// Writes batches in one format as they come.
pub struct BatchWriter {
    format: Format,
    schema: SchemaRef,
    max_width: usize,
    /// Table column widths, fixed by the first batch (later cells are cut to them).
    widths: Option<Vec<usize>>,
    rows: u64,
    started: bool,
}

impl BatchWriter {
    /// A writer of `schema`'s rows; table cells are cut to `max_width` characters.
    pub fn new(format: Format, schema: SchemaRef, max_width: usize) -> anyhow::Result<BatchWriter> {
        if format == Format::Html {
            anyhow::bail!(
                "--format html is for reports and investigations; use table, csv, json, jsonl or markdown"
            );
        }
        Ok(BatchWriter {
            format,
            schema,
            max_width,
            widths: None,
            rows: 0,
            started: false,
        })
    }

    fn start(&mut self, out: &mut dyn Write, first: Option<&RecordBatch>) -> anyhow::Result<()> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        let head = header(&self.schema);
        match self.format {
            Format::Csv => writeln!(
                out,
                "{}",
                head.iter()
                    .map(|h| csv_cell(h))
                    .collect::<Vec<_>>()
                    .join(",")
            )?,
            Format::Markdown => {
                writeln!(
                    out,
                    "| {} |",
                    head.iter()
                        .map(|h| md_cell(h))
                        .collect::<Vec<_>>()
                        .join(" | ")
                )?;
                writeln!(
                    out,
                    "|{}|",
                    head.iter().map(|_| "---").collect::<Vec<_>>().join("|")
                )?;
            }
            Format::Json => write!(out, "[")?,
            Format::Table => {
                let mut widths: Vec<usize> = head
                    .iter()
                    .map(|h| cut(h, self.max_width).chars().count())
                    .collect();
                if let Some(b) = first {
                    for r in batch_cells(b)? {
                        for (w, c) in widths.iter_mut().zip(&r) {
                            *w = (*w).max(cut(c, self.max_width).chars().count());
                        }
                    }
                }
                let cells: Vec<String> = head.iter().map(|h| cut(h, self.max_width)).collect();
                self.widths = Some(widths);
                self.table_line(out, &cells)?;
                let rule: Vec<String> = self
                    .widths
                    .iter()
                    .flatten()
                    .map(|w| "-".repeat(*w))
                    .collect();
                self.table_line(out, &rule)?;
            }
            Format::Jsonl | Format::Html => {}
        }
        Ok(())
    }

    fn table_line(&self, out: &mut dyn Write, cells: &[String]) -> anyhow::Result<()> {
        let Some(widths) = &self.widths else {
            return Ok(());
        };
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let c = cut(c, *w);
            let pad = w.saturating_sub(c.chars().count());
            if self.schema.field(i).data_type().is_numeric() {
                l.push_str(&" ".repeat(pad));
                l.push_str(&c);
            } else {
                l.push_str(&c);
                l.push_str(&" ".repeat(pad));
            }
        }
        writeln!(out, "{}", l.trim_end())?;
        Ok(())
    }

    /// Write one batch.
    pub fn write(&mut self, out: &mut dyn Write, b: &RecordBatch) -> anyhow::Result<()> {
        self.start(out, Some(b))?;
        match self.format {
            Format::Table => {
                for r in batch_cells(b)? {
                    self.table_line(out, &r)?;
                }
            }
            Format::Csv => {
                for r in batch_cells(b)? {
                    writeln!(
                        out,
                        "{}",
                        r.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(",")
                    )?;
                }
            }
            Format::Markdown => {
                for r in batch_cells(b)? {
                    writeln!(
                        out,
                        "| {} |",
                        r.iter().map(|c| md_cell(c)).collect::<Vec<_>>().join(" | ")
                    )?;
                }
            }
            Format::Json | Format::Jsonl => {
                let mut buf = Vec::new();
                {
                    let mut w = keytrail_engine::json::writer(&mut buf, false);
                    w.write(b)?;
                    w.finish()?;
                }
                let text = String::from_utf8(buf).context("JSON output")?;
                for (i, line) in text.lines().enumerate() {
                    if self.format == Format::Json {
                        let sep = if self.rows + i as u64 == 0 {
                            "\n"
                        } else {
                            ",\n"
                        };
                        write!(out, "{sep}{line}")?;
                    } else {
                        writeln!(out, "{line}")?;
                    }
                }
            }
            Format::Html => {}
        }
        self.rows += b.num_rows() as u64;
        Ok(())
    }

    /// Close the output (a table with no rows says so; a JSON array is closed).
    pub fn finish(mut self, out: &mut dyn Write) -> anyhow::Result<u64> {
        self.start(out, None)?;
        match self.format {
            Format::Table if self.rows == 0 => writeln!(out, "(no rows)")?,
            Format::Json if self.rows == 0 => writeln!(out, "]")?,
            Format::Json => writeln!(out, "\n]")?,
            _ => {}
        }
        Ok(self.rows)
    }
}

/// Write whole batches (a small result) in `format`.
pub fn write_batches(
    out: &mut dyn Write,
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    max_width: usize,
) -> anyhow::Result<()> {
    let mut w = BatchWriter::new(format, schema.clone(), max_width)?;
    for b in batches {
        w.write(out, b)?;
    }
    w.finish(out)?;
    Ok(())
}

/// The same, as a string (for sections of a larger document).
pub fn batches_text(
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    max_width: usize,
) -> anyhow::Result<String> {
    let mut out = Vec::new();
    write_batches(&mut out, format, schema, batches, max_width)?;
    Ok(String::from_utf8(out)?)
}

/// Every cell of whole batches, with the column names.
pub fn cells(
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> anyhow::Result<(Vec<String>, Vec<Vec<String>>)> {
    let mut rows = Vec::new();
    for b in batches {
        rows.extend(batch_cells(b)?);
    }
    Ok((header(schema), rows))
}

/// Stream a query's batches to `out` as they are computed.
pub async fn write_stream(
    out: &mut dyn Write,
    format: Format,
    schema: SchemaRef,
    mut stream: SendableRecordBatchStream,
    max_width: usize,
) -> anyhow::Result<u64> {
    use futures::StreamExt;
    let mut w = BatchWriter::new(format, schema, max_width)?;
    while let Some(b) = stream.next().await {
        w.write(out, &b?)?;
    }
    w.finish(out)
}

/// Escape text for HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use keytrail_engine::arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use keytrail_engine::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    fn sample() -> (SchemaRef, Vec<RecordBatch>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("key", DataType::Utf8, true),
            Field::new("events", DataType::Int64, true),
            Field::new(
                "last",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
        ]));
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![
                    Some("AKIAEXAMPLE"),
                    Some("a,\"b\"|c"),
                    None,
                ])),
                Arc::new(Int64Array::from(vec![Some(12), None, Some(3)])),
                Arc::new(
                    TimestampMillisecondArray::from(vec![Some(1_732_956_197_000), None, Some(0)])
                        .with_timezone("UTC"),
                ),
            ],
        )
        .expect("batch");
        (schema, vec![b])
    }

    fn text(format: Format) -> String {
        let (schema, batches) = sample();
        // Two batches: the streaming writers must join them seamlessly.
        let doubled: Vec<RecordBatch> = batches.iter().chain(&batches).cloned().collect();
        batches_text(format, &schema, &doubled, 60).expect("render")
    }

    #[test]
    fn every_format() {
        insta::assert_snapshot!("table", text(Format::Table));
        insta::assert_snapshot!("csv", text(Format::Csv));
        insta::assert_snapshot!("json", text(Format::Json));
        insta::assert_snapshot!("jsonl", text(Format::Jsonl));
        insta::assert_snapshot!("markdown", text(Format::Markdown));
        let v: serde_json::Value = serde_json::from_str(&text(Format::Json)).expect("valid JSON");
        assert_eq!(v.as_array().map(Vec::len), Some(6));
        let (schema, _) = sample();
        assert_eq!(
            batches_text(Format::Json, &schema, &[], 60).expect("empty"),
            "[]\n"
        );
    }

    #[test]
    fn formats_parse() {
        assert_eq!(Format::from_str("MD", true), Ok(Format::Markdown));
        assert!(Format::from_str("xml", true).is_err());
        assert_eq!(Format::from_extension("ndjson"), Some(Format::Jsonl));
    }
}
