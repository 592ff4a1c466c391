//! Reading raft entries back from a group's log (what the leader sends a follower, and what
//! openraft asks its log readers for): the batches from an entry's offset on, in bounded read
//! steps, each checked to carry the next raft index. Both forms read the same way; the async one
//! awaits bytes behind the page-cache window instead of blocking a worker (a follower catching up
//! from old segments is served by the storage's cold reads like any sequential reader). Never
//! writes.

use std::io;

use sluice_protocol::RecordBatch;
use sluice_storage::ReadResult;

use super::entry::entry_from_batch;
use super::log_store::{GroupLog, READ_STEP_BYTES};
use super::{io_error, Entry};

impl GroupLog {
    /// The entries with indexes in `[start, end)` that the log holds.
    pub fn entries(&self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        self.entries_up_to(start, end, usize::MAX)
    }

    /// Like [`GroupLog::entries`], but stops after the entry that reaches `max_bytes` of batches
    /// (always at least one entry): what one append request carries.
    pub fn entries_up_to(&self, start: u64, end: u64, max_bytes: usize) -> io::Result<Vec<Entry>> {
        let Some(mut take) = self.take(start, end, max_bytes) else {
            return Ok(Vec::new());
        };
        while let Some(offset) = take.wants() {
            let read = self
                .log
                .read(offset, READ_STEP_BYTES)
                .map_err(|e| take.read_error(e))?;
            take.add(read)?;
        }
        Ok(take.out)
    }

    /// [`GroupLog::entries_up_to`] for async callers: awaits cold bytes.
    pub async fn entries_up_to_async(
        &self,
        start: u64,
        end: u64,
        max_bytes: usize,
    ) -> io::Result<Vec<Entry>> {
        let Some(mut take) = self.take(start, end, max_bytes) else {
            return Ok(Vec::new());
        };
        while let Some(offset) = take.wants() {
            let read = self
                .log
                .read_below_async(offset, READ_STEP_BYTES, u64::MAX)
                .await
                .map_err(|e| take.read_error(e))?;
            take.add(read)?;
        }
        Ok(take.out)
    }

    fn take(&self, start: u64, end: u64, max_bytes: usize) -> Option<Take> {
        let (first, end, offset) = self.entry_start(start, end)?;
        Some(Take {
            index: first,
            end,
            max_bytes,
            bytes: 0,
            offset: Some(offset),
            out: Vec::with_capacity(((end - first) as usize).min(1024)),
        })
    }
}

/// Entries collected so far, and where the next read starts (`None`: done).
struct Take {
    index: u64,
    end: u64,
    max_bytes: usize,
    bytes: usize,
    offset: Option<u64>,
    out: Vec<Entry>,
}

impl Take {
    fn wants(&self) -> Option<u64> {
        self.offset
            .filter(|_| self.index < self.end && self.bytes < self.max_bytes)
    }

    fn read_error(&self, e: sluice_storage::StorageError) -> io::Error {
        io_error(format!("reading raft entry {}: {e}", self.index))
    }

    /// Takes the entries of one read (whole batches, CRC-checked by the read).
    fn add(&mut self, read: ReadResult) -> io::Result<()> {
        if read.bytes.is_empty() {
            self.offset = None;
            return Ok(());
        }
        let mut rest = read.bytes;
        while !rest.is_empty() && self.index < self.end && self.bytes < self.max_bytes {
            let index = self.index;
            let (batch, tail) = RecordBatch::decode_verified(&rest)
                .map_err(|e| io_error(format!("raft entry {index}: {e}")))?;
            rest = tail;
            self.bytes += batch.as_bytes().len();
            if batch.header().raft_index != index {
                return Err(io_error(format!(
                    "raft log out of order: expected index {index} at offset {}, found {}",
                    batch.header().base_offset,
                    batch.header().raft_index
                )));
            }
            self.out
                .push(entry_from_batch(batch).map_err(|e| io_error(e.to_string()))?);
            self.index += 1;
        }
        self.offset = Some(read.next_offset);
        Ok(())
    }
}
