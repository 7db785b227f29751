//! The sink of an ingest run: decoded rows are buffered per table and day, and written as
//! sorted Parquet files when the buffer is full or the run ends.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use keytrail_lake::Transaction;
use keytrail_model::Table;

use crate::error::IngestError;

#[derive(Default)]
struct Partition {
    batches: Vec<RecordBatch>,
    bytes: usize,
}

/// Buffers rows per partition within a memory budget and writes them through a transaction.
pub(crate) struct LakeWriter<'t> {
    txn: &'t Transaction,
    parts: HashMap<(Table, i32), Partition>,
    buffered: usize,
    limit: usize,
    pub files: u64,
    pub bytes: u64,
}

impl<'t> LakeWriter<'t> {
    pub fn new(txn: &'t Transaction, limit: usize) -> LakeWriter<'t> {
        LakeWriter {
            txn,
            parts: HashMap::new(),
            buffered: 0,
            limit: limit.max(1 << 20),
            files: 0,
            bytes: 0,
        }
    }

    pub fn accept(
        &mut self,
        table: Table,
        day: i32,
        batch: RecordBatch,
    ) -> Result<(), IngestError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let bytes = batch.get_array_memory_size();
        let part = self.parts.entry((table, day)).or_default();
        part.batches.push(batch);
        part.bytes += bytes;
        self.buffered += bytes;
        // Over budget: write the largest partitions until half the budget is free, so
        // files stay large and memory stays bounded.
        while self.buffered > self.limit {
            let Some(key) = self
                .parts
                .iter()
                .max_by_key(|(k, p)| (p.bytes, std::cmp::Reverse(**k)))
                .map(|(k, _)| *k)
            else {
                break;
            };
            self.flush(key)?;
            if self.buffered <= self.limit / 2 {
                break;
            }
        }
        Ok(())
    }

    fn flush(&mut self, key: (Table, i32)) -> Result<(), IngestError> {
        let Some(part) = self.parts.remove(&key) else {
            return Ok(());
        };
        self.buffered -= part.bytes;
        let record = self.txn.write(key.0, key.1, &part.batches)?;
        self.files += 1;
        self.bytes += record.bytes;
        Ok(())
    }

    /// Write everything still buffered.
    pub fn finish(&mut self) -> Result<(), IngestError> {
        let mut keys: Vec<_> = self.parts.keys().copied().collect();
        keys.sort();
        for k in keys {
            self.flush(k)?;
        }
        Ok(())
    }
}
