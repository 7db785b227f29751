//! `keytrail report alternatives`: what should replace each long-term key.

use std::process::ExitCode;

use keytrail_model::time::Bound;
use keytrail_query::detect::alternatives;
use keytrail_query::{Format, SessionOptions, output};

use crate::flags::AlternativesArgs;
use crate::output::{emit, format_for};

pub fn run(args: AlternativesArgs) -> anyhow::Result<ExitCode> {
    let format = format_for(args.format.as_deref(), args.output.as_deref())?;
    if format == Format::Html {
        anyhow::bail!("--format html is not available here; use table, csv, json or markdown");
    }
    let since = super::detect::time_flag("since", args.since.as_deref(), Bound::Start)?;
    let threads = args
        .threads
        .unwrap_or_else(|| SessionOptions::default().threads)
        .max(1);
    let rows = alternatives::advise(&args.lake, since, threads)?;
    let text = if format == Format::Json {
        let mut s = serde_json::to_string_pretty(&rows)?;
        s.push('\n');
        s
    } else {
        let (schema, batch) = alternatives::batch(&rows)?;
        if format == Format::Table {
            output::table(&schema, &[batch], 120)?
        } else {
            output::render(format, &schema, &[batch])?
        }
    };
    emit(&text, args.output.as_deref())?;
    Ok(ExitCode::SUCCESS)
}
