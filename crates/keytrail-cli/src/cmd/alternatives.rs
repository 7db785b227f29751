//! `keytrail report alternatives`: what should replace each long-term key.

use std::process::ExitCode;

use keytrail_detect::alternatives;
use keytrail_model::time::{Bound, now_millis, parse_time_bound};

use anyhow::Context as _;

use crate::flags::AlternativesArgs;
use crate::output::{emit, format_for, session_options};
use crate::render::{Format, batches_text};

pub fn run(args: AlternativesArgs) -> anyhow::Result<ExitCode> {
    let format = format_for(args.output.format, args.output.output.as_deref());
    if format == Format::Html {
        anyhow::bail!(
            "--format html is not available here; use table, csv, json, jsonl or markdown"
        );
    }
    let since = args
        .since
        .as_deref()
        .map(|t| parse_time_bound(t, Bound::Start, now_millis()))
        .transpose()
        .context("--since")?;
    let threads = session_options(&args.query)?.threads;
    let ranges = super::detect::aws_ranges(&args.ranges)?;
    let lake = crate::cmd::location::lake_location(&args.lake)?;
    let rows = alternatives::advise(lake, since, threads, &ranges)?;
    let text = if format == Format::Json {
        let mut s = serde_json::to_string_pretty(&rows)?;
        s.push('\n');
        s
    } else {
        let (schema, batch) = alternatives::batch(&rows)?;
        batches_text(format, &schema, &[batch], 120)?
    };
    emit(&text, args.output.output.as_deref())?;
    Ok(ExitCode::SUCCESS)
}
