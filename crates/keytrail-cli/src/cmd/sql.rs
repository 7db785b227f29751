use std::process::ExitCode;

use keytrail_query::{Format, SessionOptions};

use crate::flags::SqlArgs;
use crate::output::emit;

pub fn run(args: SqlArgs) -> anyhow::Result<ExitCode> {
    let format = crate::output::format_for(args.format.as_deref(), args.output.as_deref())?;
    if format == Format::Html {
        anyhow::bail!("--format html is for reports; use table, csv, json or markdown");
    }
    let mut opts = SessionOptions::default();
    if let Some(t) = args.threads {
        opts.threads = t.max(1);
    }
    let (schema, batches) = keytrail_query::sql(&args.lake, &args.query, &opts)?;
    let text = keytrail_query::output::render(format, &schema, &batches)?;
    emit(&text, args.output.as_deref())?;
    Ok(ExitCode::SUCCESS)
}
