//! `keytrail rules list|lint|test`.

use std::process::ExitCode;

use keytrail_detect::{self as detect, RuleSet, lint};

use crate::flags::{DetectorArgs, OutputArgs, RuleSourceArgs, RulesCommand};
use crate::output::{emit, format_for, stdout};
use crate::render::{Format, batches_text};

fn threads() -> usize {
    keytrail_engine::SessionOptions::default().threads
}

pub fn run(cmd: RulesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RulesCommand::List {
            source,
            detectors,
            output,
        } => list(&source, &detectors, &output),
        RulesCommand::Lint { source, strict } => lint_rules(&source, strict),
        RulesCommand::Test { source, ids } => test(&source, &ids),
    }
}

fn list(
    source: &RuleSourceArgs,
    detectors: &DetectorArgs,
    output: &OutputArgs,
) -> anyhow::Result<ExitCode> {
    let format = format_for(output.format, output.output.as_deref());
    let set = super::detect::rule_set(source)?;
    let config = super::detect::detector_config(detectors)?;
    let mut rows = detect::listing(&set.rules, !detectors.no_detectors);
    if !detectors.no_detectors {
        rows.extend(detect::Listed::settings(&config));
    }
    rows.push(detect::Listed::aws_ranges(&config.aws_ranges));
    let text = if format == Format::Json {
        let mut s = serde_json::to_string_pretty(&rows)?;
        s.push('\n');
        s
    } else {
        let (schema, batch) = crate::render::detect::listing_batch(&rows)?;
        batches_text(format, &schema, &[batch], 90)?
    };
    emit(&text, output.output.as_deref())?;
    Ok(ExitCode::SUCCESS)
}

fn lint_rules(source: &RuleSourceArgs, strict: bool) -> anyhow::Result<ExitCode> {
    let (set, errors) = RuleSet::collect(!source.no_bundled, &source.rules);
    let mut text = String::new();
    let mut n_err = errors.len();
    let mut n_warn = 0;
    for e in &errors {
        text.push_str(&format!("error: {e}\n"));
    }
    for r in &set.rules {
        for i in lint::lint(r) {
            match i.level {
                lint::Level::Error => n_err += 1,
                lint::Level::Warning => n_warn += 1,
            }
            let level = match i.level {
                lint::Level::Error => "error",
                lint::Level::Warning => "warning",
            };
            text.push_str(&format!(
                "{level}: {} ({}): {}\n",
                i.rule, i.origin, i.message
            ));
        }
    }
    text.push_str(&format!(
        "{} rule(s) checked: {n_err} error(s), {n_warn} warning(s)\n",
        set.rules.len() + errors.len()
    ));
    stdout(&text)?;
    Ok(if n_err > 0 || (strict && n_warn > 0) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn test(source: &RuleSourceArgs, ids: &[String]) -> anyhow::Result<ExitCode> {
    let mut set = super::detect::rule_set(source)?;
    if !ids.is_empty() {
        for id in ids {
            if set.get(id).is_none() {
                anyhow::bail!("--id {id}: no such rule");
            }
        }
        set.rules.retain(|r| ids.contains(&r.id));
    }
    let results = detect::test_rules(&set, threads())?;
    let mut text = String::new();
    let mut failed = 0;
    for r in &results {
        if !r.passed {
            failed += 1;
            text.push_str(&format!(
                "FAIL {} {}[{}]: {}\n",
                r.rule, r.kind, r.index, r.message
            ));
        }
    }
    let untested = set
        .rules
        .iter()
        .filter(|r| r.tests.positive.is_empty() && r.tests.negative.is_empty())
        .count();
    if untested > 0 {
        text.push_str(&format!(
            "{untested} Sigma rule(s) have no test events (`rules lint` lists them)\n"
        ));
    }
    text.push_str(&format!(
        "{} rule(s), {} test event(s): {} passed, {failed} failed\n",
        set.rules.len(),
        results.len(),
        results.len() - failed
    ));
    stdout(&text)?;
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
