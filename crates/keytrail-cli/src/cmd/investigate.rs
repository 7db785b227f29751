use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use keytrail_ingest::{IngestOptions, Input};
use keytrail_model::AccessKeyId;
use keytrail_model::time::{Bound, now_millis, parse_time_bound};
use keytrail_query::SessionOptions;
use keytrail_query::investigate::{
    InvestigateOptions, investigate_lake, raw::investigate_raw, render,
};

use crate::cmd::ingest::{read_key_file, s3_options};
use crate::flags::InvestigateArgs;
use crate::output::{emit, format_for, status};
use crate::progress::Bar;

/// A positional argument is a key when it reads as an access key ID and is not a path.
fn split_args(args: &[String]) -> anyhow::Result<(Vec<AccessKeyId>, Vec<Input>)> {
    let mut keys = Vec::new();
    let mut inputs = Vec::new();
    for a in args {
        if a.starts_with("s3://") || Path::new(a).exists() {
            inputs.push(Input::parse(a)?);
        } else if a.len() >= 16 && a.bytes().all(|b| b.is_ascii_alphanumeric()) {
            keys.push(AccessKeyId::parse(a).with_context(|| format!("`{a}`"))?);
        } else {
            bail!(
                "`{a}` is neither an access key ID nor an existing file, directory or s3:// location"
            );
        }
    }
    Ok((keys, inputs))
}

pub fn run(args: InvestigateArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let format = format_for(args.format.as_deref(), args.output.as_deref())?;
    let (mut keys, inputs) = split_args(&args.args)?;
    if let Some(f) = &args.key_file {
        keys.extend(read_key_file(f)?);
    }
    keys.sort();
    keys.dedup();
    if keys.is_empty() {
        bail!("give at least one access key ID (AKIA..., ASIA...) to investigate");
    }
    let now = now_millis();
    let since = args
        .since
        .as_deref()
        .map(|s| parse_time_bound(s, Bound::Start, now))
        .transpose()
        .context("--since")?;
    let until = args
        .until
        .as_deref()
        .map(|s| parse_time_bound(s, Bound::End, now))
        .transpose()
        .context("--until")?;
    let opts = InvestigateOptions { keys, since, until };
    let mut session = SessionOptions::default();
    if let Some(t) = args.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        session.threads = t;
    }

    let mut code = ExitCode::SUCCESS;
    let inv = if inputs.is_empty() {
        let Some(lake) = &args.lake else {
            bail!("give --lake DIR, or log files / s3:// locations to read directly");
        };
        investigate_lake(lake, &opts, &session)?
    } else {
        let mut template = IngestOptions::with_inputs(Vec::new(), std::path::PathBuf::new());
        template.threads = session.threads;
        s3_options(&args.s3, &mut template)?;
        let bar = Bar::new(quiet);
        let out = investigate_raw(inputs, args.lake.clone(), &template, &opts, &session, &bar)?;
        let failed: u64 = out.passes.iter().map(|p| p.objects.failed).sum();
        if !quiet {
            let read: u64 = out.passes.iter().map(|p| p.objects.read).sum();
            let events: u64 = out.passes.iter().map(|p| p.events.read).sum();
            status(&format!(
                "read {read} object(s), {events} record(s) in {} pass(es); {failed} object(s) failed",
                out.passes.len()
            ));
        }
        if failed > 0 {
            code = ExitCode::from(1);
        }
        out.investigation
    };
    emit(&render(&inv, format)?, args.output.as_deref())?;
    Ok(code)
}
