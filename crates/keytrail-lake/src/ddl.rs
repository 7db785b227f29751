//! `keytrail lake ddl`: the statements that let other engines read the lake's tables in place
//! (Athena, the AWS Glue Data Catalog, Trino's Hive connector, Spark, DuckDB).
//!
//! Everything is generated from THE schema ([`Table::schema`]) by walking its Arrow types, so
//! the statements cannot drift from the files: a column added to the schema appears in every
//! engine's form with no edit here. Nothing in this module names a column except the partition
//! column `date`, which lives in directory names, not in the schema.
//!
//! The output is a pure function of the schema and of [`DdlOptions`]; [`Extent::of`] reads
//! what the options need from a lake's manifest (its first day, the tables that hold files).
//! Each statement ends with `;` at the end of its last line, and no other line ends with `;`,
//! so a reader can split the output on such lines.
//!
//! The snapshot tests below pin every engine's form for a fixed first day. When the schema
//! changes, review and accept the new snapshots with
//! `INSTA_UPDATE=always cargo test -p keytrail-lake ddl` (or `cargo insta review`).

use std::collections::BTreeSet;

use arrow::datatypes::{DataType, Field, TimeUnit};
use keytrail_model::Table;
use keytrail_model::schema::{SCHEMA_VERSION, col};
use keytrail_model::time::{day_string, parse_day};
use serde_json::json;

use crate::manifest::Manifest;

/// The engines `keytrail lake ddl` writes for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Engine {
    /// Amazon Athena (engine version 3): Hive DDL with partition projection on `date`.
    Athena,
    /// The AWS Glue Data Catalog: `aws glue create-table` commands (a shell script) that make
    /// the same tables as the Athena form without Athena, for Athena, EMR, Redshift Spectrum,
    /// Glue jobs and infrastructure code.
    Glue,
    /// Trino's Hive connector: external tables and `system.sync_partition_metadata`.
    Trino,
    /// Apache Spark SQL: `CREATE TABLE … USING parquet` and `MSCK REPAIR TABLE`.
    Spark,
    /// DuckDB: views over `read_parquet(…, hive_partitioning = true)`.
    DuckDb,
}

impl Engine {
    pub const ALL: [Engine; 5] = [
        Engine::Athena,
        Engine::Glue,
        Engine::Trino,
        Engine::Spark,
        Engine::DuckDb,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Engine::Athena => "athena",
            Engine::Glue => "glue",
            Engine::Trino => "trino",
            Engine::Spark => "spark",
            Engine::DuckDb => "duckdb",
        }
    }

    /// Whether the form projects partitions from a date range (and so needs the first day).
    pub fn needs_first_day(self) -> bool {
        matches!(self, Engine::Athena | Engine::Glue)
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct DdlOptions {
    pub engine: Engine,
    /// The lake's root as the engine reaches it: `s3://bucket/prefix`, `s3a://…`,
    /// `file:///abs/path`. Each table is the directory of its name below it.
    pub location: String,
    /// Database (Trino: schema) to create the tables in; created if it does not exist.
    /// `None`: the session's current one (Glue and Trino: `default`, which they need named).
    pub database: Option<String>,
    /// Put before each table's name: `ct_` makes `ct_events`.
    pub table_prefix: String,
    /// The lake's first day (days since 1970-01-01): where Athena's and Glue's projection
    /// range starts.
    pub first_day: Option<i32>,
    /// Tables with no files yet: DuckDB gets a typed empty view (`read_parquet` refuses a
    /// pattern that matches nothing), Spark and Trino no partition discovery (it fails on a
    /// directory that does not exist).
    pub empty_tables: BTreeSet<Table>,
}

/// Why no statements could be generated.
#[derive(Debug, thiserror::Error)]
pub enum DdlError {
    #[error("location {location:?}: {reason}")]
    Location { location: String, reason: String },
    #[error(
        "{what} {name:?}: use lower-case letters, digits and `_`, starting with a letter or `_`"
    )]
    Name { what: &'static str, name: String },
    #[error(
        "{engine}'s partition projection starts at the lake's first day, and the lake holds no data yet: ingest first, or give the first day (--first-day YYYY-MM-DD)"
    )]
    NoFirstDay { engine: &'static str },
    #[error("column {column}: {engine} has no type for Arrow's {data_type}")]
    Type {
        engine: &'static str,
        column: String,
        data_type: String,
    },
}

/// What the statements need to know of a lake.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extent {
    /// The earliest `date=` partition of any live file.
    pub first_day: Option<i32>,
    /// Tables with at least one live file.
    pub tables: BTreeSet<Table>,
}

impl Extent {
    /// From the live files of a lake's manifest (`<table>/date=YYYY-MM-DD/<file>`).
    pub fn of(manifest: &Manifest) -> Extent {
        let mut out = Extent::default();
        for f in manifest.live_files() {
            let mut parts = f.path.split('/');
            let (Some(table), Some(part)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Some(table) = Table::from_name(table) else {
                continue;
            };
            out.tables.insert(table);
            if let Some(day) = part.strip_prefix("date=").and_then(parse_day) {
                out.first_day = Some(out.first_day.map_or(day, |d| d.min(day)));
            }
        }
        out
    }

    /// The tables with no live file.
    pub fn empty_tables(&self) -> BTreeSet<Table> {
        Table::ALL
            .into_iter()
            .filter(|t| !self.tables.contains(t))
            .collect()
    }
}

/// Hive's reserved words (Athena's DDL list) that a struct field could plausibly be named:
/// such a field is quoted with backticks in the Athena form.
const HIVE_RESERVED: &[&str] = &[
    "all",
    "alter",
    "and",
    "array",
    "as",
    "between",
    "bigint",
    "binary",
    "boolean",
    "both",
    "by",
    "case",
    "cast",
    "char",
    "column",
    "commit",
    "conf",
    "constraint",
    "create",
    "cross",
    "cube",
    "current",
    "cursor",
    "database",
    "date",
    "decimal",
    "delete",
    "describe",
    "distinct",
    "double",
    "drop",
    "else",
    "end",
    "exchange",
    "exists",
    "extended",
    "external",
    "extract",
    "false",
    "fetch",
    "float",
    "following",
    "for",
    "foreign",
    "from",
    "full",
    "function",
    "grant",
    "group",
    "grouping",
    "having",
    "if",
    "import",
    "in",
    "inner",
    "insert",
    "int",
    "integer",
    "intersect",
    "interval",
    "into",
    "is",
    "join",
    "lateral",
    "left",
    "less",
    "like",
    "local",
    "macro",
    "map",
    "more",
    "none",
    "not",
    "null",
    "numeric",
    "of",
    "on",
    "only",
    "or",
    "order",
    "out",
    "outer",
    "over",
    "partition",
    "percent",
    "preceding",
    "precision",
    "primary",
    "procedure",
    "range",
    "reads",
    "reduce",
    "references",
    "regexp",
    "revoke",
    "right",
    "rlike",
    "rollback",
    "rollup",
    "row",
    "rows",
    "select",
    "set",
    "smallint",
    "start",
    "table",
    "tablesample",
    "then",
    "time",
    "timestamp",
    "to",
    "transform",
    "trigger",
    "true",
    "truncate",
    "unbounded",
    "union",
    "uniquejoin",
    "update",
    "user",
    "using",
    "values",
    "varchar",
    "views",
    "when",
    "where",
    "window",
    "with",
];

/// A plain SQL identifier: what every engine and the Glue catalog accept.
fn is_plain(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn check_name(what: &'static str, name: &str) -> Result<(), DdlError> {
    if is_plain(name) {
        Ok(())
    } else {
        Err(DdlError::Name {
            what,
            name: name.to_owned(),
        })
    }
}

/// A table, database or top-level column name as the engine's statements spell it.
fn ident(engine: Engine, name: &str) -> String {
    match engine {
        Engine::Athena | Engine::Spark => format!("`{name}`"),
        Engine::Trino | Engine::DuckDb => format!("\"{name}\""),
        Engine::Glue => name.to_owned(),
    }
}

/// A field name inside a struct type.
fn field_ident(engine: Engine, name: &str) -> String {
    match engine {
        // As AWS's own CloudTrail table spells them: bare, unless a reserved word.
        Engine::Athena if HIVE_RESERVED.contains(&name) => format!("`{name}`"),
        Engine::Athena | Engine::Glue => name.to_owned(),
        Engine::Spark => format!("`{name}`"),
        Engine::Trino | Engine::DuckDb => format!("\"{name}\""),
    }
}

/// The engine's type for an Arrow type. `path` names the column for errors.
pub fn column_type(engine: Engine, dt: &DataType, path: &str) -> Result<String, DdlError> {
    use Engine::*;
    let by_engine = |hive: &str, trino: &str, spark: &str, duck: &str| -> String {
        match engine {
            Athena | Glue => hive,
            Trino => trino,
            Spark => spark,
            DuckDb => duck,
        }
        .to_owned()
    };
    let unsupported = || DdlError::Type {
        engine: engine.name(),
        column: path.to_owned(),
        data_type: dt.to_string(),
    };
    Ok(match dt {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            by_engine("string", "varchar", "STRING", "VARCHAR")
        }
        DataType::Boolean => by_engine("boolean", "boolean", "BOOLEAN", "BOOLEAN"),
        DataType::Int8 => by_engine("tinyint", "tinyint", "TINYINT", "TINYINT"),
        DataType::Int16 => by_engine("smallint", "smallint", "SMALLINT", "SMALLINT"),
        DataType::Int32 => by_engine("int", "integer", "INT", "INTEGER"),
        DataType::Int64 => by_engine("bigint", "bigint", "BIGINT", "BIGINT"),
        DataType::Float32 => by_engine("float", "real", "FLOAT", "FLOAT"),
        DataType::Float64 => by_engine("double", "double", "DOUBLE", "DOUBLE"),
        DataType::Date32 => by_engine("date", "date", "DATE", "DATE"),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            by_engine("binary", "varbinary", "BINARY", "BLOB")
        }
        DataType::Timestamp(unit, tz) => match engine {
            // Hive's timestamp reads Parquet's UTC-adjusted timestamps as UTC times.
            Athena | Glue => "timestamp".to_owned(),
            // The Hive connector has no `timestamp with time zone` columns.
            Trino => format!(
                "timestamp({})",
                match unit {
                    TimeUnit::Second => 0,
                    TimeUnit::Millisecond => 3,
                    TimeUnit::Microsecond => 6,
                    TimeUnit::Nanosecond => 9,
                }
            ),
            Spark if tz.is_some() => "TIMESTAMP".to_owned(),
            Spark => "TIMESTAMP_NTZ".to_owned(),
            DuckDb if tz.is_some() => "TIMESTAMP WITH TIME ZONE".to_owned(),
            DuckDb => "TIMESTAMP".to_owned(),
        },
        DataType::Struct(fields) => {
            let mut parts = Vec::with_capacity(fields.len());
            for f in fields {
                parts.push(struct_member(engine, f, path)?);
            }
            match engine {
                Athena | Glue => format!("struct<{}>", parts.join(",")),
                Trino => format!("row({})", parts.join(", ")),
                Spark => format!("STRUCT<{}>", parts.join(", ")),
                DuckDb => format!("STRUCT({})", parts.join(", ")),
            }
        }
        DataType::List(item) | DataType::LargeList(item) => {
            let inner = column_type(engine, item.data_type(), &format!("{path}[]"))?;
            match engine {
                Athena | Glue => format!("array<{inner}>"),
                Trino => format!("array({inner})"),
                Spark => format!("ARRAY<{inner}>"),
                DuckDb => format!("{inner}[]"),
            }
        }
        DataType::Map(entries, _) => {
            let DataType::Struct(kv) = entries.data_type() else {
                return Err(unsupported());
            };
            let [k, v] = kv.iter().collect::<Vec<_>>()[..] else {
                return Err(unsupported());
            };
            let k = column_type(engine, k.data_type(), &format!("{path}.key"))?;
            let v = column_type(engine, v.data_type(), &format!("{path}.value"))?;
            match engine {
                Athena | Glue => format!("map<{k},{v}>"),
                Trino => format!("map({k}, {v})"),
                Spark => format!("MAP<{k}, {v}>"),
                DuckDb => format!("MAP({k}, {v})"),
            }
        }
        _ => return Err(unsupported()),
    })
}

fn struct_member(engine: Engine, f: &Field, parent: &str) -> Result<String, DdlError> {
    let path = format!("{parent}.{}", f.name());
    check_name("column", f.name()).map_err(|_| DdlError::Name {
        what: "column",
        name: path.clone(),
    })?;
    let ty = column_type(engine, f.data_type(), &path)?;
    let name = field_ident(engine, f.name());
    Ok(match engine {
        Engine::Athena | Engine::Glue => format!("{name}:{ty}"),
        Engine::Spark => format!("{name}: {ty}"),
        Engine::Trino | Engine::DuckDb => format!("{name} {ty}"),
    })
}

/// Every column of `table`: its name and the engine's type (the partition column not
/// included).
pub fn columns(engine: Engine, table: Table) -> Result<Vec<(String, String)>, DdlError> {
    let schema = table.schema();
    let mut out = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        check_name("column", f.name())?;
        out.push((
            f.name().clone(),
            column_type(engine, f.data_type(), f.name())?,
        ));
    }
    Ok(out)
}

/// The type of the partition column `date` in the engine's form. Athena and Glue project it
/// as a `yyyy-MM-dd` string (the type AWS documents for date projection); the others read the
/// directory names as dates, as keytrail does.
fn partition_type(engine: Engine) -> &'static str {
    match engine {
        Engine::Athena | Engine::Glue => "string",
        Engine::Trino => "date",
        Engine::Spark | Engine::DuckDb => "DATE",
    }
}

/// One statement: comment lines (already prefixed) and its text, without the final `;`.
struct Statement {
    comments: Vec<String>,
    text: String,
}

impl Statement {
    fn new(text: String) -> Statement {
        Statement {
            comments: Vec::new(),
            text,
        }
    }

    fn with_comment(mut self, line: String) -> Statement {
        self.comments.push(line);
        self
    }
}

/// Checked options, ready to render.
struct Ctx<'a> {
    opts: &'a DdlOptions,
    engine: Engine,
    /// The location without a trailing `/`.
    root: String,
}

impl Ctx<'_> {
    fn table_name(&self, table: Table) -> String {
        format!("{}{}", self.opts.table_prefix, table.name())
    }

    /// The database the engine must be given by name (Glue, Trino), or the one asked for.
    fn database(&self) -> Option<String> {
        match (&self.opts.database, self.engine) {
            (Some(d), _) => Some(d.clone()),
            (None, Engine::Glue | Engine::Trino) => Some("default".to_owned()),
            (None, _) => None,
        }
    }

    fn qualified(&self, table: Table) -> String {
        let t = ident(self.engine, &self.table_name(table));
        match self.database() {
            Some(d) => format!("{}.{t}", ident(self.engine, &d)),
            None => t,
        }
    }

    fn table_location(&self, table: Table) -> String {
        format!("{}/{}/", self.root, table.name())
    }

    fn first_day(&self) -> Result<String, DdlError> {
        self.opts
            .first_day
            .map(day_string)
            .ok_or(DdlError::NoFirstDay {
                engine: self.engine.name(),
            })
    }

    /// Athena's and Glue's table properties: partition projection on `date`.
    fn projection(&self, table: Table) -> Result<Vec<(String, String)>, DdlError> {
        let d = col::DATE;
        Ok(vec![
            ("projection.enabled".into(), "true".into()),
            (format!("projection.{d}.type"), "date".into()),
            (format!("projection.{d}.format"), "yyyy-MM-dd".into()),
            (
                format!("projection.{d}.range"),
                format!("{},NOW", self.first_day()?),
            ),
            (format!("projection.{d}.interval"), "1".into()),
            (format!("projection.{d}.interval.unit"), "DAYS".into()),
            (
                "storage.location.template".into(),
                format!("{}{d}=${{{d}}}/", self.table_location(table)),
            ),
            (
                keytrail_model::schema::META_SCHEMA_VERSION.into(),
                SCHEMA_VERSION.to_string(),
            ),
        ])
    }

    fn column_lines(&self, table: Table) -> Result<Vec<String>, DdlError> {
        let sep = match self.engine {
            Engine::Athena | Engine::Spark | Engine::Trino | Engine::DuckDb => " ",
            Engine::Glue => ":",
        };
        Ok(columns(self.engine, table)?
            .into_iter()
            .map(|(name, ty)| format!("{}{sep}{ty}", ident(self.engine, &name)))
            .collect())
    }

    fn athena(&self, table: Table) -> Result<Vec<Statement>, DdlError> {
        let cols = self.column_lines(table)?;
        let props: Vec<String> = self
            .projection(table)?
            .into_iter()
            .map(|(k, v)| format!("  '{k}' = '{v}'"))
            .collect();
        Ok(vec![Statement::new(format!(
            "CREATE EXTERNAL TABLE {} (\n  {}\n)\nCOMMENT '{}'\nPARTITIONED BY ({} {})\nSTORED AS PARQUET\nLOCATION '{}'\nTBLPROPERTIES (\n{}\n)",
            self.qualified(table),
            cols.join(",\n  "),
            self.table_comment(table),
            ident(self.engine, col::DATE),
            partition_type(self.engine),
            self.table_location(table),
            props.join(",\n"),
        ))])
    }

    fn table_comment(&self, table: Table) -> String {
        format!("keytrail {}, schema version {SCHEMA_VERSION}", table.name())
    }

    fn glue(&self, table: Table) -> Result<Vec<Statement>, DdlError> {
        let columns: Vec<serde_json::Value> = columns(self.engine, table)?
            .into_iter()
            .map(|(name, ty)| json!({ "Name": name, "Type": ty }))
            .collect();
        let mut params = serde_json::Map::new();
        params.insert("EXTERNAL".into(), "TRUE".into());
        params.insert("classification".into(), "parquet".into());
        for (k, v) in self.projection(table)? {
            params.insert(k, v.into());
        }
        let input = json!({
            "Name": self.table_name(table),
            "Description": self.table_comment(table),
            "TableType": "EXTERNAL_TABLE",
            "Parameters": params,
            "PartitionKeys": [{ "Name": col::DATE, "Type": partition_type(self.engine) }],
            "StorageDescriptor": {
                "Columns": columns,
                "Location": self.table_location(table),
                "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
                "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
                "SerdeInfo": {
                    "SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
                    "Parameters": { "serialization.format": "1" }
                }
            }
        });
        let text = serde_json::to_string_pretty(&input).unwrap_or_default();
        if text.contains('\'') {
            // Checked names and location never hold one; the shell quoting relies on it.
            return Err(DdlError::Location {
                location: self.root.clone(),
                reason: "a single quote cannot be passed in the shell form".into(),
            });
        }
        let db = self.database().unwrap_or_default();
        Ok(vec![Statement::new(format!(
            "aws glue create-table --database-name {db} --table-input '{text}'"
        ))])
    }

    fn trino(&self, table: Table) -> Result<Vec<Statement>, DdlError> {
        let mut cols = self.column_lines(table)?;
        cols.push(format!(
            "{} {}",
            ident(self.engine, col::DATE),
            partition_type(self.engine)
        ));
        let create = Statement::new(format!(
            "CREATE TABLE {} (\n  {}\n)\nCOMMENT '{}'\nWITH (\n  format = 'PARQUET',\n  partitioned_by = ARRAY['{}'],\n  external_location = '{}'\n)",
            self.qualified(table),
            cols.join(",\n  "),
            self.table_comment(table),
            col::DATE,
            self.table_location(table),
        ));
        let schema = self.database().unwrap_or_default();
        let name = self.table_name(table);
        if self.opts.empty_tables.contains(&table) {
            return Ok(vec![create.with_comment(format!(
                "-- {name}: no files yet; once an ingest writes some, run CALL system.sync_partition_metadata(schema_name => '{schema}', table_name => '{name}', mode => 'FULL')"
            ))]);
        }
        Ok(vec![
            create,
            Statement::new(format!(
                "CALL system.sync_partition_metadata(schema_name => '{schema}', table_name => '{name}', mode => 'FULL')"
            )),
        ])
    }

    fn spark(&self, table: Table) -> Result<Vec<Statement>, DdlError> {
        let mut cols = self.column_lines(table)?;
        cols.push(format!(
            "{} {}",
            ident(self.engine, col::DATE),
            partition_type(self.engine)
        ));
        let qualified = self.qualified(table);
        let create = Statement::new(format!(
            "CREATE TABLE {qualified} (\n  {}\n)\nUSING parquet\nPARTITIONED BY ({})\nLOCATION '{}'\nCOMMENT '{}'\nTBLPROPERTIES ('{}' = '{SCHEMA_VERSION}')",
            cols.join(",\n  "),
            ident(self.engine, col::DATE),
            self.table_location(table),
            self.table_comment(table),
            keytrail_model::schema::META_SCHEMA_VERSION,
        ));
        if self.opts.empty_tables.contains(&table) {
            return Ok(vec![create.with_comment(format!(
                "-- {}: no files yet; once an ingest writes some, run MSCK REPAIR TABLE {qualified}",
                self.table_name(table)
            ))]);
        }
        Ok(vec![
            create,
            Statement::new(format!("MSCK REPAIR TABLE {qualified}")),
        ])
    }

    fn duckdb(&self, table: Table) -> Result<Vec<Statement>, DdlError> {
        let qualified = self.qualified(table);
        let date = ident(self.engine, col::DATE);
        if self.opts.empty_tables.contains(&table) {
            // `read_parquet` refuses a pattern that matches no file: an empty view of the
            // same columns and types instead.
            let mut cols: Vec<String> = columns(self.engine, table)?
                .into_iter()
                .map(|(name, ty)| format!("CAST(NULL AS {ty}) AS {}", ident(self.engine, &name)))
                .collect();
            cols.push(format!(
                "CAST(NULL AS {}) AS {date}",
                partition_type(self.engine)
            ));
            return Ok(vec![
                Statement::new(format!(
                    "CREATE OR REPLACE VIEW {qualified} AS\nSELECT\n  {}\nWHERE false",
                    cols.join(",\n  ")
                ))
                .with_comment(format!(
                    "-- {}: no files yet, so an empty view with its columns; run `keytrail lake ddl` again once an ingest writes some",
                    self.table_name(table)
                )),
            ]);
        }
        Ok(vec![Statement::new(format!(
            "CREATE OR REPLACE VIEW {qualified} AS\nSELECT * FROM read_parquet('{}*/*.parquet', hive_partitioning = true, hive_types = {{'{}': {}}})",
            self.table_location(table),
            col::DATE,
            partition_type(self.engine),
        ))])
    }
}

/// The statements that create `events`, `insights` and `key_daily` over the lake at
/// `opts.location` for `opts.engine`, each ending with `;` at the end of its last line.
pub fn ddl(opts: &DdlOptions) -> Result<String, DdlError> {
    let engine = opts.engine;
    if let Some(d) = &opts.database {
        check_name("database", d)?;
    }
    if !opts.table_prefix.is_empty() {
        check_name("table prefix", &opts.table_prefix)?;
    }
    let root = opts.location.trim_end_matches('/').to_owned();
    let bad = |reason: &str| DdlError::Location {
        location: opts.location.clone(),
        reason: reason.to_owned(),
    };
    if !root.contains("://") {
        return Err(bad("expected a URI: s3://BUCKET/PREFIX, file:///PATH, ..."));
    }
    if root
        .chars()
        .any(|c| matches!(c, '\'' | '"' | '\\' | ';') || c.is_control())
    {
        return Err(bad(
            "quotes, backslashes, `;` and control characters are not allowed",
        ));
    }
    if engine.needs_first_day() && !root.starts_with("s3://") {
        return Err(bad(&format!(
            "{} reads tables from Amazon S3 only: give --location s3://BUCKET/PREFIX",
            engine.name()
        )));
    }
    let ctx = Ctx { opts, engine, root };

    let mut statements = Vec::new();
    let (c, run) = match engine {
        Engine::Glue => ("#", "run it with sh (AWS CLI v2, glue:CreateTable)"),
        _ => ("--", "run it in a session of that engine"),
    };
    let header = vec![
        format!(
            "{c} keytrail lake ddl --engine {}: the tables of the keytrail lake at {} (schema version {SCHEMA_VERSION}); {run}.",
            engine.name(),
            ctx.root
        ),
        format!("{c} Generated from keytrail's schema; see docs/schema.md and docs/scale-out.md."),
    ];
    if let Some(d) = &opts.database {
        let text = match engine {
            Engine::Athena | Engine::Spark => Some(format!(
                "CREATE DATABASE IF NOT EXISTS {}",
                ident(engine, d)
            )),
            Engine::Trino | Engine::DuckDb => {
                Some(format!("CREATE SCHEMA IF NOT EXISTS {}", ident(engine, d)))
            }
            // Glue's create-database fails when the database exists: said in the header.
            Engine::Glue => None,
        };
        if let Some(text) = text {
            statements.push(Statement::new(text));
        }
    }
    for table in Table::ALL {
        statements.extend(match engine {
            Engine::Athena => ctx.athena(table)?,
            Engine::Glue => ctx.glue(table)?,
            Engine::Trino => ctx.trino(table)?,
            Engine::Spark => ctx.spark(table)?,
            Engine::DuckDb => ctx.duckdb(table)?,
        });
    }
    if let Some(first) = statements.first_mut() {
        let mut comments = header;
        if engine == Engine::Glue
            && let Some(d) = &opts.database
        {
            comments.push(format!(
                "# The database must exist: aws glue create-database --database-input Name={d}"
            ));
        }
        comments.append(&mut first.comments);
        first.comments = comments;
    }
    let mut out = String::new();
    for (i, s) in statements.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        for c in &s.comments {
            out.push_str(c);
            out.push('\n');
        }
        out.push_str(&s.text);
        out.push_str(";\n");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(engine: Engine) -> DdlOptions {
        DdlOptions {
            engine,
            location: "s3://my-lake-bucket/keytrail/".into(),
            database: Some("keytrail".into()),
            table_prefix: String::new(),
            first_day: parse_day("2024-11-24"),
            empty_tables: BTreeSet::new(),
        }
    }

    fn statements(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = String::new();
        for line in text.lines() {
            cur.push_str(line);
            cur.push('\n');
            if line.ends_with(';') {
                out.push(std::mem::take(&mut cur));
            }
        }
        assert!(
            cur.trim().is_empty(),
            "text after the last statement: {cur}"
        );
        out
    }

    #[test]
    fn athena_snapshot() {
        insta::assert_snapshot!(ddl(&opts(Engine::Athena)).expect("ddl"));
    }

    #[test]
    fn glue_snapshot() {
        insta::assert_snapshot!(ddl(&opts(Engine::Glue)).expect("ddl"));
    }

    #[test]
    fn trino_snapshot() {
        insta::assert_snapshot!(ddl(&opts(Engine::Trino)).expect("ddl"));
    }

    #[test]
    fn spark_snapshot() {
        let mut o = opts(Engine::Spark);
        o.location = "s3a://my-lake-bucket/keytrail".into();
        insta::assert_snapshot!(ddl(&o).expect("ddl"));
    }

    #[test]
    fn duckdb_snapshot() {
        let mut o = opts(Engine::DuckDb);
        o.database = None;
        o.empty_tables = BTreeSet::from([Table::Insights]);
        insta::assert_snapshot!(ddl(&o).expect("ddl"));
    }

    /// Every column of every table is in every form, with the type the walk gives it: the
    /// statements follow the schema, not a list of their own.
    #[test]
    fn every_column_of_the_schema_is_declared() {
        for engine in Engine::ALL {
            let mut o = opts(engine);
            if engine == Engine::DuckDb {
                // DuckDB's views declare their columns only where a table has no files.
                o.empty_tables = Table::ALL.into();
            }
            let text = ddl(&o).expect("ddl");
            for table in Table::ALL {
                for (name, ty) in columns(engine, table).expect("columns") {
                    let line = match engine {
                        Engine::DuckDb => format!("CAST(NULL AS {ty}) AS {}", ident(engine, &name)),
                        Engine::Glue => format!(
                            "      {{\n        \"Name\": \"{name}\",\n        \"Type\": \"{ty}\"\n      }}"
                        ),
                        _ => format!("{} {ty}", ident(engine, &name)),
                    };
                    assert!(text.contains(&line), "{engine:?}: no `{line}`");
                }
            }
        }
        // One nested example, by hand: a list of structs and a timestamp.
        let t = columns(Engine::Athena, Table::Events).expect("columns");
        let get = |n: &str| t.iter().find(|(c, _)| c == n).map(|(_, ty)| ty.as_str());
        assert_eq!(
            get("resources"),
            Some("array<struct<arn:string,accountid:string,type:string>>")
        );
        assert_eq!(get("eventtime"), Some("timestamp"));
        let t = columns(Engine::Trino, Table::KeyDaily).expect("columns");
        let get = |n: &str| t.iter().find(|(c, _)| c == n).map(|(_, ty)| ty.as_str());
        assert_eq!(get("sourceipaddresses"), Some("array(varchar)"));
        assert_eq!(get("firsteventtime"), Some("timestamp(3)"));
        assert_eq!(get("events"), Some("bigint"));
    }

    #[test]
    fn statements_end_with_a_semicolon_on_their_last_line() {
        for engine in Engine::ALL {
            let text = ddl(&opts(engine)).expect("ddl");
            let stmts = statements(&text);
            let per_table = match engine {
                Engine::Trino | Engine::Spark => 2,
                _ => 1,
            };
            let db = usize::from(engine != Engine::Glue);
            assert_eq!(stmts.len(), db + 3 * per_table, "{engine:?}:\n{text}");
        }
        // Tables without files: no partition discovery for Spark and Trino.
        for engine in [Engine::Spark, Engine::Trino] {
            let mut o = opts(engine);
            o.empty_tables = BTreeSet::from([Table::Insights]);
            let text = ddl(&o).expect("ddl");
            assert_eq!(statements(&text).len(), 1 + 2 + 1 + 2, "{engine:?}");
            assert!(text.contains("-- insights: no files yet"), "{text}");
        }
    }

    #[test]
    fn names_prefix_and_location() {
        let mut o = opts(Engine::Athena);
        o.table_prefix = "ct_".into();
        o.database = None;
        let text = ddl(&o).expect("ddl");
        assert!(text.contains("CREATE EXTERNAL TABLE `ct_events` ("));
        assert!(text.contains("LOCATION 's3://my-lake-bucket/keytrail/key_daily/'"));
        assert!(text.contains(
            "'storage.location.template' = 's3://my-lake-bucket/keytrail/insights/date=${date}/'"
        ));
        assert!(text.contains("'projection.date.range' = '2024-11-24,NOW'"));
        assert!(!text.contains("CREATE DATABASE"));

        let refused = |o: DdlOptions| ddl(&o).expect_err("refused").to_string();
        let mut o = opts(Engine::Athena);
        o.location = "file:///tmp/lake".into();
        assert!(refused(o).contains("Amazon S3 only"));
        let mut o = opts(Engine::Spark);
        o.location = "/tmp/lake".into();
        assert!(refused(o).contains("expected a URI"));
        let mut o = opts(Engine::Trino);
        o.location = "s3://b/it's".into();
        assert!(refused(o).contains("quotes"));
        let mut o = opts(Engine::Spark);
        o.database = Some("Prod-DB".into());
        assert!(refused(o).contains("database \"Prod-DB\""));
        let mut o = opts(Engine::DuckDb);
        o.table_prefix = "a b".into();
        assert!(refused(o).contains("table prefix"));
        let mut o = opts(Engine::Glue);
        o.first_day = None;
        assert!(refused(o).contains("no data yet"));
        // Only the projecting forms need a first day.
        let mut o = opts(Engine::Spark);
        o.first_day = None;
        assert!(ddl(&o).is_ok());
    }

    #[test]
    fn types_outside_the_schema_are_mapped_or_refused() {
        let map = DataType::Map(
            std::sync::Arc::new(Field::new(
                "entries",
                DataType::Struct(
                    vec![
                        Field::new("key", DataType::Utf8, false),
                        Field::new("value", DataType::Utf8, true),
                    ]
                    .into(),
                ),
                false,
            )),
            false,
        );
        assert_eq!(
            column_type(Engine::Athena, &map, "m").expect("map"),
            "map<string,string>"
        );
        assert_eq!(
            column_type(Engine::DuckDb, &map, "m").expect("map"),
            "MAP(VARCHAR, VARCHAR)"
        );
        let err = column_type(Engine::Trino, &DataType::Float16, "x.y").expect_err("f16");
        assert!(err.to_string().contains("column x.y"), "{err}");
        let reserved = DataType::Struct(vec![Field::new("date", DataType::Utf8, true)].into());
        assert_eq!(
            column_type(Engine::Athena, &reserved, "s").expect("struct"),
            "struct<`date`:string>"
        );
        assert_eq!(
            column_type(Engine::Glue, &reserved, "s").expect("struct"),
            "struct<date:string>"
        );
        let bad = DataType::Struct(vec![Field::new("Has Space", DataType::Utf8, true)].into());
        assert!(column_type(Engine::Spark, &bad, "s").is_err());
    }

    #[test]
    fn the_extent_comes_from_live_files() {
        use crate::manifest::{COMMIT_FORMAT, Commit, FileRecord};
        let file = |table: &str, day: &str| FileRecord {
            table: table.into(),
            path: format!("{table}/date={day}/part-r.parquet"),
            rows: 1,
            bytes: 1,
            stats: None,
            covers: Vec::new(),
        };
        let commit = |seq, files, replaced| Commit {
            format: COMMIT_FORMAT,
            seq,
            run_id: format!("r{seq}"),
            committed_at: String::new(),
            writer: String::new(),
            schema_version: SCHEMA_VERSION,
            filter: Default::default(),
            objects: vec![],
            files,
            replaced,
        };
        assert_eq!(Extent::of(&Manifest::default()), Extent::default());
        let m = Manifest::from_commits(vec![
            commit(
                1,
                vec![
                    file("events", "2024-11-25"),
                    file("key_daily", "2024-11-20"),
                ],
                vec![],
            ),
            commit(
                2,
                vec![file("events", "2024-11-22")],
                vec!["key_daily/date=2024-11-20/part-r.parquet".into()],
            ),
        ]);
        let e = Extent::of(&m);
        assert_eq!(e.first_day, parse_day("2024-11-22"));
        assert_eq!(e.tables, BTreeSet::from([Table::Events]));
        assert_eq!(
            e.empty_tables(),
            BTreeSet::from([Table::Insights, Table::KeyDaily])
        );
    }
}
