//! Command-line flags, as clap parses them: raw strings and paths. `cmd::*` validates them into
//! the libraries' typed options.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use keytrail_detect::Severity;

use crate::render::Format;

#[derive(Debug, Parser)]
#[command(
    name = "keytrail",
    version,
    about = "Answers about IAM access keys from AWS CloudTrail logs",
    long_about = "keytrail turns AWS CloudTrail logs into answers about IAM access keys: a \
                  Parquet lake of every event, reports of unused and stale keys, the full \
                  trail of a leaked key, and detections of suspicious use.",
    after_help = "Exit status: 0 done in full; 1 done, but some objects could not be read (detect: findings at or above --min-severity; verify-logs: anything modified, missing, broken or not covered); 2 usage or configuration error."
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

/// `--lake DIR|s3://BUCKET/PREFIX`: the lake a query command reads, and how to reach S3.
#[derive(Debug, Args)]
pub struct LakeArg {
    /// The lake: a directory or s3://BUCKET/PREFIX written by `keytrail ingest`
    #[arg(long, value_name = "DIR|S3URI")]
    pub lake: PathBuf,
    #[command(flatten)]
    pub s3: S3ClientArgs,
}

/// `--lake DIR`: a lake directory (the commands that repair or rewrite a lake in place).
#[derive(Debug, Args)]
pub struct LocalLakeArg {
    /// The lake: a directory written by `keytrail ingest`
    #[arg(long, value_name = "DIR")]
    pub lake: PathBuf,
}

/// Where and how a result is written.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Output format [default: from -o's extension, else table on a terminal, csv otherwise]
    #[arg(long, value_name = "FORMAT", value_enum)]
    pub format: Option<Format>,
    /// Write the result to FILE instead of stdout (atomically, when FILE is a regular file)
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// How much of the machine a query uses.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Query threads [default: all cores]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub threads: Option<u32>,
    /// Memory for sorts, aggregations and joins before they spill to disk, e.g. 512M, 2G
    #[arg(long, value_name = "SIZE", default_value_t = ByteSize(keytrail_engine::DEFAULT_MEMORY_LIMIT))]
    pub memory_limit: ByteSize,
}

/// A size given as bytes or with a unit (64K, 512M, 2G, 1GiB), shown the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub usize);

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<ByteSize, String> {
        crate::output::parse_size(s)
            .map(ByteSize)
            .map_err(|e| e.to_string())
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0;
        for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
            if n != 0 && n.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", n >> shift);
            }
        }
        write!(f, "{n}")
    }
}

/// A time window `[since, until)`.
#[derive(Debug, Args)]
pub struct WindowArgs {
    /// From T: a date (2024-11-30), an RFC 3339 time, or a relative time (90m, 36h, 7d, 2w)
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// Until T (a date means the end of that day)
    #[arg(long, value_name = "T")]
    pub until: Option<String>,
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
    /// Follow a leaked key and every credential derived from it: timeline, blast radius
    Investigate(InvestigateArgs),
    /// Find suspicious and compromised keys: rules and stateful detectors over the lake
    Detect(DetectArgs),
    /// List, check and test detection rules
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Reports on access keys: last use, unused keys, keys due for rotation, alternatives
    #[command(subcommand)]
    Report(ReportCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print keytrail's manual page (roff): `keytrail man > keytrail.1`
    Man,
    /// Check CloudTrail log-file integrity offline: digest chain, hashes, signatures (exit 1 when anything is modified, missing, broken or uncovered)
    VerifyLogs(crate::cmd::verify_logs::VerifyLogsArgs),
    /// Keep the lake current as CloudTrail delivers (SQS notifications, or polling) and append new findings as they arrive; stops on SIGTERM/SIGINT
    Follow(crate::cmd::follow::FollowArgs),
}

/// `--aws-ip-ranges FILE`: AWS's address ranges to judge "inside AWS" with.
#[derive(Debug, Args)]
pub struct AwsRangesArg {
    /// AWS's ip-ranges.json (plain or gzipped) to use instead of the bundled snapshot
    #[arg(long, value_name = "FILE")]
    pub aws_ip_ranges: Option<PathBuf>,
}

/// The stateful detectors: whether they run, their settings, and AWS's address ranges.
#[derive(Debug, Args)]
pub struct DetectorArgs {
    /// Rules only: leave out the stateful detectors
    #[arg(long)]
    pub no_detectors: bool,
    /// Change a detector setting, e.g. denied-count=30 or recon-window=15m; repeatable
    /// (`keytrail rules list` shows every setting and its value)
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub settings: Vec<String>,
    #[command(flatten)]
    pub ranges: AwsRangesArg,
}

#[derive(Debug, Args)]
pub struct AlternativesArgs {
    #[command(flatten)]
    pub lake: LakeArg,
    #[command(flatten)]
    pub ranges: AwsRangesArg,
    /// Judge use at or after T (a date, an RFC 3339 time, or 90d)
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub query: QueryArgs,
}

/// Where rules come from.
#[derive(Debug, Args)]
pub struct RuleSourceArgs {
    /// Also load the rules of DIR (YAML files, searched recursively); repeatable
    #[arg(long = "rules", value_name = "DIR")]
    pub rules: Vec<PathBuf>,
    /// Leave out the rules bundled with keytrail
    #[arg(long)]
    pub no_bundled: bool,
}

#[derive(Debug, Args)]
pub struct DetectArgs {
    #[command(flatten)]
    pub lake: LakeArg,
    #[command(flatten)]
    pub source: RuleSourceArgs,
    /// Report findings in [--since, --until); detectors still learn from earlier events
    #[command(flatten)]
    pub window: WindowArgs,
    /// Show findings at or above this severity: info, low, medium, high, critical; exit status 1 when any
    #[arg(long, value_name = "LEVEL", default_value = "low", value_parser = parse_severity)]
    pub min_severity: Severity,
    #[command(flatten)]
    pub detectors: DetectorArgs,
    /// table, csv or jsonl (findings only), json or markdown
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub query: QueryArgs,
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    s.parse()
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// List the rules, the detectors and their settings
    List {
        #[command(flatten)]
        source: RuleSourceArgs,
        #[command(flatten)]
        detectors: DetectorArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Check rule files: syntax, fields, fixtures present, file and folder names (exit 1 on errors)
    Lint {
        #[command(flatten)]
        source: RuleSourceArgs,
        /// Exit 1 on warnings too
        #[arg(long)]
        strict: bool,
    },
    /// Run every rule's positive and negative test events (exit 1 when one fails)
    Test {
        #[command(flatten)]
        source: RuleSourceArgs,
        /// Only the rules with these ids; repeatable
        #[arg(long = "id", value_name = "ID")]
        ids: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// One SQL statement (DataFusion's dialect; JSON columns have json_get_str and friends)
    #[arg(value_name = "QUERY")]
    pub sql: String,
    #[command(flatten)]
    pub lake: LakeArg,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub query: QueryArgs,
    /// After the result, say on stderr what was fetched from a lake in S3 (requests, bytes,
    /// files read beside the lake's)
    #[arg(long)]
    pub stats: bool,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Files or directories of CloudTrail logs (.json, .json.gz, JSON lines; directories are
    /// walked) and S3 locations (s3://BUCKET[/PREFIX]); they mix in one run
    #[arg(required = true, value_name = "PATH|S3URI")]
    pub paths: Vec<String>,
    /// The lake: a directory, or s3://BUCKET[/PREFIX] (created if it does not exist)
    #[arg(long, value_name = "DIR|S3URI")]
    pub lake: String,
    #[command(flatten)]
    pub keys: KeyFilterArgs,
    /// Keep events in [--since, --until)
    #[command(flatten)]
    pub window: WindowArgs,
    /// Decoding threads [default: all cores]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub limits: ReadLimitArgs,
    /// Decoded rows held in memory before a partition is written out, e.g. 96M
    #[arg(long, value_name = "SIZE", default_value = "96M")]
    pub buffer_size: String,
    /// Print the run summary as JSON on stdout
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub s3: S3Args,
    #[command(flatten)]
    pub custody: crate::cmd::verify_logs::IngestCustodyArgs,
    #[command(flatten)]
    pub s3_lake: S3LakeArgs,
}

/// The keys whose events a run keeps (`ingest`, `follow`).
#[derive(Debug, Args)]
pub struct KeyFilterArgs {
    /// Keep only events of this access key (made with it, or naming it); repeatable
    #[arg(long = "key", value_name = "ID")]
    pub keys: Vec<String>,
    /// Keep only events of the keys listed in FILE (one per line, # comments)
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

/// What one object may hold (`ingest`, `follow`).
#[derive(Debug, Args)]
pub struct ReadLimitArgs {
    /// Largest text held whole, e.g. 512M: a document without an array of records, or one
    /// record or line (objects of any size are read record by record)
    #[arg(long, value_name = "SIZE", default_value = "1G")]
    pub max_object_size: String,
    /// Largest single record to read, e.g. 1M
    #[arg(long, value_name = "SIZE", default_value = "1M")]
    pub max_event_size: String,
    /// Objects stored or decompressed larger than SIZE are read record by record rather than
    /// whole (hidden: for tests and benchmarks)
    #[arg(long, value_name = "SIZE", default_value = "64M", hide = true)]
    pub stream_above: String,
}

/// How a lake in S3 is written (`ingest`, `follow`).
#[derive(Debug, Args)]
pub struct S3LakeArgs {
    /// Lake in S3: where a run's files are written before they are uploaded
    /// [default: the system's temporary directory]
    #[arg(long, value_name = "DIR", help_heading = "S3")]
    pub work_dir: Option<PathBuf>,
    /// Lake in S3: files larger than SIZE are uploaded in parts of SIZE (at least 5M)
    #[arg(long, value_name = "SIZE", default_value = "64M", help_heading = "S3")]
    pub part_size: String,
}

/// How to reach S3: the AWS CLI's settings.
#[derive(Debug, Args)]
#[command(next_help_heading = "S3")]
pub struct S3ClientArgs {
    /// A named profile of ~/.aws/config and ~/.aws/credentials (as the AWS CLI's --profile)
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// The region of the S3 client (as the AWS CLI's --region; for ingest not a filter of the logs, see --trail-region)
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// An S3-compatible endpoint, e.g. http://127.0.0.1:9000 (path-style addressing)
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
}

/// Reading from S3.
#[derive(Debug, Args)]
#[command(next_help_heading = "S3")]
pub struct S3Args {
    #[command(flatten)]
    pub client: S3ClientArgs,
    /// Read only the logs of these AWS regions (prunes the listing); repeatable
    #[arg(long = "trail-region", value_name = "REGION")]
    pub trail_regions: Vec<String>,
    /// Read only the logs of these accounts (prunes the listing); repeatable
    #[arg(long = "account", value_name = "ID")]
    pub accounts: Vec<String>,
    /// S3 GETs in flight at once
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub concurrency: usize,
    /// Read only share I of N of the objects (a stable hash), so N workers split one bucket;
    /// `auto`: from a Kubernetes Indexed Job or an AWS Batch array job (docs/scale-out.md)
    #[arg(long, value_name = "I/N|auto")]
    pub shard: Option<String>,
    /// With --shard auto under Kubernetes: the number of shards [env: KEYTRAIL_SHARD_COUNT]
    #[arg(long, value_name = "N")]
    pub shard_count: Option<u32>,
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
        #[command(flatten)]
        lake: LakeArg,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Finish or clean up runs that were stopped half-way
    Recover {
        #[command(flatten)]
        lake: LocalLakeArg,
    },
    /// Rewrite a lake of an older schema version in the current one, in place, exactly once
    /// (it can be stopped at any point and run again)
    Upgrade {
        #[command(flatten)]
        lake: LocalLakeArg,
    },
    /// Merge each day's small files (left by many incremental runs) into one, and the key index
    /// into one file; exactly once, safe for readers running at the same time
    Compact {
        #[command(flatten)]
        lake: LocalLakeArg,
        /// Print what was merged as JSON
        #[arg(long)]
        json: bool,
    },
    /// Print the statements that make Athena, Glue, Trino, Spark or DuckDB read the lake's tables
    Ddl(DdlArgs),
}

#[derive(Debug, Args)]
pub struct DdlArgs {
    /// The lake: a directory, or s3://BUCKET/PREFIX
    #[arg(long, value_name = "DIR|S3URI")]
    pub lake: String,
    /// The engine to write for
    #[arg(long, value_enum)]
    pub engine: EngineArg,
    /// Where the engine finds the lake [default: the lake's own URI: s3://... as given, or file:///absolute/path]
    #[arg(long, value_name = "URI")]
    pub location: Option<String>,
    /// Create the tables in this database (Trino: schema) [default: the session's; Glue and Trino: default]
    #[arg(long, value_name = "NAME")]
    pub database: Option<String>,
    /// Put P before each table name (ct_ makes ct_events)
    #[arg(long, value_name = "P", default_value = "")]
    pub table_prefix: String,
    /// Athena and Glue: start the partition projection at this day (YYYY-MM-DD) [default: the lake's first day]
    #[arg(long, value_name = "DAY")]
    pub first_day: Option<String>,
    #[command(flatten)]
    pub s3: S3Args,
}

/// `keytrail lake ddl --engine`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum EngineArg {
    /// Amazon Athena: CREATE EXTERNAL TABLE with partition projection on date
    Athena,
    /// The AWS Glue Data Catalog: aws glue create-table commands (run with sh)
    Glue,
    /// Trino's Hive connector: CREATE TABLE and sync_partition_metadata
    Trino,
    /// Spark SQL: CREATE TABLE ... USING parquet and MSCK REPAIR TABLE
    Spark,
    /// DuckDB: views over read_parquet
    Duckdb,
}

#[derive(Debug, Args)]
pub struct InvestigateArgs {
    /// Access key IDs to start from, then (for the no-lake path) log files, directories or
    /// s3:// locations to read directly
    #[arg(required = true, value_name = "KEY|PATH|S3URI")]
    pub args: Vec<String>,
    /// The lake to read (a directory or s3://BUCKET/PREFIX); with PATHs given, the working
    /// lake directory to build and keep
    #[arg(long, value_name = "DIR|S3URI")]
    pub lake: Option<PathBuf>,
    /// More keys to start from, one per line (# comments)
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// The timeline's window [--since, --until) (the chain is followed over all time)
    #[command(flatten)]
    pub window: WindowArgs,
    /// table, csv or jsonl (the timeline), json (everything, full rows), markdown or html
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub query: QueryArgs,
    #[command(flatten)]
    pub s3: S3Args,
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
    /// How each long-term key is used, and what should replace it (role, Identity Center, Roles Anywhere)
    Alternatives(AlternativesArgs),
}

/// Flags every report takes.
#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub lake: LakeArg,
    /// The report's "now": nothing at or after it is read (a date, RFC 3339 time, or 2d) [default: now]
    #[arg(long, value_name = "T")]
    pub as_of: Option<String>,
    /// Key inventory: `aws iam list-access-keys` JSON, a CSV of UserName,AccessKeyId,Status,CreateDate, or the IAM credential report; repeatable
    #[arg(long, value_name = "FILE")]
    pub inventory: Vec<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub query: QueryArgs,
}

#[derive(Debug, Args)]
pub struct LastUsedArgs {
    #[command(flatten)]
    pub common: ReportArgs,
    /// Count each key's events, errors and source IPs from T (7d, 36h, a date, RFC 3339; relative to --as-of)
    #[arg(long, value_name = "T", default_value = "7d")]
    pub since: String,
    /// Only `long-term` (AKIA) or `temporary` (ASIA) keys
    #[arg(long, value_name = "KIND", value_enum, default_value = "all")]
    pub kind: KindArg,
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

/// `--kind` of `report last-used`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KindArg {
    All,
    LongTerm,
    Temporary,
}
