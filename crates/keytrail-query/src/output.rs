//! Results as text: an aligned table for people, CSV and JSON for programs, Markdown for
//! tickets. Every format is written from the same record batches, so they agree.

use std::fmt::Write as _;
use std::str::FromStr;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::QueryError;

/// An output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
    Markdown,
    Html,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Markdown => "markdown",
            Format::Html => "html",
        }
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            "markdown" | "md" => Ok(Format::Markdown),
            "html" => Ok(Format::Html),
            other => Err(format!(
                "unknown format `{other}`: use table, csv, json, markdown or html"
            )),
        }
    }
}

fn options() -> FormatOptions<'static> {
    FormatOptions::default()
        .with_null("")
        .with_timestamp_tz_format(Some("%Y-%m-%dT%H:%M:%SZ"))
}

/// Every cell of the batches as text, row by row, with the column names.
pub fn cells(
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<(Vec<String>, Vec<Vec<String>>), QueryError> {
    let header = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut rows = Vec::new();
    let opts = options();
    for b in batches {
        let fmts = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| QueryError::Output {
                format: "text",
                source,
            })?;
        for i in 0..b.num_rows() {
            rows.push(
                fmts.iter()
                    .zip(b.columns())
                    .map(|(f, c)| {
                        if c.is_null(i) {
                            String::new()
                        } else {
                            f.value(i).to_string()
                        }
                    })
                    .collect(),
            );
        }
    }
    Ok((header, rows))
}

/// An aligned text table; long cells are cut to `max_width` characters.
pub fn table(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    max_width: usize,
) -> Result<String, QueryError> {
    let (header, rows) = cells(schema, batches)?;
    let cut = |s: &str| -> String {
        let one_line = s.replace(['\n', '\r'], " ");
        if one_line.chars().count() > max_width {
            let mut t: String = one_line.chars().take(max_width.saturating_sub(1)).collect();
            t.push('…');
            t
        } else {
            one_line
        }
    };
    let header: Vec<String> = header.iter().map(|h| cut(h)).collect();
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cut(c)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let numeric: Vec<bool> = schema
        .fields()
        .iter()
        .map(|f| f.data_type().is_numeric())
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let pad = w - c.chars().count();
            if numeric.get(i).copied().unwrap_or(false) {
                l.push_str(&" ".repeat(pad));
                l.push_str(c);
            } else {
                l.push_str(c);
                l.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, &header);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&mut out, &rule);
    for r in &rows {
        line(&mut out, r);
    }
    if rows.is_empty() {
        out.push_str("(no rows)\n");
    }
    Ok(out)
}

/// RFC 4180 CSV with a header row.
pub fn csv(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<String, QueryError> {
    let (header, rows) = cells(schema, batches)?;
    let esc = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    let mut out = String::new();
    out.push_str(&header.iter().map(|h| esc(h)).collect::<Vec<_>>().join(","));
    out.push('\n');
    for r in rows {
        out.push_str(&r.iter().map(|c| esc(c)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    Ok(out)
}

/// One JSON array of objects; every column is present in every object (null when empty),
/// timestamps as RFC 3339 UTC, lists as arrays.
pub fn json(batches: &[RecordBatch]) -> Result<String, QueryError> {
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::JsonArray>(&mut buf);
        for b in batches {
            let b = utc_timestamps(b).map_err(|source| QueryError::Output {
                format: "json",
                source,
            })?;
            w.write(&b).map_err(|source| QueryError::Output {
                format: "json",
                source,
            })?;
        }
        w.finish().map_err(|source| QueryError::Output {
            format: "json",
            source,
        })?;
    }
    let mut s = String::from_utf8(buf).unwrap_or_default();
    if s.is_empty() {
        s.push_str("[]");
    }
    s.push('\n');
    Ok(s)
}

/// Arrow's JSON writer prints timestamps without their zone; present them as RFC 3339 text.
fn utc_timestamps(b: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    let schema = b.schema();
    if !schema
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Timestamp(_, _)))
    {
        return Ok(b.clone());
    }
    let opts = options();
    let mut fields = Vec::new();
    let mut cols = Vec::new();
    for (f, c) in schema.fields().iter().zip(b.columns()) {
        if matches!(f.data_type(), DataType::Timestamp(_, _)) {
            let fmt = ArrayFormatter::try_new(c.as_ref(), &opts)?;
            let text: arrow::array::StringArray = (0..c.len())
                .map(|i| c.is_valid(i).then(|| fmt.value(i).to_string()))
                .collect();
            fields.push(arrow::datatypes::Field::new(f.name(), DataType::Utf8, true));
            cols.push(std::sync::Arc::new(text) as arrow::array::ArrayRef);
        } else {
            fields.push(f.as_ref().clone());
            cols.push(c.clone());
        }
    }
    RecordBatch::try_new(
        std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
        cols,
    )
}

/// A GitHub-flavoured Markdown table.
pub fn markdown(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<String, QueryError> {
    let (header, rows) = cells(schema, batches)?;
    let esc = |s: &str| s.replace('|', "\\|").replace(['\n', '\r'], " ");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| {} |",
        header
            .iter()
            .map(|h| esc(h))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(
        out,
        "|{}|",
        header.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} |",
            r.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(out)
}

/// Render batches in `format` (HTML has its own renderer in the reports).
pub fn render(
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<String, QueryError> {
    match format {
        Format::Table => table(schema, batches, 60),
        Format::Csv => csv(schema, batches),
        Format::Json => json(batches),
        Format::Markdown => markdown(schema, batches),
        Format::Html => Err(QueryError::Invalid(
            "HTML output is available for reports (keytrail report ... --format html)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};

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

    #[test]
    fn every_format() {
        let (schema, batches) = sample();
        insta::assert_snapshot!("table", table(&schema, &batches, 60).expect("table"));
        insta::assert_snapshot!("csv", csv(&schema, &batches).expect("csv"));
        insta::assert_snapshot!("json", json(&batches).expect("json"));
        insta::assert_snapshot!("markdown", markdown(&schema, &batches).expect("markdown"));
    }

    #[test]
    fn formats_parse() {
        assert_eq!("MD".parse::<Format>(), Ok(Format::Markdown));
        assert!("xml".parse::<Format>().is_err());
    }
}
