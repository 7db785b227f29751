//! Key inventories: what IAM says exists, for the keys CloudTrail cannot show (a key never used
//! leaves no event).
//!
//! Three forms are read, told apart by their content, not their names:
//!
//! - the JSON of `aws iam list-access-keys` (`{"AccessKeyMetadata": [{UserName, AccessKeyId,
//!   Status, CreateDate}]}`), one document, a JSON array of documents, or documents one after
//!   another (the output of a loop over users);
//! - a CSV of the same four columns (a header row naming them in any order, or no header and
//!   that order);
//! - the IAM credential report (`aws iam get-credential-report`): the CSV, base64-decoded, or
//!   the command's JSON output with the report still base64-encoded in `Content`.
//!
//! The credential report names no key IDs: it has two key slots per user
//! (`access_key_1_*`, `access_key_2_*`). Its slots are kept as they are here; the report's SQL
//! matches them to key IDs (`keytrail_report::sql`), and says which it could not match.
//!
//! A crate of its own, without the query engine: the reports load inventories through it,
//! and the inventory parsers' fuzz target (`fuzz/`, issue 13) builds it alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use keytrail_model::key::{AccountDecode, decode_account};
use keytrail_model::time::{format_millis, parse_event_time};
use keytrail_model::{AccessKeyId, Millis};
use serde_json::Value;

/// An inventory file that cannot be read or is not one of the three forms.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("{}: cannot read the inventory", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// Which form an inventory file was in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InventoryForm {
    /// `aws iam list-access-keys` JSON.
    ListAccessKeys,
    /// A CSV of UserName, AccessKeyId, Status, CreateDate.
    Csv,
    /// The IAM credential report.
    CredentialReport,
}

impl InventoryForm {
    /// The name used in report output (`inventory` column) and docs.
    pub fn name(self) -> &'static str {
        match self {
            InventoryForm::ListAccessKeys => "list-access-keys",
            InventoryForm::Csv => "csv",
            InventoryForm::CredentialReport => "credential-report",
        }
    }
}

/// One access key an inventory lists by ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InventoryKey {
    pub access_key_id: String,
    pub user_name: String,
    /// Decoded from the key ID when it encodes one.
    pub account_id: Option<String>,
    /// `Active` or `Inactive`.
    pub status: String,
    pub created: Option<Millis>,
    pub form: InventoryForm,
}

/// One `access_key_N_*` slot of a credential report row that holds a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialSlot {
    /// The report's `user` (`<root_account>` for the root user).
    pub user_name: String,
    pub user_arn: String,
    /// From the ARN.
    pub account_id: Option<String>,
    /// 1 or 2.
    pub slot: u8,
    pub active: bool,
    /// `access_key_N_last_rotated`: when the key was created (or last changed, AWS says).
    pub last_rotated: Option<Millis>,
    /// `access_key_N_last_used_date`.
    pub last_used: Option<Millis>,
    /// The report says `N/A` for the last use of a key it lists: never used (since IAM began
    /// tracking, 2015-04-22).
    pub never_used: bool,
    pub last_used_region: Option<String>,
    pub last_used_service: Option<String>,
}

/// One file that was read.
#[derive(Clone, Debug)]
pub struct InventoryFile {
    pub path: PathBuf,
    pub form: InventoryForm,
    /// Keys (list-access-keys, CSV) or key slots (credential report) read from it.
    pub entries: usize,
    /// The credential report's `GeneratedTime`, when the file says it.
    pub generated: Option<Millis>,
}

/// Everything the inventory files say.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    /// Keys by ID (one row per key; a key listed twice keeps the later file's row).
    pub keys: Vec<InventoryKey>,
    pub slots: Vec<CredentialSlot>,
    pub files: Vec<InventoryFile>,
    /// What the reader wants the reader of the report to know.
    pub notes: Vec<String>,
}

impl Inventory {
    /// Read inventory files, each in any of the three forms.
    pub fn load(paths: &[PathBuf]) -> Result<Inventory, InventoryError> {
        let files = paths
            .iter()
            .map(|path| match std::fs::read(path) {
                Ok(bytes) => Ok((path.clone(), bytes)),
                Err(source) => Err(InventoryError::Read {
                    path: path.clone(),
                    source,
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Inventory::parse(&files)
    }

    /// Inventory files already read: each path (named in errors and notes) with its content,
    /// in the order later files win.
    pub fn parse(files: &[(PathBuf, Vec<u8>)]) -> Result<Inventory, InventoryError> {
        let mut inv = Inventory::default();
        let mut keys: BTreeMap<String, (InventoryKey, PathBuf)> = BTreeMap::new();
        for (path, bytes) in files {
            let parsed = parse(path, bytes)?;
            inv.files.push(InventoryFile {
                path: path.clone(),
                form: parsed.form,
                entries: parsed.keys.len() + parsed.slots.len(),
                generated: parsed.generated,
            });
            for k in parsed.keys {
                if let Some((old, old_path)) = keys.get(&k.access_key_id)
                    && (old.status != k.status
                        || old.created != k.created
                        || old.user_name != k.user_name)
                {
                    inv.notes.push(format!(
                        "{} is listed differently in {} and {}; the later file is used",
                        k.access_key_id,
                        old_path.display(),
                        path.display()
                    ));
                }
                keys.insert(k.access_key_id.clone(), (k, path.clone()));
            }
            inv.slots.extend(parsed.slots);
        }
        inv.keys = keys.into_values().map(|(k, _)| k).collect();
        Ok(inv)
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The schema of the `inventory_keys` table.
    pub fn keys_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("access_key_id", DataType::Utf8, false),
            Field::new("user_name", DataType::Utf8, true),
            Field::new("account_id", DataType::Utf8, true),
            Field::new("status", DataType::Utf8, true),
            Field::new("created", ts_type(), true),
            Field::new("source", DataType::Utf8, false),
        ]))
    }

    /// The schema of the `credential_slots` table.
    pub fn slots_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("user_name", DataType::Utf8, false),
            Field::new("user_arn", DataType::Utf8, false),
            Field::new("account_id", DataType::Utf8, true),
            Field::new("slot", DataType::Int64, false),
            Field::new("active", DataType::Boolean, false),
            Field::new("last_rotated", ts_type(), true),
            Field::new("last_used", ts_type(), true),
            Field::new("never_used", DataType::Boolean, false),
            Field::new("last_used_region", DataType::Utf8, true),
            Field::new("last_used_service", DataType::Utf8, true),
        ]))
    }

    /// The keys as one record batch of [`Inventory::keys_schema`].
    pub fn keys_batch(&self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let mut id = StringBuilder::new();
        let mut user = StringBuilder::new();
        let mut account = StringBuilder::new();
        let mut status = StringBuilder::new();
        let mut created = TimestampMillisecondBuilder::new().with_timezone("UTC");
        let mut source = StringBuilder::new();
        for k in &self.keys {
            id.append_value(&k.access_key_id);
            user.append_value(&k.user_name);
            account.append_option(k.account_id.as_deref());
            status.append_value(&k.status);
            created.append_option(k.created);
            source.append_value(k.form.name());
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(id.finish()),
            Arc::new(user.finish()),
            Arc::new(account.finish()),
            Arc::new(status.finish()),
            Arc::new(created.finish()),
            Arc::new(source.finish()),
        ];
        RecordBatch::try_new(Self::keys_schema(), cols)
    }

    /// The credential report slots as one record batch of [`Inventory::slots_schema`].
    pub fn slots_batch(&self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let mut user = StringBuilder::new();
        let mut arn = StringBuilder::new();
        let mut account = StringBuilder::new();
        let mut slot = Int64Builder::new();
        let mut active = BooleanBuilder::new();
        let mut rotated = TimestampMillisecondBuilder::new().with_timezone("UTC");
        let mut used = TimestampMillisecondBuilder::new().with_timezone("UTC");
        let mut never = BooleanBuilder::new();
        let mut region = StringBuilder::new();
        let mut service = StringBuilder::new();
        for s in &self.slots {
            user.append_value(&s.user_name);
            arn.append_value(&s.user_arn);
            account.append_option(s.account_id.as_deref());
            slot.append_value(i64::from(s.slot));
            active.append_value(s.active);
            rotated.append_option(s.last_rotated);
            used.append_option(s.last_used);
            never.append_value(s.never_used);
            region.append_option(s.last_used_region.as_deref());
            service.append_option(s.last_used_service.as_deref());
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(user.finish()),
            Arc::new(arn.finish()),
            Arc::new(account.finish()),
            Arc::new(slot.finish()),
            Arc::new(active.finish()),
            Arc::new(rotated.finish()),
            Arc::new(used.finish()),
            Arc::new(never.finish()),
            Arc::new(region.finish()),
            Arc::new(service.finish()),
        ];
        RecordBatch::try_new(Self::slots_schema(), cols)
    }

    /// A one-line description of what was read, for the report's header.
    pub fn describe(&self) -> String {
        self.files
            .iter()
            .map(|f| {
                let what = match f.form {
                    InventoryForm::CredentialReport => "key slots",
                    _ => "keys",
                };
                let generated = f
                    .generated
                    .map(|g| format!(", generated {}", format_millis(g)))
                    .unwrap_or_default();
                format!(
                    "{} ({}, {} {what}{generated})",
                    f.path.display(),
                    f.form.name(),
                    f.entries
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// What one file holds.
#[derive(Debug, Default)]
struct Parsed {
    form: Option<InventoryForm>,
    keys: Vec<InventoryKey>,
    slots: Vec<CredentialSlot>,
    generated: Option<Millis>,
}

#[derive(Debug)]
struct ParsedFile {
    form: InventoryForm,
    keys: Vec<InventoryKey>,
    slots: Vec<CredentialSlot>,
    generated: Option<Millis>,
}

fn input_error(path: &Path, reason: impl Into<String>) -> InventoryError {
    InventoryError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Parse one inventory file of any form; `path` names it in errors.
fn parse(path: &Path, bytes: &[u8]) -> Result<ParsedFile, InventoryError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| input_error(path, format!("not UTF-8 text: {e}")))?;
    let text = text.trim_start_matches('\u{feff}');
    let trimmed = text.trim_start();
    let mut p = Parsed::default();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        parse_json(path, trimmed, &mut p)?;
    } else if let Some(decoded) = base64_report(trimmed) {
        // A credential report still base64-encoded, as the API returns it.
        p.form = Some(InventoryForm::CredentialReport);
        parse_credential_report(path, &decoded, &mut p)?;
    } else if first_line(trimmed).contains("access_key_1_last_rotated") {
        p.form = Some(InventoryForm::CredentialReport);
        parse_credential_report(path, trimmed, &mut p)?;
    } else {
        p.form = Some(InventoryForm::Csv);
        parse_key_csv(path, trimmed, &mut p)?;
    }
    let form = p.form.ok_or_else(|| {
        input_error(
            path,
            "holds no inventory (expected list-access-keys JSON, a CSV of UserName,AccessKeyId,Status,CreateDate, or a credential report)",
        )
    })?;
    Ok(ParsedFile {
        form,
        keys: p.keys,
        slots: p.slots,
        generated: p.generated,
    })
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// The text of a base64-encoded credential report, if `text` is one.
fn base64_report(text: &str) -> Option<String> {
    let compact: String = text.split_whitespace().collect();
    if compact.is_empty() || compact.contains(',') {
        return None;
    }
    let bytes = data_encoding::BASE64.decode(compact.as_bytes()).ok()?;
    let decoded = String::from_utf8(bytes).ok()?;
    first_line(&decoded)
        .contains("access_key_1_last_rotated")
        .then_some(decoded)
}

fn set_form(path: &Path, p: &mut Parsed, form: InventoryForm) -> Result<(), InventoryError> {
    match p.form {
        Some(f) if f != form => Err(input_error(
            path,
            format!(
                "mixes {} and {} content; give each form in its own file",
                f.name(),
                form.name()
            ),
        )),
        _ => {
            p.form = Some(form);
            Ok(())
        }
    }
}

fn parse_json(path: &Path, text: &str, p: &mut Parsed) -> Result<(), InventoryError> {
    let stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    for (n, doc) in stream.enumerate() {
        let doc = doc.map_err(|e| input_error(path, format!("not valid JSON: {e}")))?;
        json_document(path, &doc, &format!("document {}", n + 1), p)?;
    }
    Ok(())
}

fn json_document(path: &Path, doc: &Value, at: &str, p: &mut Parsed) -> Result<(), InventoryError> {
    match doc {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                json_document(path, item, &format!("{at}, element {}", i + 1), p)?;
            }
            Ok(())
        }
        Value::Object(o) if o.contains_key("AccessKeyMetadata") => {
            set_form(path, p, InventoryForm::ListAccessKeys)?;
            let items = o
                .get("AccessKeyMetadata")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    input_error(path, format!("{at}: AccessKeyMetadata is not a list"))
                })?;
            for (i, item) in items.iter().enumerate() {
                let key = json_key(path, item, &format!("{at}, AccessKeyMetadata[{i}]"))?;
                p.keys.push(key);
            }
            Ok(())
        }
        Value::Object(o) if o.contains_key("AccessKeyId") => {
            set_form(path, p, InventoryForm::ListAccessKeys)?;
            let key = json_key(path, doc, at)?;
            p.keys.push(key);
            Ok(())
        }
        Value::Object(o) if o.contains_key("Content") => {
            // `aws iam get-credential-report` output.
            set_form(path, p, InventoryForm::CredentialReport)?;
            let content = o.get("Content").and_then(Value::as_str).ok_or_else(|| {
                input_error(path, format!("{at}: Content is not a base64 string"))
            })?;
            let compact: String = content.split_whitespace().collect();
            let bytes = data_encoding::BASE64
                .decode(compact.as_bytes())
                .map_err(|e| input_error(path, format!("{at}: Content is not base64: {e}")))?;
            let csv = String::from_utf8(bytes)
                .map_err(|_| input_error(path, format!("{at}: Content does not decode to text")))?;
            p.generated = o
                .get("GeneratedTime")
                .and_then(Value::as_str)
                .and_then(parse_event_time);
            parse_credential_report(path, &csv, p)
        }
        _ => Err(input_error(
            path,
            format!(
                "{at}: not list-access-keys output (expected {{\"AccessKeyMetadata\": [...]}}) nor get-credential-report output (expected {{\"Content\": ...}})"
            ),
        )),
    }
}

fn json_key(path: &Path, item: &Value, at: &str) -> Result<InventoryKey, InventoryError> {
    let field = |name: &str| item.get(name).and_then(Value::as_str).map(str::trim);
    let id =
        field("AccessKeyId").ok_or_else(|| input_error(path, format!("{at}: no AccessKeyId")))?;
    let user =
        field("UserName").ok_or_else(|| input_error(path, format!("{at} ({id}): no UserName")))?;
    key_row(
        path,
        at,
        id,
        user,
        field("Status").unwrap_or(""),
        field("CreateDate").unwrap_or(""),
        InventoryForm::ListAccessKeys,
    )
}

fn key_row(
    path: &Path,
    at: &str,
    id: &str,
    user: &str,
    status: &str,
    created: &str,
    form: InventoryForm,
) -> Result<InventoryKey, InventoryError> {
    let key = AccessKeyId::parse(id).map_err(|e| input_error(path, format!("{at}: {e}")))?;
    let status = match status.to_ascii_lowercase().as_str() {
        "active" => "Active",
        "inactive" => "Inactive",
        "" => {
            return Err(input_error(
                path,
                format!("{at} ({id}): no Status (Active or Inactive)"),
            ));
        }
        _ => {
            return Err(input_error(
                path,
                format!("{at} ({id}): Status `{status}` is neither Active nor Inactive"),
            ));
        }
    };
    let created = if created.is_empty() {
        None
    } else {
        Some(parse_event_time(created).ok_or_else(|| {
            input_error(
                path,
                format!("{at} ({id}): CreateDate `{created}` is not an ISO 8601 time"),
            )
        })?)
    };
    let account = match decode_account(key.as_str()) {
        AccountDecode::Account(a) => Some(a),
        _ => None,
    };
    Ok(InventoryKey {
        access_key_id: key.into_string(),
        user_name: user.to_owned(),
        account_id: account,
        status: status.to_owned(),
        created,
        form,
    })
}

fn csv_reader(text: &str) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes())
}

fn normalise(header: &str) -> String {
    header
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The four-column CSV.
fn parse_key_csv(path: &Path, text: &str, p: &mut Parsed) -> Result<(), InventoryError> {
    let mut rows = csv_reader(text).into_records();
    let Some(first) = rows.next() else {
        return Ok(());
    };
    let first = first.map_err(|e| input_error(path, format!("line 1: {e}")))?;
    let names: Vec<String> = first.iter().map(normalise).collect();
    let find = |want: &[&str]| names.iter().position(|n| want.contains(&n.as_str()));
    let header = (
        find(&["username", "user"]),
        find(&["accesskeyid", "keyid", "accesskey"]),
        find(&["status"]),
        find(&["createdate", "created", "creationdate"]),
    );
    let (cols, data_first) = match header {
        (Some(u), Some(k), Some(s), Some(c)) => ((u, k, s, c), false),
        _ if first.iter().any(|f| AccessKeyId::parse(f).is_ok()) => ((0, 1, 2, 3), true),
        _ => {
            return Err(input_error(
                path,
                "line 1: a key CSV needs the columns UserName, AccessKeyId, Status, CreateDate (a header row naming them, or no header and that order)",
            ));
        }
    };
    let mut line = 1;
    let mut push = |rec: &csv::StringRecord, line: usize| -> Result<(), InventoryError> {
        if rec.iter().all(str::is_empty) {
            return Ok(());
        }
        let get = |i: usize| rec.get(i).unwrap_or("");
        let at = format!("line {line}");
        let key = key_row(
            path,
            &at,
            get(cols.1),
            get(cols.0),
            get(cols.2),
            get(cols.3),
            InventoryForm::Csv,
        )?;
        p.keys.push(key);
        Ok(())
    };
    if data_first {
        push(&first, line)?;
    }
    for rec in rows {
        line += 1;
        let rec = rec.map_err(|e| input_error(path, format!("line {line}: {e}")))?;
        push(&rec, line)?;
    }
    Ok(())
}

/// A credential report value: `N/A`, `not_supported`, `no_information` and empty mean none.
fn report_value(v: &str) -> Option<&str> {
    match v {
        "" | "N/A" | "not_supported" | "no_information" => None,
        v => Some(v),
    }
}

fn parse_credential_report(path: &Path, text: &str, p: &mut Parsed) -> Result<(), InventoryError> {
    set_form(path, p, InventoryForm::CredentialReport)?;
    let mut rows = csv_reader(text).into_records();
    let header = match rows.next() {
        Some(h) => h.map_err(|e| input_error(path, format!("line 1: {e}")))?,
        None => return Ok(()),
    };
    let col = |name: &str| -> Result<usize, InventoryError> {
        header.iter().position(|h| h == name).ok_or_else(|| {
            input_error(
                path,
                format!("line 1: the credential report has no `{name}` column"),
            )
        })
    };
    let user_col = col("user")?;
    let arn_col = col("arn")?;
    let mut slot_cols = Vec::new();
    for n in 1..=2u8 {
        slot_cols.push((
            n,
            col(&format!("access_key_{n}_active"))?,
            col(&format!("access_key_{n}_last_rotated"))?,
            col(&format!("access_key_{n}_last_used_date"))?,
            col(&format!("access_key_{n}_last_used_region"))?,
            col(&format!("access_key_{n}_last_used_service"))?,
        ));
    }
    for (i, rec) in rows.enumerate() {
        let line = i + 2;
        let rec = rec.map_err(|e| input_error(path, format!("line {line}: {e}")))?;
        if rec.iter().all(str::is_empty) {
            continue;
        }
        let get = |c: usize| rec.get(c).unwrap_or("");
        let user = get(user_col);
        let arn = get(arn_col);
        if user.is_empty() || arn.is_empty() {
            return Err(input_error(path, format!("line {line}: no user or arn")));
        }
        let account = arn
            .split(':')
            .nth(4)
            .filter(|a| !a.is_empty())
            .map(str::to_owned);
        for &(n, active_c, rotated_c, used_c, region_c, service_c) in &slot_cols {
            let active = match get(active_c).to_ascii_lowercase().as_str() {
                "true" => true,
                "false" | "" => false,
                other => {
                    return Err(input_error(
                        path,
                        format!(
                            "line {line} ({user}): access_key_{n}_active is `{other}`, not true or false"
                        ),
                    ));
                }
            };
            let time = |c: usize, what: &str| -> Result<Option<Millis>, InventoryError> {
                match report_value(get(c)) {
                    None => Ok(None),
                    Some(t) => parse_event_time(t).map(Some).ok_or_else(|| {
                        input_error(
                            path,
                            format!("line {line} ({user}): access_key_{n}_{what} `{t}` is not an ISO 8601 time"),
                        )
                    }),
                }
            };
            let last_rotated = time(rotated_c, "last_rotated")?;
            if last_rotated.is_none() && !active {
                continue; // no key in this slot
            }
            let last_used = time(used_c, "last_used_date")?;
            p.slots.push(CredentialSlot {
                user_name: user.to_owned(),
                user_arn: arn.to_owned(),
                account_id: account.clone(),
                slot: n,
                active,
                last_rotated,
                last_used,
                never_used: get(used_c) == "N/A",
                last_used_region: report_value(get(region_c)).map(str::to_owned),
                last_used_service: report_value(get(service_c)).map(str::to_owned),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<ParsedFile, InventoryError> {
        parse(Path::new("inv"), text.as_bytes())
    }

    const HEADER: &str = "user,arn,user_creation_time,password_enabled,password_last_used,password_last_changed,password_next_rotation,mfa_active,access_key_1_active,access_key_1_last_rotated,access_key_1_last_used_date,access_key_1_last_used_region,access_key_1_last_used_service,access_key_2_active,access_key_2_last_rotated,access_key_2_last_used_date,access_key_2_last_used_region,access_key_2_last_used_service,cert_1_active,cert_1_last_rotated,cert_2_active,cert_2_last_rotated";

    #[test]
    fn list_access_keys_in_every_shape() {
        let one = r#"{"AccessKeyMetadata": [{"UserName": "ci-deploy", "AccessKeyId": "AKIARTXV5AHDZMKNCBCQ", "Status": "Active", "CreateDate": "2023-08-14T09:30:00+00:00"}]}"#;
        let p = parse_str(one).expect("one document");
        assert_eq!(p.form, InventoryForm::ListAccessKeys);
        assert_eq!(
            p.keys,
            vec![InventoryKey {
                access_key_id: "AKIARTXV5AHDZMKNCBCQ".into(),
                user_name: "ci-deploy".into(),
                account_id: Some("111111111111".into()),
                status: "Active".into(),
                created: Some(1_692_005_400_000),
                form: InventoryForm::ListAccessKeys,
            }]
        );
        // A list of documents, and documents one after another.
        let list = format!("[{one}, {one}]");
        assert_eq!(parse_str(&list).expect("list").keys.len(), 2);
        let stream = format!("{one}\n{one}\n");
        assert_eq!(parse_str(&stream).expect("stream").keys.len(), 2);
    }

    #[test]
    fn bad_records_are_named() {
        let bad = r#"{"AccessKeyMetadata": [{"UserName": "a", "AccessKeyId": "akiartxv5ahdzmkncbcq", "Status": "Active"}]}"#;
        let err = parse_str(bad).expect_err("lower case").to_string();
        assert!(
            err.contains("document 1, AccessKeyMetadata[0]") && err.contains("did you mean"),
            "{err}"
        );
        let bad = r#"{"AccessKeyMetadata": [{"UserName": "a", "AccessKeyId": "AKIARTXV5AHDZMKNCBCQ", "Status": "Expired"}]}"#;
        let err = parse_str(bad).expect_err("status").to_string();
        assert!(err.contains("Status `Expired`"), "{err}");
        let err = parse_str(r#"{"Users": []}"#)
            .expect_err("not an inventory")
            .to_string();
        assert!(err.contains("not list-access-keys output"), "{err}");
    }

    #[test]
    fn key_csv_with_and_without_header() {
        let with = "AccessKeyId,UserName,CreateDate,Status\nAKIARTXV5AHDZMKNCBCQ,ci-deploy,2023-08-14T09:30:00Z,inactive\n\n";
        let p = parse_str(with).expect("header");
        assert_eq!(p.form, InventoryForm::Csv);
        assert_eq!(p.keys.len(), 1);
        assert_eq!(p.keys[0].user_name, "ci-deploy");
        assert_eq!(p.keys[0].status, "Inactive");
        let without = "ci-deploy,AKIARTXV5AHDZMKNCBCQ,Active,2023-08-14T09:30:00Z\n";
        let p = parse_str(without).expect("no header");
        assert_eq!(p.keys[0].created, Some(1_692_005_400_000));
        let err = parse_str("name,id\nx,y\n")
            .expect_err("no columns")
            .to_string();
        assert!(
            err.contains("UserName, AccessKeyId, Status, CreateDate"),
            "{err}"
        );
        let err = parse_str(
            "UserName,AccessKeyId,Status,CreateDate\nx,AKIARTXV5AHDZMKNCBCQ,Active,last tuesday\n",
        )
        .expect_err("bad time")
        .to_string();
        assert!(
            err.contains("line 2") && err.contains("last tuesday"),
            "{err}"
        );
    }

    #[test]
    fn credential_report_slots() {
        let text = format!(
            "{HEADER}\n<root_account>,arn:aws:iam::111111111111:root,2020-01-01T00:00:00+00:00,not_supported,2024-11-01T00:00:00+00:00,not_supported,not_supported,true,false,N/A,N/A,N/A,N/A,false,N/A,N/A,N/A,N/A,false,N/A,false,N/A\n\
             ci-deploy,arn:aws:iam::111111111111:user/ci-deploy,2023-08-14T09:00:00+00:00,false,N/A,N/A,N/A,false,false,2023-08-14T09:30:00+00:00,2024-11-30T03:17:00+00:00,us-east-1,sts,true,2024-01-10T10:00:00+00:00,N/A,N/A,N/A,false,N/A,false,N/A\n"
        );
        let p = parse_str(&text).expect("report");
        assert_eq!(p.form, InventoryForm::CredentialReport);
        assert_eq!(p.slots.len(), 2, "root has no key; ci-deploy has two");
        let s1 = &p.slots[0];
        assert_eq!((s1.slot, s1.active, s1.never_used), (1, false, false));
        assert_eq!(s1.account_id.as_deref(), Some("111111111111"));
        assert_eq!(s1.last_used_service.as_deref(), Some("sts"));
        let s2 = &p.slots[1];
        assert_eq!((s2.slot, s2.active, s2.never_used), (2, true, true));
        assert_eq!(s2.last_used, None);

        // The same report base64-encoded, bare and inside get-credential-report JSON.
        let b64 = data_encoding::BASE64.encode(text.as_bytes());
        assert_eq!(parse_str(&b64).expect("base64").slots, p.slots);
        let json = format!(
            r#"{{"Content": "{b64}", "ReportFormat": "text/csv", "GeneratedTime": "2024-11-30T12:00:00+00:00"}}"#
        );
        let j = parse_str(&json).expect("json");
        assert_eq!(j.slots, p.slots);
        assert_eq!(j.generated, Some(1_732_968_000_000));
    }

    #[test]
    fn later_files_win_and_say_so() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = dir.path().join("a.csv");
        let b = dir.path().join("b.json");
        std::fs::write(
            &a,
            "UserName,AccessKeyId,Status,CreateDate\nci-deploy,AKIARTXV5AHDZMKNCBCQ,Active,2023-08-14T09:30:00Z\n",
        )
        .expect("write");
        std::fs::write(
            &b,
            r#"{"AccessKeyMetadata": [{"UserName": "ci-deploy", "AccessKeyId": "AKIARTXV5AHDZMKNCBCQ", "Status": "Inactive", "CreateDate": "2023-08-14T09:30:00Z"}]}"#,
        )
        .expect("write");
        let inv = Inventory::load(&[a, b]).expect("load");
        assert_eq!(inv.keys.len(), 1);
        assert_eq!(inv.keys[0].status, "Inactive");
        assert_eq!(inv.notes.len(), 1, "{:?}", inv.notes);
        let batch = inv.keys_batch().expect("batch");
        assert_eq!(batch.num_rows(), 1);
        let err = Inventory::load(&[dir.path().join("missing.json")])
            .expect_err("missing")
            .to_string();
        assert!(err.contains("missing.json"), "{err}");
    }
}
