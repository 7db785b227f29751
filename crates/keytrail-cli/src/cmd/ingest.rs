use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use keytrail_ingest::s3::S3Uri;
use keytrail_ingest::{IngestOptions, Input, RunSummary, Shard, ShardError, ingest};
use keytrail_model::time::{Bound, now_millis, parse_time_bound};
use keytrail_model::{AccessKeyId, FilterSpec};

use crate::flags::{IngestArgs, KeyFilterArgs, ReadLimitArgs, S3Args, S3LakeArgs};
use crate::output::{bytes, parse_size, stdout, thousands};
use crate::progress::Bar;

/// Read `--key-file`: one key per line; blank lines and `#` comments are ignored.
pub fn read_key_file(path: &Path) -> anyhow::Result<Vec<AccessKeyId>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        keys.push(
            AccessKeyId::parse(line).with_context(|| format!("{}:{}", path.display(), n + 1))?,
        );
    }
    Ok(keys)
}

/// Validate `--max-object-size`, `--max-event-size` and `--stream-above` into `limits`.
pub fn limits(args: &ReadLimitArgs, limits: &mut keytrail_ingest::Limits) -> anyhow::Result<()> {
    limits.max_object_bytes = parse_size(&args.max_object_size).context("--max-object-size")?;
    limits.max_event_bytes = parse_size(&args.max_event_size).context("--max-event-size")?;
    limits.stream_above = parse_size(&args.stream_above).context("--stream-above")?;
    Ok(())
}

/// Validate `--key`, `--key-file`, `--since` and `--until` into a filter.
pub fn filter(
    keys: &KeyFilterArgs,
    since: Option<&str>,
    until: Option<&str>,
) -> anyhow::Result<FilterSpec> {
    let now = now_millis();
    let mut set = BTreeSet::new();
    for k in &keys.keys {
        set.insert(AccessKeyId::parse(k).context("--key")?.into_string());
    }
    if let Some(f) = &keys.key_file {
        let from_file = read_key_file(f)?;
        if from_file.is_empty() {
            bail!("{}: no key IDs in the file", f.display());
        }
        set.extend(from_file.into_iter().map(AccessKeyId::into_string));
    }
    let since = since
        .map(|s| parse_time_bound(s, Bound::Start, now))
        .transpose()
        .context("--since")?;
    let until = until
        .map(|s| parse_time_bound(s, Bound::End, now))
        .transpose()
        .context("--until")?;
    if let (Some(s), Some(u)) = (since, until)
        && s >= u
    {
        bail!("--since must be before --until");
    }
    Ok(FilterSpec {
        keys: (!set.is_empty()).then_some(set),
        since,
        until,
    })
}

/// `--shard I/N` or `--shard auto` (with `--shard-count`), the scheduler's variables read
/// from this process's environment.
fn shard(args: &S3Args) -> anyhow::Result<Option<Shard>> {
    let Some(text) = &args.shard else {
        if args.shard_count.is_some() {
            bail!(ShardError::CountWithoutAuto);
        }
        return Ok(None);
    };
    let (shard, source) = Shard::resolve(text, args.shard_count, |k| std::env::var(k).ok())?;
    tracing::info!("reading shard {shard}, from {source}");
    Ok(Some(shard))
}

/// Validate the S3 flags into the options.
pub(crate) fn s3_options(args: &S3Args, opts: &mut IngestOptions) -> anyhow::Result<()> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    for a in &args.accounts {
        if a.len() != 12 || !a.bytes().all(|b| b.is_ascii_digit()) {
            bail!("--account {a}: an AWS account ID is 12 digits");
        }
    }
    opts.shard = shard(args)?;
    let s3 = &mut opts.s3;
    client_options(&args.client, s3)?;
    s3.concurrency = args.concurrency;
    s3.accounts = args.accounts.clone();
    s3.regions = args.trail_regions.clone();
    Ok(())
}

/// Validate `--profile`, `--region` and `--endpoint-url` into the options.
pub(crate) fn client_options(
    args: &crate::flags::S3ClientArgs,
    s3: &mut keytrail_ingest::s3::S3Options,
) -> anyhow::Result<()> {
    if let Some(url) = &args.endpoint_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        bail!("--endpoint-url {url}: expected http://... or https://...");
    }
    s3.profile = args.profile.clone();
    s3.region = args.region.clone();
    s3.endpoint_url = args.endpoint_url.clone();
    Ok(())
}

pub fn run(args: IngestArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let inputs = args
        .paths
        .iter()
        .map(|p| Input::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    // A lake in S3 is written through a local working copy, deleted when the run ends.
    let mut work = None;
    let lake = match S3Uri::parse(&args.lake) {
        Some(uri) => {
            let uri = uri?;
            let mut b = tempfile::Builder::new();
            b.prefix("keytrail-lake-");
            let dir = match &args.s3_lake.work_dir {
                Some(d) => b.tempdir_in(d),
                None => b.tempdir(),
            }
            .context("cannot create the working copy of the lake")?;
            let path = dir.path().join("lake");
            work = Some((dir, uri));
            path
        }
        None => PathBuf::from(&args.lake),
    };
    let mut opts = IngestOptions::with_inputs(inputs, lake);
    s3_options(&args.s3, &mut opts)?;
    if let Some((_, uri)) = &work {
        opts.remote_lake = Some(uri.clone());
        s3_lake_options(&args.s3_lake, &mut opts)?;
    }
    opts.filter = filter(
        &args.keys,
        args.window.since.as_deref(),
        args.window.until.as_deref(),
    )?;
    if let Some(t) = args.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        opts.threads = t;
    }
    limits(&args.limits, &mut opts.limits)?;
    opts.buffer_bytes = parse_size(&args.buffer_size).context("--buffer-size")?;
    opts.verify_logs = crate::cmd::verify_logs::ingest_options(&args.custody)?;

    let bar = Bar::new(quiet || args.json);
    let summary = ingest(&opts, &bar)?;
    if args.json {
        let mut text = serde_json::to_string_pretty(&summary)?;
        text.push('\n');
        stdout(&text)?;
    } else if !quiet {
        stdout(&render(&summary))?;
    }
    Ok(if summary.partial {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn reasons<K: std::fmt::Display>(m: impl IntoIterator<Item = (K, u64)>) -> String {
    let parts: Vec<String> = m
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k} {}", thousands(n)))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// The human summary of a run.
pub fn render(s: &RunSummary) -> String {
    let mut out = String::new();
    match (&s.run_id, s.commit) {
        (Some(run), Some(seq)) => {
            let _ = writeln!(out, "ingested into {} (commit {seq}, run {run})", s.lake);
        }
        _ => {
            let _ = writeln!(out, "nothing new for {}", s.lake);
        }
    }
    let o = &s.objects;
    let _ = writeln!(
        out,
        "objects  {} seen: {} read, {} skipped{}, {} failed",
        thousands(o.seen),
        thousands(o.read),
        thousands(o.skipped_total()),
        reasons(o.skipped.iter().map(|(k, v)| (k.as_str(), *v))),
        thousands(o.failed),
    );
    let e = &s.events;
    let _ = writeln!(
        out,
        "records  {} read: {} written, {} insights, {} filtered out, {} already in the lake, {} skipped{}",
        thousands(e.read),
        thousands(e.written),
        thousands(e.insights),
        thousands(e.filtered),
        thousands(e.already_written),
        thousands(e.skipped),
        reasons(
            s.skipped_records_by_reason
                .iter()
                .map(|(k, v)| (k.as_str(), *v))
        ),
    );
    let rate = if s.elapsed_seconds > 0.0 {
        e.read as f64 / s.elapsed_seconds
    } else {
        0.0
    };
    let _ = writeln!(
        out,
        "files    {} written ({}); {} read in {:.2}s ({} records/s)",
        thousands(s.files_written),
        bytes(s.bytes_written),
        bytes(s.bytes_read),
        s.elapsed_seconds,
        thousands(rate as u64),
    );
    if let Some(c) = &s.custody {
        out.push_str(&crate::cmd::verify_logs::ingest_line(c));
    }
    if !s.failures.is_empty() {
        let _ = writeln!(
            out,
            "\nobjects that could not be read (the rest were written; a rerun tries these again):"
        );
        for f in &s.failures {
            let _ = writeln!(out, "  {}: {}", f.object, f.reason);
        }
    }
    if !s.notable_skips.is_empty() {
        let _ = writeln!(out, "\nobjects passed over:");
        for k in &s.notable_skips {
            let _ = writeln!(out, "  {}: {}", k.object, k.detail);
        }
    }
    if !s.skipped_record_samples.is_empty() {
        let total = s.events.skipped;
        let shown = s.skipped_record_samples.len() as u64;
        let _ = writeln!(
            out,
            "\nrecords skipped{}:",
            if total > shown {
                format!(" (first {shown} of {})", thousands(total))
            } else {
                String::new()
            }
        );
        for r in &s.skipped_record_samples {
            let _ = writeln!(out, "  {} record {}: {}", r.object, r.record, r.reason);
        }
    }
    out
}

/// `--part-size` for a lake in S3.
pub fn s3_lake_options(args: &S3LakeArgs, opts: &mut IngestOptions) -> anyhow::Result<()> {
    let part = parse_size(&args.part_size).context("--part-size")?;
    if part < 5 << 20 {
        bail!("--part-size must be at least 5M (S3's smallest part)");
    }
    opts.s3_lake.part_size = part;
    Ok(())
}
