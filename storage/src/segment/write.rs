//! The single writer's side of a segment: index bookkeeping, the roll decision, append, seal,
//! fsync, dropping cached pages behind the window, and truncation. Readers never call these; the
//! log's writer lock serialises them.

use std::sync::atomic::Ordering;

use sluice_protocol::batch::BatchHeader;

use super::{page_size, IndexCursor, Segment};
use crate::config::{LogConfig, MAX_SEGMENT_BYTES};
use crate::error::{IoContext, Result};
use crate::io;

impl Segment {
    pub(super) fn lock_cursor(&self) -> std::sync::MutexGuard<'_, IndexCursor> {
        crate::sync::lock(&self.cursor)
    }

    pub(super) fn maybe_index(
        &self,
        cursor: &mut IndexCursor,
        rel: u32,
        pos: u32,
        running_max_ms: i64,
        len: u64,
    ) {
        if self.offset_index.len() == 0 || cursor.bytes_since_entry >= self.index_interval_bytes {
            self.offset_index.push(rel, pos);
            if cursor.last_time_entry_ms.is_none_or(|t| running_max_ms > t) {
                self.time_index.push(running_max_ms, rel);
                cursor.last_time_entry_ms = Some(running_max_ms);
            }
            cursor.bytes_since_entry = 0;
        }
        cursor.bytes_since_entry += len;
    }

    /// Whether a batch of `batch_len` bytes covering offsets up to `last_offset` and timestamps up to
    /// `max_ts` must go into a new segment.
    pub(crate) fn needs_roll(
        &self,
        config: &LogConfig,
        batch_len: u64,
        last_offset: u64,
        max_ts: i64,
    ) -> bool {
        let len = self.len.load();
        if len == 0 {
            return false;
        }
        len + batch_len > config.segment_bytes
            || last_offset - self.base_offset >= u64::from(u32::MAX)
            || self.offset_index.is_full()
            || config.segment_ms.is_some_and(|ms| {
                let first = self.first_timestamp_ms.load(Ordering::Relaxed);
                first != i64::MIN && max_ts.saturating_sub(first) > ms
            })
    }

    /// Appends one batch whose header (already patched with its offset) is `header` and whose records
    /// section is `body`. Publishes it to readers once written. Single writer only.
    pub(crate) fn append(&self, header: &[u8], body: &[u8], h: &BatchHeader) -> Result<u64> {
        let pos = self.len.load();
        let total = (header.len() + body.len()) as u64;
        // Programmer errors, never file content: the log rolls before a batch could leave the map
        // or a u32 position/relative offset, assigns increasing offsets, and compaction checks what
        // it copies from a file with `accepts` first.
        assert_eq!(
            total,
            u64::from(h.length),
            "appended bytes differ from the header's length"
        );
        assert!(
            self.fits(total),
            "append of {total} bytes at {pos} leaves the segment's map ({} bytes) or MAX_SEGMENT_BYTES",
            self.data.len()
        );
        assert!(
            self.accepts_offsets(h),
            "batch offsets [{}, {}] do not follow segment {} ending at {}",
            h.base_offset,
            h.last_offset(),
            self.base_offset,
            self.next_offset.load()
        );
        io::write_all_at(&self.file, &self.log_path, &[header, body], pos)
            .ctx("append to segment", &self.log_path)?;
        let mut cursor = self.lock_cursor();
        let rel = (h.base_offset - self.base_offset) as u32;
        let running = self
            .max_timestamp_ms
            .load(Ordering::Relaxed)
            .max(h.max_timestamp_ms);
        self.maybe_index(&mut cursor, rel, pos as u32, running, total);
        cursor.last_batch_rel = rel;
        drop(cursor);
        if pos == 0 {
            self.first_timestamp_ms
                .store(h.first_timestamp_ms, Ordering::Relaxed);
        }
        self.max_timestamp_ms.store(running, Ordering::Relaxed);
        // The batch was checked before it was written, so it extends the verified range if contiguous.
        if self.verified.load() == pos {
            self.verified.raise(pos + total);
        }
        self.next_offset.publish(h.next_offset());
        self.high_len.raise(pos + total);
        self.len.publish(pos + total);
        Ok(pos)
    }

    /// Whether `len` more bytes fit the segment: inside its map (so readers can read them) and below
    /// [`MAX_SEGMENT_BYTES`] (so index positions fit a u32).
    pub(crate) fn fits(&self, len: u64) -> bool {
        let end = self.len.load() + len;
        end <= self.data.len() as u64 && end <= MAX_SEGMENT_BYTES
    }

    /// Whether a batch with header `h` may follow the segment's last batch: its offsets do not go
    /// back and its last offset relative to the segment base fits a u32 (index entries).
    pub(crate) fn accepts_offsets(&self, h: &BatchHeader) -> bool {
        h.base_offset >= self.next_offset.load()
            && h.last_offset() - self.base_offset < u64::from(u32::MAX)
    }

    /// Finishes the segment for good (roll) or for this process (clean close): records the final max
    /// timestamp, trims the indexes and the log file to their contents.
    pub(crate) fn seal(&self) -> Result<()> {
        let len = self.len.load();
        let mut cursor = self.lock_cursor();
        let max = self.max_timestamp_ms.load(Ordering::Relaxed);
        if len > 0 && cursor.last_time_entry_ms.is_none_or(|t| max > t) {
            let rel = cursor.last_batch_rel;
            if self.time_index.push(max, rel) {
                cursor.last_time_entry_ms = Some(max);
            }
        }
        drop(cursor);
        self.offset_index.file().trim()?;
        self.time_index.file().trim()?;
        // Readers only touch bytes below the highest length ever published, so shrinking the sparse
        // tail down to that under the live maps is safe (a truncated suffix stays, zeroed, until reopen).
        io::set_len(&self.file, &self.log_path, len.max(self.high_len.load()))
            .ctx("trim segment", &self.log_path)?;
        Ok(())
    }

    /// Shrinks both index files to their entries, so a reopen counts entries from the file length.
    pub(crate) fn trim_indexes(&self) -> Result<()> {
        self.offset_index.file().trim()?;
        self.time_index.file().trim()
    }

    /// fdatasync of the log file: every batch appended before the call is durable after it.
    pub(crate) fn sync_data(&self) -> Result<()> {
        io::sync_data(&self.file, &self.log_path).ctx("fsync segment", &self.log_path)
    }

    /// fsync of the log and both indexes (on seal and clean close).
    pub(crate) fn sync_all(&self) -> Result<()> {
        self.sync_data()?;
        self.offset_index.file().sync()?;
        self.time_index.file().sync()
    }

    /// Drops cached pages of this segment's file below `len - window` (already fsynced by the caller).
    pub(crate) fn drop_cache_behind(&self, window: u64) {
        // Page-aligned, so the ranges given to madvise start on a page of the map.
        let upto = self.len.load().saturating_sub(window) & !(page_size() - 1);
        let from = self.cache_dropped_upto.load(Ordering::Relaxed);
        if upto <= from {
            return;
        }
        // Pages this process touched through the map (reads that served fetches and replication)
        // are mapped, and the kernel does not drop mapped pages: unmap the range first. The map is
        // a shared read-only file mapping, so MADV_DONTNEED only drops our page-table entries; a
        // later read faults the bytes back in from the file. Without this a leader's cache grew
        // by everything it replicated, and fresh page-cache pages cost ~5x a reused one here.
        if upto <= self.data.len() as u64 {
            // SAFETY: [from, upto) lies inside the map (checked above; `from` is page-aligned,
            // an earlier `upto`, and the map starts page-aligned); MADV_DONTNEED on a shared
            // file mapping changes no file contents.
            let rc = unsafe {
                libc::madvise(
                    self.data.as_ptr().add(from as usize) as *mut libc::c_void,
                    (upto - from) as usize,
                    libc::MADV_DONTNEED,
                )
            };
            if rc != 0 {
                // Only costs memory (the pages stay cached); say so once per segment and range.
                tracing::debug!(
                    path = %self.log_path.display(),
                    from,
                    upto,
                    error = %std::io::Error::last_os_error(),
                    "could not unmap pages behind the page-cache window"
                );
            }
        }
        // SAFETY: plain syscall on our own file descriptor; advice never changes file contents.
        let rc = unsafe {
            libc::posix_fadvise(
                std::os::unix::io::AsRawFd::as_raw_fd(&self.file),
                from as libc::off_t,
                (upto - from) as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            )
        };
        if rc == 0 {
            self.cache_dropped_upto.store(upto, Ordering::Relaxed);
        }
    }

    /// Drops every batch from byte `pos` on: zeroes the bytes (readers of the suffix see zeros, never a
    /// torn batch, and recovery can never revive it), retreats the published ends, trims the indexes and
    /// fsyncs. Single writer only.
    pub(crate) fn truncate_to(&self, pos: u64, next_offset: u64) -> Result<()> {
        let len = self.len.load();
        debug_assert!(pos <= len);
        // Before any byte changes: a cold reader holding bytes of this segment sees the count move
        // and reads them again.
        self.truncations.fetch_add(1, Ordering::AcqRel);
        self.len.retreat(pos);
        self.next_offset.retreat(next_offset.max(self.base_offset));
        if self.verified.load() > pos {
            self.verified.retreat(pos);
        }
        io::zero_range(&self.file, &self.log_path, pos, len)
            .ctx("zero truncated suffix", &self.log_path)?;
        self.offset_index.truncate_to_position(pos as u32);
        let rel = (next_offset.saturating_sub(self.base_offset)).min(u64::from(u32::MAX)) as u32;
        self.time_index.truncate_to_offset(rel);
        // Recompute the timestamps and the index cursor from what is left.
        let mut cursor = self.lock_cursor();
        let mut p = 0u64;
        let mut max = i64::MIN;
        let mut last_entry_pos = 0;
        if let Some((_, ep)) = self.offset_index.floor(u32::MAX) {
            last_entry_pos = u64::from(ep);
        }
        while p < pos {
            let h = self.header_at(p, pos)?;
            max = max.max(h.max_timestamp_ms);
            cursor.last_batch_rel = (h.base_offset - self.base_offset) as u32;
            p += u64::from(h.length);
        }
        cursor.bytes_since_entry = pos - last_entry_pos;
        cursor.last_time_entry_ms = self.time_index.last().map(|(t, _)| t);
        drop(cursor);
        self.max_timestamp_ms.store(max, Ordering::Relaxed);
        if pos == 0 {
            self.first_timestamp_ms.store(i64::MIN, Ordering::Relaxed);
        }
        self.sync_all()
    }
}
