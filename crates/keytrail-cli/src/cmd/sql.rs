//! `keytrail sql`: one statement over the lake, its rows written as they are computed.

use std::process::ExitCode;

use keytrail_engine::{LakeSession, block_on};

use crate::cmd::location::{lake_location, stats_text};
use crate::flags::SqlArgs;
use crate::output::{Output, format_for, session_options, status};
use crate::render::write_stream;

pub fn run(args: SqlArgs) -> anyhow::Result<ExitCode> {
    let format = format_for(args.output.format, args.output.output.as_deref());
    let opts = session_options(&args.query)?;
    let lake = lake_location(&args.lake)?;
    let mut out = Output::open(args.output.output.as_deref())?;
    let stats = block_on::<_, anyhow::Error>(opts.threads, async {
        let session = LakeSession::open(lake, &opts).await?;
        let (schema, stream) = session.stream(&args.sql).await?;
        write_stream(out.writer(), format, schema, stream, 60).await?;
        Ok(args.stats.then(|| stats_text(&session)))
    })?;
    out.finish()?;
    if let Some(text) = stats {
        status(text.trim_end());
    }
    Ok(ExitCode::SUCCESS)
}
