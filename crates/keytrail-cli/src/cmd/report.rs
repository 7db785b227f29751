//! `keytrail report last-used|unused|rotation`: flags → `ReportRequest` → one report → output.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context, bail};
use keytrail_model::time::{Bound, now_millis, parse_time_bound};
use keytrail_report::{KindFilter, ReportKind, ReportRequest, report};

use crate::flags::{KindArg, ReportArgs, ReportCommand};
use crate::output::{emit, format_for, session_options};
use crate::render::Format;

pub fn run(command: ReportCommand, quiet: bool) -> anyhow::Result<ExitCode> {
    let command = match command {
        ReportCommand::Alternatives(a) => return crate::cmd::alternatives::run(a),
        other => other,
    };
    let common = match &command {
        ReportCommand::LastUsed(a) => &a.common,
        ReportCommand::Unused(a) => &a.common,
        ReportCommand::Rotation(a) => &a.common,
        ReportCommand::Alternatives(_) => bail!("internal: `report alternatives` is run above"),
    };
    let as_of = as_of(common)?;
    let (common, kind) = match command {
        ReportCommand::LastUsed(a) => {
            let since = parse_time_bound(&a.since, Bound::Start, as_of).context("--since")?;
            if since >= as_of {
                bail!("--since must be before the report's time (--as-of)");
            }
            let kinds = match a.kind {
                KindArg::All => KindFilter::All,
                KindArg::LongTerm => KindFilter::LongTerm,
                KindArg::Temporary => KindFilter::Temporary,
            };
            (a.common, ReportKind::LastUsed { since, kinds })
        }
        ReportCommand::Unused(a) => {
            if a.days == 0 {
                bail!("--days must be at least 1");
            }
            (
                a.common,
                ReportKind::Unused {
                    days: a.days,
                    grace: a.grace,
                },
            )
        }
        ReportCommand::Rotation(a) => {
            if a.max_age == 0 {
                bail!("--max-age must be at least 1");
            }
            (a.common, ReportKind::Rotation { max_age: a.max_age })
        }
        ReportCommand::Alternatives(_) => bail!("internal: `report alternatives` is run above"),
    };
    let format = format_for(common.output.format, common.output.output.as_deref());
    let req = ReportRequest {
        kind,
        as_of,
        inventory: common.inventory.clone(),
        charts: format == Format::Html,
    };
    for f in &req.inventory {
        if !f.is_file() {
            bail!("--inventory {}: no such file", f.display());
        }
    }
    let opts = session_options(&common.query)?;
    let lake = crate::cmd::location::lake_location(&common.lake)?;
    let done = report(lake, &req, &opts)?;
    let text = crate::render::report::render(&done, format)?;
    emit(&text, common.output.output.as_deref())?;
    // CSV and JSON hold rows only: the caveats go to stderr.
    if matches!(format, Format::Csv | Format::Json | Format::Jsonl) && !quiet {
        let text: String = done.notes.iter().map(|n| format!("note: {n}\n")).collect();
        // A closed stderr is no reason to fail a report that was written.
        let _ = std::io::stderr().write_all(text.as_bytes());
    }
    Ok(ExitCode::SUCCESS)
}

fn as_of(common: &ReportArgs) -> anyhow::Result<i64> {
    let now = now_millis();
    match common.as_of.as_deref() {
        None => Ok(now),
        // A date means its start: `--as-of 2024-12-01` reports up to the end of 2024-11-30.
        Some(t) => parse_time_bound(t, Bound::Start, now).context("--as-of"),
    }
}
