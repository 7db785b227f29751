//! Rows as JSON objects, the lake's way: every column (nulls written as `null`), timestamps in
//! RFC 3339 with `Z`, and the JSON columns (`requestparameters`, `responseelements`, ...)
//! embedded as the JSON they hold rather than as strings. Written a batch at a time, so a
//! caller can stream any number of rows.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, FieldRef};
use arrow::error::ArrowError;
use arrow::json::writer::{
    Encoder, EncoderFactory, EncoderOptions, LineDelimited, NullableEncoder, WriterBuilder,
};

use crate::error::EngineError;

/// The columns of `events` that hold JSON text.
pub const JSON_COLUMNS: [&str; 7] = [
    "requestparameters",
    "responseelements",
    "additionaleventdata",
    "serviceeventdetails",
    "edgedevicedetails",
    "insightdetails",
    "extrafields",
];

/// The format of timestamps in JSON output (fractions only when not zero).
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.fZ";

#[derive(Debug)]
struct RawJson;

struct RawEncoder<'a>(&'a StringArray);

impl Encoder for RawEncoder<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.value(idx).as_bytes());
    }
}

impl EncoderFactory for RawJson {
    fn make_default_encoder<'a>(
        &self,
        field: &'a FieldRef,
        array: &'a dyn Array,
        _options: &'a EncoderOptions,
    ) -> Result<Option<NullableEncoder<'a>>, ArrowError> {
        if field.data_type() != &DataType::Utf8 || !JSON_COLUMNS.contains(&field.name().as_str()) {
            return Ok(None);
        }
        let Some(s) = array.as_string_opt::<i32>() else {
            return Ok(None);
        };
        Ok(Some(NullableEncoder::new(
            Box::new(RawEncoder(s)),
            s.nulls().cloned(),
        )))
    }
}

/// A JSON writer of rows into `out`, one object per line; with `embed_json`, the lake's JSON
/// columns are written as the JSON they hold.
pub fn writer<W: std::io::Write>(
    out: W,
    embed_json: bool,
) -> arrow::json::Writer<W, LineDelimited> {
    let b = WriterBuilder::new()
        .with_explicit_nulls(true)
        .with_timestamp_tz_format(TIMESTAMP_FORMAT.to_owned())
        .with_timestamp_format(TIMESTAMP_FORMAT.to_owned());
    if embed_json {
        b.with_encoder_factory(Arc::new(RawJson)).build(out)
    } else {
        b.build(out)
    }
}

/// Each row of `batch` as one JSON object (text).
pub fn rows_as_json(batch: &RecordBatch) -> Result<Vec<String>, EngineError> {
    let mut buf = Vec::with_capacity(batch.num_rows() * 1024);
    {
        let mut w = writer(&mut buf, true);
        w.write(batch)?;
        w.finish()?;
    }
    let text = String::from_utf8(buf)
        .map_err(|e| EngineError::Invalid(format!("internal: JSON output is not UTF-8: {e}")))?;
    Ok(text.lines().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::TimestampMillisecondArray;

    #[test]
    fn json_columns_are_embedded() {
        let batch = RecordBatch::try_from_iter(vec![
            (
                "requestparameters",
                Arc::new(StringArray::from(vec![Some(r#"{"userName": "x"}"#), None])) as _,
            ),
            (
                "eventname",
                Arc::new(StringArray::from(vec![Some("A\"B"), None])) as _,
            ),
            (
                "eventtime",
                Arc::new(
                    TimestampMillisecondArray::from(vec![1_600_044_263_000, 1_600_044_263_250])
                        .with_timezone("UTC"),
                ) as _,
            ),
        ])
        .expect("batch");
        let rows = rows_as_json(&batch).expect("json");
        assert_eq!(
            rows,
            [
                r#"{"requestparameters":{"userName": "x"},"eventname":"A\"B","eventtime":"2020-09-14T00:44:23Z"}"#,
                r#"{"requestparameters":null,"eventname":null,"eventtime":"2020-09-14T00:44:23.250Z"}"#,
            ]
        );
    }
}
