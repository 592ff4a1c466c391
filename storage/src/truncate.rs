//! Truncation of an uncommitted suffix (`truncate_after`): the only operation that moves the log end
//! and the flushed offset back.

use std::sync::Arc;

use crate::checkpoint::Checkpoint;
use crate::error::{Result, StorageError};
use crate::io::sync_dir;
use crate::log::{Inner, Writer};
use crate::recovery::remove_segment_files;
use crate::segment::Segment;

/// Keeps every batch up to the one ending at `last_kept` and drops the rest. Flush and writer locks held.
pub(crate) fn truncate_after(inner: &Inner, w: &mut Writer, last_kept: Option<u64>) -> Result<u64> {
    let log_end = inner.log_end.load();
    let log_start = inner.log_start.load();
    let new_end = last_kept.map_or(log_start, |k| k.saturating_add(1));
    if new_end >= log_end {
        return Ok(log_end);
    }
    if new_end < log_start {
        return Err(StorageError::OffsetOutOfRange {
            offset: new_end,
            log_start,
            log_end,
        });
    }
    let segs = inner.segments_snapshot();
    let (idx, pos) = match last_kept {
        None => (0, 0),
        Some(k) => {
            let i = segs
                .partition_point(|s| s.base_offset() <= k)
                .saturating_sub(1);
            match segs[i].boundary_after(k)? {
                Some(p) => (i, p),
                None => return Err(StorageError::NotBatchBoundary(k)),
            }
        }
    };
    let keep = segs[idx].clone();
    let dropped: Vec<u64> = segs[idx + 1..].iter().map(|s| s.base_offset()).collect();

    // Publish the shorter log first so no new reader starts on what is about to go.
    inner.log_end.retreat(new_end);
    if inner.flushed.load() > new_end {
        inner.flushed.retreat(new_end);
    }
    let mut list: Vec<Arc<Segment>> = segs[..=idx].to_vec();
    inner.set_segments(list.clone());
    for &base in &dropped {
        remove_segment_files(&inner.dir, base).map_err(|e| inner.fail(e))?;
    }
    keep.truncate_to(pos, new_end).map_err(|e| inner.fail(e))?;
    let active = if dropped.is_empty() {
        keep
    } else {
        // The kept segment was sealed; it becomes the active one again, with writable maps.
        sync_dir(&inner.dir).map_err(|e| inner.fail(e))?;
        keep.trim_indexes()?;
        let base = keep.base_offset();
        let len = keep.len();
        let seg = Arc::new(Segment::reopen_live(
            &inner.dir,
            base,
            &inner.config,
            len,
            keep.high_len(),
        )?);
        list[idx] = seg.clone();
        inner.set_segments(list.clone());
        seg
    };
    w.unsynced
        .retain(|s| list.iter().any(|l| Arc::ptr_eq(l, s)) && !Arc::ptr_eq(s, &active));
    w.active = active.clone();
    w.recovery_base = w.recovery_base.min(active.base_offset());
    Checkpoint {
        clean: false,
        recovery_base: w.recovery_base,
        active_base: active.base_offset(),
        active_len: 0,
        next_offset: new_end,
    }
    .write(&inner.dir)
    .map_err(|e| inner.fail(e))?;
    tracing::info!(dir = %inner.dir.display(), new_end, dropped_segments = dropped.len(), "truncated log");
    Ok(new_end)
}
