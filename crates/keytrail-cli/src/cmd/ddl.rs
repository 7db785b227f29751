//! `keytrail lake ddl`: the statements that let Athena, Glue, Trino, Spark or DuckDB read the
//! lake's tables in place. The statements come from `keytrail_lake::ddl`; this reads the
//! lake's first day and which tables hold files from its manifest (local, or in S3).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use keytrail_ingest::IngestOptions;
use keytrail_ingest::s3::S3Uri;
use keytrail_lake::{DdlOptions, Engine, Extent, Lake, ddl};
use keytrail_model::time::parse_day;

use crate::cmd::ingest::s3_options;
use crate::flags::{DdlArgs, EngineArg};
use crate::output::stdout;

pub fn run(args: DdlArgs) -> anyhow::Result<ExitCode> {
    let engine = match args.engine {
        EngineArg::Athena => Engine::Athena,
        EngineArg::Glue => Engine::Glue,
        EngineArg::Trino => Engine::Trino,
        EngineArg::Spark => Engine::Spark,
        EngineArg::Duckdb => Engine::DuckDb,
    };
    // Only the flags that reach the lake mean something here.
    let s3 = &args.s3;
    for (given, flag) in [
        (s3.shard.is_some(), "--shard"),
        (s3.shard_count.is_some(), "--shard-count"),
        (!s3.accounts.is_empty(), "--account"),
        (!s3.trail_regions.is_empty(), "--trail-region"),
    ] {
        if given {
            bail!("{flag} has no meaning for `keytrail lake ddl`");
        }
    }
    let first_day = args
        .first_day
        .as_deref()
        .map(|d| parse_day(d).with_context(|| format!("--first-day {d}: expected YYYY-MM-DD")))
        .transpose()?;

    let (own_location, manifest) = match S3Uri::parse(&args.lake) {
        Some(uri) => {
            let uri = uri?;
            let mut opts = IngestOptions::with_inputs(Vec::new(), PathBuf::new());
            s3_options(s3, &mut opts)?;
            let manifest = keytrail_ingest::s3lake::read_manifest(&uri, &opts.s3)?;
            let location = format!("s3://{}/{}", uri.bucket, uri.prefix);
            (location, manifest)
        }
        None => {
            let lake = Lake::open(&args.lake)?;
            let abs = std::fs::canonicalize(lake.root())
                .with_context(|| format!("{}", lake.root().display()))?;
            (format!("file://{}", abs.display()), lake.manifest()?)
        }
    };
    let extent = Extent::of(&manifest);
    let opts = DdlOptions {
        engine,
        location: args.location.unwrap_or(own_location),
        database: args.database,
        table_prefix: args.table_prefix,
        first_day: first_day.or(extent.first_day),
        empty_tables: extent.empty_tables(),
    };
    stdout(&ddl::ddl(&opts)?)?;
    Ok(ExitCode::SUCCESS)
}
