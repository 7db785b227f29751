//! Query results as Rust structs: one typed reader for every caller, so no answer goes through
//! strings. A struct's field names are the result's column names; timestamps read as
//! milliseconds (`i64`), booleans as `bool`, nullable columns as `Option`.

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::execution::SendableRecordBatchStream;
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use std::sync::Arc;

use crate::error::EngineError;

/// Timestamps become `Int64` milliseconds and dictionaries their values, so structs read them
/// as plain numbers and strings.
fn plain(batch: &RecordBatch) -> Result<RecordBatch, EngineError> {
    let schema = batch.schema();
    let mut changed = false;
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        let target = match f.data_type() {
            DataType::Timestamp(unit, _) => {
                let ms = match unit {
                    TimeUnit::Millisecond => Arc::clone(c),
                    _ => {
                        arrow::compute::cast(c, &DataType::Timestamp(TimeUnit::Millisecond, None))?
                    }
                };
                Some(arrow::compute::cast(&ms, &DataType::Int64)?)
            }
            DataType::Dictionary(_, v) => Some(arrow::compute::cast(c, v)?),
            DataType::Utf8View => Some(arrow::compute::cast(c, &DataType::Utf8)?),
            _ => None,
        };
        match target {
            Some(col) => {
                changed = true;
                fields.push(Arc::new(Field::new(
                    f.name(),
                    col.data_type().clone(),
                    f.is_nullable(),
                )));
                columns.push(col);
            }
            None => {
                fields.push(Arc::clone(f));
                columns.push(Arc::clone(c));
            }
        }
    }
    if !changed {
        return Ok(batch.clone());
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// The rows of a batch as `T`s.
pub fn from_batch<T: DeserializeOwned>(batch: &RecordBatch) -> Result<Vec<T>, EngineError> {
    let batch = plain(batch)?;
    serde_arrow::from_record_batch(&batch).map_err(|source| EngineError::Rows {
        type_name: std::any::type_name::<T>(),
        source,
    })
}

/// The rows of several batches as `T`s.
pub fn from_batches<T: DeserializeOwned>(batches: &[RecordBatch]) -> Result<Vec<T>, EngineError> {
    let mut out = Vec::new();
    for b in batches {
        out.extend(from_batch(b)?);
    }
    Ok(out)
}

/// A stream of batches as a stream of `T`s, a batch at a time.
pub fn stream<T: DeserializeOwned + Send + 'static>(
    s: SendableRecordBatchStream,
) -> impl Stream<Item = Result<Vec<T>, EngineError>> + Send {
    s.map(|b| from_batch::<T>(&b?))
}

/// Every cell of the batches as display text (nulls empty, timestamps RFC 3339), with the
/// column names: an untyped view for tests and diagnostics.
pub fn cells(
    schema: &arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
) -> Result<(Vec<String>, Vec<Vec<String>>), EngineError> {
    use arrow::array::Array;
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let opts = FormatOptions::default()
        .with_null("")
        .with_timestamp_tz_format(Some("%Y-%m-%dT%H:%M:%SZ"));
    let header = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut rows = Vec::new();
    for b in batches {
        let fmts = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<Result<Vec<_>, _>>()?;
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

/// The same as CSV text (values are not quoted: for tests of plain values).
pub fn csv(
    schema: &arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
) -> Result<String, EngineError> {
    let (header, rows) = cells(schema, batches)?;
    let mut out = header.join(",");
    out.push('\n');
    for r in rows {
        out.push_str(&r.join(","));
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BooleanArray, StringArray, TimestampMillisecondArray};

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Row {
        key: Option<String>,
        t: i64,
        denied: bool,
    }

    #[test]
    fn typed_rows() {
        let batch = RecordBatch::try_from_iter(vec![
            (
                "key",
                Arc::new(StringArray::from(vec![Some("AKIAA"), None])) as _,
            ),
            (
                "t",
                Arc::new(TimestampMillisecondArray::from(vec![5, 6]).with_timezone("UTC")) as _,
            ),
            (
                "denied",
                Arc::new(BooleanArray::from(vec![true, false])) as _,
            ),
        ])
        .expect("batch");
        let rows: Vec<Row> = from_batch(&batch).expect("rows");
        assert_eq!(
            rows,
            [
                Row {
                    key: Some("AKIAA".into()),
                    t: 5,
                    denied: true
                },
                Row {
                    key: None,
                    t: 6,
                    denied: false
                }
            ]
        );
    }
}
