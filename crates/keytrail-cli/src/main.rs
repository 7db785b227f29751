//! `keytrail`: the thin binary. Flags are parsed by clap, validated into the library's typed
//! options, handed to one library call, and the result is mapped to an exit status:
//!
//! - 0: the job was done in full (for `ingest`: every object was read)
//! - 1: the job was done, but not in full (some objects failed; `detect` found something)
//! - 2: usage or configuration error, or a failure that stopped the job

mod alloc;
mod cmd;
mod flags;
mod output;
mod progress;
mod render;

use std::process::ExitCode;

use clap::Parser;

use crate::flags::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    match run(cli) {
        Ok(code) => code,
        Err(err) if output::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            output::error(&err);
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Ingest(args) => cmd::ingest::run(args, cli.quiet),
        Command::KeyInfo(args) => cmd::key_info::run(args),
        Command::Lake(args) => cmd::lake::run(args),
        Command::Sql(args) => cmd::sql::run(args),
        Command::Investigate(args) => cmd::investigate::run(args, cli.quiet),
        Command::Detect(args) => cmd::detect::run(args),
        Command::Rules(args) => cmd::rules::run(args),
        Command::Report(args) => cmd::report::run(args, cli.quiet),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "keytrail", &mut out);
            output::stdout(&String::from_utf8_lossy(&out))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            output::stdout(&String::from_utf8_lossy(&out))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::VerifyLogs(args) => cmd::verify_logs::run(args, cli.quiet),
        Command::Follow(args) => cmd::follow::run(args, cli.quiet),
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter =
        EnvFilter::try_from_env("KEYTRAIL_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}
