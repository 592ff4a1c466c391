//! A segment: one log file of whole batches, `<base offset>.log`, with its sparse offset and time
//! indexes. The log file is memory-mapped once; reads return `Bytes` slices of that map (no copy), and
//! appends go through `pwritev` below the published end so readers never see a partial batch.
//!
//! Positions (a segment's own vocabulary, all in bytes of its log file):
//! - `len`: bytes of whole, appended batches; readers read only below it.
//! - `verified`: every batch below it had both CRCs checked since this process opened the segment.
//!
//! Only truncation moves `len` back.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};
use sluice_protocol::batch::{self, BatchError, BatchHeader, MAX_BATCH_LEN};
use sluice_protocol::RecordBatch;

use crate::config::LogConfig;
use crate::error::{IoContext, Result, StorageError};
use crate::index::{OffsetIndex, TimeIndex};
use crate::io::{self, segment_path};
use crate::publish::Watermark;

/// How much an existing segment's files are trusted when it is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenMode {
    /// Closed cleanly with `len` valid bytes: trust the files and the indexes.
    Clean { len: u64 },
    /// Sealed and fsynced before the recovery checkpoint: trust the bytes, check the indexes.
    Trusted,
    /// Possibly torn: verify every batch, truncate at the first bad one, rebuild the indexes.
    Recover,
}

/// What opening a segment found.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) segment: Segment,
    /// Where a recovery scan stopped and why, if it stopped before the end of the file for a reason
    /// other than reaching zeroed (never written) space.
    pub(crate) truncated: Option<(u64, BatchError)>,
    /// Bytes past the valid end that recovery removed.
    pub(crate) dropped_bytes: u64,
    pub(crate) index_rebuilt: bool,
}

/// Writer-side index bookkeeping; only the single writer touches it.
#[derive(Debug, Default)]
struct IndexCursor {
    bytes_since_entry: u64,
    last_time_entry_ms: Option<i64>,
    last_batch_rel: u32,
}

/// One segment of a partition log.
#[derive(Debug)]
pub(crate) struct Segment {
    base_offset: u64,
    log_path: PathBuf,
    file: File,
    data: Bytes,
    len: Watermark,
    /// Highest `len` ever published: readers may hold bytes up to it, so the file never shrinks below.
    high_len: Watermark,
    next_offset: Watermark,
    verified: Watermark,
    max_timestamp_ms: AtomicI64,
    first_timestamp_ms: AtomicI64,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    cursor: Mutex<IndexCursor>,
    index_interval_bytes: u64,
    /// Page-cache pages below this position were dropped (see `LogConfig::page_cache_window_bytes`).
    cache_dropped_upto: std::sync::atomic::AtomicU64,
    /// Reads were prefetched up to here (see `Segment::read`).
    prefetched_upto: std::sync::atomic::AtomicU64,
}

/// The system's page size (4 KiB if it cannot be read), a power of two.
fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf only reads a system constant.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(n)
            .ok()
            .filter(|n| n.is_power_of_two())
            .unwrap_or(4096)
    })
}

/// Bytes a writable segment's map covers, so one map serves every append to it.
fn capacity(config: &LogConfig) -> u64 {
    config.segment_bytes.max(MAX_BATCH_LEN as u64)
}

fn time_index_bytes(config: &LogConfig) -> u64 {
    config.max_index_bytes / 8 * 12
}

fn map(file: &File, len: u64, path: &Path) -> Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: Sluice never shrinks a log file below bytes a reader may still read through this map:
    // readers read below the published `len`, and truncation zeroes instead of shrinking.
    let m: Mmap =
        unsafe { MmapOptions::new().len(len as usize).map(file) }.ctx("map segment", path)?;
    Ok(Bytes::from_owner(m))
}

impl Segment {
    /// Creates a new, empty, writable segment (replacing any files of that name). `suffix` names a
    /// side copy (compaction writes `.cleaned` files).
    pub(crate) fn create(
        dir: &Path,
        base_offset: u64,
        suffix: &str,
        config: &LogConfig,
    ) -> Result<Segment> {
        let paths = SegmentPaths::new(dir, base_offset, suffix);
        for p in [&paths.index, &paths.timeindex] {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).ctx("remove stale index", p),
            }
        }
        let file = io::create(
            &paths.log,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true),
        )
        .ctx("create segment", &paths.log)?;
        let data = map(&file, capacity(config), &paths.log)?;
        let offset_index = OffsetIndex::open(&paths.index, config.max_index_bytes, Some(0), true)?;
        let time_index =
            TimeIndex::open(&paths.timeindex, time_index_bytes(config), Some(0), true)?;
        Ok(Segment::assemble(
            base_offset,
            paths.log,
            file,
            data,
            (offset_index, time_index),
            0,
            0,
            config,
        ))
    }

    /// A segment handle over opened files, with nothing restored yet: `len` bytes of whole batches,
    /// `verified` of them already CRC-checked.
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        base_offset: u64,
        log_path: PathBuf,
        file: File,
        data: Bytes,
        (offset_index, time_index): (OffsetIndex, TimeIndex),
        len: u64,
        verified: u64,
        config: &LogConfig,
    ) -> Segment {
        Segment {
            base_offset,
            offset_index,
            time_index,
            log_path,
            file,
            data,
            len: Watermark::new(len),
            high_len: Watermark::new(len),
            next_offset: Watermark::new(base_offset),
            verified: Watermark::new(verified),
            max_timestamp_ms: AtomicI64::new(i64::MIN),
            first_timestamp_ms: AtomicI64::new(i64::MIN),
            cursor: Mutex::new(IndexCursor::default()),
            index_interval_bytes: config.index_interval_bytes,
            cache_dropped_upto: std::sync::atomic::AtomicU64::new(0),
            prefetched_upto: std::sync::atomic::AtomicU64::new(0),
        }
    }

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

    /// Highest length ever published by this handle.
    pub(crate) fn high_len(&self) -> u64 {
        self.high_len.load()
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

        // Scan with a temporary map: the file may still be shrunk below, and no map may outlive that.
        let scan_map = map(&file, file_len, &paths.log)?;
        let mut truncated = None;
        let mut index_rebuilt = false;
        let (valid_len, rebuild) = match mode {
            OpenMode::Clean { len } => (len, false),
            OpenMode::Trusted => (file_len, false),
            OpenMode::Recover => {
                let scan = scan(&scan_map, base_offset, true);
                if let Some(err) = scan.error {
                    // Zeros up to the end of a sealed segment are the zeroed suffix of a truncation
                    // (kept while readers may map it): its end, not damage. Zeros followed by data are
                    // a hole (an unsynced segment after a machine crash): everything after is cut.
                    let zero_tail = err.1 == BatchError::Empty
                        && all_zero(&scan_map[scan.valid_len as usize..]);
                    if !zero_tail || writable {
                        truncated = Some(err);
                    }
                }
                (scan.valid_len, true)
            }
        };
        drop(scan_map);
        let dropped_bytes = if matches!(mode, OpenMode::Recover) && valid_len < file_len {
            // Cut the tail off, so no stale batch past the valid end can be read back by a later
            // recovery once new appends leave a gap before it.
            io::set_len(&file, &paths.log, valid_len).ctx("truncate segment", &paths.log)?;
            if truncated.is_some() {
                file_len - valid_len
            } else {
                0 // only a zeroed suffix was cut
            }
        } else {
            0
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
        let walked = seg.restore_state(rebuild || index_rebuilt, next_base)?;
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

    /// Cheap structural checks of the indexes against the log: increasing entries, positions inside the
    /// log, and the last offset entry pointing at a batch that holds its offset.
    fn indexes_look_sane(&self, len: u64) -> bool {
        let n = self.offset_index.len();
        let mut prev: Option<(u32, u32)> = None;
        for i in 0..n {
            let (rel, pos) = self.offset_index.entry(i);
            if u64::from(pos) >= len || prev.is_some_and(|(r, p)| rel <= r || pos <= p) {
                return false;
            }
            prev = Some((rel, pos));
        }
        if let Some((rel, pos)) = prev {
            match batch::BatchHeader::decode(&self.data[pos as usize..len as usize]) {
                Ok(h) => {
                    let off = self.base_offset + u64::from(rel);
                    if h.base_offset > off || h.last_offset() < off {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        let mut prev_t: Option<(i64, u32)> = None;
        for i in 0..self.time_index.len() {
            let (ts, rel) = self.time_index.entry(i);
            if prev_t.is_some_and(|(t, r)| ts < t || rel < r) {
                return false;
            }
            prev_t = Some((ts, rel));
        }
        true
    }

    /// Walks batch headers (no CRC) to restore the next offset, timestamps and, if `reindex`, the
    /// indexes. Returns false if a header in the valid range does not decode.
    fn restore_state(&self, reindex: bool, next_base: Option<u64>) -> Result<bool> {
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
                Ok(h) if pos + u64::from(h.length) <= len => h,
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

    fn lock_cursor(&self) -> std::sync::MutexGuard<'_, IndexCursor> {
        crate::sync::lock(&self.cursor)
    }

    fn maybe_index(
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

    /// fsync of the log and both indexes (on seal and clean close).
    pub(crate) fn sync_all(&self) -> Result<()> {
        self.sync_data()?;
        self.offset_index.file().sync()?;
        self.time_index.file().sync()
    }

    /// Reads whole batches starting with the one that holds `offset` (or the first after it), up to
    /// `max_bytes` but always at least one batch. Returns the bytes (a slice of the map) and the offset
    /// after the last batch returned, or `None` if no batch at or after `offset` is in this segment.
    /// Batches at or past `limit_offset` (the log end the caller loaded) are not returned: the
    /// segment publishes a batch a moment before the log end moves past it, and a read must never
    /// hand out an offset the log does not admit to yet.
    pub(crate) fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        limit_offset: u64,
    ) -> Result<Option<(Bytes, u64)>> {
        let end = self.len.load();
        let Some(start) = self.locate(offset, end)? else {
            return Ok(None);
        };
        let mut pos = start;
        let mut next = offset;
        while pos < end {
            let h = self.header_at(pos, end)?;
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
        self.prefetch(start, (pos + PREFETCH_AHEAD_BYTES).min(end));
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
    fn floor_position(&self, rel: u32, end: u64) -> u64 {
        let mut rel = rel;
        loop {
            match self.offset_index.floor(rel) {
                Some((_, p)) if u64::from(p) < end => return u64::from(p),
                Some((r, _)) if r > 0 => rel = r - 1,
                _ => return 0,
            }
        }
    }

    fn header_at(&self, pos: u64, end: u64) -> Result<BatchHeader> {
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

    /// Drops every batch from byte `pos` on: zeroes the bytes (readers of the suffix see zeros, never a
    /// torn batch, and recovery can never revive it), retreats the published ends, trims the indexes and
    /// fsyncs. Single writer only.
    pub(crate) fn truncate_to(&self, pos: u64, next_offset: u64) -> Result<()> {
        let len = self.len.load();
        debug_assert!(pos <= len);
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

    pub(crate) fn base_offset(&self) -> u64 {
        self.base_offset
    }

    /// Offset after the segment's last batch.
    pub(crate) fn next_offset(&self) -> u64 {
        self.next_offset.load()
    }

    /// Bytes of whole batches.
    pub(crate) fn len(&self) -> u64 {
        self.len.load()
    }

    pub(crate) fn max_timestamp_ms(&self) -> i64 {
        self.max_timestamp_ms.load(Ordering::Relaxed)
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
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

/// How far past a read the kernel is asked to read ahead (see `Segment::read`).
const PREFETCH_AHEAD_BYTES: u64 = 16 << 20;

fn all_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// Result of a recovery scan over a mapped log file.
struct Scan {
    valid_len: u64,
    error: Option<(u64, BatchError)>,
}

/// Walks batches from the start, checking both CRCs and that offsets never go backwards, and stops at
/// the first batch that fails (a zeroed header means the end of written data).
fn scan(data: &[u8], base_offset: u64, check_crc: bool) -> Scan {
    let mut pos = 0usize;
    let mut expected = base_offset;
    while pos < data.len() {
        let result = if check_crc {
            batch::check(&data[pos..])
        } else {
            BatchHeader::decode(&data[pos..])
        };
        match result {
            Ok(h) if h.base_offset >= expected && pos + h.length as usize <= data.len() => {
                expected = h.next_offset();
                pos += h.length as usize;
            }
            Ok(h) if h.base_offset < expected => {
                return Scan {
                    valid_len: pos as u64,
                    error: Some((
                        pos as u64,
                        BatchError::MalformedRecord {
                            index: 0,
                            reason: "batch offsets go backwards",
                        },
                    )),
                };
            }
            Ok(h) => {
                return Scan {
                    valid_len: pos as u64,
                    error: Some((
                        pos as u64,
                        BatchError::Truncated {
                            needed: h.length as usize,
                            available: data.len() - pos,
                        },
                    )),
                };
            }
            Err(e) => {
                return Scan {
                    valid_len: pos as u64,
                    error: Some((pos as u64, e)),
                };
            }
        }
    }
    Scan {
        valid_len: pos as u64,
        error: None,
    }
}

/// The three file names of a segment.
#[derive(Debug)]
pub(crate) struct SegmentPaths {
    pub(crate) log: PathBuf,
    pub(crate) index: PathBuf,
    pub(crate) timeindex: PathBuf,
}

impl SegmentPaths {
    pub(crate) fn new(dir: &Path, base_offset: u64, suffix: &str) -> Self {
        let with = |ext: &str| {
            let mut p = segment_path(dir, base_offset, ext).into_os_string();
            p.push(suffix);
            PathBuf::from(p)
        };
        SegmentPaths {
            log: with("log"),
            index: with("index"),
            timeindex: with("timeindex"),
        }
    }
}
