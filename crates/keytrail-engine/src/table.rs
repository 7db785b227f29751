//! A table of the lake as DataFusion sees it: the files the manifest says are live (no
//! directory listing), pruned before any is opened.
//!
//! For each scan the filters are read ([`crate::prune`]); a file is skipped when its partition
//! day or its time range (from its commit record) cannot match, and, when the scan asks for
//! access keys, when the key index holds none of them in it, or, when the scan asks only for
//! rows recording a key's status change, when its commit record counts none. For the files
//! that remain, the index's row ranges become a Parquet row selection, so only the pages
//! holding those keys are read. Every other filter is still applied by DataFusion to the rows
//! read (pushdown is `Inexact`): pruning can only make a scan read less, never answer
//! differently. Two are applied by the scan itself (`Exact`): a condition on the `date`
//! partition alone, and a single key condition over a fully indexed table (see
//! `supports_filters_pushdown`).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::{ScalarValue, Statistics};
use datafusion::datasource::TableProvider;
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use keytrail_lake::{DataFile, Snapshot};
use keytrail_model::Table;
use keytrail_model::schema::{UTC, col};
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};

use crate::prune::{ScanFilter, analyze};
use crate::storage::{Lookups, Storage};

/// The rows of a file a scan reads, from the key index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rows {
    /// Row ranges `(first, count)`, sorted by first row (they may overlap).
    pub ranges: Vec<(u64, u64)>,
    /// The time range of those rows.
    pub min_time: i64,
    pub max_time: i64,
}

/// A file a scan reads, and the rows it reads of it (all when `None`).
pub type PlannedFile = (DataFile, Option<Rows>);

/// One table of a lake snapshot.
pub struct LakeTable {
    table: Table,
    snapshot: Arc<Snapshot>,
    storage: Storage,
    lookups: Arc<Lookups>,
    file_schema: SchemaRef,
    schema: SchemaRef,
}

impl fmt::Debug for LakeTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LakeTable")
            .field("table", &self.table)
            .field("files", &self.snapshot.table_files(self.table).count())
            .finish()
    }
}

fn date_field() -> FieldRef {
    Arc::new(Field::new(col::DATE, DataType::Date32, false))
}

impl LakeTable {
    pub fn new(table: Table, snapshot: Arc<Snapshot>) -> LakeTable {
        let file_schema = table.schema();
        let mut fields: Vec<FieldRef> = file_schema.fields().iter().cloned().collect();
        fields.push(date_field());
        let schema = Arc::new(Schema::new_with_metadata(
            fields,
            file_schema.metadata().clone(),
        ));
        LakeTable {
            table,
            snapshot,
            storage: Storage::Local,
            lookups: Arc::default(),
            file_schema,
            schema,
        }
    }

    /// A table of a snapshot whose files are read from `storage`, sharing a session's recent
    /// key-index `lookups`.
    pub(crate) fn with_storage(
        table: Table,
        snapshot: Arc<Snapshot>,
        storage: Storage,
        lookups: Arc<Lookups>,
    ) -> LakeTable {
        LakeTable {
            storage,
            lookups,
            ..LakeTable::new(table, snapshot)
        }
    }

    /// The files (and, for each, the rows) a scan with `filter` must read.
    pub async fn plan_files(&self, filter: &ScanFilter<'_>) -> Result<Vec<PlannedFile>> {
        let mut files: Vec<&DataFile> = self
            .snapshot
            .table_files(self.table)
            .filter(|f| filter.day_allowed(f.day))
            .filter(|f| {
                f.record
                    .stats
                    .as_ref()
                    .is_none_or(|s| filter.time.overlaps(s.min_time, s.max_time))
            })
            .filter(|f| {
                !filter.key_changes
                    || f.record
                        .stats
                        .as_ref()
                        .and_then(|s| s.key_changes)
                        .is_none_or(|n| n > 0)
            })
            .collect();
        let keys = match &filter.keys {
            Some(k) => k,
            None => return Ok(files.into_iter().map(|f| (f.clone(), None)).collect()),
        };
        // Files without an index, or of a table without one, are pruned by key range only.
        if keys.named.is_empty() {
            files.retain(|f| match &f.record.stats {
                Some(s) => match (&s.min_key, &s.max_key) {
                    (Some(lo), Some(hi)) => keys.holds_between(lo, hi),
                    _ => false,
                },
                None => true,
            });
        }
        let indexed = self.table == Table::Events;
        if indexed && files.iter().any(|f| f.indexed) {
            // Both lists sorted: the same keys held and named (a chain's) are asked once.
            let asked: Vec<&str> = if keys.held == keys.named {
                keys.held.clone()
            } else {
                keys.held.iter().chain(&keys.named).copied().collect()
            };
            let entries = self
                .lookups
                .any(&self.storage, &self.snapshot, &asked)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            // The entries are of every file; those of the files left are looked at first.
            let left: HashSet<&str> = files.iter().map(|f| f.record.path.as_str()).collect();
            let wanted = |e: &&keytrail_lake::IndexEntry| {
                filter.time.overlaps(e.min_time, e.max_time)
                    && left.contains(e.file.as_str())
                    && if e.named {
                        keys.names(&e.key)
                    } else {
                        keys.holds(&e.key)
                    }
            };
            let mut ranges: BTreeMap<&str, Rows> = BTreeMap::new();
            for e in entries.iter().filter(wanted) {
                let r = ranges.entry(e.file.as_str()).or_insert(Rows {
                    ranges: Vec::new(),
                    min_time: e.min_time,
                    max_time: e.max_time,
                });
                r.ranges.push((e.first_row, e.rows));
                r.min_time = r.min_time.min(e.min_time);
                r.max_time = r.max_time.max(e.max_time);
            }
            let mut out = Vec::new();
            for f in files {
                if !f.indexed {
                    out.push((f.clone(), None));
                } else if let Some(r) = ranges.get_mut(f.record.path.as_str()) {
                    r.ranges.sort_unstable();
                    out.push((f.clone(), Some(std::mem::take(r))));
                }
            }
            return Ok(out);
        }
        Ok(files.into_iter().map(|f| (f.clone(), None)).collect())
    }
}

/// Smallest batch of a scan that reads the key index's runs of rows.
const MIN_SELECTED_BATCH: usize = 1024;

/// The batch size of a scan reading `rows` rows in `runs` runs of rows (the key index's
/// ranges), `None` for the session's (`session`). The Parquet reader sizes every column's
/// buffers for a whole batch and a batch never spans two row groups, so a key's run of a few
/// rows per row group came in batches each holding buffers for `session` rows: a sort of a busy
/// key's 4,155 `Create*` rows held 1.48 GB of such batches (and spilled). Batches sized to the
/// runs, at least [`MIN_SELECTED_BATCH`] rows, hold what their rows need.
fn scan_batch_size(rows: u64, runs: u64, session: usize) -> Option<usize> {
    if runs == 0 {
        return None;
    }
    let per_run = usize::try_from(rows / runs).unwrap_or(usize::MAX);
    let size = per_run
        .checked_next_power_of_two()
        .unwrap_or(usize::MAX)
        .max(MIN_SELECTED_BATCH);
    (size < session).then_some(size)
}

/// A time column's exact bound (ms, UTC), as a scan's statistics state it.
fn exact_time(ms: i64) -> Precision<ScalarValue> {
    Precision::Exact(ScalarValue::TimestampMillisecond(
        Some(ms),
        Some(UTC.into()),
    ))
}

/// A file-wide row selection of `ranges` (sorted `(first, count)`) in a file of `total` rows.
fn selection(ranges: &[(u64, u64)], total: u64) -> RowSelection {
    let mut out = Vec::new();
    let mut cursor = 0u64;
    for &(first, rows) in ranges {
        let end = (first + rows).min(total);
        if end <= cursor {
            continue;
        }
        let start = first.max(cursor);
        if start > cursor {
            out.push(RowSelector::skip((start - cursor) as usize));
        }
        out.push(RowSelector::select((end - start) as usize));
        cursor = end;
    }
    if cursor < total {
        out.push(RowSelector::skip((total - cursor) as usize));
    }
    RowSelection::from(out)
}

impl LakeTable {
    /// The time columns' bounds of a scan of whole `files`, from their commit records when
    /// every one has them: `eventtime`'s least and greatest value for `events`, the least
    /// `firsteventtime` and the greatest `lasteventtime` for `key_daily`. A `min` or `max` of
    /// those (the lake's first and last event) is then answered without opening a file.
    fn time_statistics(&self, files: &[PlannedFile], stats: &mut Statistics) {
        let mut bounds: Option<(i64, i64)> = None;
        for (f, _) in files {
            let Some(s) = &f.record.stats else {
                return;
            };
            bounds = Some(bounds.map_or((s.min_time, s.max_time), |(lo, hi)| {
                (lo.min(s.min_time), hi.max(s.max_time))
            }));
        }
        let Some((lo, hi)) = bounds else {
            return;
        };
        let (first, last) = match self.table {
            Table::Events => (col::EVENTTIME, col::EVENTTIME),
            Table::KeyDaily => (col::FIRSTEVENTTIME, col::LASTEVENTTIME),
            Table::Insights => return,
        };
        if let Ok(i) = self.schema.index_of(first) {
            stats.column_statistics[i].min_value = exact_time(lo);
        }
        if let Ok(i) = self.schema.index_of(last) {
            stats.column_statistics[i].max_value = exact_time(hi);
        }
    }

    /// Whether every `events` file is covered by the key index, so a scan can return exactly
    /// the rows of the keys asked for.
    fn fully_indexed(&self) -> bool {
        self.table == Table::Events && self.snapshot.table_files(Table::Events).all(|f| f.indexed)
    }
}

#[async_trait]
impl TableProvider for LakeTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Every filter is applied by DataFusion to the rows read (`Inexact`), except two kinds
    /// (`Exact`): a condition on the `date` partition alone ([`crate::prune::is_day_filter`]),
    /// which the choice of files applies; and, when the filters hold a single key condition
    /// (`accesskeyid`, `targetkeyid` or `mintedkeyid` equal to or in a list of keys, or an `OR`
    /// of those) and every file is indexed, that condition: the scan reads exactly the rows the
    /// index lists for those keys. A count or time range of a key's events then comes from the
    /// index, and of a range of days from the commit records, without reading a page.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let keyed: Vec<bool> = filters
            .iter()
            .map(|f| crate::prune::is_key_filter(f))
            .collect();
        let exact = self.fully_indexed() && keyed.iter().filter(|k| **k).count() == 1;
        Ok(keyed
            .into_iter()
            .zip(filters)
            .map(|(k, f)| {
                if (k && exact) || crate::prune::is_day_filter(f) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    fn statistics(&self) -> Option<Statistics> {
        let rows: u64 = self
            .snapshot
            .table_files(self.table)
            .map(|f| f.record.rows)
            .sum();
        let mut s = Statistics::new_unknown(&self.schema);
        s.num_rows = Precision::Exact(rows as usize);
        Some(s)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let filter = analyze(filters);
        let chosen = self.plan_files(&filter).await?;
        tracing::debug!(
            table = self.table.name(),
            files = chosen.len(),
            of = self.snapshot.table_files(self.table).count(),
            keys = filter
                .keys
                .as_ref()
                .map_or(0, |k| k.held.len() + k.named.len()),
            "scan"
        );
        if chosen.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => Arc::clone(&self.schema),
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        // Spread the files over the session's partitions by the rows each will read.
        let groups_n = state.config().target_partitions().max(1).min(chosen.len());
        let mut weighted: Vec<(u64, PartitionedFile)> = Vec::with_capacity(chosen.len());
        let mut total_rows = 0u64;
        let mut runs = 0u64;
        let mut times: Option<(i64, i64)> = None;
        for (f, rows) in &chosen {
            let location = self.storage.location(&self.snapshot, &f.record.path)?;
            let mut pf = PartitionedFile::new(location.to_string(), f.record.bytes)
                .with_partition_values(vec![ScalarValue::Date32(Some(f.day))]);
            let n = match rows {
                Some(r) => {
                    let sel = selection(&r.ranges, f.record.rows);
                    let n = sel.row_count() as u64;
                    runs += r.ranges.len() as u64;
                    pf = pf.with_extension(ParquetRowSelection::new(sel));
                    times = Some(times.map_or((r.min_time, r.max_time), |(lo, hi)| {
                        (lo.min(r.min_time), hi.max(r.max_time))
                    }));
                    n
                }
                None => f.record.rows,
            };
            total_rows += n;
            weighted.push((n, pf));
        }
        weighted.sort_by_key(|w| std::cmp::Reverse(w.0));
        let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); groups_n];
        for (rows, pf) in weighted {
            if let Some(g) = groups.iter_mut().min_by_key(|g| g.0) {
                g.0 += rows.max(1);
                g.1.push(pf);
            }
        }
        let groups: Vec<FileGroup> = groups
            .into_iter()
            .filter(|g| !g.1.is_empty())
            .map(|g| FileGroup::new(g.1))
            .collect();

        // Exact when nothing but the scan's own choice narrows what it returns: no filter but
        // days (whole files), or only the one key condition the index applies exactly.
        let mut stats = Statistics::new_unknown(&self.schema);
        let selected = chosen.iter().any(|(_, r)| r.is_some());
        let all_selected = chosen.iter().all(|(_, r)| r.is_some());
        let only_keys = filters.len() == 1
            && crate::prune::is_key_filter(&filters[0])
            && self.fully_indexed()
            && all_selected;
        let whole_files = !selected && filters.iter().all(crate::prune::is_day_filter);
        if whole_files {
            stats.num_rows = Precision::Exact(total_rows as usize);
            self.time_statistics(&chosen, &mut stats);
        } else if only_keys {
            stats.num_rows = Precision::Exact(total_rows as usize);
            if let Some((lo, hi)) = times
                && let Ok(i) = self.schema.index_of(col::EVENTTIME)
            {
                let c = &mut stats.column_statistics[i];
                c.min_value = exact_time(lo);
                c.max_value = exact_time(hi);
                c.null_count = Precision::Exact(0);
            }
        } else {
            stats.num_rows = Precision::Inexact(total_rows as usize);
        }
        let options = state.table_options().parquet.clone();
        let table_schema = TableSchema::builder(Arc::clone(&self.file_schema))
            .with_table_partition_cols(vec![date_field()])
            .build();
        let source = ParquetSource::new(table_schema).with_table_parquet_options(options.clone());
        let batch_size = scan_batch_size(total_rows, runs, state.config().batch_size());
        let config = FileScanConfigBuilder::new(self.storage.url(), Arc::new(source))
            .with_batch_size(batch_size)
            .with_file_groups(groups)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .with_statistics(stats)
            .build();
        ParquetFormat::default()
            .with_options(options)
            .create_physical_plan(state, config)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_follow_the_runs_of_rows() {
        // No index ranges: the session's batches.
        assert_eq!(scan_batch_size(100_000, 0, 8192), None);
        // A busy key's ~100 rows per row group.
        assert_eq!(scan_batch_size(116_928, 1_200, 8192), Some(1024));
        assert_eq!(scan_batch_size(30_000, 10, 8192), Some(4096));
        // Runs as long as a batch or longer.
        assert_eq!(scan_batch_size(80_000, 10, 8192), None);
        assert_eq!(scan_batch_size(10, 10, 512), None);
    }

    #[test]
    fn row_selections() {
        let s = selection(&[(2, 3), (4, 2), (9, 1)], 12);
        let v: Vec<RowSelector> = s.into();
        assert_eq!(
            v,
            vec![
                RowSelector::skip(2),
                RowSelector::select(4),
                RowSelector::skip(3),
                RowSelector::select(1),
                RowSelector::skip(2),
            ]
        );
        assert_eq!(selection(&[(0, 3), (2, 2), (5, 2)], 10).row_count(), 6);
    }
}
