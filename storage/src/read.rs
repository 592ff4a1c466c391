//! Reading a partition log: [`PartitionLog::read`], [`PartitionLog::read_below`] and the form
//! that never waits for the disk, [`PartitionLog::read_below_or_wait`]. Bytes inside the page-cache
//! window (and every byte of a log without cold reads) are slices of the segment's map; older
//! bytes go through the log's cold readers (`crate::cold`) when the config has them. Either way a
//! batch is served only after its CRCs passed. Takes only the brief segment-list read lock.

use bytes::Bytes;

use crate::cold::stream::Outcome;
use crate::cold::ColdWait;
use crate::error::{Result, StorageError};
use crate::log::PartitionLog;

/// The answer to a read.
#[derive(Debug, Clone)]
pub struct ReadResult {
    /// Whole batches, exactly as stored: a slice of the segment's memory map, or of a cold read's
    /// buffer.
    pub bytes: Bytes,
    /// The offset to read next (after the last batch returned; the requested offset if none).
    pub next_offset: u64,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
}

/// A read that does not wait for the disk: its answer, or what to wait for before asking again.
#[derive(Debug)]
pub enum ReadOrWait {
    Ready(ReadResult),
    /// Cold bytes are on their way (read-ahead was started): wait, then read the same offset again.
    Wait(ColdWait),
}

impl PartitionLog {
    /// Reads whole batches from the one holding `offset`, up to `max_bytes` (at least one batch, so a
    /// reader always makes progress). Batches are CRC-checked before they are returned (cold bytes
    /// on every read from disk, mapped bytes once per process); a corrupt batch is reported as
    /// [`StorageError::Corrupt`], never returned. May block on the disk.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<ReadResult> {
        self.read_below(offset, max_bytes, u64::MAX)
    }

    /// [`PartitionLog::read`] returning only batches that start below `limit_offset` (a replicated
    /// log's high watermark: consumers never see what is not committed). An `offset` between the limit
    /// and the log end reads nothing; past the log end it is out of range. May block on the disk.
    pub fn read_below(
        &self,
        offset: u64,
        max_bytes: usize,
        limit_offset: u64,
    ) -> Result<ReadResult> {
        loop {
            match self.read_below_or_wait(offset, max_bytes, limit_offset)? {
                ReadOrWait::Ready(r) => return Ok(r),
                ReadOrWait::Wait(w) => w.wait(),
            }
        }
    }

    /// [`PartitionLog::read_below`] for async callers: awaits cold bytes instead of blocking the
    /// thread (mapped bytes may still fault in from disk).
    pub async fn read_below_async(
        &self,
        offset: u64,
        max_bytes: usize,
        limit_offset: u64,
    ) -> Result<ReadResult> {
        loop {
            match self.read_below_or_wait(offset, max_bytes, limit_offset)? {
                ReadOrWait::Ready(r) => return Ok(r),
                ReadOrWait::Wait(w) => w.await,
            }
        }
    }

    /// [`PartitionLog::read_below`] that never blocks on a cold read. When the bytes
    /// at `offset` are outside the page-cache window and not read yet, starts reading them (and
    /// ahead of them) and returns [`ReadOrWait::Wait`]. Mapped bytes may still fault in from disk.
    pub fn read_below_or_wait(
        &self,
        offset: u64,
        max_bytes: usize,
        limit_offset: u64,
    ) -> Result<ReadOrWait> {
        let inner = &*self.inner;
        // Load the end before the segment list: a batch published under `log_end` is in the list.
        let true_end = inner.log_end.load();
        let log_end = true_end.min(limit_offset);
        let segments = inner.segments_snapshot();
        let log_start = inner.log_start.load();
        let answer = |bytes, next| {
            ReadOrWait::Ready(ReadResult {
                bytes,
                next_offset: next,
                log_start_offset: log_start,
                log_end_offset: log_end,
            })
        };
        if offset < log_start || offset > true_end {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start,
                log_end: true_end,
            });
        }
        if offset >= log_end {
            return Ok(answer(Bytes::new(), offset));
        }
        let first = segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1);
        if let Some(cold) = &inner.cold {
            match cold.read(&segments, first, offset, max_bytes, log_end)? {
                Some(Outcome::Served { bytes, next_offset }) => {
                    return Ok(answer(bytes, next_offset))
                }
                Some(Outcome::Wait(w)) => return Ok(ReadOrWait::Wait(w)),
                None => {}
            }
        }
        for seg in &segments[first..] {
            if let Some((bytes, next)) =
                seg.read(offset, max_bytes, log_end, inner.cold.is_none())?
            {
                return Ok(answer(bytes, next));
            }
        }
        Ok(answer(Bytes::new(), log_end))
    }

    /// About how many bytes of the log lie at and after `offset`: from the indexed batch boundary
    /// at or below it to the log's end (an index lookup; no byte of the log is touched). How far a
    /// reader at `offset` is behind the tail, in what it has left to read; 0 at or past the end.
    pub fn bytes_from(&self, offset: u64) -> u64 {
        let segments = self.inner.segments_snapshot();
        let first = segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1);
        let Some(seg) = segments.get(first) else {
            return 0;
        };
        if offset >= seg.next_offset() && first + 1 == segments.len() {
            return 0;
        }
        let len = seg.len();
        let rest: u64 = segments[first + 1..].iter().map(|s| s.len()).sum();
        len - seg.scan_start(offset, len).min(len) + rest
    }
}
