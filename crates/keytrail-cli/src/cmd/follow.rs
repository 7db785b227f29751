//! `keytrail follow`: keep a lake current from CloudTrail's delivery notifications (SQS) or by
//! polling its bucket, and append each new finding once. Runs until SIGTERM or SIGINT, then
//! exits 0 (a second signal exits at once).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use keytrail_detect::Severity;
use keytrail_follow::{Detection, FollowOptions, Sink, Source, Status, StatusKind, follow};
use keytrail_ingest::s3::S3Uri;

use crate::flags::{
    DetectorArgs, KeyFilterArgs, ReadLimitArgs, RuleSourceArgs, S3Args, S3LakeArgs,
};
use crate::output::{status, thousands};

#[derive(Debug, Args)]
pub struct FollowArgs {
    /// Without --queue-url: poll these buckets (s3://BUCKET[/PREFIX]): yesterday's and today's
    /// day folders of each account and region, every --poll-interval
    #[arg(value_name = "S3URI")]
    pub buckets: Vec<String>,
    /// An SQS queue that receives CloudTrail's SNS notifications or S3 event notifications
    /// (raw or in an SNS envelope)
    #[arg(long, value_name = "URL", conflicts_with = "buckets")]
    pub queue_url: Option<String>,
    /// The lake: a directory, or s3://BUCKET[/PREFIX] (created if it does not exist)
    #[arg(long, value_name = "DIR|S3URI")]
    pub lake: String,
    /// Append each new finding as one JSON line to FILE (`-`: stdout); without it, no
    /// detection runs
    #[arg(long, value_name = "FILE|-")]
    pub findings: Option<String>,
    /// Write findings at or above this severity: info, low, medium, high, critical
    #[arg(long, value_name = "LEVEL", default_value = "low", value_parser = parse_severity)]
    pub min_severity: Severity,
    #[command(flatten)]
    pub rules: RuleSourceArgs,
    #[command(flatten)]
    pub detectors: DetectorArgs,
    /// Gather what arrives within this long of a batch's first message into one commit
    /// (500ms, 10s, 2m)
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub batch_window: String,
    /// Polling: the pause between rounds
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub poll_interval: String,
    /// SQS: how long a received message stays hidden (extended while its batch is read; the
    /// base of the backoff of messages left for a retry)
    #[arg(long, value_name = "DURATION", default_value = "2m")]
    pub visibility_timeout: String,
    /// SQS: the most messages in one batch
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub max_batch: usize,
    /// SQS: an endpoint for an SQS-compatible service [default: --endpoint-url, else AWS's]
    #[arg(long, value_name = "URL")]
    pub sqs_endpoint_url: Option<String>,
    #[command(flatten)]
    pub keys: KeyFilterArgs,
    /// Decoding and query threads [default: all cores]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub limits: ReadLimitArgs,
    /// Status lines on stderr as JSON objects
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub s3: S3Args,
    #[command(flatten)]
    pub s3_lake: S3LakeArgs,
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    s.parse()
}

/// A length of time as [`keytrail_model::time::parse_span`] reads it (`500ms`, `1.5s`, `2m`).
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let ms = keytrail_model::time::parse_span(text)
        .with_context(|| format!("`{text}` is not a length of time (500ms, 1.5s, 2m, 1h, 1d)"))?;
    Ok(Duration::from_millis(u64::try_from(ms)?))
}

pub fn run(args: FollowArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    if args.s3.shard.is_some() || args.s3.shard_count.is_some() {
        bail!("--shard: follow reads every object it is told of; run one follower per queue");
    }
    let source = match (&args.queue_url, args.buckets.is_empty()) {
        (Some(url), _) => {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                bail!("--queue-url {url}: expected https://sqs.REGION.amazonaws.com/ACCOUNT/NAME");
            }
            Source::Queue(url.clone())
        }
        (None, true) => bail!("give --queue-url URL, or s3://BUCKET[/PREFIX] to poll"),
        (None, false) => {
            let mut uris = Vec::new();
            for b in &args.buckets {
                match S3Uri::parse(b) {
                    Some(u) => uris.push(u?),
                    None => bail!("{b}: follow polls s3://BUCKET[/PREFIX] only"),
                }
            }
            Source::Poll(uris)
        }
    };
    let mut opts = FollowOptions::new(source, PathBuf::from(&args.lake));
    crate::cmd::ingest::s3_options(&args.s3, &mut opts.ingest)?;
    // A lake in S3: each batch commits through a working copy of its own in --work-dir.
    if let Some(uri) = S3Uri::parse(&args.lake) {
        opts.ingest.remote_lake = Some(uri?);
        opts.work_dir = args.s3_lake.work_dir.clone();
        crate::cmd::ingest::s3_lake_options(&args.s3_lake, &mut opts.ingest)?;
    }
    opts.ingest.filter = crate::cmd::ingest::filter(&args.keys, None, None)?;
    if let Some(t) = args.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        opts.ingest.threads = t;
        opts.detection.threads = t;
    }
    crate::cmd::ingest::limits(&args.limits, &mut opts.ingest.limits)?;
    opts.batch_window = parse_duration(&args.batch_window).context("--batch-window")?;
    opts.poll_interval = parse_duration(&args.poll_interval).context("--poll-interval")?;
    opts.visibility = parse_duration(&args.visibility_timeout).context("--visibility-timeout")?;
    if opts.visibility < Duration::from_secs(1) || opts.visibility > Duration::from_secs(43_200) {
        bail!("--visibility-timeout must be between 1s and 12h");
    }
    if args.max_batch == 0 {
        bail!("--max-batch must be at least 1");
    }
    opts.max_batch = args.max_batch;
    opts.sqs_endpoint = args
        .sqs_endpoint_url
        .clone()
        .or_else(|| args.s3.client.endpoint_url.clone());
    opts.findings = match args.findings.as_deref() {
        None => None,
        Some("-") => Some(Sink::Stdout),
        Some(path) => Some(Sink::File(PathBuf::from(path))),
    };
    let detection_flags: Vec<&str> = [
        (!args.rules.rules.is_empty(), "--rules"),
        (args.rules.no_bundled, "--no-bundled"),
        (args.detectors.no_detectors, "--no-detectors"),
        (!args.detectors.settings.is_empty(), "--set"),
        (
            args.detectors.ranges.aws_ip_ranges.is_some(),
            "--aws-ip-ranges",
        ),
    ]
    .into_iter()
    .filter_map(|(given, flag)| given.then_some(flag))
    .collect();
    if opts.findings.is_none() && !detection_flags.is_empty() {
        bail!(
            "{}: detection runs only with --findings FILE",
            detection_flags.join(", ")
        );
    }
    if opts.findings.is_some() {
        opts.detection = Detection {
            rules: crate::cmd::detect::rule_set(&args.rules)?,
            detectors: !args.detectors.no_detectors,
            config: crate::cmd::detect::detector_config(&args.detectors)?,
            min_severity: args.min_severity,
            threads: opts.detection.threads,
        };
    }

    // SIGTERM and SIGINT ask the follower to stop after the batch at hand; a second one
    // ends the process at once (nothing is lost: see docs/follow.md).
    let stop = Arc::new(AtomicBool::new(false));
    for (signal, code) in [
        (signal_hook::consts::SIGTERM, 143),
        (signal_hook::consts::SIGINT, 130),
    ] {
        signal_hook::flag::register_conditional_shutdown(signal, code, Arc::clone(&stop))
            .context("cannot handle signals")?;
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("cannot handle signals")?;
    }
    let json = args.json;
    let mut observer = |s: &Status| {
        if quiet {
            return;
        }
        if json {
            if let Ok(text) = serde_json::to_string(s) {
                status(&text);
            }
        } else {
            status(&render(s));
        }
    };
    follow(&opts, &stop, &mut observer)?;
    Ok(ExitCode::SUCCESS)
}

/// `1 finding`, `2 findings`.
fn n(count: u64, one: &str, many: &str) -> String {
    format!(
        "{} {}",
        thousands(count),
        if count == 1 { one } else { many }
    )
}

fn secs(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.1} s")
    } else {
        format!("{s:.0} s")
    }
}

/// A status line.
pub fn render(s: &Status) -> String {
    let t = &s.totals;
    let mut out = String::from("follow: ");
    match s.status {
        StatusKind::Started => {
            let _ = write!(out, "started ({})", s.mode);
        }
        StatusKind::Stopped => out.push_str("stopped"),
        StatusKind::Idle => out.push_str("idle"),
        StatusKind::Error => {
            let _ = write!(
                out,
                "batch failed, trying again: {}",
                s.error.as_deref().unwrap_or("?")
            );
        }
        StatusKind::Batch => {
            if let Some(b) = &s.batch {
                if b.messages > 0 {
                    let _ = write!(out, "{}, ", n(b.messages, "message", "messages"));
                }
                let _ = write!(
                    out,
                    "{} ({} read, {} skipped, {} failed), {}",
                    n(b.objects, "object", "objects"),
                    thousands(b.read),
                    thousands(b.skipped),
                    thousands(b.failed),
                    n(b.events, "event", "events"),
                );
                if let Some(c) = b.commit {
                    let _ = write!(out, ", commit {c}");
                }
                let _ = write!(
                    out,
                    ", {} in {}",
                    n(b.findings, "finding", "findings"),
                    secs(b.seconds)
                );
            }
        }
    }
    if let Some(l) = s.lag_seconds {
        let _ = write!(out, "; lag {}", secs(l));
    }
    if let Some(w) = s.queue_waiting {
        let _ = write!(out, "; {} waiting", thousands(w));
    }
    let _ = write!(
        out,
        "; total {}, {}, {}",
        n(t.objects_read, "object", "objects"),
        n(t.events, "event", "events"),
        n(t.findings, "finding", "findings")
    );
    if t.not_understood > 0 || t.retried > 0 || t.errors > 0 {
        let _ = write!(
            out,
            " ({} not understood, {} held back, {})",
            n(t.not_understood, "message", "messages"),
            thousands(t.retried),
            n(t.errors, "error", "errors")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("10s").ok(), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m").ok(), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h").ok(), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_duration("1.5s").ok(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_duration("1d").ok(), Some(Duration::from_secs(86_400)));
        for bad in ["", "s", "10x", "-1s", "1.5"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
