//! `--lake DIR|s3://BUCKET/PREFIX` and the S3 flags → where the lake is. For a lake in S3 the
//! credentials and region are found as the AWS CLI finds them (`--profile`, `--region`,
//! `AWS_*`, the profile files, SSO, roles) and handed to the query engine as a credentials
//! provider that renews temporary credentials before they expire.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use keytrail_engine::{IoStats, LakeLocation, LakeSession, S3Access, S3Location};
use keytrail_ingest::s3::{S3Options, S3Uri};
use keytrail_model::Table;

use crate::flags::{LakeArg, S3ClientArgs};
use crate::output::{bytes, thousands};

/// Where `--lake` is.
pub fn lake_location(arg: &LakeArg) -> anyhow::Result<LakeLocation> {
    location_of(&arg.lake, &arg.s3)
}

/// Where `lake` is: a directory, or (`s3://...`) a lake in S3 reached as `s3` says.
pub fn location_of(lake: &Path, s3: &S3ClientArgs) -> anyhow::Result<LakeLocation> {
    let Some(uri) = lake.to_str().and_then(S3Uri::parse) else {
        for (given, flag) in [
            (s3.profile.is_some(), "--profile"),
            (s3.region.is_some(), "--region"),
            (s3.endpoint_url.is_some(), "--endpoint-url"),
        ] {
            if given {
                tracing::warn!(
                    "{flag} is for a lake in S3; {} is a directory",
                    lake.display()
                );
            }
        }
        return Ok(LakeLocation::Dir(lake.to_path_buf()));
    };
    let uri = uri?;
    let mut opts = S3Options::default();
    crate::cmd::ingest::client_options(s3, &mut opts)?;
    let found = keytrail_ingest::s3access::resolve_blocking(&opts)
        .with_context(|| format!("reaching the lake {uri}"))?;
    let access = S3Access::with_credentials(
        found.region,
        found.endpoint_url,
        Arc::new(found.credentials),
    );
    Ok(LakeLocation::S3(S3Location::new(
        uri.bucket,
        &uri.prefix,
        access,
    )))
}

/// `--stats`: what a session fetched from a lake in S3, beside the lake's size.
pub fn stats_text(session: &LakeSession) -> String {
    let Some(io) = session.io_stats() else {
        return format!(
            "stats: {} is a directory; only reads from a lake in S3 are counted\n",
            session.location()
        );
    };
    let snapshot = session.snapshot();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "fetched from {}: {} requests, {}",
        session.location(),
        thousands(io.requests),
        bytes(io.bytes)
    );
    let meta = io.total_under("_keytrail/manifest/");
    let info = io.total_under("_keytrail/lake.json");
    let _ = writeln!(
        out,
        "  manifest     {} commit records, lake.json: {} requests, {}",
        thousands(session.manifest().commits().len() as u64),
        thousands(meta.requests + info.requests),
        bytes(meta.bytes + info.bytes)
    );
    let index_bytes: u64 = snapshot.index.iter().map(|f| f.bytes).sum();
    line(
        &mut out,
        "key index",
        &io,
        "_keytrail/index/",
        snapshot.index.len(),
        index_bytes,
    );
    for table in Table::ALL {
        let files: Vec<u64> = snapshot
            .table_files(table)
            .map(|f| f.record.bytes)
            .collect();
        line(
            &mut out,
            table.name(),
            &io,
            &format!("{}/", table.name()),
            files.len(),
            files.iter().sum(),
        );
    }
    out
}

fn line(out: &mut String, name: &str, io: &IoStats, prefix: &str, files: usize, size: u64) {
    let read = io.under(prefix).count();
    let t = io.total_under(prefix);
    let _ = writeln!(
        out,
        "  {name:<12} {} of {} files, {} requests, {} of {}",
        thousands(read as u64),
        thousands(files as u64),
        thousands(t.requests),
        bytes(t.bytes),
        bytes(size)
    );
}
