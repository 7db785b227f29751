//! `keytrail detect`: rules and detectors over the lake; exit status 1 when anything at or
//! above `--min-severity` was found.

use std::process::ExitCode;

use keytrail_detect::{self as detect, DetectOptions, RuleSet};

use crate::flags::{DetectArgs, RuleSourceArgs};
use crate::output::{emit, format_for, session_options, window};
use crate::render::Format;

/// The rules the flags ask for.
pub fn rule_set(source: &RuleSourceArgs) -> anyhow::Result<RuleSet> {
    for d in &source.rules {
        if !d.exists() {
            anyhow::bail!("--rules {}: no such file or directory", d.display());
        }
    }
    Ok(RuleSet::load(!source.no_bundled, &source.rules)?)
}

pub fn run(args: DetectArgs) -> anyhow::Result<ExitCode> {
    let format = format_for(args.output.format, args.output.output.as_deref());
    if format == Format::Html {
        anyhow::bail!(
            "--format html is for reports and investigations; use table, csv, json, jsonl or markdown"
        );
    }
    let (since, until) = window(&args.window)?;
    let session = session_options(&args.query)?;
    let opts = DetectOptions {
        since,
        until,
        min_severity: args.min_severity,
        rules: rule_set(&args.source)?,
        detectors: !args.no_detectors,
        threads: session.threads,
        ..DetectOptions::default()
    };
    let report = detect::detect(crate::cmd::location::lake_location(&args.lake)?, &opts)?;
    let text = crate::render::detect::render(&report, format)?;
    emit(&text, args.output.output.as_deref())?;
    Ok(if report.found() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
