use std::fmt::Write as _;
use std::process::ExitCode;

use keytrail_lake::Lake;

use crate::cmd::location::lake_location;
use crate::flags::LakeCommand;
use crate::output::{stdout, thousands};

pub fn run(cmd: LakeCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LakeCommand::Verify { lake, json } => {
            let lake = lake_location(&lake)?;
            let v = keytrail_engine::verify(&lake)?;
            if json {
                stdout(&(serde_json::to_string_pretty(&v)? + "\n"))?;
            } else {
                let mut out = String::new();
                let _ = writeln!(
                    out,
                    "{}: {} commits, {} objects, {} files",
                    lake,
                    thousands(v.commits as u64),
                    thousands(v.objects as u64),
                    thousands(v.files as u64)
                );
                for (table, rows) in &v.rows {
                    let _ = writeln!(out, "  {table}: {} rows", thousands(*rows));
                }
                if v.problems.is_empty() {
                    let _ = writeln!(out, "ok: every file matches the manifest");
                } else {
                    let _ = writeln!(out, "{} problems:", v.problems.len());
                    for p in &v.problems {
                        let _ = writeln!(out, "  {p}");
                    }
                }
                stdout(&out)?;
            }
            Ok(if v.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        LakeCommand::Recover { lake } => {
            let lake = Lake::open(lake.lake)?;
            let r = lake.recover()?;
            let mut out = String::new();
            for run in &r.rolled_forward {
                let _ = writeln!(out, "finished publishing committed run {run}");
            }
            for run in &r.discarded {
                let _ = writeln!(out, "deleted the staged files of uncommitted run {run}");
            }
            if out.is_empty() {
                out.push_str("nothing to recover\n");
            }
            stdout(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        LakeCommand::Upgrade { lake } => {
            let report = keytrail_lake::upgrade::upgrade(&lake.lake, |msg| {
                tracing::info!("{msg}");
            })?;
            let text = if report.from_version == report.to_version && report.days == 0 {
                format!(
                    "{}: already in schema version {}\n",
                    lake.lake.display(),
                    report.to_version
                )
            } else {
                format!(
                    "{}: schema version {} -> {}: {} day(s), {} file(s), {} row(s) rewritten\n",
                    lake.lake.display(),
                    report.from_version,
                    report.to_version,
                    report.days,
                    thousands(report.files as u64),
                    thousands(report.rows)
                )
            };
            stdout(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        LakeCommand::Compact { lake, json } => {
            let report = keytrail_lake::compact::compact(&lake.lake)?;
            if json {
                stdout(&(serde_json::to_string_pretty(&report)? + "\n"))?;
            } else {
                stdout(&format!(
                    "{}: {} partition(s) compacted, {} file(s) into {}, {} row(s); key index: {} file(s) into 1\n",
                    lake.lake.display(),
                    report.partitions,
                    thousands(report.files_in as u64),
                    thousands(report.files_out as u64),
                    thousands(report.rows),
                    report.index_files
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        LakeCommand::Ddl(args) => super::ddl::run(args),
    }
}
