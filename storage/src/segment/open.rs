//! Opening an existing segment: after a clean shutdown (trust the files), as a trusted sealed
//! segment (trust the bytes, check the indexes), or in recovery (delegated to `recover`). Restores
//! the in-memory state (next offset, timestamps, index cursor) by walking batches (CRC-checked
//! unless a recovery scan already checked them). Never serves reads and never appends.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::atomic::Ordering;

use sluice_protocol::batch::{self, BatchError, BatchHeader};

use super::recover::recover;
use super::{all_zero, capacity, map, time_index_bytes, OpenMode, Opened, Segment, SegmentPaths};
use crate::config::LogConfig;
use crate::error::{IoContext, Result, StorageError};
use crate::index::{OffsetIndex, TimeIndex};
use crate::io;

impl Segment {
    /// Opens an existing segment. `next_base` is the base offset of the following segment, used as this
    /// segment's end when a trusted segment's tail cannot be walked.
    pub(crate) fn open(
        dir: &Path,
        base_offset: u64,
        config: &LogConfig,
        mode: OpenMode,
        writable: bool,
        next_base: Option<u64>,
    ) -> Result<Opened> {
        Self::open_inner(dir, base_offset, config, mode, writable, next_base, false)
    }

    /// Reopens a segment that other maps of this process may still read (after a truncation made a
    /// sealed segment active again): never shrinks the file and never falls back to a recovery scan.
    /// `high_len` is the highest length the old handle ever published: readers may still map up to
    /// it, so the new handle never shrinks the file below it either.
    pub(crate) fn reopen_live(
        dir: &Path,
        base_offset: u64,
        config: &LogConfig,
        len: u64,
        high_len: u64,
    ) -> Result<Segment> {
        let seg = Self::open_inner(
            dir,
            base_offset,
            config,
            OpenMode::Clean { len },
            true,
            None,
            true,
        )?
        .segment;
        seg.high_len.raise(high_len);
        Ok(seg)
    }

    fn open_inner(
        dir: &Path,
        base_offset: u64,
        config: &LogConfig,
        mode: OpenMode,
        writable: bool,
        next_base: Option<u64>,
        live: bool,
    ) -> Result<Opened> {
        let paths = SegmentPaths::new(dir, base_offset, "");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&paths.log)
            .ctx("open segment", &paths.log)?;
        let file_len = file.metadata().ctx("stat segment", &paths.log)?.len();
        let mut mode = mode;
        if let OpenMode::Clean { len } = mode {
            if len > file_len {
                tracing::warn!(path = %paths.log.display(), len, file_len,
                    "segment shorter than its clean checkpoint says; recovering it");
                mode = OpenMode::Recover;
            }
        }

        let mut index_rebuilt = false;
        let (valid_len, rebuild, truncated, dropped_bytes) = match mode {
            OpenMode::Clean { len } => (len, false, None, 0),
            OpenMode::Trusted => (file_len, false, None, 0),
            OpenMode::Recover => {
                let r = recover(&file, &paths.log, base_offset, file_len, writable)?;
                (r.valid_len, true, r.truncated, r.dropped_bytes)
            }
        };
        let cur_len = file.metadata().ctx("stat segment", &paths.log)?.len();
        if !writable && !live && cur_len > valid_len {
            io::set_len(&file, &paths.log, valid_len).ctx("trim segment", &paths.log)?;
        }
        // A writable segment is mapped at its full capacity, past the end of the file: appends grow the
        // file with pwritev, and readers only touch bytes below the published length, which the file
        // holds. The file is never extended ahead of its data (appending into a sparse file measured
        // slower than plain appends here).
        let map_len = if writable {
            capacity(config).max(cur_len)
        } else {
            valid_len
        };
        let data = map(&file, map_len, &paths.log)?;

        let index_entries = if rebuild { Some(0) } else { None };
        let offset_index =
            OffsetIndex::open(&paths.index, config.max_index_bytes, index_entries, true)?;
        let time_index = TimeIndex::open(
            &paths.timeindex,
            time_index_bytes(config),
            index_entries,
            true,
        )?;
        let mut seg = Segment::assemble(
            base_offset,
            paths.log.clone(),
            file,
            data,
            (offset_index, time_index),
            valid_len,
            if rebuild { valid_len } else { 0 },
            config,
        );
        if !rebuild && !seg.indexes_look_sane(valid_len) {
            tracing::warn!(path = %paths.log.display(), "segment indexes fail their checks; rebuilding");
            seg.offset_index =
                OffsetIndex::open(&paths.index, config.max_index_bytes, Some(0), true)?;
            seg.time_index =
                TimeIndex::open(&paths.timeindex, time_index_bytes(config), Some(0), true)?;
            index_rebuilt = true;
        }
        // A recovery scan has CRC-checked every byte; otherwise the walk checks what it reads.
        let walked = seg.restore_state(rebuild || index_rebuilt, !rebuild, next_base)?;
        index_rebuilt |= rebuild;
        if !live && seg.len() < valid_len && !writable {
            // The walk found a zeroed suffix (left by a truncation): no map but ours exists yet.
            io::set_len(&seg.file, &paths.log, seg.len()).ctx("trim zeroed suffix", &paths.log)?;
        }
        if !walked && live {
            return Err(StorageError::Corrupt {
                path: paths.log,
                position: 0,
                source: BatchError::MalformedRecord {
                    index: 0,
                    reason: "segment does not walk after truncation",
                },
            });
        }
        if !walked && matches!(mode, OpenMode::Clean { .. }) {
            // A clean checkpoint whose bytes do not walk: fall back to a full recovery of this segment.
            drop(seg);
            return Segment::open(
                dir,
                base_offset,
                config,
                OpenMode::Recover,
                writable,
                next_base,
            );
        }
        if !writable {
            seg.offset_index.file().trim()?;
            seg.time_index.file().trim()?;
        }
        Ok(Opened {
            segment: seg,
            truncated,
            dropped_bytes,
            index_rebuilt,
        })
    }

    /// Cheap structural checks of the indexes against the log: whole entries, increasing entries,
    /// positions inside the log, the first offset entry at the first batch and the last one at a batch
    /// that holds its offset; time entries as the writer makes them (timestamps strictly increasing,
    /// the first one at the first batch with that batch's max timestamp, the last one at least the max
    /// timestamp of the batch the last offset entry points at), and present exactly when offset
    /// entries are. The time index is trusted for the segment's max timestamp (see `restore_state`),
    /// so a zeroed, cut or deleted one must not pass.
    fn indexes_look_sane(&self, len: u64) -> bool {
        if !self.offset_index.file().whole_entries() || !self.time_index.file().whole_entries() {
            return false;
        }
        let n = self.offset_index.len();
        if (n == 0) != (self.time_index.len() == 0) {
            return false;
        }
        let header =
            |pos: u32| batch::BatchHeader::decode(&self.data[pos as usize..len as usize]).ok();
        let mut prev: Option<(u32, u32)> = None;
        for i in 0..n {
            let (rel, pos) = self.offset_index.entry(i);
            if u64::from(pos) >= len || prev.is_some_and(|(r, p)| rel <= r || pos <= p) {
                return false;
            }
            prev = Some((rel, pos));
        }
        let (Some((last_rel, last_pos)), Some(first_t), Some(last_t)) =
            (prev, self.time_index.entry_opt(0), self.time_index.last())
        else {
            return n == 0;
        };
        let (first_rel, first_pos) = self.offset_index.entry(0);
        let (Some(first), Some(last)) = (header(first_pos), header(last_pos)) else {
            return false;
        };
        let off = self.base_offset + u64::from(last_rel);
        if first_pos != 0
            || first.base_offset != self.base_offset + u64::from(first_rel)
            || last.base_offset > off
            || last.last_offset() < off
            || first_t != (first.max_timestamp_ms, first_rel)
            || last_t.0 < last.max_timestamp_ms
        {
            return false;
        }
        let mut prev_t: Option<(i64, u32)> = None;
        for i in 0..self.time_index.len() {
            let (ts, rel) = self.time_index.entry(i);
            if prev_t.is_some_and(|(t, r)| ts <= t || rel < r) {
                return false;
            }
            prev_t = Some((ts, rel));
        }
        true
    }

    /// Walks batches to restore the next offset, timestamps and, if `reindex`, the indexes; with
    /// `verify` (bytes no recovery scan checked) each walked batch's CRCs are checked. Returns false
    /// if a batch in the valid range does not decode or fails its CRCs.
    fn restore_state(&self, reindex: bool, verify: bool, next_base: Option<u64>) -> Result<bool> {
        let len = self.len.load();
        let start = if reindex {
            0
        } else {
            self.offset_index
                .floor(u32::MAX)
                .map_or(0, |(_, p)| u64::from(p))
        };
        let mut cursor = self.lock_cursor();
        let mut pos = start;
        let mut max_ts = if reindex {
            None
        } else {
            self.time_index.last().map(|(t, _)| t)
        };
        let mut next = self.base_offset;
        if !reindex {
            cursor.last_time_entry_ms = max_ts;
        }
        let mut ok = true;
        while pos < len {
            let h = match BatchHeader::decode(&self.data[pos as usize..len as usize]) {
                // File content is checked before it reaches the index (whose pushes assert order):
                // offsets must not go back, and positions and relative offsets must fit a u32.
                // With `verify`, both CRCs too: the header CRC leaves out the last offset delta and
                // the timestamps, and the walk takes the segment's next offset (the log end, for the
                // active segment) and max timestamp from them.
                Ok(h)
                    if pos + u64::from(h.length) <= len
                        && pos + u64::from(h.length) <= u64::from(u32::MAX)
                        && h.base_offset >= next
                        && h.last_offset() - self.base_offset < u64::from(u32::MAX)
                        && (!verify
                            || batch::check(
                                &self.data[pos as usize..(pos + u64::from(h.length)) as usize],
                            )
                            .is_ok()) =>
                {
                    h
                }
                Err(BatchError::Empty) if all_zero(&self.data[pos as usize..len as usize]) => {
                    // The zeroed suffix of a truncation: the segment ends here.
                    self.len.retreat(pos);
                    if self.verified.load() > pos {
                        self.verified.retreat(pos);
                    }
                    break;
                }
                _ => {
                    ok = false;
                    break;
                }
            };
            if pos == 0 {
                self.first_timestamp_ms
                    .store(h.first_timestamp_ms, Ordering::Relaxed);
            }
            let rel = (h.base_offset - self.base_offset.min(h.base_offset)) as u32;
            let running = max_ts.map_or(h.max_timestamp_ms, |m: i64| m.max(h.max_timestamp_ms));
            max_ts = Some(running);
            if reindex {
                self.maybe_index(&mut cursor, rel, pos as u32, running, u64::from(h.length));
            }
            cursor.last_batch_rel = rel;
            next = h.next_offset();
            pos += u64::from(h.length);
        }
        if !ok {
            if let Some(nb) = next_base {
                tracing::warn!(path = %self.log_path.display(), position = pos,
                    "trusted segment has an unreadable batch header; reads there will report corruption");
                next = nb;
            }
        }
        if len > 0 && self.first_timestamp_ms.load(Ordering::Relaxed) == i64::MIN {
            if let Ok(h) = BatchHeader::decode(&self.data[..len as usize]) {
                self.first_timestamp_ms
                    .store(h.first_timestamp_ms, Ordering::Relaxed);
            }
        }
        self.max_timestamp_ms
            .store(max_ts.unwrap_or(i64::MIN), Ordering::Relaxed);
        self.next_offset.publish(next.max(self.base_offset));
        Ok(ok || next_base.is_some())
    }
}
