//! Parquet files of the lake: how rows are ordered, how files are encoded, how they are read
//! back.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::interleave_record_batch;
use arrow::datatypes::TimestampMillisecondType;
use arrow::error::ArrowError;
use keytrail_model::Table;
use keytrail_model::schema::{META_SCHEMA_VERSION, META_TABLE, META_WRITER, SCHEMA_VERSION, col};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::schema::types::ColumnPath;

use crate::error::{IoContext, LakeError};
use crate::manifest::FileRecord;

/// Rows per row group. Files are sorted by access key, so a row group spans a narrow range
/// of keys and its statistics and bloom filter let readers skip the rest.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Largest data page, in bytes before compression. Parquet's default (1 MiB) makes one page of
/// each column of a row group, so a reader wanting a key's few rows must decompress and decode
/// every value of the row group's JSON and ID columns, the bulk of a file. A page is cut at the
/// first mini-batch (`write_batch_size`, 1,024 rows) that takes it past this size, so those
/// columns come in pages of 1,024 to 2,048 rows that the page index lets a reader skip.
pub const DATA_PAGE_BYTES: usize = 64 * 1024;

/// Most rows in a data page of any column: the small, dictionary-encoded columns are cut too,
/// so that a reader of one key's rows skips most of their pages as well.
pub const DATA_PAGE_ROWS: usize = 2048;

/// The keytrail version that writes files, stamped into their metadata.
pub const WRITER: &str = concat!("keytrail ", env!("CARGO_PKG_VERSION"));

/// Columns whose values are nearly all distinct or long JSON text: a dictionary only costs
/// time there.
const NO_DICTIONARY: &[&str] = &[
    "requestparameters",
    "responseelements",
    "additionaleventdata",
    "serviceeventdetails",
    "eventid",
    "requestid",
    "sharedeventid",
    "extrafields",
    "insightdetails",
    "edgedevicedetails",
];

/// Long text columns that keep a dictionary and zstd (beside [`NO_DICTIONARY`]).
const ZSTD_ALSO: &[&str] = &["useragent", "errormessage"];

/// Parquet writer settings for a table: Snappy, zstd for the long text columns (the
/// Parquet crate makes a zstd context pair for every column chunk it reads, which costs more
/// than the short columns gain from zstd), page statistics, pages of at most
/// [`DATA_PAGE_BYTES`] and [`DATA_PAGE_ROWS`], a bloom filter on the access key, the sort
/// order declared, the schema version stamped.
pub fn writer_properties(table: Table, run_id: &str) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_data_page_size_limit(DATA_PAGE_BYTES)
        .set_data_page_row_count_limit(DATA_PAGE_ROWS)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_key_value_metadata(Some(vec![
            KeyValue::new(META_SCHEMA_VERSION.to_owned(), SCHEMA_VERSION.to_string()),
            KeyValue::new(META_TABLE.to_owned(), table.name().to_owned()),
            KeyValue::new(META_WRITER.to_owned(), WRITER.to_owned()),
            KeyValue::new("keytrail.run_id".to_owned(), run_id.to_owned()),
        ]))
        .set_column_bloom_filter_enabled(ColumnPath::from(col::ACCESSKEYID), true)
        .set_column_bloom_filter_fpp(ColumnPath::from(col::ACCESSKEYID), 0.01)
        .set_column_bloom_filter_max_ndv(ColumnPath::from(col::ACCESSKEYID), 16 * 1024);
    if matches!(table, Table::Events | Table::Insights) {
        for c in NO_DICTIONARY {
            b = b.set_column_dictionary_enabled(ColumnPath::from(*c), false);
        }
        for c in NO_DICTIONARY.iter().chain(ZSTD_ALSO) {
            b = b.set_column_compression(
                ColumnPath::from(*c),
                Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()),
            );
        }
        b = b.set_sorting_columns(Some(sort_columns(table)));
    } else {
        b = b.set_sorting_columns(Some(vec![SortingColumn {
            column_idx: 0,
            descending: false,
            nulls_first: false,
        }]));
    }
    b.build()
}

fn leaf_index(table: Table, name: &str) -> i32 {
    // Leaf (Parquet column) index of a top-level primitive column.
    let mut idx = 0;
    for f in table.schema().fields() {
        if f.name() == name {
            return idx;
        }
        idx += leaves(f.data_type());
    }
    0
}

fn leaves(dt: &arrow::datatypes::DataType) -> i32 {
    use arrow::datatypes::DataType;
    match dt {
        DataType::Struct(children) => children.iter().map(|c| leaves(c.data_type())).sum(),
        DataType::List(item) => leaves(item.data_type()),
        _ => 1,
    }
}

fn sort_columns(table: Table) -> Vec<SortingColumn> {
    vec![
        SortingColumn {
            column_idx: leaf_index(table, col::ACCESSKEYID),
            descending: false,
            nulls_first: false,
        },
        SortingColumn {
            column_idx: leaf_index(table, col::EVENTTIME),
            descending: false,
            nulls_first: false,
        },
    ]
}

fn column(batch: &RecordBatch, name: &str) -> Result<ArrayRef, arrow::error::ArrowError> {
    batch
        .column_by_name(name)
        .cloned()
        .ok_or_else(|| arrow::error::ArrowError::SchemaError(format!("batch has no column {name}")))
}

/// The order of the rows of `batches` by access key (events without a key last), then time,
/// then event ID, as `(batch, row)` pairs: every file's order is the same whatever order the
/// rows came in. Only the three sort columns are read; rows are not copied.
pub fn sorted_order(batches: &[RecordBatch]) -> Result<Vec<(usize, usize)>, ArrowError> {
    let mut cols = Vec::with_capacity(batches.len());
    for b in batches {
        let key = column(b, col::ACCESSKEYID)?;
        let time = column(b, col::EVENTTIME)?;
        let id = column(b, col::EVENTID)?;
        let (Some(key), Some(time), Some(id)) = (
            key.as_string_opt::<i32>().cloned(),
            time.as_primitive_opt::<TimestampMillisecondType>().cloned(),
            id.as_string_opt::<i32>().cloned(),
        ) else {
            return Err(ArrowError::SchemaError(
                "unexpected sort column types".into(),
            ));
        };
        cols.push((key, time, id));
    }
    // Rank the distinct keys once, so the sort compares integers, not strings.
    let mut distinct: Vec<&str> = cols
        .iter()
        .flat_map(|(k, _, _)| k.iter().flatten())
        .collect::<std::collections::HashSet<&str>>()
        .into_iter()
        .collect();
    distinct.sort_unstable();
    let rank: std::collections::HashMap<&str, u32> = distinct
        .iter()
        .enumerate()
        .map(|(i, k)| (*k, i as u32))
        .collect();
    let mut order: Vec<(u32, i64, u32, u32)> =
        Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    for (b, (k, t, _)) in cols.iter().enumerate() {
        for r in 0..k.len() {
            let key_rank = if k.is_valid(r) {
                rank[k.value(r)]
            } else {
                u32::MAX
            };
            order.push((key_rank, t.value(r), b as u32, r as u32));
        }
    }
    let id = |b: u32, r: u32| {
        let ids = &cols[b as usize].2;
        ids.is_valid(r as usize).then(|| ids.value(r as usize))
    };
    // Keys ascending with nulls last, then time, then event ID (nulls first), then position.
    order.sort_unstable_by(|a, b| {
        (a.0, a.1)
            .cmp(&(b.0, b.1))
            .then_with(|| id(a.2, a.3).cmp(&id(b.2, b.3)))
            .then_with(|| (a.2, a.3).cmp(&(b.2, b.3)))
    });
    let order = order
        .into_iter()
        .map(|(_, _, b, r)| (b as usize, r as usize))
        .collect();
    Ok(order)
}

/// `interleave_record_batch`, but columns that are null in every batch (many CloudTrail
/// fields are absent from most events) are made as null arrays instead of copied row by row.
fn interleave_rows(
    batches: &[&RecordBatch],
    rows: &[(usize, usize)],
) -> Result<RecordBatch, ArrowError> {
    let Some(first) = batches.first() else {
        return Err(ArrowError::InvalidArgumentError("no batches".into()));
    };
    let schema = first.schema();
    let columns = (0..schema.fields().len())
        .map(|c| {
            let cols: Vec<&dyn Array> = batches.iter().map(|b| b.column(c).as_ref()).collect();
            if cols.iter().all(|a| a.null_count() == a.len()) {
                Ok(arrow::array::new_null_array(
                    schema.field(c).data_type(),
                    rows.len(),
                ))
            } else {
                arrow::compute::interleave(&cols, rows)
            }
        })
        .collect::<Result<Vec<ArrayRef>, ArrowError>>()?;
    RecordBatch::try_new(schema, columns)
}

/// Concatenate event batches in [`sorted_order`].
pub fn sort_events(batches: &[RecordBatch]) -> Result<RecordBatch, ArrowError> {
    let order = sorted_order(batches)?;
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    interleave_record_batch(&refs, &order)
}

/// What a written file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    pub rows: u64,
    pub bytes: u64,
}

/// Write one batch as a Parquet file of `table` at `path` and make it durable.
pub fn write_file(
    path: &Path,
    table: Table,
    batch: &RecordBatch,
    run_id: &str,
) -> Result<Written, LakeError> {
    write_chunks(
        path,
        table,
        run_id,
        std::iter::once(Ok(batch.clone())),
        true,
    )
}

/// Write one batch as a Parquet file of `table` at `path` without syncing it: a run's scratch
/// file (a spill), which a crash discards with the run's staging directory anyway.
pub(crate) fn write_scratch(
    path: &Path,
    table: Table,
    batch: &RecordBatch,
) -> Result<Written, LakeError> {
    write_chunks(
        path,
        table,
        "scratch",
        std::iter::once(Ok(batch.clone())),
        false,
    )
}

/// Largest `events` or `insights` file a run writes for one day before it starts another: a
/// day's partition of a run is one file up to this size.
pub const TARGET_FILE_BYTES: u64 = 512 << 20;

/// The write buffer of a [`PartWriter`]. A run keeps one open per table and day it has seen
/// until it ends (348 days: 348 writers), so this is paid per day of the input: 64 KiB, not
/// the 1 MiB of a one-off file (the Parquet writer hands it whole pages, which pass through).
const PART_WRITER_BUFFER: usize = 64 << 10;

/// A data file of one table and day being written by a run: every call to
/// [`PartWriter::append_sorted`] adds one sorted piece as one row group (or more, for a piece
/// larger than [`ROW_GROUP_ROWS`]), so a day's rows of a run land in one file however many
/// pieces the run writes, without holding them all in memory. Rows are sorted within each row
/// group (the order Parquet's `sorting_columns` declares per row group); the key index of
/// `events` files records where each key's rows are.
pub struct PartWriter {
    rel: String,
    path: std::path::PathBuf,
    table: Table,
    writer: ArrowWriter<BufWriter<File>>,
    rows: u64,
    index: Option<crate::index::FileIndexBuilder>,
}

impl PartWriter {
    /// Create the file `rel` (relative to the lake root) at `path`.
    pub fn create(
        path: std::path::PathBuf,
        rel: String,
        table: Table,
        run_id: &str,
    ) -> Result<PartWriter, LakeError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).at(dir)?;
        }
        let file = File::create(&path).at(&path)?;
        let writer = ArrowWriter::try_new(
            BufWriter::with_capacity(PART_WRITER_BUFFER, file),
            table.schema(),
            Some(writer_properties(table, run_id)),
        )
        .map_err(|e| LakeError::parquet(&path, e))?;
        let index = (table == Table::Events).then(|| crate::index::FileIndexBuilder::new(&rel));
        Ok(PartWriter {
            rel,
            path,
            table,
            writer,
            rows: 0,
            index,
        })
    }

    /// Sort `batches` ([`sorted_order`]) and append them as the next row group(s); `each` sees
    /// every sorted chunk (to derive `key_daily`). Returns the rows written.
    pub fn append_sorted(
        &mut self,
        batches: &[RecordBatch],
        mut each: impl FnMut(&RecordBatch) -> Result<(), ArrowError>,
    ) -> Result<u64, LakeError> {
        let path = self.path.clone();
        let order = sorted_order(batches).map_err(|e| LakeError::arrow(&path, e))?;
        let refs: Vec<&RecordBatch> = batches.iter().collect();
        let mut rows = 0;
        for chunk in order.chunks(CHUNK_ROWS) {
            let b = interleave_rows(&refs, chunk).map_err(|e| LakeError::arrow(&path, e))?;
            each(&b).map_err(|e| LakeError::arrow(&path, e))?;
            if let Some(ix) = &mut self.index {
                ix.add(&b).map_err(|e| LakeError::arrow(&path, e))?;
            }
            self.writer
                .write(&b)
                .map_err(|e| LakeError::parquet(&path, e))?;
            rows += b.num_rows() as u64;
        }
        // End the row group here: each row group holds one sorted piece.
        self.writer
            .flush()
            .map_err(|e| LakeError::parquet(&path, e))?;
        self.rows += rows;
        Ok(rows)
    }

    /// Append rows already in the lake's order; row groups end every [`ROW_GROUP_ROWS`] rows.
    /// Where the file is being written.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub fn push(&mut self, b: &RecordBatch) -> Result<(), LakeError> {
        let path = self.path.clone();
        if let Some(ix) = &mut self.index {
            ix.add(b).map_err(|e| LakeError::arrow(&path, e))?;
        }
        self.writer
            .write(b)
            .map_err(|e| LakeError::parquet(&path, e))?;
        self.rows += b.num_rows() as u64;
        Ok(())
    }

    /// Bytes written to the file so far.
    pub fn bytes_written(&self) -> u64 {
        self.writer.bytes_written() as u64
    }

    pub fn table(&self) -> Table {
        self.table
    }

    /// Write the footer, make the file durable, and say what it holds (and, for `events`, its
    /// key index entries).
    pub fn finish(self) -> Result<(FileRecord, Vec<crate::index::IndexEntry>), LakeError> {
        let PartWriter {
            rel,
            path,
            table,
            writer,
            rows,
            index,
        } = self;
        let bytes = close_durable(writer, &path)?;
        let (entries, stats) = match index {
            Some(ix) => ix.finish(),
            None => (Vec::new(), None),
        };
        Ok((
            FileRecord {
                table: table.name().to_owned(),
                path: rel,
                rows,
                bytes,
                stats,
                covers: Vec::new(),
            },
            entries,
        ))
    }
}

/// Rows materialised at a time when writing a sorted file.
const CHUNK_ROWS: usize = 16 * 1024;

/// Write `batches` as one Parquet file of `table` at `path`, rows in [`sorted_order`], and
/// make it durable. The sorted rows are built a chunk at a time, so the file never exists
/// twice in memory; `each` sees every chunk (to derive `key_daily`).
pub fn write_sorted(
    path: &Path,
    table: Table,
    batches: &[RecordBatch],
    run_id: &str,
    mut each: impl FnMut(&RecordBatch) -> Result<(), ArrowError>,
) -> Result<Written, LakeError> {
    let order = sorted_order(batches).map_err(|e| LakeError::arrow(path, e))?;
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    let chunks = order.chunks(CHUNK_ROWS).map(|chunk| {
        let b = interleave_rows(&refs, chunk)?;
        each(&b)?;
        Ok(b)
    });
    write_chunks(path, table, run_id, chunks, true)
}

fn write_chunks(
    path: &Path,
    table: Table,
    run_id: &str,
    chunks: impl Iterator<Item = Result<RecordBatch, ArrowError>>,
    durable: bool,
) -> Result<Written, LakeError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).at(dir)?;
    }
    let file = File::create(path).at(path)?;
    let props = writer_properties(table, run_id);
    let mut writer = ArrowWriter::try_new(
        BufWriter::with_capacity(1 << 20, file),
        table.schema(),
        Some(props),
    )
    .map_err(|e| LakeError::parquet(path, e))?;
    let mut rows = 0;
    for chunk in chunks {
        let chunk = chunk.map_err(|e| LakeError::arrow(path, e))?;
        rows += chunk.num_rows() as u64;
        writer
            .write(&chunk)
            .map_err(|e| LakeError::parquet(path, e))?;
    }
    let bytes = close_file(writer, path, durable)?;
    Ok(Written { rows, bytes })
}

/// Write a Parquet writer's footer, sync the file to disk, and return its size.
pub(crate) fn close_durable(
    writer: ArrowWriter<BufWriter<File>>,
    path: &Path,
) -> Result<u64, LakeError> {
    close_file(writer, path, true)
}

/// Write a Parquet writer's footer, flush it (and sync it when `durable`), and return its size.
fn close_file(
    writer: ArrowWriter<BufWriter<File>>,
    path: &Path,
    durable: bool,
) -> Result<u64, LakeError> {
    let buf = writer
        .into_inner()
        .map_err(|e| LakeError::parquet(path, e))?;
    let file = buf
        .into_inner()
        .map_err(|e| LakeError::io(path, e.into_error()))?;
    if durable {
        file.sync_all().at(path)?;
    }
    Ok(file.metadata().at(path)?.len())
}

/// Read a whole Parquet file of the lake.
pub fn read_file(path: &Path) -> Result<Vec<RecordBatch>, LakeError> {
    let file = File::open(path).at(path)?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| LakeError::parquet(path, e))?
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| LakeError::parquet(path, e))?;
    reader
        .map(|b| b.map_err(|e| LakeError::arrow(path, e)))
        .collect()
}

/// The row count and schema version a file's footer declares.
pub fn footer(path: &Path) -> Result<(u64, Option<u32>), LakeError> {
    footer_and_times(path, None).map(|(rows, version, _)| (rows, version))
}

/// A file's rows, schema version, and time range.
pub type FooterTimes = (u64, Option<u32>, Option<(i64, i64)>);

/// [`footer`], and the file's time range as its statistics record it (timestamps, UTC ms):
/// the least value of the first of `times` and the greatest of the second (`eventtime` twice
/// for events; `firsteventtime` and `lasteventtime` for `key_daily`). `None` when a column is
/// missing or a row group records no bounds.
pub fn footer_and_times(
    path: &Path,
    times: Option<(&str, &str)>,
) -> Result<FooterTimes, LakeError> {
    use parquet::file::statistics::Statistics;
    let file = File::open(path).at(path)?;
    let reader = SerializedFileReader::new(file).map_err(|e| LakeError::parquet(path, e))?;
    let schema = reader.metadata().file_metadata().schema_descr();
    let index =
        |name: &str| (0..schema.num_columns()).find(|i| schema.column(*i).path().string() == name);
    let bounds = |c: usize| {
        reader
            .metadata()
            .row_groups()
            .iter()
            .try_fold(None::<(i64, i64)>, |acc, rg| {
                match rg.column(c).statistics() {
                    Some(Statistics::Int64(s)) => {
                        let (lo, hi) = (*s.min_opt()?, *s.max_opt()?);
                        Some(Some(acc.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi)))))
                    }
                    _ => None,
                }
            })
    };
    let range = times.and_then(|(first, last)| {
        let (lo, _) = bounds(index(first)?)??;
        let (_, hi) = bounds(index(last)?)??;
        Some((lo, hi))
    });
    let meta = reader.metadata().file_metadata();
    let version = meta
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == META_SCHEMA_VERSION))
        .and_then(|k| k.value.as_deref())
        .and_then(|v| v.parse().ok());
    Ok((u64::try_from(meta.num_rows()).unwrap_or(0), version, range))
}
