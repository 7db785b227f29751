//! The key index: where each access key's rows are in the lake's `events` files, so a question
//! about a key opens only the files, and reads only the rows, that hold it.
//!
//! Every commit that adds `events` files writes one index file,
//! `_keytrail/index/<run>.parquet`, listed in its commit record like any data file (so it is
//! staged, committed, published, rolled forward and replaced exactly as they are). Its rows:
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `accesskeyid` | string | the key |
//! | `named` | boolean | false: rows made *with* the key; true: rows that *name* it (`targetkeyid`, `mintedkeyid`) |
//! | `file` | string | the data file, relative to the lake root |
//! | `firstrow` | int64 | the first row (0-based, counted over the whole file) |
//! | `rows` | int64 | how many consecutive rows from there |
//! | `mintime`, `maxtime` | timestamp (ms, UTC) | the time range of those rows |
//!
//! sorted by `accesskeyid`, `named`, `file`, `firstrow`, with row-group statistics and a bloom
//! filter on `accesskeyid`, so a reader of one key reads one row group per index file. Rows of a
//! file are sorted by key within each row group, so a key made calls in one run of rows per row
//! group. The commit record also carries each data file's time and key range
//! (`FileRecord::stats`), which prunes by time without opening anything. `docs/schema.md` says
//! the same for other tools.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet, VecDeque};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMillisecondType};
use arrow::error::ArrowError;
use keytrail_model::schema::{META_WRITER, UTC, col, timestamp_type};
use keytrail_model::{Millis, time::day_of};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{KeyValue, ParquetMetaData};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::Statistics;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::error::{IoContext, LakeError};
use crate::files::WRITER;

/// `FileRecord::table` of index files.
pub const INDEX_TABLE: &str = "key_index";
/// Where index files live, relative to the lake root.
pub const INDEX_DIR: &str = "_keytrail/index";
/// Version of the index file layout, stamped in each file's metadata.
pub const INDEX_VERSION: u32 = 1;
const META_INDEX_VERSION: &str = "keytrail.index_version";
const INDEX_ROW_GROUP_ROWS: usize = 32 * 1024;

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("accesskeyid", DataType::Utf8, false),
        Field::new("named", DataType::Boolean, false),
        Field::new("file", DataType::Utf8, false),
        Field::new("firstrow", DataType::Int64, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("mintime", timestamp_type(), false),
        Field::new("maxtime", timestamp_type(), false),
    ]))
});

/// The schema of index files.
pub fn index_schema() -> SchemaRef {
    Arc::clone(&SCHEMA)
}

/// What a commit record says of a data file besides its size: enough to skip it without
/// opening it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStats {
    /// Time of the first and last event (ms, UTC).
    pub min_time: Millis,
    pub max_time: Millis,
    /// The smallest and largest access key of its rows (none when no row has a key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_key: Option<String>,
    /// How many of its rows record a change of a key's status (`keystatus` set: a call that
    /// created, changed or deleted an access key). Few files hold one, and the reports' scan of
    /// key changes skips the others. `None` in commit records written before it was counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_changes: Option<u64>,
}

impl FileStats {
    /// The UTC days the file's events fall on.
    pub fn days(&self) -> (i32, i32) {
        (day_of(self.min_time), day_of(self.max_time))
    }
}

/// Where a key's rows are in one data file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IndexEntry {
    pub key: String,
    pub named: bool,
    pub file: String,
    pub first_row: u64,
    pub rows: u64,
    pub min_time: Millis,
    pub max_time: Millis,
}

/// Builds the index entries and statistics of one data file from its rows, in the order they
/// are written.
#[derive(Debug)]
pub struct FileIndexBuilder {
    file: String,
    rows: u64,
    held: Vec<IndexEntry>,
    named: Vec<IndexEntry>,
    stats: Option<FileStats>,
}

fn strings<'a>(batch: &'a RecordBatch, name: &str) -> Result<Option<&'a StringArray>, ArrowError> {
    match batch.column_by_name(name) {
        None => Ok(None),
        Some(c) => c
            .as_string_opt::<i32>()
            .map(Some)
            .ok_or_else(|| ArrowError::SchemaError(format!("column {name} is not Utf8"))),
    }
}

fn push_run(list: &mut Vec<IndexEntry>, key: &str, named: bool, file: &str, row: u64, t: Millis) {
    if let Some(last) = list.last_mut()
        && last.key == key
        && last.first_row + last.rows == row
    {
        last.rows += 1;
        last.min_time = last.min_time.min(t);
        last.max_time = last.max_time.max(t);
        return;
    }
    list.push(IndexEntry {
        key: key.to_owned(),
        named,
        file: file.to_owned(),
        first_row: row,
        rows: 1,
        min_time: t,
        max_time: t,
    });
}

impl FileIndexBuilder {
    /// An index of the data file at `file` (relative to the lake root).
    pub fn new(file: impl Into<String>) -> FileIndexBuilder {
        FileIndexBuilder {
            file: file.into(),
            rows: 0,
            held: Vec::new(),
            named: Vec::new(),
            stats: None,
        }
    }

    /// Add the next rows written to the file.
    pub fn add(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        let key = strings(batch, col::ACCESSKEYID)?
            .ok_or_else(|| ArrowError::SchemaError("no accesskeyid column".into()))?;
        let time = batch
            .column_by_name(col::EVENTTIME)
            .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>())
            .ok_or_else(|| ArrowError::SchemaError("no eventtime column".into()))?;
        let target = strings(batch, col::TARGETKEYID)?;
        let minted = strings(batch, col::MINTEDKEYID)?;
        let changes = batch
            .column_by_name(col::KEYSTATUS)
            .map(|c| (c.len() - c.logical_null_count()) as u64);
        for i in 0..batch.num_rows() {
            let row = self.rows + i as u64;
            let t = time.value(i);
            let k = key.is_valid(i).then_some(key.value(i));
            let s = self.stats.get_or_insert(FileStats {
                min_time: t,
                max_time: t,
                min_key: None,
                max_key: None,
                key_changes: Some(0),
            });
            s.min_time = s.min_time.min(t);
            s.max_time = s.max_time.max(t);
            if let Some(k) = k {
                if s.min_key.as_deref().is_none_or(|m| k < m) {
                    s.min_key = Some(k.to_owned());
                }
                if s.max_key.as_deref().is_none_or(|m| k > m) {
                    s.max_key = Some(k.to_owned());
                }
                push_run(&mut self.held, k, false, &self.file, row, t);
            }
            let named_here = [target, minted]
                .into_iter()
                .flatten()
                .filter(|a| a.is_valid(i))
                .map(|a| a.value(i));
            let mut first: Option<&str> = None;
            for n in named_here {
                if n.is_empty() || first == Some(n) {
                    continue;
                }
                first = Some(n);
                push_run(&mut self.named, n, true, &self.file, row, t);
            }
        }
        if let Some(s) = &mut self.stats {
            // Not counted (`None`) if a batch has no `keystatus` column.
            s.key_changes = s.key_changes.zip(changes).map(|(a, b)| a + b);
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// The entries and statistics of the file.
    pub fn finish(self) -> (Vec<IndexEntry>, Option<FileStats>) {
        let mut entries = self.held;
        entries.extend(self.named);
        (entries, self.stats)
    }
}

/// Write `entries` (any order) as an index file at `path` and make it durable; returns the
/// rows and bytes written.
pub fn write_index(
    path: &Path,
    run_id: &str,
    mut entries: Vec<IndexEntry>,
) -> Result<crate::files::Written, LakeError> {
    entries.sort_unstable();
    let mut w = IndexWriter::create(path, run_id)?;
    w.write(&entries)?;
    w.close()
}

/// Writes sorted entries as an index file, one row group per `INDEX_ROW_GROUP_ROWS`.
struct IndexWriter {
    path: PathBuf,
    writer: ArrowWriter<BufWriter<File>>,
    pending: Vec<IndexEntry>,
    rows: u64,
}

impl IndexWriter {
    fn create(path: &Path, run_id: &str) -> Result<IndexWriter, LakeError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).at(dir)?;
        }
        let file = File::create(path).at(path)?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(INDEX_ROW_GROUP_ROWS))
            .set_column_bloom_filter_enabled(ColumnPath::from("accesskeyid"), true)
            .set_column_bloom_filter_fpp(ColumnPath::from("accesskeyid"), 0.01)
            .set_key_value_metadata(Some(vec![
                KeyValue::new(META_INDEX_VERSION.to_owned(), INDEX_VERSION.to_string()),
                KeyValue::new(META_WRITER.to_owned(), WRITER.to_owned()),
                KeyValue::new("keytrail.run_id".to_owned(), run_id.to_owned()),
            ]))
            .build();
        let writer = ArrowWriter::try_new(
            BufWriter::with_capacity(1 << 20, file),
            index_schema(),
            Some(props),
        )
        .map_err(|e| LakeError::parquet(path, e))?;
        Ok(IndexWriter {
            path: path.to_owned(),
            writer,
            pending: Vec::new(),
            rows: 0,
        })
    }

    /// Add entries, in order after every entry written before.
    fn write(&mut self, entries: &[IndexEntry]) -> Result<(), LakeError> {
        for chunk in entries.chunks(INDEX_ROW_GROUP_ROWS) {
            self.write_batch(chunk)?;
        }
        Ok(())
    }

    fn push(&mut self, entry: IndexEntry) -> Result<(), LakeError> {
        self.pending.push(entry);
        if self.pending.len() == INDEX_ROW_GROUP_ROWS {
            let chunk = std::mem::take(&mut self.pending);
            self.write_batch(&chunk)?;
        }
        Ok(())
    }

    fn write_batch(&mut self, chunk: &[IndexEntry]) -> Result<(), LakeError> {
        let batch = entries_batch(chunk).map_err(|e| LakeError::arrow(&self.path, e))?;
        self.writer
            .write(&batch)
            .map_err(|e| LakeError::parquet(&self.path, e))?;
        self.rows += chunk.len() as u64;
        Ok(())
    }

    fn close(mut self) -> Result<crate::files::Written, LakeError> {
        let rest = std::mem::take(&mut self.pending);
        self.write_batch(&rest)?;
        let bytes = crate::files::close_durable(self.writer, &self.path)?;
        Ok(crate::files::Written {
            rows: self.rows,
            bytes,
        })
    }
}

/// Entries held in memory before they are sorted and spilled to a run file (about 50 MiB).
const SPILL_ENTRIES: usize = 256 * 1024;
/// Entries read at a time from each run file while merging.
const MERGE_BATCH: usize = 4096;

/// Collects a run's index entries in bounded memory: past `SPILL_ENTRIES` they are sorted and
/// spilled to a run file in the run's staging folder, and `finish` merges the runs into one
/// index file, so an ingest of any size holds at most one spill's entries and one batch per
/// run file.
#[derive(Debug)]
pub(crate) struct IndexSink {
    dir: PathBuf,
    buf: Vec<IndexEntry>,
    runs: Vec<PathBuf>,
    limit: usize,
}

impl IndexSink {
    /// A sink spilling to `dir` (removed with the staging folder it is in).
    pub(crate) fn new(dir: PathBuf) -> IndexSink {
        IndexSink::with_limit(dir, SPILL_ENTRIES)
    }

    pub(crate) fn with_limit(dir: PathBuf, limit: usize) -> IndexSink {
        IndexSink {
            dir,
            buf: Vec::new(),
            runs: Vec::new(),
            limit: limit.max(1),
        }
    }

    pub(crate) fn extend(
        &mut self,
        entries: impl IntoIterator<Item = IndexEntry>,
    ) -> Result<(), LakeError> {
        for e in entries {
            self.buf.push(e);
            if self.buf.len() >= self.limit {
                self.spill()?;
            }
        }
        Ok(())
    }

    /// Take in every entry of `other` (its spilled runs stay where they are).
    pub(crate) fn absorb(&mut self, other: IndexSink) -> Result<(), LakeError> {
        self.runs.extend(other.runs);
        self.extend(other.buf)
    }

    /// Add the entries of the index files at `paths` for which `keep` holds, read a batch at
    /// a time.
    pub(crate) fn extend_from_files(
        &mut self,
        paths: &[PathBuf],
        keep: impl Fn(&IndexEntry) -> bool,
    ) -> Result<(), LakeError> {
        for path in paths {
            for batch in batches(path, MERGE_BATCH)? {
                let batch = batch?;
                let mut entries = Vec::with_capacity(batch.num_rows());
                read_entries_where(&batch, |_, _| true, &mut entries)
                    .map_err(|e| LakeError::arrow(path, e))?;
                self.extend(entries.into_iter().filter(|e| keep(e)))?;
            }
        }
        Ok(())
    }

    fn spill(&mut self) -> Result<(), LakeError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let path = self
            .dir
            .join(format!("index-spill-{}.parquet", self.runs.len()));
        let mut entries = std::mem::take(&mut self.buf);
        entries.sort_unstable();
        let mut w = IndexWriter::create(&path, "spill")?;
        w.write(&entries)?;
        w.close()?;
        self.runs.push(path);
        Ok(())
    }

    /// Write every entry, sorted, as the index file at `path`; the run files are removed.
    pub(crate) fn finish(
        mut self,
        path: &Path,
        run_id: &str,
    ) -> Result<crate::files::Written, LakeError> {
        if self.runs.is_empty() {
            return write_index(path, run_id, std::mem::take(&mut self.buf));
        }
        self.spill()?;
        let mut cursors = Vec::with_capacity(self.runs.len());
        let mut heap = BinaryHeap::new();
        for (i, run) in self.runs.iter().enumerate() {
            let mut c = RunCursor {
                path: run.clone(),
                batches: batches(run, MERGE_BATCH)?,
                pending: VecDeque::new(),
            };
            if let Some(e) = c.next()? {
                heap.push(Reverse((e, i)));
            }
            cursors.push(c);
        }
        let mut w = IndexWriter::create(path, run_id)?;
        while let Some(Reverse((e, i))) = heap.pop() {
            w.push(e)?;
            if let Some(next) = cursors[i].next()? {
                heap.push(Reverse((next, i)));
            }
        }
        let written = w.close()?;
        for run in &self.runs {
            std::fs::remove_file(run).at(run)?;
        }
        Ok(written)
    }
}

fn batches(
    path: &Path,
    size: usize,
) -> Result<impl Iterator<Item = Result<RecordBatch, LakeError>>, LakeError> {
    let file = File::open(path).at(path)?;
    let reader: ParquetRecordBatchReader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| LakeError::parquet(path, e))?
        .with_batch_size(size)
        .build()
        .map_err(|e| LakeError::parquet(path, e))?;
    let path = path.to_owned();
    Ok(reader.map(move |b| b.map_err(|e| LakeError::arrow(&path, e))))
}

struct RunCursor<I> {
    path: PathBuf,
    batches: I,
    pending: VecDeque<IndexEntry>,
}

impl<I: Iterator<Item = Result<RecordBatch, LakeError>>> RunCursor<I> {
    fn next(&mut self) -> Result<Option<IndexEntry>, LakeError> {
        while self.pending.is_empty() {
            let Some(batch) = self.batches.next() else {
                return Ok(None);
            };
            let batch = batch?;
            let mut entries = Vec::with_capacity(batch.num_rows());
            read_entries_where(&batch, |_, _| true, &mut entries)
                .map_err(|e| LakeError::arrow(&self.path, e))?;
            self.pending.extend(entries);
        }
        Ok(self.pending.pop_front())
    }
}

fn entries_batch(entries: &[IndexEntry]) -> Result<RecordBatch, ArrowError> {
    let ts = |f: fn(&IndexEntry) -> Millis| -> ArrayRef {
        Arc::new(
            TimestampMillisecondArray::from(entries.iter().map(f).collect::<Vec<_>>())
                .with_timezone(UTC),
        )
    };
    let int = |f: fn(&IndexEntry) -> u64| -> ArrayRef {
        Arc::new(Int64Array::from(
            entries
                .iter()
                .map(|e| i64::try_from(f(e)).unwrap_or(i64::MAX))
                .collect::<Vec<_>>(),
        ))
    };
    RecordBatch::try_new(
        index_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                entries.iter().map(|e| e.key.as_str()),
            )),
            Arc::new(BooleanArray::from(
                entries.iter().map(|e| e.named).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from_iter_values(
                entries.iter().map(|e| e.file.as_str()),
            )),
            int(|e| e.first_row),
            int(|e| e.rows),
            ts(|e| e.min_time),
            ts(|e| e.max_time),
        ],
    )
}

/// Which of a key's rows a lookup wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    /// Rows made with the key (`accesskeyid`).
    Held,
    /// Rows that name the key (`targetkeyid`, `mintedkeyid`).
    Named,
    /// Both.
    Any,
}

impl Relation {
    /// Whether an entry of the index (`named` or not) is of this relation.
    pub fn wants(self, named: bool) -> bool {
        match self {
            Relation::Held => !named,
            Relation::Named => named,
            Relation::Any => true,
        }
    }
}

/// Look `keys` up in the index files at `paths`: every entry of those keys with the wanted
/// relation. Only the row groups whose key range can hold one of the keys are read.
pub fn lookup(
    paths: &[std::path::PathBuf],
    keys: &[&str],
    relation: Relation,
) -> Result<Vec<IndexEntry>, LakeError> {
    let mut sorted: Vec<&str> = keys.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let wanted: HashSet<&str> = sorted.iter().copied().collect();
    let mut out = Vec::new();
    if sorted.is_empty() {
        return Ok(out);
    }
    for path in paths {
        let file = File::open(path).at(path)?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| LakeError::parquet(path, e))?;
        let groups = row_groups_for_keys(builder.metadata(), &sorted);
        if groups.is_empty() {
            continue;
        }
        let reader = builder
            .with_row_groups(groups)
            .with_batch_size(INDEX_ROW_GROUP_ROWS)
            .build()
            .map_err(|e| LakeError::parquet(path, e))?;
        for batch in reader {
            let batch = batch.map_err(|e| LakeError::arrow(path, e))?;
            read_entries(&batch, &wanted, relation, &mut out)
                .map_err(|e| LakeError::arrow(path, e))?;
        }
    }
    Ok(out)
}

/// The row groups of an index file (its footer, `metadata`) whose key range can hold one of
/// `sorted` (sorted, deduplicated keys).
pub fn row_groups_for_keys(metadata: &ParquetMetaData, sorted: &[&str]) -> Vec<usize> {
    metadata
        .row_groups()
        .iter()
        .enumerate()
        .filter(|(_, rg)| match rg.column(0).statistics() {
            Some(Statistics::ByteArray(s)) => match (s.min_opt(), s.max_opt()) {
                (Some(min), Some(max)) => {
                    let (min, max) = (min.data(), max.data());
                    let i = sorted.partition_point(|k| k.as_bytes() < min);
                    sorted.get(i).is_some_and(|k| k.as_bytes() <= max)
                }
                _ => true,
            },
            _ => true,
        })
        .map(|(i, _)| i)
        .collect()
}

/// Add the entries of a batch of an index file that are of `wanted` keys with the wanted
/// relation to `out` (for readers of index files that are not on a local disk).
pub fn entries_of(
    batch: &RecordBatch,
    wanted: &HashSet<&str>,
    relation: Relation,
    out: &mut Vec<IndexEntry>,
) -> Result<(), ArrowError> {
    read_entries(batch, wanted, relation, out)
}

/// Every entry of the index files at `paths` (for readers that want the whole index).
pub fn read_all(paths: &[std::path::PathBuf]) -> Result<Vec<IndexEntry>, LakeError> {
    let mut out = Vec::new();
    for path in paths {
        for batch in crate::files::read_file(path)? {
            read_entries_where(&batch, |_, _| true, &mut out)
                .map_err(|e| LakeError::arrow(path, e))?;
        }
    }
    Ok(out)
}

fn read_entries(
    batch: &RecordBatch,
    wanted: &HashSet<&str>,
    relation: Relation,
    out: &mut Vec<IndexEntry>,
) -> Result<(), ArrowError> {
    read_entries_where(
        batch,
        |k, named| relation.wants(named) && wanted.contains(k),
        out,
    )
}

fn read_entries_where(
    batch: &RecordBatch,
    keep: impl Fn(&str, bool) -> bool,
    out: &mut Vec<IndexEntry>,
) -> Result<(), ArrowError> {
    let bad = |n: &str| ArrowError::SchemaError(format!("index column {n} has the wrong type"));
    let key = batch
        .column(0)
        .as_string_opt::<i32>()
        .ok_or_else(|| bad("accesskeyid"))?;
    let named = batch
        .column(1)
        .as_boolean_opt()
        .ok_or_else(|| bad("named"))?;
    let file = batch
        .column(2)
        .as_string_opt::<i32>()
        .ok_or_else(|| bad("file"))?;
    let first = batch
        .column(3)
        .as_primitive_opt::<arrow::datatypes::Int64Type>()
        .ok_or_else(|| bad("firstrow"))?;
    let rows = batch
        .column(4)
        .as_primitive_opt::<arrow::datatypes::Int64Type>()
        .ok_or_else(|| bad("rows"))?;
    let min = batch
        .column(5)
        .as_primitive_opt::<TimestampMillisecondType>()
        .ok_or_else(|| bad("mintime"))?;
    let max = batch
        .column(6)
        .as_primitive_opt::<TimestampMillisecondType>()
        .ok_or_else(|| bad("maxtime"))?;
    for i in 0..batch.num_rows() {
        if !keep(key.value(i), named.value(i)) {
            continue;
        }
        out.push(IndexEntry {
            key: key.value(i).to_owned(),
            named: named.value(i),
            file: file.value(i).to_owned(),
            first_row: u64::try_from(first.value(i)).unwrap_or(0),
            rows: u64::try_from(rows.value(i)).unwrap_or(0),
            min_time: min.value(i),
            max_time: max.value(i),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keytrail_model::{EventBatchBuilder, Table, decode_event};

    fn batch(lines: &[String]) -> RecordBatch {
        let mut b = EventBatchBuilder::new(Table::Events);
        for l in lines {
            b.append(&decode_event(l).expect("event"), "test");
        }
        b.finish().expect("batch")
    }

    fn ev(key: &str, t: &str, name: &str, request: &str) -> String {
        format!(
            r#"{{"eventTime":"{t}","eventSource":"iam.amazonaws.com","eventName":"{name}","requestParameters":{request},"userIdentity":{{"type":"IAMUser","accessKeyId":"{key}"}}}}"#
        )
    }

    #[test]
    fn runs_of_keys_and_named_keys() {
        let mut b = FileIndexBuilder::new("events/date=2024-01-01/part-x.parquet");
        // Two sorted pieces (two row groups): A A B | A C
        b.add(&batch(&[
            ev("AKIAA", "2024-01-01T01:00:00Z", "ListUsers", "null"),
            ev("AKIAA", "2024-01-01T02:00:00Z", "ListUsers", "null"),
            ev(
                "AKIAB",
                "2024-01-01T03:00:00Z",
                "UpdateAccessKey",
                r#"{"accessKeyId":"AKIAC","status":"Inactive"}"#,
            ),
        ]))
        .expect("add");
        b.add(&batch(&[
            ev("AKIAA", "2024-01-01T00:30:00Z", "ListUsers", "null"),
            ev("AKIAC", "2024-01-01T04:00:00Z", "ListUsers", "null"),
        ]))
        .expect("add");
        let (entries, stats) = b.finish();
        let stats = stats.expect("stats");
        assert_eq!(stats.min_key.as_deref(), Some("AKIAA"));
        assert_eq!(stats.max_key.as_deref(), Some("AKIAC"));
        assert_eq!(stats.max_time - stats.min_time, 3_600_000 * 7 / 2);
        let short: Vec<(&str, bool, u64, u64)> = entries
            .iter()
            .map(|e| (e.key.as_str(), e.named, e.first_row, e.rows))
            .collect();
        assert_eq!(
            short,
            [
                ("AKIAA", false, 0, 2),
                ("AKIAB", false, 2, 1),
                ("AKIAA", false, 3, 1),
                ("AKIAC", false, 4, 1),
                ("AKIAC", true, 2, 1),
            ]
        );

        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("i.parquet");
        let w = write_index(&path, "run", entries.clone()).expect("write");
        assert_eq!(w.rows, 5);
        let found = lookup(
            std::slice::from_ref(&path),
            &["AKIAC", "AKIAZ"],
            Relation::Any,
        )
        .expect("lookup");
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|e| e.key == "AKIAC"));
        let named =
            lookup(std::slice::from_ref(&path), &["AKIAC"], Relation::Named).expect("lookup");
        assert_eq!(named.len(), 1);
        assert_eq!((named[0].first_row, named[0].rows), (2, 1));
        assert!(
            lookup(std::slice::from_ref(&path), &["AKIAZ"], Relation::Any)
                .expect("lookup")
                .is_empty()
        );
        let mut all = read_all(&[path]).expect("all");
        all.sort();
        let mut want = entries;
        want.sort();
        assert_eq!(all, want);
    }

    #[test]
    fn a_spilling_sink_writes_the_index_an_unspilled_one_does() {
        // 1,000 entries in a scrambled order, 7 at a time in memory: 143 run files merged.
        let entries: Vec<IndexEntry> = (0..1000u64)
            .map(|i| {
                let j = (i * 389) % 1000;
                IndexEntry {
                    key: format!("AKIA{:04}", j % 97),
                    named: j % 3 == 0,
                    file: format!("events/date=2024-01-01/part-{}.parquet", j % 5),
                    first_row: j,
                    rows: 1 + j % 4,
                    min_time: j as i64,
                    max_time: j as i64 + 10,
                }
            })
            .collect();
        let dir = tempfile::tempdir().expect("tmp");
        let spill = dir.path().join("spill");
        let mut sink = IndexSink::with_limit(spill.clone(), 7);
        sink.extend(entries.iter().cloned()).expect("extend");
        assert_eq!(std::fs::read_dir(&spill).expect("runs").count(), 142);
        let merged = dir.path().join("merged.parquet");
        let w = sink.finish(&merged, "run").expect("finish");
        assert_eq!(w.rows, 1000);
        assert_eq!(std::fs::read_dir(&spill).expect("runs").count(), 0);
        let plain = dir.path().join("plain.parquet");
        write_index(&plain, "run", entries.clone()).expect("write");
        let mut want = entries.clone();
        want.sort();
        // Written in sorted order, row for row the same as the index written from memory.
        assert_eq!(
            read_all(std::slice::from_ref(&merged)).expect("merged"),
            want
        );
        assert_eq!(read_all(&[plain]).expect("plain"), want);
        // Carried from a file through a sink with a filter: only the kept entries.
        let mut carried = IndexSink::with_limit(dir.path().join("spill2"), 10);
        carried
            .extend_from_files(&[merged], |e| e.file.ends_with("part-3.parquet"))
            .expect("carry");
        let out = dir.path().join("carried.parquet");
        assert_eq!(carried.finish(&out, "run").expect("finish").rows, 200);
        let got = read_all(&[out]).expect("carried");
        assert_eq!(
            got,
            want.into_iter()
                .filter(|e| e.file.ends_with("part-3.parquet"))
                .collect::<Vec<_>>()
        );
    }
}
