//! Sorts hold compact batches, not the scan's slivers.
//!
//! A lake file holds a day's events in row groups that each span every key, so a key's rows
//! are a few in every row group and the Parquet scan hands a sort one batch of a few rows per
//! row group: 1,200 batches for a busy key's 4,000 `Create*` rows. Each of them keeps the
//! buffers its columns were decoded into, sized for a whole batch (a `useridentity` struct has
//! some twenty of them), and a sort holds every batch it is given until its input ends: those
//! 4,000 rows took some 440 MiB more than without the sort. [`CompactSortInput`] puts a
//! [`CompactExec`] under every full sort (not a top-k, which keeps only its k rows): a small
//! batch is copied into buffers that fit its rows and gathered with the next into batches of
//! the session's batch size; a batch of at least half that size passes through uncopied, so a
//! sort of a whole table pays nothing.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::{BatchCoalescer, take_record_batch};
use arrow::datatypes::SchemaRef;
use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr,
    PlanProperties, ReplaceChildrenOptions,
};
use futures::{Stream, StreamExt};

/// The physical optimizer rule, run after DataFusion's own (so the plan's shape, and the
/// filters pushed into the scan, are final).
#[derive(Debug, Default)]
pub struct CompactSortInput;

impl PhysicalOptimizerRule for CompactSortInput {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch_size = config.execution.batch_size.into();
        plan.transform_up(|node| {
            let Some(sort) = node.downcast_ref::<SortExec>() else {
                return Ok(Transformed::no(node));
            };
            if sort.fetch().is_some() || sort.input().is::<CompactExec>() {
                return Ok(Transformed::no(node));
            }
            let input: Arc<dyn ExecutionPlan> =
                Arc::new(CompactExec::new(Arc::clone(sort.input()), batch_size));
            // The new input keeps its input's partitioning and order: the sort's properties
            // stand.
            let node = Arc::clone(&node).replace_children(
                vec![input],
                ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep),
            )?;
            Ok(Transformed::yes(node))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "keytrail_compact_sort_input"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Copies small batches into buffers that fit their rows and gathers them into batches of
/// `batch_size` rows; passes larger batches through. Keeps its input's partitions and order.
#[derive(Debug)]
pub struct CompactExec {
    input: Arc<dyn ExecutionPlan>,
    batch_size: usize,
    metrics: ExecutionPlanMetricsSet,
}

impl CompactExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, batch_size: usize) -> CompactExec {
        CompactExec {
            input,
            batch_size: batch_size.max(2),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for CompactExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CompactExec: batch_size={}", self.batch_size)
    }
}

impl ExecutionPlan for CompactExec {
    fn name(&self) -> &'static str {
        "CompactExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(datafusion::error::DataFusionError::Internal(format!(
                "CompactExec takes one input, given {}",
                children.len()
            )));
        }
        Ok(Arc::new(CompactExec::new(
            children.swap_remove(0),
            self.batch_size,
        )))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema = self.input.schema();
        Ok(Box::pin(CompactStream {
            input: self.input.execute(partition, context)?,
            small: self.batch_size / 2,
            coalescer: BatchCoalescer::new(Arc::clone(&schema), self.batch_size)
                .with_biggest_coalesce_batch_size(Some(self.batch_size / 2)),
            schema,
            metrics: BaselineMetrics::new(&self.metrics, partition),
            ended: false,
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

struct CompactStream {
    input: SendableRecordBatchStream,
    /// Batches of fewer rows are copied.
    small: usize,
    coalescer: BatchCoalescer,
    schema: SchemaRef,
    metrics: BaselineMetrics,
    ended: bool,
}

impl CompactStream {
    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<RecordBatch>>> {
        loop {
            if let Some(b) = self.coalescer.next_completed_batch() {
                return Poll::Ready(Some(Ok(b)));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            match ready!(self.input.poll_next_unpin(cx)) {
                Some(Ok(b)) => {
                    let _timer = self.metrics.elapsed_compute().timer();
                    self.coalescer.push_batch(fit(b, self.small)?)?;
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    self.ended = true;
                    self.coalescer.finish_buffered_batch()?;
                }
            }
        }
    }
}

/// `b` itself if it has `small` rows or more (or none), else its rows copied into buffers of
/// their size. The coalescer copies the rows of flat columns but keeps nested ones (structs,
/// lists) as slices of the batch until it emits, which would keep the batch's buffers.
fn fit(b: RecordBatch, small: usize) -> Result<RecordBatch> {
    let n = b.num_rows();
    if n == 0 || n >= small {
        return Ok(b);
    }
    let rows = UInt32Array::from_iter_values(0..n as u32);
    Ok(take_record_batch(&b, &rows)?)
}

impl Stream for CompactStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let poll = self.poll_inner(cx);
        self.metrics.record_poll(poll)
    }
}

impl RecordBatchStream for CompactStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}
