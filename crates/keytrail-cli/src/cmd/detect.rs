//! `keytrail detect`: rules and detectors over the lake; exit status 1 when anything at or
//! above `--min-severity` was found.

use std::process::ExitCode;

use anyhow::Context as _;
use keytrail_model::time::{Bound, now_millis, parse_time_bound};
use keytrail_query::detect::{self, DetectOptions, RuleSet, Severity};
use keytrail_query::{Format, SessionOptions};

use crate::flags::{DetectArgs, RuleSourceArgs};
use crate::output::{emit, format_for};

/// The rules the flags ask for.
pub fn rule_set(source: &RuleSourceArgs) -> anyhow::Result<RuleSet> {
    for d in &source.rules {
        if !d.exists() {
            anyhow::bail!("--rules {}: no such file or directory", d.display());
        }
    }
    Ok(RuleSet::load(!source.no_bundled, &source.rules)?)
}

pub fn time_flag(flag: &str, text: Option<&str>, bound: Bound) -> anyhow::Result<Option<i64>> {
    text.map(|t| parse_time_bound(t, bound, now_millis()).with_context(|| format!("--{flag} {t}")))
        .transpose()
}

pub fn run(args: DetectArgs) -> anyhow::Result<ExitCode> {
    let format = format_for(args.format.as_deref(), args.output.as_deref())?;
    if format == Format::Html {
        anyhow::bail!("--format html is for reports; use table, csv, json or markdown");
    }
    let min_severity: Severity = args
        .min_severity
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--min-severity: {e}"))?;
    let rules = rule_set(&args.source)?;
    let mut opts = DetectOptions {
        since: time_flag("since", args.since.as_deref(), Bound::Start)?,
        until: time_flag("until", args.until.as_deref(), Bound::End)?,
        min_severity,
        rules,
        detectors: !args.no_detectors,
        ..DetectOptions::default()
    };
    if let Some(t) = args.threads {
        opts.threads = t.max(1);
    } else {
        opts.threads = SessionOptions::default().threads;
    }
    let report = detect::detect(&args.lake, &opts)?;
    let text = detect::render::render(&report, format)?;
    emit(&text, args.output.as_deref())?;
    Ok(if report.found() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
