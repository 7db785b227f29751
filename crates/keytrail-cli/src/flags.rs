//! Command-line flags, as clap parses them: raw strings and paths. `cmd::*` validates them into
//! the libraries' typed options.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "keytrail",
    version,
    about = "Answers about IAM access keys from AWS CloudTrail logs",
    long_about = "keytrail turns AWS CloudTrail logs into answers about IAM access keys: a \
                  Parquet lake of every event, reports of unused and stale keys, the full \
                  trail of a leaked key, and detections of suspicious use.",
    after_help = "Exit status: 0 done in full; 1 done, but some objects could not be read; 2 usage or configuration error."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More log output on stderr (-v info, -vv debug; KEYTRAIL_LOG overrides)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr, no progress bar
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read CloudTrail logs into a Parquet lake (exactly once; re-runs add only what is new)
    Ingest(IngestArgs),
    /// Explain an IAM key or unique ID offline: prefix, kind, owning account
    KeyInfo(KeyInfoArgs),
    /// Look after a lake
    #[command(subcommand)]
    Lake(LakeCommand),
    /// Run SQL over the lake's tables (events, insights, key_daily)
    Sql(SqlArgs),
    /// Reports on access keys: last use, unused keys, keys due for rotation
    #[command(subcommand)]
    Report(ReportCommand),
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// One SQL statement (DataFusion's dialect; JSON columns have json_get_str and friends)
    #[arg(value_name = "QUERY")]
    pub query: String,
    #[arg(long, value_name = "DIR")]
    pub lake: PathBuf,
    /// table, csv, json or markdown [default: table on a terminal, else csv]
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Write the result to FILE instead of stdout
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Query threads [default: all cores]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Files or directories of CloudTrail logs (.json, .json.gz, JSON lines; directories are walked)
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The lake directory (created if it does not exist)
    #[arg(long, value_name = "DIR")]
    pub lake: PathBuf,
    /// Keep only events of this access key (made with it, or naming it); repeatable
    #[arg(long = "key", value_name = "ID")]
    pub keys: Vec<String>,
    /// Keep only events of the keys listed in FILE (one per line, # comments)
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Keep events at or after T: a date (2024-11-30), an RFC 3339 time, or a relative time (7d, 36h)
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// Keep events before T (a date means the end of that day)
    #[arg(long, value_name = "T")]
    pub until: Option<String>,
    /// Decoding threads [default: all cores]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Largest decompressed object to read, e.g. 512M, 2G
    #[arg(long, value_name = "SIZE", default_value = "1G")]
    pub max_object_size: String,
    /// Largest single record to read, e.g. 1M
    #[arg(long, value_name = "SIZE", default_value = "1M")]
    pub max_event_size: String,
    /// Decoded rows held in memory before a partition is written out, e.g. 96M
    #[arg(long, value_name = "SIZE", default_value = "96M")]
    pub buffer_size: String,
    /// Print the run summary as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct KeyInfoArgs {
    /// Access key IDs or other IAM unique IDs (AKIA..., ASIA..., AIDA..., AROA...)
    #[arg(required = true, value_name = "KEY")]
    pub keys: Vec<String>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum LakeCommand {
    /// Check every file against the manifest (exit 1 when something is wrong)
    Verify {
        #[arg(long, value_name = "DIR")]
        lake: PathBuf,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Finish or clean up runs that were stopped half-way
    Recover {
        #[arg(long, value_name = "DIR")]
        lake: PathBuf,
    },
}

/// `keytrail report ...`: one variant per report.
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// One row per access key: owner, last use (time, service, region, IP), activity in the window; stalest first
    LastUsed(LastUsedArgs),
    /// Active keys not used for N days, and keys never used (past a grace period)
    Unused(UnusedArgs),
    /// Active keys older than the maximum age, and users with two active keys
    Rotation(RotationArgs),
}

/// Flags every report takes.
#[derive(Debug, Args)]
pub struct ReportArgs {
    #[arg(long, value_name = "DIR")]
    pub lake: PathBuf,
    /// The report's "now": nothing at or after it is read (a date, RFC 3339 time, or 2d) [default: now]
    #[arg(long, value_name = "T")]
    pub as_of: Option<String>,
    /// Key inventory: `aws iam list-access-keys` JSON, a CSV of UserName,AccessKeyId,Status,CreateDate, or the IAM credential report; repeatable
    #[arg(long, value_name = "FILE")]
    pub inventory: Vec<PathBuf>,
    /// table, csv, json, markdown or html [default: table on a terminal, else csv; or from -o's extension]
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Write the report to FILE instead of stdout
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Query threads [default: all cores]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

#[derive(Debug, Args)]
pub struct LastUsedArgs {
    #[command(flatten)]
    pub common: ReportArgs,
    /// Count each key's events, errors and source IPs from T (7d, 36h, a date, RFC 3339; relative to --as-of)
    #[arg(long, value_name = "T", default_value = "7d")]
    pub since: String,
    /// Only `long-term` (AKIA) or `temporary` (ASIA) keys [default: all]
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
}

#[derive(Debug, Args)]
pub struct UnusedArgs {
    #[command(flatten)]
    pub common: ReportArgs,
    /// Flag active keys not used for this many days (CIS: 45)
    #[arg(long, value_name = "N", default_value_t = 90)]
    pub days: u32,
    /// Do not flag a never-used key created less than this many days ago
    #[arg(long, value_name = "D", default_value_t = 7)]
    pub grace: u32,
}

#[derive(Debug, Args)]
pub struct RotationArgs {
    #[command(flatten)]
    pub common: ReportArgs,
    /// Flag active keys older than this many days
    #[arg(long, value_name = "DAYS", default_value_t = 90)]
    pub max_age: u32,
}
