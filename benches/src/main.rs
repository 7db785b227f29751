#![allow(clippy::print_stdout)] // a benchmark tool: its output is the report
//! `keytrail-bench`: generate data, run keytrail's ingest on it, report.
//!
//! ```text
//! keytrail-bench gen DIR [--events N] [--seed S] [--days D] [--start YYYY-MM-DD] [--no-automation] [--admin]
//!                  [--key-lifecycle]                  write synthetic CloudTrail under DIR
//! keytrail-bench gen-sample DIR                       write the sample bundled in testdata/sample
//! keytrail-bench ingest DIR [--threads N]             ingest DIR into a fresh lake, report
//! keytrail-bench s3-ingest DIR [--latency-ms 20] [--concurrency 32] [--threads N]
//!                                                     the same, through a local S3 endpoint
//!                                                     serving DIR as a bucket, each request
//!                                                     delayed by the latency
//! keytrail-bench follow DIR [--keytrail BIN] [--samples N] [--s3-lake]
//!                                                     `keytrail follow` against moto's S3 and
//!                                                     SQS: a backlog of DIR's objects beside
//!                                                     one-shot ingest, then the latency from
//!                                                     notification to findings line
//! keytrail-bench jsonl DIR OUT [--gzip]               the events of DIR's delivery files as
//!                                                     one JSON-lines object (the streaming
//!                                                     benchmark's large object)
//! keytrail-bench s3-serve DIR [--latency-ms 20]       only serve DIR as a bucket (until
//!                                                     killed), so a client in another
//!                                                     process can be timed on its own
//! ```
//! Each measurement runs in a fresh process so its peak RSS is its own; `benches/ingest.sh`
//! runs the whole comparison with DuckDB.

// The allocator keytrail's binary uses (and its options), so the figures are its.
#[path = "../../crates/keytrail-cli/src/alloc.rs"]
mod alloc;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use keytrail_benches::peak_rss_bytes;
use keytrail_benches::synth::{GenOptions, generate};
use keytrail_ingest::{IngestOptions, NoProgress, ingest};

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// A server (on its own runtime) serving DIR's parent over S3 with `--latency-ms` per request;
/// returns it, its endpoint, the bucket (DIR's name) and the latency.
fn start_server(
    dir: &std::path::Path,
    args: &[String],
) -> anyhow::Result<(tokio::runtime::Runtime, String, String, u64)> {
    let dir = dir.canonicalize().context("DIR")?;
    let (root, bucket) = match (dir.parent(), dir.file_name()) {
        (Some(p), Some(n)) => (p.to_path_buf(), n.to_string_lossy().into_owned()),
        _ => bail!("DIR must be a folder below another"),
    };
    let latency: u64 = arg_value(args, "--latency-ms")
        .map_or(Ok(20), |v| v.parse())
        .context("--latency-ms")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let endpoint =
        keytrail_benches::s3serve::serve(&rt, &root, std::time::Duration::from_millis(latency))?;
    Ok((rt, endpoint, bucket, latency))
}

/// Ingest options reading `s3://<DIR's name>` through a server started here. The runtime must
/// live as long as the run.
fn s3_options(
    dir: &std::path::Path,
    args: &[String],
    lake: PathBuf,
    server: &mut Option<tokio::runtime::Runtime>,
) -> anyhow::Result<IngestOptions> {
    use keytrail_ingest::Input;
    use keytrail_ingest::s3::{S3Options, S3Uri};
    let (rt, endpoint, bucket, latency) = start_server(dir, args)?;
    *server = Some(rt);
    let mut s3 = S3Options::default();
    if let Some(c) = arg_value(args, "--concurrency") {
        s3.concurrency = c.parse().context("--concurrency")?;
    }
    let mut opts = IngestOptions::with_inputs(
        vec![Input::S3(S3Uri {
            bucket,
            prefix: String::new(),
        })],
        lake,
    );
    opts.s3_client = Some(keytrail_benches::s3serve::client(&endpoint, &s3));
    opts.s3 = s3;
    println!(
        "serving {} at {endpoint} with {latency} ms per request",
        dir.display()
    );
    Ok(opts)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `gen --help` must not generate into a folder named `--help`.
    let (cmd, dir) = match (args.first(), args.get(1)) {
        (Some(c), Some(d)) if !d.starts_with('-') => (c.as_str(), PathBuf::from(d)),
        _ => bail!(
            "usage: keytrail-bench gen|gen-sample|ingest|s3-ingest|follow|jsonl|s3-serve DIR [OPTIONS] \
             (the options of each: benches/src/main.rs)"
        ),
    };
    match cmd {
        "gen" => {
            let mut o = GenOptions::default();
            if let Some(n) = arg_value(&args, "--events") {
                o.events = n.parse().context("--events")?;
            }
            if let Some(s) = arg_value(&args, "--seed") {
                o.seed = s.parse().context("--seed")?;
            }
            if let Some(s) = arg_value(&args, "--events-per-file") {
                o.events_per_file = s.parse().context("--events-per-file")?;
            }
            if let Some(s) = arg_value(&args, "--days") {
                o.days = s.parse().context("--days")?;
            }
            if let Some(s) = arg_value(&args, "--start") {
                o.start = chrono::NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                    .context("--start")?
                    .and_hms_opt(0, 0, 0)
                    .context("--start")?
                    .and_utc();
            }
            if args.iter().any(|a| a == "--admin") {
                o.admin = true;
            }
            if args.iter().any(|a| a == "--key-lifecycle") {
                o.key_lifecycle = true;
            }
            if args.iter().any(|a| a == "--no-automation") {
                o.automation = None;
            }
            let t = Instant::now();
            let g = generate(&dir, &o)?;
            println!(
                "generated {} files, {} events, {:.1} MB JSON, {:.1} MB gzipped ({:.1}:1), {:.0} B/event, in {:.1}s",
                g.files,
                g.events,
                g.json_bytes as f64 / 1e6,
                g.gz_bytes as f64 / 1e6,
                g.json_bytes as f64 / g.gz_bytes.max(1) as f64,
                g.json_bytes as f64 / g.events.max(1) as f64,
                t.elapsed().as_secs_f64()
            );
            if let Some(k) = &g.automation_key {
                println!("automation key (the root of the long chain): {k}");
            }
        }
        "gen-sample" => {
            let (g, keys) = keytrail_benches::synth::generate_sample(&dir)?;
            println!(
                "sample: {} files, {} events; keys: {keys:#?}",
                g.files, g.events
            );
        }
        "s3-serve" => {
            let (rt, endpoint, _, _) = start_server(&dir, &args)?;
            println!("{endpoint}");
            std::io::Write::flush(&mut std::io::stdout())?;
            rt.block_on(std::future::pending::<()>());
        }
        "ingest" | "s3-ingest" => {
            let mut server = None;
            let lake = match arg_value(&args, "--lake") {
                Some(l) => PathBuf::from(l),
                None => {
                    std::env::temp_dir().join(format!("keytrail-bench-lake-{}", std::process::id()))
                }
            };
            if lake.exists() {
                std::fs::remove_dir_all(&lake).context("clearing the lake")?;
            }
            let mut opts = if cmd == "s3-ingest" {
                s3_options(&dir, &args, lake.clone(), &mut server)?
            } else {
                IngestOptions::new(vec![dir.clone()], lake.clone())
            };
            if let Some(b) = arg_value(&args, "--buffer-mib") {
                opts.buffer_bytes = b.parse::<usize>().context("--buffer-mib")? << 20;
            }
            if let Some(t) = arg_value(&args, "--threads") {
                opts.threads = t.parse().context("--threads")?;
            }
            let t = Instant::now();
            let s = ingest(&opts, &NoProgress)?;
            let secs = t.elapsed().as_secs_f64();
            let rss = peak_rss_bytes().unwrap_or(0);
            println!(
                "keytrail {cmd}: {} events in {:.2}s = {:.0} events/s, {:.1} MB/s gzipped in, threads {}, peak RSS {:.0} MiB, lake {:.1} MB in {} files, {} objects failed",
                s.events.read,
                secs,
                s.events.read as f64 / secs,
                s.bytes_read as f64 / 1e6 / secs,
                opts.threads,
                rss as f64 / (1 << 20) as f64,
                s.bytes_written as f64 / 1e6,
                s.files_written,
                s.objects.failed
            );
            if arg_value(&args, "--lake").is_none() {
                let _ = std::fs::remove_dir_all(&lake);
            }
        }
        "follow" => keytrail_benches::follow::run(&dir, &args)?,
        "jsonl" => {
            let out = PathBuf::from(args.get(2).context("usage: jsonl DIR OUT [--gzip]")?);
            let t = Instant::now();
            let (events, bytes) = keytrail_benches::synth::to_json_lines(
                &dir,
                &out,
                args.iter().any(|a| a == "--gzip"),
            )?;
            println!(
                "{} events, {:.1} MB of JSON lines in {} ({:.1}s)",
                events,
                bytes as f64 / 1e6,
                out.display(),
                t.elapsed().as_secs_f64()
            );
        }
        other => bail!("unknown command {other}"),
    }
    Ok(())
}
