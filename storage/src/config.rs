//! Per-log configuration: segment size and age, index density, retention, flush policy.

use std::time::Duration;

use crate::error::{Result, StorageError};

/// When appended bytes are forced to disk, and so what an append's return means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Never fsync on the write path: an append returns once its bytes are in the page cache. A process
    /// crash loses nothing; a machine crash loses what the kernel had not written back. Segments are
    /// fsynced at clean shutdown.
    Never,
    /// A background flusher fsyncs once `max_bytes` are unflushed or `max_delay` has passed since the
    /// oldest unflushed append. An append returns after the page-cache write; [`crate::PartitionLog::
    /// flushed_offset`] says what is durable.
    Interval { max_bytes: u64, max_delay: Duration },
    /// An append returns only after an fsync that covers it. Concurrent appenders share fsyncs
    /// (group commit).
    Always,
    /// The log's owner decides when to fsync: an append returns after the page-cache write, the log
    /// runs no flusher thread and never fsyncs for an append; the owner calls
    /// [`crate::PartitionLog::flush`] (or waits on its own schedule) and reads
    /// [`crate::PartitionLog::flushed_offset`]. For a log whose owner already fsyncs after each round
    /// of appends (a raft log: the broker flushes before it acknowledges), and for hosts with hundreds
    /// of logs, which must not run an OS thread per log. Unlike `Never`, a roll still fsyncs the
    /// sealed segment and its indexes and moves the checkpoint's recovery base to the new segment (as
    /// `Interval` and `Always` do), so an unclean restart scans only the active segment.
    External,
}

impl FlushPolicy {
    /// The interval policy with the defaults chosen by measurement (see `docs/benchmarks.md`).
    pub fn interval() -> Self {
        FlushPolicy::Interval {
            max_bytes: 4 << 20,
            max_delay: Duration::from_millis(100),
        }
    }
}

/// Configuration of one partition log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A segment rolls when the next batch would take it past this many bytes.
    pub segment_bytes: u64,
    /// A segment rolls when a batch's max timestamp is this far past the segment's first timestamp.
    pub segment_ms: Option<i64>,
    /// Bytes of log between two sparse index entries.
    pub index_interval_bytes: u64,
    /// Size the offset index of a segment is preallocated to (a segment rolls when it fills up).
    pub max_index_bytes: u64,
    /// Delete the oldest segments while the log is larger than this.
    pub retention_bytes: Option<u64>,
    /// Delete segments whose newest record is older than this.
    pub retention_ms: Option<i64>,
    /// How long compaction keeps a tombstone after the segment holding it was written.
    pub tombstone_retention_ms: i64,
    /// Bound on the memory compaction may use for its key map.
    pub compaction_max_map_bytes: usize,
    /// What an append's return means.
    pub flush: FlushPolicy,
    /// After each flush, ask the kernel to drop the page-cache pages of flushed bytes more than this far
    /// behind the log's end (`None`: keep everything cached). Writes then reuse freed pages instead of
    /// touching fresh memory, which is slow on VMs that hand free memory back to the host; readers of
    /// older data read it back from disk. Pages a reader has mapped are not dropped.
    pub page_cache_window_bytes: Option<u64>,
    /// How bytes outside the page-cache window are read (`None`: through the segment map, like the
    /// rest). With a window, a sequential reader of older bytes gets direct reads ahead of it from
    /// this shared pool (see `ColdReads`), which leaves the page cache to the newest data.
    pub cold_reads: Option<std::sync::Arc<crate::cold::ColdReads>>,
}

/// Largest segment: index entries hold 32-bit positions.
pub const MAX_SEGMENT_BYTES: u64 =
    (u32::MAX as u64) - (sluice_protocol::batch::MAX_BATCH_LEN as u64);

// The relationships the segment code relies on, checked at compile time:
// - index entries store a segment position as a u32;
const _: () = assert!(MAX_SEGMENT_BYTES <= u32::MAX as u64);
// - a batch starting anywhere below MAX_SEGMENT_BYTES ends at a position a u32 still holds;
const _: () =
    assert!(MAX_SEGMENT_BYTES + sluice_protocol::batch::MAX_BATCH_LEN as u64 <= u32::MAX as u64);
// - a writable segment's map (`max(segment_bytes, MAX_BATCH_LEN)`, so one largest batch always
//   fits an empty segment) never exceeds MAX_SEGMENT_BYTES;
const _: () = assert!(sluice_protocol::batch::MAX_BATCH_LEN as u64 <= MAX_SEGMENT_BYTES);
// - the smallest segment `validate` allows holds a batch header.
const _: () = assert!(sluice_protocol::batch::HEADER_LEN as u64 <= MIN_SEGMENT_BYTES);

/// Smallest `segment_bytes` [`LogConfig::validate`] accepts.
const MIN_SEGMENT_BYTES: u64 = 4096;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: Some(7 * 24 * 3600 * 1000),
            index_interval_bytes: 4096,
            max_index_bytes: 10 << 20,
            retention_bytes: None,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            tombstone_retention_ms: 24 * 3600 * 1000,
            compaction_max_map_bytes: 128 << 20,
            page_cache_window_bytes: None,
            cold_reads: None,
            flush: FlushPolicy::interval(),
        }
    }
}

impl LogConfig {
    /// Checks that the values are in range.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(StorageError::Config(m));
        if self.segment_bytes < MIN_SEGMENT_BYTES || self.segment_bytes > MAX_SEGMENT_BYTES {
            return bad(format!(
                "segment_bytes {} outside [{MIN_SEGMENT_BYTES}, {MAX_SEGMENT_BYTES}]",
                self.segment_bytes
            ));
        }
        if self.index_interval_bytes == 0 {
            return bad("index_interval_bytes must be positive".into());
        }
        if self.max_index_bytes < 1024 || self.max_index_bytes > (1 << 30) {
            return bad(format!(
                "max_index_bytes {} outside [1024, 1 GiB]",
                self.max_index_bytes
            ));
        }
        if let FlushPolicy::Interval {
            max_bytes,
            max_delay,
        } = self.flush
        {
            if max_bytes == 0 || max_delay.is_zero() {
                return bad("flush interval needs positive max_bytes and max_delay".into());
            }
        }
        Ok(())
    }
}
