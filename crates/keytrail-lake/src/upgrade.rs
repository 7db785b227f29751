//! `keytrail lake upgrade`: rewrite a lake written with an older schema version in the current
//! one, exactly once, one day at a time.
//!
//! Schema version 2 adds the fact columns (`docs/schema.md`). An upgrade reads every `events`
//! and `insights` file still in version 1, computes the facts from the stored columns with the
//! functions ingest uses (`keytrail_model::batch::add_facts`), and writes each day's rows as new
//! files through an ordinary rewrite transaction: staged, then one commit per day that
//! supersedes the day's old files and rebuilds its `key_daily` from the rewritten rows, then
//! published. A day is either all old or all new, so an upgrade killed at any point and run
//! again finishes the remaining days and ends with exactly the rows of an uninterrupted one.
//! Only when no version 1 file is left does `_keytrail/lake.json` say version 2; until then
//! every other command refuses the lake and says to finish the upgrade.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use keytrail_model::Table;
use keytrail_model::batch::add_facts;
use keytrail_model::schema::SCHEMA_VERSION;
use keytrail_model::time::parse_day;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{IoContext, LakeError};
use crate::lake::{KeyDailyMode, Lake, rel_to_path};

/// Rows read from an old file at a time.
const BATCH_ROWS: usize = 64 * 1024;

/// What an upgrade did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct UpgradeReport {
    /// The version the lake had (the current one when there was nothing to do).
    pub from_version: u32,
    pub to_version: u32,
    /// Days rewritten by this run (one commit each).
    pub days: usize,
    pub files: usize,
    pub rows: u64,
}

/// The day of a data file from its partition directory (`events/date=YYYY-MM-DD/...`).
fn day_of_path(rel: &str) -> Option<i32> {
    rel.split('/')
        .find_map(|p| p.strip_prefix("date="))
        .and_then(parse_day)
}

/// Upgrade the lake at `root` to the current schema version; `progress` hears of each day.
pub fn upgrade(root: &Path, mut progress: impl FnMut(&str)) -> Result<UpgradeReport, LakeError> {
    let (lake, found) = Lake::open_any_version(root)?;
    let mut report = UpgradeReport {
        from_version: found,
        to_version: SCHEMA_VERSION,
        ..UpgradeReport::default()
    };
    if found == SCHEMA_VERSION {
        return Ok(report);
    }
    if !(1..=SCHEMA_VERSION).contains(&found) {
        return Err(LakeError::SchemaVersion {
            path: root.to_path_buf(),
            found,
            expected: SCHEMA_VERSION,
        });
    }
    lake.recover()?;
    // Old files, by day: (table, path).
    let manifest = lake.manifest()?;
    let mut days: BTreeMap<i32, Vec<(Table, String)>> = BTreeMap::new();
    for (f, version) in manifest.live_files_versioned() {
        let Some(table) = Table::from_name(&f.table) else {
            continue;
        };
        if version >= SCHEMA_VERSION || table == Table::KeyDaily {
            continue;
        }
        let day = day_of_path(&f.path).ok_or_else(|| LakeError::Manifest {
            path: rel_to_path(root, &f.path),
            reason: "a data file outside a date= partition".into(),
        })?;
        days.entry(day).or_default().push((table, f.path.clone()));
    }
    for (day, files) in days {
        progress(&format!(
            "upgrading {} ({} file(s))",
            keytrail_model::time::day_string(day),
            files.len()
        ));
        let txn = lake.begin_rewrite(KeyDailyMode::Rebuild)?;
        for (table, rel) in &files {
            let path = rel_to_path(root, rel);
            let file = File::open(&path).at(&path)?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| LakeError::parquet(&path, e))?
                .with_batch_size(BATCH_ROWS)
                .build()
                .map_err(|e| LakeError::parquet(&path, e))?;
            for batch in reader {
                let batch = batch.map_err(|e| LakeError::arrow(&path, e))?;
                let batch = add_facts(&batch, *table).map_err(|e| LakeError::arrow(&path, e))?;
                report.rows += batch.num_rows() as u64;
                txn.write(*table, day, &[batch])?;
            }
            txn.replace(rel);
            report.files += 1;
        }
        txn.commit(Vec::new())?;
        report.days += 1;
    }
    lake.set_schema_version(SCHEMA_VERSION)?;
    Ok(report)
}
