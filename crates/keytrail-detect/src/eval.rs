//! Evaluating tests on JSON documents and text, and the DataFusion functions that run them
//! inside the one scan of `events`:
//!
//! - `keytrail_json_match(json, spec, account)`: does a JSON column meet a test (`spec` is
//!   the test as JSON, `account` the event's own account for `other_account`)?
//! - `keytrail_text_match(text, spec, account)`: the same for a text column (CIDR, numbers,
//!   regular expressions).
//! - `keytrail_json_text(json, path)`: the values at a path, as text (for `show:`).
//!
//! Path semantics: arrays met on the way are walked through (every element), JSON held in a
//! string is parsed when the path continues into it, and `*` stands for any key.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, StringArray};
use arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use serde_json::Value;

use keytrail_rules::net::{self, Cidr};
use keytrail_rules::rule::{JsonCond, JsonTest, Op};

/// Every value at `path` under `v` (arrays flattened, nulls dropped).
pub fn values_at(v: &Value, path: &[String], out: &mut Vec<Value>) {
    match v {
        Value::Null => {}
        Value::Array(items) => {
            for i in items {
                values_at(i, path, out);
            }
        }
        _ if path.is_empty() => out.push(v.clone()),
        Value::Object(m) => {
            if path[0] == "*" {
                for child in m.values() {
                    values_at(child, &path[1..], out);
                }
            } else if let Some(child) = m.get(&path[0]) {
                values_at(child, &path[1..], out);
            }
        }
        Value::String(s) => {
            let t = s.trim_start();
            if (t.starts_with('{') || t.starts_with('['))
                && let Ok(inner) = serde_json::from_str::<Value>(s)
            {
                values_at(&inner, path, out);
            }
        }
        _ => {}
    }
}

/// A JSON value as text: strings as they are, other scalars as written, objects as JSON.
pub fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn number_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Whether `pattern` (compiled once per thread, then cached) matches `text`.
fn regex_match(pattern: &str, text: &str) -> bool {
    thread_local! {
        static CACHE: std::cell::RefCell<std::collections::HashMap<String, Option<regex::Regex>>> =
            std::cell::RefCell::new(std::collections::HashMap::new());
    }
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() > 4096 {
            c.clear();
        }
        c.entry(pattern.to_owned())
            .or_insert_with(|| regex::Regex::new(pattern).ok())
            .as_ref()
            .is_some_and(|re| re.is_match(text))
    })
}

fn compare(op: &Op, leaf: &Value, text: &str, pattern: &str, nocase: bool) -> bool {
    match op {
        Op::Glob => {
            let re = keytrail_rules::sigma::glob_regex(pattern);
            if nocase {
                regex_match(&format!("(?i){re}"), text)
            } else {
                regex_match(&re, text)
            }
        }
        Op::Equals => text == pattern,
        Op::Prefix => text.starts_with(pattern),
        Op::Suffix => text.ends_with(pattern),
        Op::Contains => text.contains(pattern),
        Op::Regex => {
            if nocase {
                regex_match(&format!("(?i){pattern}"), text)
            } else {
                regex_match(pattern, text)
            }
        }
        Op::Cidr => match (Cidr::parse(text), Cidr::parse(pattern)) {
            (Some(v), Some(net)) => net.contains(&v),
            _ => false,
        },
        Op::CidrCovers => match (Cidr::parse(text), Cidr::parse(pattern)) {
            (Some(v), Some(net)) => v.contains(&net),
            _ => false,
        },
        Op::Gt | Op::Gte | Op::Lt | Op::Lte => {
            let (Some(x), Ok(y)) = (number_of(leaf), pattern.parse::<f64>()) else {
                return false;
            };
            match op {
                Op::Gt => x > y,
                Op::Gte => x >= y,
                Op::Lt => x < y,
                _ => x <= y,
            }
        }
        Op::Exists(_) | Op::OtherAccount(_) | Op::Item(_) => false,
    }
}

/// Does the document `root` meet the test? `account` is the event's own account.
pub fn test(t: &JsonTest, root: &Value, account: Option<&str>) -> bool {
    let mut leaves = Vec::new();
    values_at(root, &t.path, &mut leaves);
    // An empty string is no value.
    leaves.retain(|l| !matches!(l, Value::String(s) if s.is_empty()));
    match &t.op {
        Op::Exists(want) => leaves.is_empty() != *want,
        Op::OtherAccount(want) => {
            let found = account.is_some_and(|own| {
                leaves
                    .iter()
                    .any(|l| net::account_ids(&text_of(l)).iter().any(|a| *a != own))
            });
            found == *want
        }
        Op::Item(c) => leaves.iter().any(|l| cond(c, l, account)),
        op => {
            let texts: Vec<String> = leaves
                .iter()
                .map(|l| {
                    let s = text_of(l);
                    if t.nocase && !matches!(op, Op::Regex | Op::Glob) {
                        s.to_lowercase()
                    } else {
                        s
                    }
                })
                .collect();
            let hit = |p: &String| {
                leaves
                    .iter()
                    .zip(&texts)
                    .any(|(l, s)| compare(op, l, s, p, t.nocase))
            };
            if t.all {
                t.values.iter().all(hit)
            } else {
                t.values.iter().any(hit)
            }
        }
    }
}

/// Whether `c` could hold on the JSON text `raw`, by a look at the text alone: `false` only
/// when a test that needs a value at its path names a key the text does not contain
/// anywhere (so the document need not be parsed). Text with `\u` escapes, which could spell
/// a key in other letters, is always parsed.
pub fn could_hold(c: &JsonCond, raw: &str) -> bool {
    match c {
        JsonCond::All(v) => v.iter().all(|c| could_hold(c, raw)),
        JsonCond::Any(v) => v.iter().any(|c| could_hold(c, raw)),
        // What must be absent, or a negation, needs the document.
        JsonCond::Not(_) => true,
        JsonCond::Test(t) => {
            // Absence, and `all` of no values, hold without a value at the path.
            let holds_without_value = matches!(t.op, Op::Exists(false) | Op::OtherAccount(false))
                || (t.all && t.values.is_empty());
            let needs_value = !holds_without_value;
            match t.path.iter().rev().find(|k| k.as_str() != "*") {
                Some(key) if needs_value => raw.contains(key.as_str()) || raw.contains("\\u"),
                _ => true,
            }
        }
    }
}

/// Evaluate a condition tree on a JSON document.
pub fn cond(c: &JsonCond, root: &Value, account: Option<&str>) -> bool {
    match c {
        JsonCond::All(v) => v.iter().all(|c| cond(c, root, account)),
        JsonCond::Any(v) => v.iter().any(|c| cond(c, root, account)),
        JsonCond::Not(c) => !cond(c, root, account),
        JsonCond::Test(t) => test(t, root, account),
    }
}

fn strings(v: &ColumnarValue, rows: usize) -> DfResult<StringArray> {
    let arr = v.to_array(rows)?;
    let arr = if arr.data_type() == &DataType::Utf8 {
        arr
    } else {
        arrow::compute::cast(&arr, &DataType::Utf8)?
    };
    arr.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| DataFusionError::Internal("expected text".into()))
}

fn spec_of<T: serde::de::DeserializeOwned>(v: &ColumnarValue, name: &str) -> DfResult<T> {
    let text = match v {
        ColumnarValue::Scalar(ScalarValue::Utf8(Some(s)))
        | ColumnarValue::Scalar(ScalarValue::LargeUtf8(Some(s)))
        | ColumnarValue::Scalar(ScalarValue::Utf8View(Some(s))) => s.clone(),
        _ => {
            return Err(DataFusionError::Plan(format!(
                "{name}: the second argument must be a text literal"
            )));
        }
    };
    serde_json::from_str(&text)
        .map_err(|e| DataFusionError::Plan(format!("{name}: bad specification {text}: {e}")))
}

/// Which of the three functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    JsonMatch,
    TextMatch,
    JsonText,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct KeytrailFn {
    kind: Kind,
    signature: Signature,
}

impl ScalarUDFImpl for KeytrailFn {
    fn name(&self) -> &str {
        match self.kind {
            Kind::JsonMatch => "keytrail_json_match",
            Kind::TextMatch => "keytrail_text_match",
            Kind::JsonText => "keytrail_json_text",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(match self.kind {
            Kind::JsonText => DataType::Utf8,
            _ => DataType::Boolean,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let name = self.name().to_owned();
        let input = strings(&args.args[0], rows)?;
        let out: ArrayRef = match self.kind {
            Kind::JsonText => {
                let path: Vec<String> = spec_of(&args.args[1], &name)?;
                let mut b = arrow::array::StringBuilder::with_capacity(rows, rows * 8);
                for i in 0..rows {
                    if input.is_null(i) {
                        b.append_null();
                        continue;
                    }
                    let doc: Value = serde_json::from_str(input.value(i)).unwrap_or(Value::Null);
                    let mut leaves = Vec::new();
                    values_at(&doc, &path, &mut leaves);
                    if leaves.is_empty() {
                        b.append_null();
                    } else {
                        let texts: Vec<String> = leaves.iter().map(text_of).collect();
                        b.append_value(texts.join(", "));
                    }
                }
                Arc::new(b.finish())
            }
            Kind::JsonMatch | Kind::TextMatch => {
                let spec: JsonCond = spec_of(&args.args[1], &name)?;
                let account = strings(&args.args[2], rows)?;
                let values: BooleanArray = (0..rows)
                    .map(|i| {
                        let doc = if input.is_null(i) {
                            Value::Null
                        } else if self.kind == Kind::JsonMatch {
                            let raw = input.value(i);
                            if !could_hold(&spec, raw) {
                                return Some(false);
                            }
                            serde_json::from_str(raw).unwrap_or(Value::Null)
                        } else {
                            Value::String(input.value(i).to_owned())
                        };
                        let own = account.is_valid(i).then(|| account.value(i));
                        Some(cond(&spec, &doc, own))
                    })
                    .collect();
                Arc::new(values)
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// The three functions, to register in a session.
pub fn functions() -> Vec<ScalarUDF> {
    [
        (Kind::JsonMatch, 3),
        (Kind::TextMatch, 3),
        (Kind::JsonText, 2),
    ]
    .into_iter()
    .map(|(kind, n)| {
        ScalarUDF::from(KeytrailFn {
            kind,
            signature: Signature::any(n, Volatility::Immutable),
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(path: &[&str], op: Op, values: &[&str]) -> JsonTest {
        JsonTest {
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            op,
            nocase: false,
            all: false,
            values: values.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn paths_walk_arrays_and_embedded_json() {
        let doc = json!({
            "ipPermissions": {"items": [
                {"ipRanges": {"items": [{"cidrIp": "10.0.0.0/8"}]}},
                {"ipRanges": {"items": [{"cidrIp": "208.236.235.254/0"}]}}
            ]},
            "policyDocument": "{\"Statement\": [{\"Principal\": {\"AWS\": \"arn:aws:iam::193672423079:root\"}}]}",
            "instancesSet": {"items": [{"maxCount": 10}]},
            "x-amz-acl": ["public-read"]
        });
        let covers = t(
            &["ipPermissions", "items", "ipRanges", "items", "cidrIp"],
            Op::CidrCovers,
            &["0.0.0.0/0"],
        );
        assert!(test(&covers, &doc, None));
        let other = t(
            &["policyDocument", "Statement", "Principal", "AWS"],
            Op::OtherAccount(true),
            &[],
        );
        assert!(test(&other, &doc, Some("111122223333")));
        assert!(!test(&other, &doc, Some("193672423079")));
        assert!(test(
            &t(&["instancesSet", "items", "maxCount"], Op::Gte, &["10"]),
            &doc,
            None
        ));
        assert!(!test(
            &t(&["instancesSet", "items", "maxCount"], Op::Gt, &["10"]),
            &doc,
            None
        ));
        assert!(test(
            &t(&["x-amz-acl"], Op::Equals, &["public-read"]),
            &doc,
            None
        ));
        assert!(test(&t(&["nothing"], Op::Exists(false), &[]), &doc, None));
        assert!(!test(&t(&["nothing"], Op::Equals, &["x"]), &doc, None));
        let mut all = t(&["x-amz-acl"], Op::Prefix, &["public", "private"]);
        assert!(test(&all, &doc, None));
        all.all = true;
        assert!(!test(&all, &doc, None));
    }

    #[test]
    fn item_keeps_conditions_on_one_element() {
        let doc = json!({"Statement": [
            {"Effect": "Deny", "Principal": "*"},
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}}
        ]});
        let item = |principal: &str| {
            t(
                &["Statement"],
                Op::Item(Box::new(JsonCond::All(vec![
                    JsonCond::Test(t(&["Effect"], Op::Equals, &["Allow"])),
                    JsonCond::Test(t(&["Principal"], Op::Equals, &[principal])),
                ]))),
                &[],
            )
        };
        assert!(!test(&item("*"), &doc, None), "the * statement is a Deny");
        let spec = serde_json::to_string(&JsonCond::Test(item("*"))).expect("spec");
        let back: JsonCond = serde_json::from_str(&spec).expect("round trip");
        assert_eq!(back, JsonCond::Test(item("*")));
    }

    #[test]
    fn a_document_without_the_key_is_not_parsed_for_a_test_that_needs_it() {
        let needs = JsonCond::Test(t(&["bucketName"], Op::Equals, &["x"]));
        let doc = r#"{"roleArn":"arn:aws:iam::1:role/r"}"#;
        assert!(!could_hold(&needs, doc));
        assert!(could_hold(&needs, r#"{"bucketName":"y"}"#));
        // Inside JSON held in a string, and under any key.
        assert!(could_hold(&needs, r#"{"policy":"{\"bucketName\":\"x\"}"}"#));
        let any = JsonCond::Test(t(&["*", "bucketName"], Op::Equals, &["x"]));
        assert!(!could_hold(&any, doc));
        // A key spelt with escapes is parsed, and found.
        let escaped = r#"{"\u0062ucketName":"x"}"#;
        assert!(could_hold(&needs, escaped));
        let v: Value = serde_json::from_str(escaped).expect("json");
        assert!(cond(&needs, &v, None));
        // What holds when the key is absent must not be cut short.
        let absent = JsonCond::Test(t(&["bucketName"], Op::Exists(false), &[]));
        assert!(could_hold(&absent, doc));
        assert!(could_hold(&JsonCond::Not(Box::new(needs.clone())), doc));
        // Either branch may hold.
        let other = JsonCond::Test(t(&["roleArn"], Op::Prefix, &["arn:"]));
        assert!(could_hold(
            &JsonCond::Any(vec![needs.clone(), other.clone()]),
            doc
        ));
        assert!(!could_hold(&JsonCond::All(vec![needs, other]), doc));
    }
}
