//! `keytrail lake compact`: merge each day's small files into one, and the key index into one
//! file, exactly once.
//!
//! Incremental runs (a few objects at a time, a follower committing every few minutes) leave
//! many small files per day, and one key index file per commit. Compaction reads every live
//! `events` and `insights` file of a day that has more than one, merges their rows in the
//! lake's order (access key, then time, then event ID: each row group of each file is already
//! in that order, so this is a streaming merge of sorted runs, holding one small batch per
//! run), writes them as one file (new row groups every [`crate::files::ROW_GROUP_ROWS`] rows),
//! and writes one key index for the whole lake. It is one rewrite transaction: staged, committed
//! (the commit record supersedes the old files and index files), published. `key_daily` is
//! untouched: the rows are the same.
//!
//! Readers running at the same time are safe: replaced files leave the table directories at
//! publish but stay under `_keytrail/retired/` for an hour, where keytrail's readers that planned
//! with them still find them. A compaction and another rewrite of the same files cannot both
//! commit (the second is refused and writes nothing).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::compute::SortOptions;
use arrow::compute::interleave_record_batch;
use arrow::datatypes::DataType;
use arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use keytrail_model::Table;
use keytrail_model::schema::{col, timestamp_type};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use crate::error::{IoContext, LakeError};
use crate::index::INDEX_TABLE;
use crate::lake::{KeyDailyMode, Lake, rel_to_path};

/// Rows in flight across all runs of one merge (each run's batch is a share of it).
const MERGE_ROWS: usize = 64 * 1024;
/// Rows per output batch.
const OUT_ROWS: usize = 16 * 1024;

/// What a compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CompactReport {
    /// Table partitions (table and day) merged.
    pub partitions: usize,
    pub files_in: usize,
    pub files_out: usize,
    pub rows: u64,
    /// Key index files before (the compacted lake has one).
    pub index_files: usize,
}

/// A sorted run: one row group of one file.
struct Run {
    reader: ParquetRecordBatchReader,
    path: PathBuf,
    batch: Option<RecordBatch>,
    rows: Option<Rows>,
    pos: usize,
    /// Index of the current batch in the merge's slots.
    slot: usize,
}

fn converter() -> Result<RowConverter, arrow::error::ArrowError> {
    RowConverter::new(vec![
        SortField::new_with_options(
            DataType::Utf8,
            SortOptions {
                descending: false,
                nulls_first: false,
            },
        ),
        SortField::new_with_options(
            timestamp_type(),
            SortOptions {
                descending: false,
                nulls_first: false,
            },
        ),
        SortField::new_with_options(
            DataType::Utf8,
            SortOptions {
                descending: false,
                nulls_first: true,
            },
        ),
    ])
}

fn sort_rows(conv: &RowConverter, b: &RecordBatch) -> Result<Rows, arrow::error::ArrowError> {
    let get = |name: &str| {
        b.column_by_name(name)
            .cloned()
            .ok_or_else(|| arrow::error::ArrowError::SchemaError(format!("no column {name}")))
    };
    conv.convert_columns(&[
        get(col::ACCESSKEYID)?,
        get(col::EVENTTIME)?,
        get(col::EVENTID)?,
    ])
}

impl Run {
    /// Load the next batch; false at the end of the run.
    fn advance(
        &mut self,
        conv: &RowConverter,
        slots: &mut Vec<RecordBatch>,
    ) -> Result<bool, LakeError> {
        loop {
            match self.reader.next() {
                None => {
                    self.batch = None;
                    self.rows = None;
                    return Ok(false);
                }
                Some(b) => {
                    let b = b.map_err(|e| LakeError::arrow(&self.path, e))?;
                    if b.num_rows() == 0 {
                        continue;
                    }
                    self.rows =
                        Some(sort_rows(conv, &b).map_err(|e| LakeError::arrow(&self.path, e))?);
                    self.slot = slots.len();
                    slots.push(b.clone());
                    self.batch = Some(b);
                    self.pos = 0;
                    return Ok(true);
                }
            }
        }
    }

    fn head(&self) -> Option<OwnedRow> {
        self.rows.as_ref().map(|r| r.row(self.pos).owned())
    }
}

/// Merge the rows of `paths` (each row group sorted in the lake's order) into one stream in
/// that order, handed to `emit` a batch at a time. Returns the rows merged.
pub fn merge_sorted(
    paths: &[PathBuf],
    mut emit: impl FnMut(&RecordBatch) -> Result<(), LakeError>,
) -> Result<u64, LakeError> {
    let conv =
        converter().map_err(|e| LakeError::arrow(paths.first().map_or(Path::new(""), |p| p), e))?;
    // One run per row group of every file.
    let mut groups = Vec::new();
    for p in paths {
        let file = File::open(p).at(p)?;
        let b =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| LakeError::parquet(p, e))?;
        for i in 0..b.metadata().num_row_groups() {
            groups.push((p.clone(), i));
        }
    }
    let per_run = (MERGE_ROWS / groups.len().max(1)).clamp(64, 8192);
    let mut runs = Vec::with_capacity(groups.len());
    let mut slots: Vec<RecordBatch> = Vec::new();
    let mut heap = BinaryHeap::new();
    for (p, i) in groups {
        let file = File::open(&p).at(&p)?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| LakeError::parquet(&p, e))?
            .with_row_groups(vec![i])
            .with_batch_size(per_run)
            .build()
            .map_err(|e| LakeError::parquet(&p, e))?;
        let mut run = Run {
            reader,
            path: p,
            batch: None,
            rows: None,
            pos: 0,
            slot: 0,
        };
        if run.advance(&conv, &mut slots)? {
            if let Some(h) = run.head() {
                heap.push(Reverse((h, runs.len())));
            }
            runs.push(run);
        }
    }
    let mut order: Vec<(usize, usize)> = Vec::with_capacity(OUT_ROWS);
    let mut total = 0u64;
    let flush = |order: &mut Vec<(usize, usize)>,
                 slots: &mut Vec<RecordBatch>,
                 runs: &mut Vec<Run>,
                 emit: &mut dyn FnMut(&RecordBatch) -> Result<(), LakeError>|
     -> Result<(), LakeError> {
        if order.is_empty() {
            return Ok(());
        }
        let refs: Vec<&RecordBatch> = slots.iter().collect();
        let out = interleave_record_batch(&refs, order)
            .map_err(|e| LakeError::arrow(Path::new("merge"), e))?;
        emit(&out)?;
        order.clear();
        // Keep only the batches runs are still on.
        let mut kept = Vec::new();
        for r in runs.iter_mut() {
            if let Some(b) = &r.batch {
                r.slot = kept.len();
                kept.push(b.clone());
            }
        }
        *slots = kept;
        Ok(())
    };
    while let Some(Reverse((_, i))) = heap.pop() {
        let run = &mut runs[i];
        order.push((run.slot, run.pos));
        total += 1;
        run.pos += 1;
        let more = match &run.batch {
            Some(b) if run.pos < b.num_rows() => true,
            _ => run.advance(&conv, &mut slots)?,
        };
        if more && let Some(h) = runs[i].head() {
            heap.push(Reverse((h, i)));
        }
        if order.len() >= OUT_ROWS {
            flush(&mut order, &mut slots, &mut runs, &mut emit)?;
        }
    }
    flush(&mut order, &mut slots, &mut runs, &mut emit)?;
    Ok(total)
}

/// Compact the lake at `root`.
pub fn compact(root: &Path) -> Result<CompactReport, LakeError> {
    let lake = Lake::open(root)?;
    lake.recover()?;
    let snap = lake.snapshot()?;
    let mut report = CompactReport {
        index_files: snap.index_files.len(),
        ..CompactReport::default()
    };
    let mut parts: BTreeMap<(Table, i32), Vec<String>> = BTreeMap::new();
    for f in &snap.files {
        if matches!(f.table, Table::Events | Table::Insights) {
            parts
                .entry((f.table, f.day))
                .or_default()
                .push(f.record.path.clone());
        }
    }
    parts.retain(|_, files| files.len() > 1);
    if parts.is_empty() && snap.index_files.len() <= 1 {
        return Ok(report);
    }
    let txn = lake.begin_rewrite(KeyDailyMode::Keep)?;
    let mut replaced: HashSet<String> = HashSet::new();
    for ((table, day), files) in &parts {
        let paths: Vec<PathBuf> = files.iter().map(|r| rel_to_path(root, r)).collect();
        report.rows += merge_sorted(&paths, |b| txn.append(*table, *day, b))?;
        for r in files {
            txn.replace(r);
            replaced.insert(r.clone());
        }
        report.partitions += 1;
        report.files_in += files.len();
    }
    // One key index for the lake: the entries of the files left as they are, with the new
    // files' own.
    let kept_events: Vec<String> = snap
        .table_files(Table::Events)
        .filter(|f| !replaced.contains(&f.record.path))
        .map(|f| f.record.path.clone())
        .collect();
    let kept: HashSet<&str> = kept_events.iter().map(String::as_str).collect();
    let covered: Vec<String> = snap
        .table_files(Table::Events)
        .filter(|f| f.indexed && kept.contains(f.record.path.as_str()))
        .map(|f| f.record.path.clone())
        .collect();
    txn.carry_index(
        &snap.index_files,
        |e| kept.contains(e.file.as_str()),
        covered,
    )?;
    for f in lake.manifest()?.live_files() {
        if f.table == INDEX_TABLE {
            txn.replace(&f.path);
        }
    }
    report.files_out = txn.finish_files()?.len();
    txn.commit(Vec::new())?;
    Ok(report)
}
