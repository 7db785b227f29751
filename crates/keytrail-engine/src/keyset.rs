//! A column's membership in a large set of access keys as one expression.
//!
//! `column IN (k1, …, kN)` with the 49,234 keys of an investigation's chain is 49,234
//! expressions that DataFusion's optimizer rewrites, clones and hashes in every pass of every
//! query: 16 % of such an investigation's CPU time (`docs/benchmarks.md`). [`key_in`] is one
//! function call holding the set; the scan's pruning ([`crate::prune`]) reads it as it reads an
//! `IN` list, so the key index still chooses the files and rows.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, StringArrayType};
use arrow::datatypes::DataType;
use datafusion::common::{ScalarValue, exec_err, utils::take_function_args};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, col,
};

/// The name the function shows in plans.
pub const KEY_IN: &str = "keytrail_key_in";

/// One of `columns` holds one of `keys`: for each column true, false, or null when the column
/// is null (as `IN`), joined with `OR`; `false` for no columns. The columns share one set (so
/// comparing their conditions, as the optimizer does, compares no keys).
pub fn key_in<'a>(columns: &[&str], keys: impl IntoIterator<Item = &'a str>) -> Expr {
    let set = ScalarUDF::new_from_impl(KeySet::new(keys.into_iter().map(str::to_owned).collect()));
    columns
        .iter()
        .map(|c| set.call(vec![col(*c)]))
        .reduce(Expr::or)
        .unwrap_or(Expr::Literal(ScalarValue::Boolean(Some(false)), None))
}

/// The function behind [`key_in`]: its set of keys.
#[derive(Debug)]
pub struct KeySet {
    keys: Arc<HashSet<String>>,
    /// Of the set, whatever its order: plans hash expressions often, and hashing 49k keys each
    /// time would cost what this module saves.
    fingerprint: u64,
    signature: Signature,
}

impl KeySet {
    fn new(keys: HashSet<String>) -> KeySet {
        let fingerprint = keys
            .iter()
            .map(|k| {
                let mut h = DefaultHasher::new();
                k.hash(&mut h);
                h.finish()
            })
            .fold(keys.len() as u64, u64::wrapping_add);
        KeySet {
            keys: Arc::new(keys),
            fingerprint,
            signature: Signature::string(1, Volatility::Immutable),
        }
    }

    /// The keys, in no order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(String::as_str)
    }

    fn holds(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    /// For each value of `array`: in the set, or null where the value is.
    fn holds_each<'a>(&self, array: impl StringArrayType<'a>) -> BooleanArray {
        array.iter().map(|v| v.map(|k| self.holds(k))).collect()
    }
}

impl PartialEq for KeySet {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
            && (Arc::ptr_eq(&self.keys, &other.keys) || self.keys == other.keys)
    }
}

impl Eq for KeySet {}

impl Hash for KeySet {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.fingerprint.hash(state);
    }
}

impl ScalarUDFImpl for KeySet {
    fn name(&self) -> &str {
        KEY_IN
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        self.schema_name(args)
    }

    /// Names differ between sets (a plan may hold two of the same column).
    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        let arg = args
            .iter()
            .map(|a| a.schema_name().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Ok(format!(
            "{KEY_IN}({arg}, {} keys #{:016x})",
            self.keys.len(),
            self.fingerprint
        ))
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = take_function_args(KEY_IN, args.args)?;
        let array = match arg {
            ColumnarValue::Scalar(s) => {
                let found = match &s {
                    ScalarValue::Utf8(v) | ScalarValue::Utf8View(v) | ScalarValue::LargeUtf8(v) => {
                        v.as_deref().map(|k| self.holds(k))
                    }
                    other => return exec_err!("{KEY_IN} of a {}", other.data_type()),
                };
                return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(found)));
            }
            ColumnarValue::Array(a) => a,
        };
        let found = match array.data_type() {
            DataType::Utf8 => self.holds_each(array.as_string::<i32>()),
            DataType::LargeUtf8 => self.holds_each(array.as_string::<i64>()),
            DataType::Utf8View => self.holds_each(array.as_string_view()),
            other => return exec_err!("{KEY_IN} of a {other}"),
        };
        Ok(ColumnarValue::Array(Arc::new(found)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{RecordBatch, StringArray};
    use datafusion::prelude::SessionContext;

    #[test]
    fn a_key_set_filters_like_in() {
        let ctx = SessionContext::new();
        let batch = RecordBatch::try_from_iter(vec![(
            "accesskeyid",
            Arc::new(StringArray::from(vec![
                Some("AKIAA"),
                None,
                Some("AKIAB"),
                Some("AKIAC"),
            ])) as _,
        )])
        .expect("batch");
        let df = ctx.read_batch(batch).expect("read");
        let df = df
            .filter(key_in(&["accesskeyid"], ["AKIAC", "AKIAA", "AKIAZ"]))
            .expect("filter");
        let kept = crate::block_on(1, async {
            Ok::<_, crate::EngineError>(df.collect().await?)
        })
        .expect("collect");
        let keys: Vec<&str> = kept
            .iter()
            .flat_map(|b| b.column(0).as_string::<i32>().iter().flatten())
            .collect();
        assert_eq!(keys, ["AKIAA", "AKIAC"]);
    }

    #[test]
    fn sets_are_equal_when_their_keys_are() {
        let a = KeySet::new(["AKIAA", "AKIAB"].map(str::to_owned).into());
        let b = KeySet::new(["AKIAB", "AKIAA"].map(str::to_owned).into());
        let c = KeySet::new(["AKIAA", "AKIAC"].map(str::to_owned).into());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a.schema_name(&[]).ok(), c.schema_name(&[]).ok());
    }
}
