//! `keytrail investigate`: over a lake, or straight over raw logs (a working lake built on the
//! way); the answer is written as the timeline is read.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use keytrail_engine::{LakeLocation, LakeSession, block_on};
use keytrail_ingest::{IngestOptions, Input};
use keytrail_investigate::raw::investigate_raw;
use keytrail_investigate::{InvestigateOptions, investigate};
use keytrail_model::AccessKeyId;

use crate::cmd::ingest::{read_key_file, s3_options};
use crate::cmd::location::location_of;
use crate::flags::InvestigateArgs;
use crate::output::{Output, format_for, session_options, status, window};
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
    let format = format_for(args.output.format, args.output.output.as_deref());
    let (mut keys, inputs) = split_args(&args.args)?;
    if let Some(f) = &args.key_file {
        keys.extend(read_key_file(f)?);
    }
    keys.sort();
    keys.dedup();
    if keys.is_empty() {
        bail!("give at least one access key ID (AKIA..., ASIA...) to investigate");
    }
    let (since, until) = window(&args.window)?;
    let opts = InvestigateOptions { keys, since, until };
    let session_opts = session_options(&args.query)?;

    let mut code = ExitCode::SUCCESS;
    // The lake the answer is read from: the given one, or the raw-logs mode's working lake.
    let (lake, inv, _working) = if inputs.is_empty() {
        let Some(lake) = &args.lake else {
            bail!("give --lake DIR, or log files / s3:// locations to read directly");
        };
        (location_of(lake, &args.s3.client)?, None, None)
    } else {
        if args
            .lake
            .as_deref()
            .and_then(Path::to_str)
            .is_some_and(|l| l.starts_with("s3://"))
        {
            bail!(
                "reading log files directly builds a working lake in a directory: give --lake DIR (or no --lake), not a lake in S3"
            );
        }
        let mut template = IngestOptions::with_inputs(Vec::new(), std::path::PathBuf::new());
        template.threads = session_opts.threads;
        s3_options(&args.s3, &mut template)?;
        let bar = Bar::new(quiet);
        let out = investigate_raw(
            inputs,
            args.lake.clone(),
            &template,
            &opts,
            &session_opts,
            &bar,
        )?;
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
        (
            LakeLocation::Dir(out.lake.clone()),
            Some(out.investigation.clone()),
            Some(out),
        )
    };
    let mut out = Output::open(args.output.output.as_deref())?;
    block_on::<_, anyhow::Error>(session_opts.threads, async {
        let session = LakeSession::open(lake, &session_opts).await?;
        let inv = match inv {
            Some(inv) => inv,
            None => investigate(&session, &opts).await?,
        };
        crate::render::investigate::render(out.writer(), inv, &session, format).await
    })?;
    out.finish()?;
    Ok(code)
}
