//! Operations a replicated log needs beyond append/read: scanning batch headers (to map raft
//! indexes to offsets without reading record bodies) and resetting an empty-or-stale log to start
//! at a given offset (a replica that is behind the leader's log start receives the leader's retained
//! segments and continues from there).

use std::sync::Arc;

use sluice_protocol::BatchHeader;

use crate::checkpoint::Checkpoint;
use crate::error::{Result, StorageError};
use crate::io::sync_dir;
use crate::log::{lock, PartitionLog};
use crate::recovery::remove_segment_files;
use crate::segment::Segment;

impl PartitionLog {
    /// Headers of the batches from the one holding `offset` onwards, at most `max_count` of them.
    /// Only the header CRC is checked (the body is not read), so a scan of a whole log touches one
    /// page per batch. Stops at the log end it loaded first.
    pub fn batch_headers(&self, offset: u64, max_count: usize) -> Result<Vec<BatchHeader>> {
        let inner = &*self.inner;
        let log_end = inner.log_end.load();
        let segments = inner.segments_snapshot();
        let log_start = inner.log_start.load();
        if offset < log_start || offset > log_end {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            });
        }
        let mut out = Vec::new();
        let first = segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1);
        let mut from = offset;
        for seg in &segments[first..] {
            if out.len() >= max_count || from >= log_end {
                break;
            }
            seg.headers(from, log_end, max_count, &mut out)?;
            if let Some(h) = out.last() {
                from = h.next_offset();
            }
        }
        Ok(out)
    }

    /// Drops every segment and starts the log again, empty, at `start_offset`: both the log start and
    /// the log end become `start_offset`. For a replica that installs a snapshot beyond its own log;
    /// nothing of the old log is kept. Durable when it returns (files removed, directory fsynced,
    /// checkpoint written).
    pub fn reset(&self, start_offset: u64) -> Result<()> {
        let inner = &*self.inner;
        let _f = lock(&inner.flush_lock);
        let mut w = lock(&inner.writer);
        inner.check_usable(&w)?;
        let old = inner.segments_snapshot();
        // Publish an empty log first so no new reader starts on what is about to go.
        let end = inner.log_end.load();
        if start_offset < end {
            inner.log_end.retreat(start_offset);
        }
        if inner.flushed.load() > start_offset {
            inner.flushed.retreat(start_offset);
        }
        if inner.log_start.load() > start_offset {
            inner.log_start.retreat(start_offset);
        }
        inner.set_segments(Vec::new());
        for seg in old.iter() {
            remove_segment_files(&inner.dir, seg.base_offset()).map_err(|e| inner.fail(e))?;
        }
        let seg = Arc::new(
            Segment::create(&inner.dir, start_offset, "", &inner.config)
                .map_err(|e| inner.fail(e))?,
        );
        sync_dir(&inner.dir).map_err(|e| inner.fail(e))?;
        inner.set_segments(vec![seg.clone()]);
        if start_offset > inner.log_end.load() {
            inner.log_end.publish(start_offset);
        }
        inner.log_start.raise(start_offset);
        inner.flushed.raise(start_offset);
        w.active = seg;
        w.unsynced.clear();
        w.unflushed_bytes = 0;
        w.recovery_base = start_offset;
        Checkpoint {
            clean: false,
            recovery_base: start_offset,
            active_base: start_offset,
            active_len: 0,
            next_offset: start_offset,
        }
        .write(&inner.dir)
        .map_err(|e| inner.fail(e))?;
        tracing::info!(dir = %inner.dir.display(), start_offset, "log reset");
        Ok(())
    }
}
