//! The sink of an ingest run: decoded rows are buffered per table and day, and written as
//! sorted Parquet files when the buffer is full or the run ends.
//!
//! Writing (sort, encode, compress) runs on its own threads so it overlaps with decoding; the
//! queue to them holds one partition, so a slow disk or encoder pushes back on the collector,
//! which pushes back on the decoders. Memory: the partitions buffered and those being written
//! together stay within half as much again as the buffer budget (or one partition more, if a
//! single one is larger) whatever the number of writer threads: a partition is handed over
//! only when the ones in flight leave room for it within the budget, and the collector waits
//! for writes to finish when buffered and in flight together reach the bound.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use arrow::array::RecordBatch;
use crossbeam_channel::{Receiver, Sender};
use keytrail_lake::{LakeError, Piece, Scope, Transaction};
use keytrail_model::Table;

use crate::error::IngestError;

#[derive(Default)]
struct Partition {
    batches: Vec<RecordBatch>,
    bytes: usize,
}

type Job = ((Table, i32), Partition);

/// Most writer threads, whatever `--threads`: each write materialises its sorted rows 16k at a
/// time and holds the file's encoder (a page and a dictionary per column) beside the rows the
/// budget counts; with 16 writers that was the largest share of a 16-thread ingest's peak heap
/// (heaptrack, 10.3M events over 348 days).
pub const MAX_WRITERS: usize = 4;

/// Where a [`LakeWriter`] writes: a run's transaction, or one of its scopes.
pub(crate) trait Sink: Send + Sync + 'static {
    fn write(&self, table: Table, day: i32, batches: &[RecordBatch]) -> Result<Piece, LakeError>;
}

impl Sink for Transaction {
    fn write(&self, table: Table, day: i32, batches: &[RecordBatch]) -> Result<Piece, LakeError> {
        Transaction::write(self, table, day, batches)
    }
}

impl Sink for Scope {
    fn write(&self, table: Table, day: i32, batches: &[RecordBatch]) -> Result<Piece, LakeError> {
        Scope::write(self, table, day, batches)
    }
}

/// Buffers rows per partition within a memory budget and writes them through a transaction
/// (or a scope of one).
pub(crate) struct LakeWriter<S: Sink> {
    txn: Arc<S>,
    parts: HashMap<(Table, i32), Partition>,
    buffered: usize,
    limit: usize,
    /// Bytes of the partitions handed to the writers and not yet written.
    in_flight: usize,
    jobs: Option<Sender<Job>>,
    results: Receiver<(usize, Result<Piece, LakeError>)>,
    workers: Vec<JoinHandle<()>>,
}

fn write<S: Sink>(txn: &S, ((table, day), part): Job) -> Result<Piece, LakeError> {
    txn.write(table, day, &part.batches)
}

impl<S: Sink> LakeWriter<S> {
    /// A writer with up to `threads` writer threads (at most [`MAX_WRITERS`]).
    pub fn new(txn: Arc<S>, limit: usize, threads: usize) -> LakeWriter<S> {
        let (jobs, job_rx) = crossbeam_channel::bounded::<Job>(1);
        let (res_tx, results) = crossbeam_channel::unbounded();
        let workers = (0..threads.clamp(1, MAX_WRITERS))
            .map(|i| {
                let rx = job_rx.clone();
                let tx = res_tx.clone();
                let txn = Arc::clone(&txn);
                std::thread::Builder::new()
                    .name(format!("keytrail-write-{i}"))
                    .spawn(move || {
                        for job in rx {
                            // Every partition handed over gets its answer, even when writing
                            // it panics: the collector waits on them to make room.
                            let (size, (table, day)) = (job.1.bytes, job.0);
                            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                write(&*txn, job)
                            }))
                            .unwrap_or_else(|payload| {
                                Err(LakeError::io(
                                    table.name(),
                                    std::io::Error::other(format!(
                                        "writing day {} panicked: {}",
                                        keytrail_model::time::day_string(day),
                                        crate::pipeline::panic_message(payload.as_ref())
                                    )),
                                ))
                            });
                            let _ = tx.send((size, r));
                        }
                    })
            })
            .filter_map(Result::ok)
            .collect();
        LakeWriter {
            txn,
            parts: HashMap::new(),
            buffered: 0,
            in_flight: 0,
            limit: limit.max(1 << 20),
            jobs: Some(jobs),
            results,
            workers,
        }
    }

    fn collect(&mut self, (size, r): (usize, Result<Piece, LakeError>)) -> Result<(), IngestError> {
        self.in_flight = self.in_flight.saturating_sub(size);
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

    /// Whether the partitions in flight leave room for `size` more bytes.
    fn room_for(&self, size: usize) -> bool {
        self.in_flight == 0 || self.in_flight + size <= self.limit
    }

    /// Wait for writes to finish until the partitions in flight leave room for `size` bytes.
    fn wait_for_room(&mut self, size: usize) -> Result<(), IngestError> {
        while !self.room_for(size) {
            match self.results.recv() {
                Ok(r) => self.collect(r)?,
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Hand a partition to the writers, waiting for room and for a free writer.
    fn send(&mut self, job: Job) -> Result<(), IngestError> {
        let size = job.1.bytes;
        self.wait_for_room(size)?;
        let sent = self.jobs.as_ref().is_some_and(|j| j.send(job).is_ok());
        if !sent {
            // A writer thread died: its error (or panic) is the reason.
            self.drain()?;
            return Err(IngestError::Config("the writer threads stopped".into()));
        }
        self.in_flight += size;
        Ok(())
    }

    /// Take a batch of `table`'s rows of UTC `day` that holds `bytes` of memory.
    pub fn accept(
        &mut self,
        table: Table,
        day: i32,
        batch: RecordBatch,
        bytes: usize,
    ) -> Result<(), IngestError> {
        self.drain()?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let part = self.parts.entry((table, day)).or_default();
        part.batches.push(batch);
        part.bytes += bytes;
        self.buffered += bytes;
        // A partition that alone holds a good file's worth goes now.
        if part.bytes >= self.limit / 2 {
            let part = self.parts.remove(&(table, day)).unwrap_or_default();
            self.buffered -= part.bytes;
            self.send(((table, day), part))?;
        }
        // Over budget: hand the largest partitions to the writers while they have room. What
        // is buffered and what is being written stay within half as much again as the budget
        // together: past that, wait for writes to finish (the collector, and through it the
        // decoders, wait with it), so a write in progress does not stall decoding until then.
        loop {
            while self.buffered > self.limit {
                let Some((key, size)) = self
                    .parts
                    .iter()
                    .max_by_key(|(k, p)| (p.bytes, std::cmp::Reverse(**k)))
                    .map(|(k, p)| (*k, p.bytes))
                else {
                    break;
                };
                if !self.room_for(size) {
                    break;
                }
                let Some(jobs) = &self.jobs else { break };
                let Some(part) = self.parts.remove(&key) else {
                    break;
                };
                match jobs.try_send((key, part)) {
                    Ok(()) => {
                        self.buffered -= size;
                        self.in_flight += size;
                    }
                    Err(crossbeam_channel::TrySendError::Full((key, part))) => {
                        // No writer free: keep it for now.
                        self.parts.insert(key, part);
                        break;
                    }
                    Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                        // A writer thread died: its error (or panic) is the reason.
                        self.drain()?;
                        return Err(IngestError::Config("the writer threads stopped".into()));
                    }
                }
            }
            if self.in_flight == 0 || self.buffered + self.in_flight <= self.limit + self.limit / 2
            {
                return Ok(());
            }
            match self.results.recv() {
                Ok(r) => self.collect(r)?,
                Err(_) => {
                    return Err(IngestError::Config("the writer threads stopped".into()));
                }
            }
        }
    }

    /// Write everything still buffered (through the writer threads, within the same bounds)
    /// and wait for every write; returns what was written to, no longer shared with the
    /// writer threads.
    pub fn finish(mut self) -> Result<Arc<S>, IngestError> {
        let mut parts: Vec<Job> = self.parts.drain().collect();
        // Largest first, so the small ones fill in around it.
        parts.sort_by_key(|(k, p)| (std::cmp::Reverse(p.bytes), *k));
        self.buffered = 0;
        let mut first_err = None;
        for job in parts {
            if let Err(e) = self.send(job) {
                first_err = Some(e);
                break;
            }
        }
        self.stop();
        for r in self.results.try_iter().collect::<Vec<_>>() {
            if let Err(e) = self.collect(r) {
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        Ok(Arc::clone(&self.txn))
    }

    /// Close the queue to the writer threads and wait for them to finish what they took.
    fn stop(&mut self) {
        drop(self.jobs.take());
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl<S: Sink> Drop for LakeWriter<S> {
    /// A writer dropped unfinished (its object or run failed) stops its threads and waits for
    /// them, so nothing writes through the sink afterwards.
    fn drop(&mut self) {
        self.stop();
    }
}
