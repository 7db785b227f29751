//! `keytrail verify-logs`: CloudTrail log-file integrity validation, offline — flags, the
//! report as table, CSV, JSON or Markdown, and the exit status (0 everything verifiable is
//! valid, 1 something is modified, missing, broken or uncovered). Also the flags and summary
//! line of `ingest --verify-logs`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use keytrail_custody::{Level, PublicKeys, Report, VerifyOptions};
use keytrail_engine::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use keytrail_engine::arrow::datatypes::{Field, Schema, SchemaRef};
use keytrail_ingest::custody::verify_inputs;
use keytrail_ingest::summary::CustodySummary;
use keytrail_ingest::{IngestOptions, Input};

use crate::flags::{OutputArgs, WindowArgs};
use crate::render::{Format, batches_text};

use crate::flags::S3Args;
use crate::output::{emit, format_for, parse_size, thousands};

#[derive(Debug, Args)]
pub struct VerifyLogsArgs {
    /// A copy of a trail (a directory, walked; or files) or an S3 location
    /// (s3://BUCKET[/PREFIX]) holding its CloudTrail and CloudTrail-Digest folders
    #[arg(required = true, value_name = "PATH|S3URI")]
    pub paths: Vec<String>,
    /// CloudTrail's public keys: the saved output of `aws cloudtrail list-public-keys`
    /// (run in the trail's home region); repeatable. Without it signatures are not checked
    #[arg(long = "public-keys", value_name = "FILE")]
    pub public_keys: Vec<PathBuf>,
    /// Check the log files delivered in [--since, --until) and the digests that cover them
    #[command(flatten)]
    pub window: WindowArgs,
    /// Print the report as JSON (as --format json)
    #[arg(long)]
    pub json: bool,
    /// table, csv or jsonl (one row per object), json (everything) or markdown
    #[command(flatten)]
    pub output: OutputArgs,
    /// Table and Markdown: list the valid objects too (CSV and JSON always list every object)
    #[arg(long)]
    pub all: bool,
    /// Objects read at once [default: all cores; for S3, --concurrency]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Largest log file to check, decompressed; a larger one is reported as unreadable
    #[arg(long, value_name = "SIZE", default_value = "1G")]
    pub max_object_size: String,
    #[command(flatten)]
    pub s3: S3Args,
}

/// The flags `keytrail ingest` adds for `--verify-logs`.
#[derive(Debug, Args)]
pub struct IngestCustodyArgs {
    /// Validate the inputs against CloudTrail's digest files first, and record for each
    /// object read whether a valid digest chain covers it (in the manifest and the summary)
    #[arg(long)]
    pub verify_logs: bool,
    /// With --verify-logs: CloudTrail's public keys (saved `aws cloudtrail list-public-keys`);
    /// repeatable
    #[arg(long = "public-keys", value_name = "FILE", requires = "verify_logs")]
    pub public_keys: Vec<PathBuf>,
}

/// Read and merge `--public-keys` files; `None` when there are none.
fn load_keys(files: &[PathBuf]) -> anyhow::Result<Option<PublicKeys>> {
    if files.is_empty() {
        return Ok(None);
    }
    let mut keys = PublicKeys::default();
    for f in files {
        keys.extend(PublicKeys::load(f).context("--public-keys")?);
    }
    if keys.is_empty() {
        bail!("--public-keys: no keys in the given files");
    }
    Ok(Some(keys))
}

/// The validation options `ingest --verify-logs` asks for.
pub fn ingest_options(args: &IngestCustodyArgs) -> anyhow::Result<Option<VerifyOptions>> {
    if !args.verify_logs {
        return Ok(None);
    }
    Ok(Some(VerifyOptions {
        keys: load_keys(&args.public_keys)?,
        ..VerifyOptions::default()
    }))
}

/// The summary line of `ingest --verify-logs`.
pub fn ingest_line(c: &CustodySummary) -> String {
    let read: u64 = c.read.values().sum();
    let rest: Vec<String> = c
        .read
        .iter()
        .filter(|(s, _)| s.as_str() != keytrail_custody::coverage::COVERED)
        .map(|(s, n)| format!("{s} {}", thousands(*n)))
        .collect();
    let mut out = format!(
        "custody  {} of {} objects read covered by a valid digest chain{}",
        thousands(c.covered()),
        thousands(read),
        if rest.is_empty() {
            String::new()
        } else {
            format!(" ({})", rest.join(", "))
        }
    );
    let _ = write!(
        out,
        "; validation {}: {} failures, {} warnings",
        if c.passed { "passed" } else { "FAILED" },
        thousands(c.failures),
        thousands(c.warnings)
    );
    if !c.passed {
        out.push_str(" (keytrail verify-logs lists them)");
    }
    out.push('\n');
    out
}

pub fn run(args: VerifyLogsArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let format = if args.json {
        Format::Json
    } else {
        format_for(args.output.format, args.output.output.as_deref())
    };
    if format == Format::Html {
        bail!(
            "--format html is for reports and investigations; use table, csv, json, jsonl or markdown"
        );
    }
    if args.s3.shard.is_some() {
        bail!("--shard does not apply to verify-logs: a digest chain is checked whole");
    }
    let inputs = args
        .paths
        .iter()
        .map(|p| Input::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    for i in &inputs {
        if let Input::Local(p) = i
            && !p.exists()
        {
            bail!("{}: no such file or directory", p.display());
        }
    }
    // The S3 flags, validated as `ingest` validates them.
    let mut s3 = IngestOptions::with_inputs(Vec::new(), PathBuf::new());
    crate::cmd::ingest::s3_options(&args.s3, &mut s3)?;
    let (since, until) = crate::output::window(&args.window)?;
    let any_s3 = inputs.iter().any(|i| matches!(i, Input::S3(_)));
    let workers = match args.threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(t) => t,
        None if any_s3 => args.s3.concurrency,
        None => VerifyOptions::default().workers,
    };
    let opts = VerifyOptions {
        since,
        until,
        keys: load_keys(&args.public_keys)?,
        accounts: args.s3.accounts.clone(),
        regions: args.s3.trail_regions.clone(),
        workers,
        max_log_bytes: parse_size(&args.max_object_size).context("--max-object-size")? as u64,
        ..VerifyOptions::default()
    };
    let report = verify_inputs(&inputs, &s3.s3, None, &opts)?;
    let text = render(&report, format, args.all)?;
    emit(&text, args.output.output.as_deref())?;
    if matches!(format, Format::Csv | Format::Json | Format::Jsonl) && !quiet {
        let mut notes: String = report
            .notes
            .iter()
            .map(|n| format!("note: {n}\n"))
            .collect();
        notes.push_str(&verdict(&report));
        let _ = std::io::stderr().write_all(notes.as_bytes());
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn verdict(r: &Report) -> String {
    format!(
        "{}: {} digests and {} log files checked; {} failures, {} warnings\n",
        if r.passed { "PASSED" } else { "FAILED" },
        thousands(r.digests),
        thousands(r.log_files),
        thousands(r.failures),
        thousands(r.warnings)
    )
}

fn strings(values: Vec<Option<String>>) -> ArrayRef {
    Arc::new(StringArray::from(values))
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> anyhow::Result<(SchemaRef, RecordBatch)> {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let b = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )?;
    Ok((schema, b))
}

/// Counts per status, with the time each covers.
fn counts_batch(r: &Report) -> anyhow::Result<(SchemaRef, RecordBatch)> {
    let c = &r.counts;
    batch(vec![
        (
            "subject",
            strings(
                c.iter()
                    .map(|c| Some(c.subject.as_str().to_owned()))
                    .collect(),
            ),
        ),
        (
            "status",
            strings(
                c.iter()
                    .map(|c| Some(c.status.as_str().to_owned()))
                    .collect(),
            ),
        ),
        (
            "level",
            strings(c.iter().map(|c| Some(level(c.level).to_owned())).collect()),
        ),
        (
            "count",
            Arc::new(Int64Array::from(
                c.iter().map(|c| c.count as i64).collect::<Vec<_>>(),
            )),
        ),
        (
            "earliest",
            strings(
                c.iter()
                    .map(|c| c.earliest.map(|t| t.to_string()))
                    .collect(),
            ),
        ),
        (
            "latest",
            strings(c.iter().map(|c| c.latest.map(|t| t.to_string())).collect()),
        ),
    ])
}

/// One row per object (`all`: the valid ones too; `digest`: with the column naming the
/// digest that lists a log file in full, which the detail names by file name).
fn rows_batch(r: &Report, all: bool, digest: bool) -> anyhow::Result<(SchemaRef, RecordBatch)> {
    let rows: Vec<_> = r
        .rows
        .iter()
        .filter(|x| all || x.status.level() != Level::Ok)
        .collect();
    let text = |f: &dyn Fn(&keytrail_custody::Row) -> Option<String>| {
        strings(rows.iter().map(|x| f(x)).collect())
    };
    let mut columns = vec![
        ("subject", text(&|x| Some(x.subject.as_str().to_owned()))),
        ("status", text(&|x| Some(x.status.as_str().to_owned()))),
        ("level", text(&|x| Some(level(x.status.level()).to_owned()))),
        ("object", text(&|x| Some(x.object.clone()))),
        ("from", text(&|x| x.from.map(|t| t.to_string()))),
        ("to", text(&|x| x.to.map(|t| t.to_string()))),
    ];
    if digest {
        columns.push(("digest", text(&|x| x.digest.clone())));
    }
    columns.push(("detail", text(&|x| Some(x.detail.clone()))));
    batch(columns)
}

fn level(l: Level) -> &'static str {
    match l {
        Level::Ok => "ok",
        Level::Warning => "warning",
        Level::Failure => "failure",
    }
}

/// The report in a format.
pub fn render(r: &Report, format: Format, all: bool) -> anyhow::Result<String> {
    match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(r)?;
            s.push('\n');
            Ok(s)
        }
        Format::Csv | Format::Jsonl => {
            let (schema, b) = rows_batch(r, true, true)?;
            batches_text(format, &schema, &[b], 60)
        }
        Format::Table | Format::Markdown => {
            let md = format == Format::Markdown;
            let mut out = String::new();
            let window = match (r.since, r.until) {
                (None, None) => String::new(),
                (s, u) => format!(
                    ", delivered {} to {}",
                    s.map_or("the start".into(), |t| t.to_string()),
                    u.map_or("now".into(), |t| t.to_string())
                ),
            };
            let keys = if r.public_keys == 0 {
                "no public keys: signatures not checked".to_owned()
            } else {
                format!("{} public keys", r.public_keys)
            };
            let head = format!(
                "log-file integrity of {}{window} ({keys})",
                r.stores.join(", ")
            );
            if md {
                let _ = writeln!(out, "## {head}\n");
            } else {
                let _ = writeln!(out, "{head}\n");
            }
            let (schema, b) = counts_batch(r)?;
            out.push_str(&if md {
                batches_text(Format::Markdown, &schema, &[b], 60)?
            } else {
                batches_text(Format::Table, &schema, &[b], 60)?
            });
            let (schema, b) = rows_batch(r, all, false)?;
            if b.num_rows() > 0 {
                out.push('\n');
                out.push_str(&if md {
                    batches_text(Format::Markdown, &schema, &[b], 60)?
                } else {
                    // Object names are evidence: never cut them.
                    batches_text(Format::Table, &schema, &[b], 400)?
                });
            }
            if !r.notes.is_empty() {
                out.push('\n');
                for n in &r.notes {
                    let _ = writeln!(out, "{}note: {n}", if md { "- " } else { "" });
                }
            }
            out.push('\n');
            out.push_str(&verdict(r));
            Ok(out)
        }
        Format::Html => bail!("--format html is for reports and investigations"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_report_renders_in_every_format() {
        let mut r = Report::default();
        r.finish();
        for f in [Format::Table, Format::Csv, Format::Json, Format::Markdown] {
            let text = render(&r, f, false).expect("render");
            assert!(!text.is_empty());
        }
        assert!(
            render(&r, Format::Csv, false)
                .expect("csv")
                .starts_with("subject,status,level,object,from,to,digest,detail\n")
        );
    }
}
