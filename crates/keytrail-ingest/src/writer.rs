//! The sink of an ingest run: decoded rows are buffered per table and day, and written as
//! sorted Parquet files when the buffer is full or the run ends.
//!
//! Writing (sort, encode, compress) runs on its own threads so it overlaps with decoding; the
//! queue to them holds one partition, so a slow disk or encoder pushes back on the collector,
//! which pushes back on the decoders. Memory: the buffer budget, plus the partitions being
//! written (at most one per writer thread and one queued, each at most the budget).

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use arrow::array::RecordBatch;
use crossbeam_channel::{Receiver, Sender};
use keytrail_lake::{LakeError, Piece, Transaction};
use keytrail_model::Table;
use rayon::prelude::*;

use crate::error::IngestError;

#[derive(Default)]
struct Partition {
    batches: Vec<RecordBatch>,
    bytes: usize,
}

type Job = ((Table, i32), Partition);

/// Buffers rows per partition within a memory budget and writes them through a transaction.
pub(crate) struct LakeWriter {
    txn: Arc<Transaction>,
    parts: HashMap<(Table, i32), Partition>,
    buffered: usize,
    limit: usize,
    jobs: Option<Sender<Job>>,
    results: Receiver<Result<Piece, LakeError>>,
    workers: Vec<JoinHandle<()>>,
}

fn write(txn: &Transaction, ((table, day), part): Job) -> Result<Piece, LakeError> {
    txn.write(table, day, &part.batches)
}

impl LakeWriter {
    pub fn new(txn: Arc<Transaction>, limit: usize, threads: usize) -> LakeWriter {
        let (jobs, job_rx) = crossbeam_channel::bounded::<Job>(1);
        let (res_tx, results) = crossbeam_channel::unbounded();
        let workers = (0..threads.max(1))
            .map(|i| {
                let rx = job_rx.clone();
                let tx = res_tx.clone();
                let txn = Arc::clone(&txn);
                std::thread::Builder::new()
                    .name(format!("keytrail-write-{i}"))
                    .spawn(move || {
                        for job in rx {
                            let _ = tx.send(write(&txn, job));
                        }
                    })
            })
            .filter_map(Result::ok)
            .collect();
        LakeWriter {
            txn,
            parts: HashMap::new(),
            buffered: 0,
            limit: limit.max(1 << 20),
            jobs: Some(jobs),
            results,
            workers,
        }
    }

    fn collect(&mut self, r: Result<Piece, LakeError>) -> Result<(), IngestError> {
        r?;
        Ok(())
    }

    /// Take in the results of finished writes; surface the first error.
    fn drain(&mut self) -> Result<(), IngestError> {
        while let Ok(r) = self.results.try_recv() {
            self.collect(r)?;
        }
        Ok(())
    }

    pub fn accept(
        &mut self,
        table: Table,
        day: i32,
        batch: RecordBatch,
    ) -> Result<(), IngestError> {
        self.drain()?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let bytes = batch.get_array_memory_size();
        let part = self.parts.entry((table, day)).or_default();
        part.batches.push(batch);
        part.bytes += bytes;
        self.buffered += bytes;
        // A partition that alone holds a good file's worth goes now.
        if part.bytes >= self.limit / 2 {
            let part = self.parts.remove(&(table, day)).unwrap_or_default();
            self.buffered -= part.bytes;
            let sent = self
                .jobs
                .as_ref()
                .is_some_and(|j| j.send(((table, day), part)).is_ok());
            if !sent {
                self.drain()?;
                return Err(IngestError::Config("the writer threads stopped".into()));
            }
            return Ok(());
        }
        // Over budget: hand the largest partition to the writers. While they are busy, keep
        // buffering up to half as much again before waiting for them, so a write in progress
        // does not stall decoding.
        while self.buffered > self.limit {
            let Some(key) = self
                .parts
                .iter()
                .max_by_key(|(k, p)| (p.bytes, std::cmp::Reverse(**k)))
                .map(|(k, _)| *k)
            else {
                break;
            };
            let Some(part) = self.parts.remove(&key) else {
                break;
            };
            let Some(jobs) = &self.jobs else { break };
            let hard = self.buffered > self.limit + self.limit / 2;
            let size = part.bytes;
            let sent = match jobs.try_send((key, part)) {
                Ok(()) => true,
                Err(crossbeam_channel::TrySendError::Full(job)) if hard => jobs.send(job).is_ok(),
                Err(crossbeam_channel::TrySendError::Full((key, part))) => {
                    // Writers busy and still under the hard limit: keep it for now.
                    self.parts.insert(key, part);
                    break;
                }
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => false,
            };
            if !sent {
                // A writer thread died: its error (or panic) is the reason.
                self.drain()?;
                return Err(IngestError::Config("the writer threads stopped".into()));
            }
            self.buffered -= size;
        }
        Ok(())
    }

    /// Write everything still buffered (in parallel on `pool`), wait for every write and
    /// finish the run's files; returns how many data files were written and their bytes.
    pub fn finish(mut self, pool: &rayon::ThreadPool) -> Result<(u64, u64), IngestError> {
        drop(self.jobs.take());
        let parts: Vec<Job> = self.parts.drain().collect();
        let txn = Arc::clone(&self.txn);
        let tail: Vec<Result<Piece, LakeError>> =
            pool.install(|| parts.into_par_iter().map(|job| write(&txn, job)).collect());
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let mut first_err = None;
        for r in tail
            .into_iter()
            .chain(self.results.try_iter().collect::<Vec<_>>())
        {
            if let Err(e) = self.collect(r) {
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        let files = self.txn.finish_files()?;
        Ok((files.len() as u64, files.iter().map(|f| f.bytes).sum()))
    }
}
