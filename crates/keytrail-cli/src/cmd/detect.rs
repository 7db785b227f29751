//! `keytrail detect`: rules and detectors over the lake; exit status 1 when anything at or
//! above `--min-severity` was found.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use keytrail_model::awsip::AwsRanges;

use keytrail_detect::{self as detect, DetectOptions, RuleSet};

use crate::flags::{AwsRangesArg, DetectArgs, DetectorArgs, RuleSourceArgs};
use crate::output::{Output, format_for, session_options, window};
use crate::render::Format;

/// The rules the flags ask for. Rules keytrail cannot run (Sigma aggregations, other log
/// sources, ...) are left out with a warning; `rules lint` names each.
pub fn rule_set(source: &RuleSourceArgs) -> anyhow::Result<RuleSet> {
    for d in &source.rules {
        if !d.exists() {
            anyhow::bail!("--rules {}: no such file or directory", d.display());
        }
    }
    let set = RuleSet::load(!source.no_bundled, &source.rules)?;
    if !set.skipped.is_empty() {
        tracing::warn!(
            "{} rule file(s) left out: they use what keytrail cannot run (`keytrail rules lint` names each); {} rule(s) loaded",
            set.skipped.len(),
            set.rules.len()
        );
    }
    Ok(set)
}

/// The detectors' settings the flags ask for: `--set`s and the AWS address ranges.
pub fn detector_config(args: &DetectorArgs) -> anyhow::Result<detect::detectors::Config> {
    let mut config = detect::detectors::Config {
        aws_ranges: aws_ranges(&args.ranges)?,
        ..Default::default()
    };
    for s in &args.settings {
        config.set(s)?;
    }
    Ok(config)
}

/// AWS's address ranges: `--aws-ip-ranges FILE`, else the bundled snapshot.
pub fn aws_ranges(arg: &AwsRangesArg) -> anyhow::Result<Arc<AwsRanges>> {
    Ok(match &arg.aws_ip_ranges {
        Some(p) => Arc::new(AwsRanges::load(p).with_context(|| "--aws-ip-ranges")?),
        None => AwsRanges::bundled(),
    })
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
        detectors: !args.detectors.no_detectors,
        config: detector_config(&args.detectors)?,
        threads: session.threads,
        ..DetectOptions::default()
    };
    let report = detect::detect(crate::cmd::location::lake_location(&args.lake)?, &opts)?;
    let mut out = Output::open(args.output.output.as_deref())?;
    crate::render::detect::write(&report, format, out.writer())?;
    out.finish()?;
    Ok(if report.found() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
