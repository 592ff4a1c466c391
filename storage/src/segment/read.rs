//! Readers' side of a segment: find the batch holding an offset (sparse index, then a header walk),
//! check CRCs above the verified mark, and return whole batches as slices of the map. Takes no lock
//! and never writes a file; only the `verified` watermark and the prefetch mark are raised.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use sluice_protocol::batch::{self, BatchError, BatchHeader};
use sluice_protocol::RecordBatch;

use super::{page_size, Segment};
use crate::error::{Result, StorageError};

/// How far past a read the kernel is asked to read ahead (see `Segment::read`).
const PREFETCH_AHEAD_BYTES: u64 = 16 << 20;

impl Segment {
    /// Reads whole batches starting with the one that holds `offset` (or the first after it), up to
    /// `max_bytes` but always at least one batch. Returns the bytes (a slice of the map) and the offset
    /// after the last batch returned, or `None` if no batch at or after `offset` is in this segment.
    /// Batches at or past `limit_offset` (the log end the caller loaded) are not returned: the
    /// segment publishes a batch a moment before the log end moves past it, and a read must never
    /// hand out an offset the log does not admit to yet. `prefetch`: ask the kernel to read ahead
    /// (off when cold reads serve uncached data instead: read-ahead through the map would make
    /// the bytes ahead look cached and keep the reader on the map).
    pub(crate) fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        limit_offset: u64,
        prefetch: bool,
    ) -> Result<Option<(Bytes, u64)>> {
        let end = self.len.load();
        let Some(start) = self.locate(offset, end)? else {
            return Ok(None);
        };
        let mut pos = start;
        let mut next = offset;
        while pos < end {
            // A header that does not decode past the first batch ends the answer, as a failed CRC
            // does: it may be damage (the next read reports it), or the suffix a concurrent
            // `truncate_after` is zeroing under this map (below the length this read loaded, past
            // the log end it loaded). The loom model `publish::loom_model` checks the latter.
            let h = match self.header_at(pos, end) {
                Ok(h) => h,
                Err(e) if pos == start => return Err(e),
                Err(_) => break,
            };
            let blen = u64::from(h.length);
            if h.base_offset >= limit_offset {
                break;
            }
            if pos > start && (pos - start + blen) as usize > max_bytes {
                break;
            }
            if let Err(e) = self.verify(pos, blen) {
                if pos == start {
                    return Err(e);
                }
                break; // serve what was good; the next read reports the bad batch
            }
            next = h.next_offset();
            pos += blen;
        }
        // Ask the kernel to read this range and the next few MiB in large requests: data past
        // the page-cache window is on disk only, and faulting it in page by page while the response is
        // written is several times slower. A no-op for cached pages.
        if pos == start {
            return Ok(None);
        }
        if prefetch {
            self.prefetch(start, (pos + PREFETCH_AHEAD_BYTES).min(end));
        }
        Ok(Some((self.data.slice(start as usize..pos as usize), next)))
    }

    fn prefetch(&self, from: u64, to: u64) {
        // Each range is advised once for a sequential reader: advising cached pages again costs a walk
        // of the page cache per read.
        let done = self.prefetched_upto.load(Ordering::Relaxed);
        if from < done && to <= done {
            return;
        }
        let from = from.max(done) & !(page_size() - 1);
        if to <= from || self.data.is_empty() {
            return;
        }
        self.prefetched_upto.fetch_max(to, Ordering::Relaxed);
        // SAFETY: the range lies inside this segment's live map (both ends are below the published
        // length, which the map covers); MADV_WILLNEED only schedules reads and changes no data.
        unsafe {
            libc::madvise(
                self.data.as_ptr().add(from as usize) as *mut libc::c_void,
                (to - from) as usize,
                libc::MADV_WILLNEED,
            );
        }
    }

    /// The position of the batch holding `offset`, or of the first batch after it.
    fn locate(&self, offset: u64, end: u64) -> Result<Option<u64>> {
        let rel = offset
            .saturating_sub(self.base_offset)
            .min(u64::from(u32::MAX)) as u32;
        let mut pos = self.floor_position(rel, end);
        while pos < end {
            let h = self.header_at(pos, end)?;
            if h.next_offset() > offset {
                return Ok(Some(pos));
            }
            pos += u64::from(h.length);
        }
        Ok(None)
    }

    /// Start position for a scan to relative offset `rel`, using only index entries below `end` (an
    /// entry may be published a moment before the batch it points to).
    pub(super) fn floor_position(&self, rel: u32, end: u64) -> u64 {
        let mut rel = rel;
        loop {
            match self.offset_index.floor(rel) {
                Some((_, p)) if u64::from(p) < end => return u64::from(p),
                Some((r, _)) if r > 0 => rel = r - 1,
                _ => return 0,
            }
        }
    }

    pub(super) fn header_at(&self, pos: u64, end: u64) -> Result<BatchHeader> {
        let corrupt = |source| StorageError::Corrupt {
            path: self.log_path.clone(),
            position: pos,
            source,
        };
        let h = BatchHeader::decode(&self.data[pos as usize..end as usize]).map_err(corrupt)?;
        if pos + u64::from(h.length) > end {
            return Err(corrupt(BatchError::Truncated {
                needed: h.length as usize,
                available: (end - pos) as usize,
            }));
        }
        Ok(h)
    }

    /// Checks both CRCs of the batch at `pos` unless it is below the verified mark.
    fn verify(&self, pos: u64, len: u64) -> Result<()> {
        let verified = self.verified.load();
        if pos + len <= verified {
            return Ok(());
        }
        batch::check(&self.data[pos as usize..(pos + len) as usize]).map_err(|source| {
            StorageError::Corrupt {
                path: self.log_path.clone(),
                position: pos,
                source,
            }
        })?;
        if verified >= pos {
            self.verified.raise(pos + len);
        }
        Ok(())
    }

    /// The offset of the first record with a timestamp at or after `ts`, if this segment has one.
    pub(crate) fn offset_for_timestamp(&self, ts: i64) -> Result<Option<u64>> {
        if self.max_timestamp_ms.load(Ordering::Relaxed) < ts {
            return Ok(None);
        }
        let end = self.len.load();
        let rel = self.time_index.scan_start(ts).unwrap_or(0);
        let mut pos = self.floor_position(rel, end);
        while pos < end {
            let h = self.header_at(pos, end)?;
            let blen = u64::from(h.length);
            if h.max_timestamp_ms >= ts {
                self.verify(pos, blen)?;
                let (batch, _) =
                    RecordBatch::decode(&self.data.slice(pos as usize..(pos + blen) as usize))
                        .map_err(|source| StorageError::Corrupt {
                            path: self.log_path.clone(),
                            position: pos,
                            source,
                        })?;
                let records = batch.records().map_err(|source| StorageError::Corrupt {
                    path: self.log_path.clone(),
                    position: pos,
                    source,
                })?;
                for r in records {
                    let r = r.map_err(|source| StorageError::Corrupt {
                        path: self.log_path.clone(),
                        position: pos,
                        source,
                    })?;
                    if r.timestamp_ms >= ts {
                        return Ok(Some(r.offset));
                    }
                }
            }
            pos += blen;
        }
        Ok(None)
    }

    /// Position just after the batch whose last offset is `last_kept`, or `None` if no batch ends
    /// exactly there.
    pub(crate) fn boundary_after(&self, last_kept: u64) -> Result<Option<u64>> {
        let end = self.len.load();
        let Some(pos) = self.locate(last_kept, end)? else {
            return Ok(None);
        };
        let h = self.header_at(pos, end)?;
        Ok((h.last_offset() == last_kept).then(|| pos + u64::from(h.length)))
    }

    /// Appends to `out` the headers of batches from the one holding `offset`, stopping before
    /// `limit_offset` or when `out` holds `max_count`. Header CRCs are checked; bodies are not read.
    pub(crate) fn headers(
        &self,
        offset: u64,
        limit_offset: u64,
        max_count: usize,
        out: &mut Vec<BatchHeader>,
    ) -> Result<()> {
        let end = self.len.load();
        let Some(mut pos) = self.locate(offset, end)? else {
            return Ok(());
        };
        while pos < end && out.len() < max_count {
            let h = self.header_at(pos, end)?;
            if h.base_offset >= limit_offset {
                break;
            }
            pos += u64::from(h.length);
            out.push(h);
        }
        Ok(())
    }

    /// Iterates the segment's batches (CRC-checked) for compaction.
    pub(crate) fn batches(&self) -> impl Iterator<Item = Result<RecordBatch>> + '_ {
        let end = self.len.load();
        let mut pos = 0u64;
        let mut failed = false;
        std::iter::from_fn(move || {
            if failed || pos >= end {
                return None;
            }
            let result = self.header_at(pos, end).and_then(|h| {
                let blen = u64::from(h.length);
                self.verify(pos, blen)?;
                let bytes = self.data.slice(pos as usize..(pos + blen) as usize);
                RecordBatch::decode(&bytes)
                    .map(|(b, _)| b)
                    .map_err(|source| StorageError::Corrupt {
                        path: self.log_path.clone(),
                        position: pos,
                        source,
                    })
                    .map(|b| (b, blen))
            });
            match result {
                Ok((b, blen)) => {
                    pos += blen;
                    Some(Ok(b))
                }
                Err(e) => {
                    failed = true;
                    Some(Err(e))
                }
            }
        })
    }
}
