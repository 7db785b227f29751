//! The weekly reports of a security team, over the lake and an optional key inventory:
//!
//! - **last-used**: one row per access key: owner, last use (when, service, region, source
//!   IP), activity in a window, first seen; stalest first.
//! - **unused**: active long-term keys not used for N days, and keys never used (after a grace
//!   period for new keys).
//! - **rotation**: active long-term keys older than a maximum age, and users with two active
//!   keys.
//!
//! Each report is one SQL statement (see [`sql`]) planned and run by DataFusion over
//! `key_daily` (and `events` only where it must: the partial days at the window's edges, and
//! the `CreateAccessKey`/`UpdateAccessKey`/`DeleteAccessKey` calls); the inventory is registered
//! as two in-memory tables (`inventory_keys`, `credential_slots`). The result is a set of record
//! batches with stable column names (documented in `docs/reports.md`), rendered by
//! [`Report::render`] in any [`Format`].

pub mod sql;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use keytrail_model::Millis;
use keytrail_model::time::{day_of, format_millis, parse_day};

use keytrail_engine::{EngineError, LakeSession, SessionOptions, block_on};

pub use keytrail_inventory::{Inventory, InventoryError};

/// Set a session up for the reports' statements. They union `key_daily` with days
/// re-aggregated from `events`; the two tables' schema metadata differ (`keytrail.table`),
/// which DataFusion's physical planner takes for a schema mismatch under an aggregate. The
/// columns and types are the same.
pub async fn prepare(session: &LakeSession) -> Result<(), ReportError> {
    session
        .context()
        .sql("SET datafusion.execution.skip_physical_aggregate_schema_check = true")
        .await?
        .collect()
        .await?;
    Ok(())
}

/// What can go wrong making a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error("{0}")]
    Invalid(String),
}

impl From<datafusion::error::DataFusionError> for ReportError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        ReportError::Engine(e.into())
    }
}
pub use sql::{DAY, Dialect, KindFilter, Script, Window};

/// Which report, with its parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportKind {
    /// Every key's last use; activity counted from `since` to the report's time.
    LastUsed { since: Millis, kinds: KindFilter },
    /// Active keys unused for `days` days; keys never used, after `grace` days.
    Unused { days: u32, grace: u32 },
    /// Active keys older than `max_age` days; users with two active keys.
    Rotation { max_age: u32 },
}

impl ReportKind {
    /// The report's name, as the subcommand spells it.
    pub fn name(&self) -> &'static str {
        match self {
            ReportKind::LastUsed { .. } => "last-used",
            ReportKind::Unused { .. } => "unused",
            ReportKind::Rotation { .. } => "rotation",
        }
    }

    /// The report's SQL over `window`, in dialect `d`; `has_inventory` when the session has the
    /// inventory's tables (`inventory_keys`, `credential_slots`).
    pub fn script(&self, window: &Window, has_inventory: bool, d: Dialect) -> Script {
        match *self {
            ReportKind::LastUsed { kinds, .. } => Script {
                tables: vec![(sql::COVERAGE, sql::coverage(window, d))],
                query: sql::last_used(window, kinds, has_inventory, d),
            },
            ReportKind::Unused { days, grace } => {
                sql::unused(window, days, grace, has_inventory, d)
            }
            ReportKind::Rotation { max_age } => sql::rotation(window, max_age, has_inventory, d),
        }
    }

    /// The window whose daily activity the report counts and charts.
    pub fn window(&self, as_of: Millis) -> Window {
        let since = match self {
            ReportKind::LastUsed { since, .. } => *since,
            ReportKind::Unused { days, .. } => as_of - i64::from(*days) * DAY,
            ReportKind::Rotation { max_age } => as_of - i64::from(*max_age) * DAY,
        };
        Window { since, as_of }
    }
}

/// What to report.
#[derive(Clone, Debug)]
pub struct ReportRequest {
    pub kind: ReportKind,
    /// "Now": nothing at or after it is read.
    pub as_of: Millis,
    /// Inventory files (list-access-keys JSON, key CSV, credential report), any mix.
    pub inventory: Vec<PathBuf>,
    /// Compute each key's daily calls over the window ([`Report::activity`], for the HTML
    /// charts): one more query over the window.
    pub charts: bool,
}

/// Daily calls per key over the report's window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// The window's UTC days (days since the epoch), in order.
    pub days: Vec<i32>,
    /// Calls per day, aligned with `days`, for every key with a call in the window.
    pub per_key: HashMap<String, Vec<i64>>,
}

/// A finished report: the rows, and what a reader must know to trust them.
#[derive(Clone, Debug)]
pub struct Report {
    pub kind: ReportKind,
    pub as_of: Millis,
    pub window: Window,
    /// The inventory files read, described (None without `--inventory`).
    pub inventory: Option<String>,
    /// The first and last event with an access key in the lake, before `as_of`.
    pub coverage: Option<(Millis, Millis)>,
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// Caveats, in sentences (also printed by the CLI on stderr for CSV and JSON).
    pub notes: Vec<String>,
    /// Daily calls per key (empty unless the request asked for charts).
    pub activity: Activity,
}

/// Run a report over the lake at `lake` (a directory, or a lake in S3; the synchronous entry
/// point).
pub fn report(
    lake: impl Into<keytrail_engine::LakeLocation>,
    req: &ReportRequest,
    opts: &SessionOptions,
) -> Result<Report, ReportError> {
    let inventory = Inventory::load(&req.inventory)?;
    block_on(opts.threads, async {
        let session = LakeSession::open(lake, opts).await?;
        run(&session, req, &inventory).await
    })
}

/// Register the inventory's tables (empty when there is none) in the session.
fn register_inventory(session: &LakeSession, inventory: &Inventory) -> Result<(), ReportError> {
    let ctx = session.context();
    let keys = MemTable::try_new(
        Inventory::keys_schema(),
        vec![vec![inventory.keys_batch().map_err(arrow_error)?]],
    )?;
    let slots = MemTable::try_new(
        Inventory::slots_schema(),
        vec![vec![inventory.slots_batch().map_err(arrow_error)?]],
    )?;
    ctx.deregister_table("inventory_keys")?;
    ctx.deregister_table("credential_slots")?;
    ctx.register_table("inventory_keys", Arc::new(keys))?;
    ctx.register_table("credential_slots", Arc::new(slots))?;
    Ok(())
}

/// A string column as `Utf8`, whatever string type the plan produced (`Utf8View`, dictionary).
fn utf8(a: &ArrayRef) -> Result<ArrayRef, ReportError> {
    cast(a, &DataType::Utf8).map_err(arrow_error)
}

fn arrow_error(e: arrow::error::ArrowError) -> ReportError {
    ReportError::Engine(e.into())
}

/// A script's answer: the query's schema (of its batches, or as planned when there are none)
/// and batches, and what the script's `coverage` table says (see [`sql::coverage`]).
pub struct Executed {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// The lake's first and last event with a key before the report's time; `None` when the
    /// lake has none or the script computes no `coverage` table.
    pub coverage: Option<(Millis, Millis)>,
}

/// Run a script in the session: each of its tables is computed once and registered under its
/// name, the query's rows are collected, and the tables are dropped again.
pub async fn execute(session: &LakeSession, script: &Script) -> Result<Executed, ReportError> {
    let ctx = session.context();
    let result = async {
        let mut coverage = None;
        for (name, statement) in &script.tables {
            let df = ctx.sql(statement).await?;
            let planned: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let (schema, batches) = one_schema(&planned, df.collect().await?)?;
            if *name == sql::COVERAGE {
                coverage = coverage_of(&batches)?;
            }
            ctx.deregister_table(*name)?;
            ctx.register_table(*name, Arc::new(MemTable::try_new(schema, vec![batches])?))?;
        }
        let df = ctx.sql(&script.query).await?;
        let planned: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        let schema = batches.first().map_or(planned, RecordBatch::schema);
        Ok::<_, ReportError>(Executed {
            schema,
            batches,
            coverage,
        })
    }
    .await;
    for (name, _) in &script.tables {
        ctx.deregister_table(*name)?;
    }
    result
}

/// A result's batches under one schema, for a table: the planned schema with every field
/// nullable (the batches of a `UNION`'s branches differ in which columns may be null, and a
/// `MemTable` refuses batches of differing schemas), each column cast to its field's type where
/// a batch's differs.
fn one_schema(
    planned: &SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<(SchemaRef, Vec<RecordBatch>), ReportError> {
    let fields: Vec<Field> = planned
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let batches = batches
        .into_iter()
        .map(|b| {
            let columns = b
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| {
                    if c.data_type() == f.data_type() {
                        Ok(Arc::clone(c))
                    } else {
                        cast(c, f.data_type())
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            RecordBatch::try_new(Arc::clone(&schema), columns)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(arrow_error)?;
    Ok((schema, batches))
}

/// Run a report in an open session.
pub async fn run(
    session: &LakeSession,
    req: &ReportRequest,
    inventory: &Inventory,
) -> Result<Report, ReportError> {
    let as_of = req.as_of;
    match req.kind {
        ReportKind::LastUsed { since, .. } if since > as_of => {
            return Err(ReportError::Invalid(format!(
                "the window starts ({}) after the report's time ({})",
                format_millis(since),
                format_millis(as_of)
            )));
        }
        ReportKind::Unused { days: 0, .. } => {
            return Err(ReportError::Invalid("--days must be at least 1".into()));
        }
        ReportKind::Rotation { max_age: 0 } => {
            return Err(ReportError::Invalid("--max-age must be at least 1".into()));
        }
        _ => {}
    }
    register_inventory(session, inventory)?;
    prepare(session).await?;
    let has_inventory = !inventory.is_empty();
    let window = req.kind.window(as_of);
    let script = req.kind.script(&window, has_inventory, Dialect::DataFusion);
    let Executed {
        schema,
        batches,
        coverage,
    } = execute(session, &script).await?;
    let activity = if req.charts {
        activity(session, &window).await?
    } else {
        Activity {
            days: window.days(),
            per_key: HashMap::new(),
        }
    };
    let mut notes = inventory.notes.clone();
    let later = inventory
        .slots
        .iter()
        .filter(|s| s.last_used.is_some_and(|u| u >= as_of))
        .count();
    if later > 0 {
        notes.push(format!(
            "The credential report gives a last use at or after the report's time ({}) for {later} key(s); \
             those uses are left out so the report stays as of its time.",
            format_millis(as_of)
        ));
    }
    notes.extend(notes_for(req, coverage, &schema, &batches, has_inventory));
    Ok(Report {
        kind: req.kind.clone(),
        as_of,
        window,
        inventory: has_inventory.then(|| inventory.describe()),
        coverage,
        schema,
        batches,
        notes,
        activity,
    })
}

/// The `coverage` table's `(lake_start, lake_end)`, `None` when the lake has no event with a
/// key before the report's time.
fn coverage_of(batches: &[RecordBatch]) -> Result<Option<(Millis, Millis)>, ReportError> {
    let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    let start = cast(b.column(0), &DataType::Int64).map_err(arrow_error)?;
    let start = start.as_primitive::<Int64Type>();
    let end = cast(b.column(1), &DataType::Int64).map_err(arrow_error)?;
    let end = end.as_primitive::<Int64Type>();
    if start.is_null(0) || end.is_null(0) {
        return Ok(None);
    }
    Ok(Some((start.value(0), end.value(0))))
}

async fn activity(session: &LakeSession, window: &Window) -> Result<Activity, ReportError> {
    let days = window.days();
    let index: HashMap<i32, usize> = days.iter().enumerate().map(|(i, d)| (*d, i)).collect();
    let mut per_key: HashMap<String, Vec<i64>> = HashMap::new();
    for b in session.collect(&sql::activity(window)).await? {
        let keys = utf8(b.column(0))?;
        let keys = keys.as_string::<i32>();
        let day = utf8(b.column(1))?;
        let day = day.as_string::<i32>();
        let events = cast(b.column(2), &DataType::Int64).map_err(arrow_error)?;
        let events = events.as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let Some(slot) = parse_day(day.value(i)).and_then(|d| index.get(&d)) else {
                continue;
            };
            per_key
                .entry(keys.value(i).to_owned())
                .or_insert_with(|| vec![0; days.len()])[*slot] = events.value(i);
        }
    }
    Ok(Activity { days, per_key })
}

/// The caveats a reader needs: how far the lake reaches, what the inventory could not match,
/// what cannot be seen without an inventory.
fn notes_for(
    req: &ReportRequest,
    coverage: Option<(Millis, Millis)>,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    has_inventory: bool,
) -> Vec<String> {
    let mut notes = Vec::new();
    match coverage {
        None => notes.push(format!(
            "The lake holds no event made with an access key before {}.",
            format_millis(req.as_of)
        )),
        Some((start, end)) => {
            if req.as_of - end > DAY {
                notes.push(format!(
                    "The lake's last event with a key is at {}, {} days before this report's time ({}): \
                     later use is not in the lake. Set --as-of to report as of the lake's end.",
                    format_millis(end),
                    (req.as_of - end) / DAY,
                    format_millis(req.as_of)
                ));
            }
            if let ReportKind::LastUsed { since, .. } = req.kind
                && day_of(since) < day_of(start)
            {
                notes.push(format!(
                    "The window starts at {}, before the lake's first event with a key ({}): its counts cover less than the window.",
                    format_millis(since),
                    format_millis(start)
                ));
            }
        }
    }
    // Rows without a key ID are credential report slots no key could be matched to.
    let unmatched: usize = match schema.index_of("access_key_id") {
        Ok(c) => batches.iter().map(|b| b.column(c).null_count()).sum(),
        Err(_) => 0,
    };
    if unmatched > 0 {
        notes.push(format!(
            "{unmatched} row(s) have no access key ID: credential report key slots that could not be matched to a key \
             (the inventory_match column says why). Give the output of `aws iam list-access-keys` as well to match them \
             by creation time."
        ));
    }
    if !has_inventory {
        match req.kind {
            ReportKind::LastUsed { .. } => notes.push(
                "Without --inventory, only keys used in the lake are listed: a key never used leaves no event."
                    .into(),
            ),
            ReportKind::Unused { .. } => notes.push(
                "Without --inventory, a key never used leaves no event and is not listed, and a key's status is known \
                 only from UpdateAccessKey/DeleteAccessKey calls in the lake (others are taken as active)."
                    .into(),
            ),
            ReportKind::Rotation { .. } => notes.push(
                "Without --inventory, a key's age is known only from a CreateAccessKey call in the lake; otherwise \
                 its first use in the lake is a lower bound, and keys first seen within the maximum age are not listed."
                    .into(),
            ),
        }
    }
    notes
}

/// Columns the terminal table leaves out to stay readable (every other format has them).
pub const TABLE_HIDDEN: &[&str] = &["owner_arn", "principal_type", "last_event", "inventory"];

impl Report {
    /// Rows in the report.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// A one-line title.
    pub fn title(&self) -> String {
        let what = match &self.kind {
            ReportKind::LastUsed { .. } => "Access keys by last use".to_owned(),
            ReportKind::Unused { days, grace } => {
                format!("Access keys unused for {days} days or never used (grace {grace} days)")
            }
            ReportKind::Rotation { max_age } => {
                format!("Access keys older than {max_age} days, and users with two active keys")
            }
        };
        format!("{what}, as of {}", format_millis(self.as_of))
    }

    /// The report's parameters and scope, as label and value.
    pub fn scope(&self) -> Vec<(String, String)> {
        let mut out = vec![("report".to_owned(), self.kind.name().to_owned())];
        out.push(("as of".into(), format_millis(self.as_of)));
        match &self.kind {
            ReportKind::LastUsed { kinds, .. } => {
                out.push((
                    "activity window".into(),
                    format!(
                        "{} to {}",
                        format_millis(self.window.since),
                        format_millis(self.as_of)
                    ),
                ));
                if *kinds != KindFilter::All {
                    out.push(("keys".into(), format!("{kinds:?}").to_lowercase()));
                }
            }
            ReportKind::Unused { days, grace } => {
                out.push(("unused for".into(), format!("{days} days")));
                out.push(("grace for new keys".into(), format!("{grace} days")));
            }
            ReportKind::Rotation { max_age } => {
                out.push(("maximum age".into(), format!("{max_age} days")));
            }
        }
        out.push((
            "lake".into(),
            match self.coverage {
                Some((s, e)) => format!(
                    "events with a key from {} to {}",
                    format_millis(s),
                    format_millis(e)
                ),
                None => "no events with a key".into(),
            },
        ));
        out.push((
            "inventory".into(),
            self.inventory.clone().unwrap_or_else(|| "none".into()),
        ));
        out
    }

    /// The columns with a value in at least one row (all of them when there are no rows), less
    /// the `hide` ones.
    pub fn non_empty_columns(
        &self,
        hide: &[&str],
    ) -> Result<(SchemaRef, Vec<RecordBatch>), ReportError> {
        let keep: Vec<usize> = (0..self.schema.fields().len())
            .filter(|&c| !hide.contains(&self.schema.field(c).name().as_str()))
            .filter(|&c| {
                self.rows() == 0
                    || self
                        .batches
                        .iter()
                        .any(|b| b.column(c).null_count() < b.num_rows())
            })
            .collect();
        let schema = Arc::new(self.schema.project(&keep).map_err(arrow_error)?);
        let batches = self
            .batches
            .iter()
            .map(|b| b.project(&keep))
            .collect::<Result<Vec<_>, _>>()
            .map_err(arrow_error)?;
        Ok((schema, batches))
    }
}
