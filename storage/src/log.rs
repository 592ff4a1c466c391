//! [`PartitionLog`]: a partition's ordered list of segments with one writer and many readers.
//!
//! Positions of the whole log, as stated invariants:
//! - `log_start_offset <= flushed_offset <= log_end_offset` (flushed may lag start after retention);
//! - `log_end_offset` (the offset the next append gets) only moves back through
//!   [`PartitionLog::truncate_after`];
//! - `flushed_offset`: every batch below it is on disk (fsynced); only truncation moves it back.
//!
//! The interval flusher thread lives in `crate::flusher`; reads in `crate::read`.
//!
//! Locks, always taken in this order: `compaction`, `flush`, `writer`, `segments`. Readers take only a
//! brief read lock on `segments` to clone the current list.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use sluice_protocol::batch::{self, HEADER_LEN};
use sluice_protocol::RecordBatch;

use crate::checkpoint::Checkpoint;
use crate::config::{FlushPolicy, LogConfig};
use crate::error::{Result, StorageError};
use crate::io::sync_dir;
use crate::publish::Watermark;
use crate::segment::Segment;

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: u64,
    pub last_offset: u64,
    /// Base offset of the segment holding the batch.
    pub segment_base: u64,
    /// Byte position of the batch in its segment.
    pub position: u64,
    /// Whether the batch was fsynced before `append` returned (flush policy `always`).
    pub flushed: bool,
}

/// A partition log. Cheap to clone; clones share the same log.
#[derive(Debug, Clone)]
pub struct PartitionLog {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    pub(crate) segments: RwLock<Arc<Vec<Arc<Segment>>>>,
    pub(crate) writer: Mutex<Writer>,
    pub(crate) flush_lock: Mutex<()>,
    pub(crate) compaction_lock: Mutex<()>,
    pub(crate) log_start: Watermark,
    pub(crate) log_end: Watermark,
    pub(crate) flushed: Watermark,
    pub(crate) failed: Mutex<Option<String>>,
    pub(crate) signal: Arc<crate::flusher::FlushSignal>,
    /// Flush rounds (each one fsync of the active segment, covering every append before it).
    pub(crate) flush_rounds: std::sync::atomic::AtomicU64,
    /// This log's cold readers, when the config has cold reads and a page-cache window.
    pub(crate) cold: Option<Arc<crate::cold::stream::StreamSet>>,
}

/// State only the writer touches.
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) active: Arc<Segment>,
    /// Sealed segments with bytes not yet fsynced (policy `never`).
    pub(crate) unsynced: Vec<Arc<Segment>>,
    pub(crate) unflushed_bytes: u64,
    pub(crate) recovery_base: u64,
    pub(crate) closed: bool,
}

pub(crate) use crate::sync::lock;

impl Drop for Inner {
    fn drop(&mut self) {
        self.signal.stop();
    }
}

impl PartitionLog {
    /// Opens (creating if needed) the log in `dir`, recovering it if the last shutdown was not clean.
    pub fn open(
        dir: impl AsRef<Path>,
        config: LogConfig,
    ) -> Result<(PartitionLog, crate::RecoveryReport)> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let (segments, report, recovery_base) = crate::recovery::open_segments(&dir, &config)?;
        let active = segments
            .last()
            .cloned()
            .ok_or_else(|| StorageError::Config("recovery produced no segment".into()))?;
        let log_start = segments.first().map_or(0, |s| s.base_offset());
        let log_end = active.next_offset();
        let inner = Arc::new(Inner {
            dir,
            segments: RwLock::new(Arc::new(segments)),
            writer: Mutex::new(Writer {
                active,
                unsynced: Vec::new(),
                unflushed_bytes: 0,
                recovery_base,
                closed: false,
            }),
            flush_lock: Mutex::new(()),
            compaction_lock: Mutex::new(()),
            log_start: Watermark::new(log_start),
            log_end: Watermark::new(log_end),
            // A clean shutdown fsynced everything, and recovery fsyncs what it kept before returning.
            flushed: Watermark::new(log_end),
            failed: Mutex::new(None),
            signal: Arc::new(crate::flusher::FlushSignal::default()),
            flush_rounds: std::sync::atomic::AtomicU64::new(0),
            cold: match (&config.cold_reads, config.page_cache_window_bytes) {
                (Some(c), Some(window)) => {
                    Some(crate::cold::stream::StreamSet::new(c.clone(), window))
                }
                _ => None,
            },
            config,
        });
        // Only `Interval` has a flusher thread; `External` logs (hundreds per broker) have none.
        if let FlushPolicy::Interval { max_delay, .. } = inner.config.flush {
            crate::flusher::spawn(&inner, max_delay)?;
        }
        Ok((PartitionLog { inner }, report))
    }

    /// Appends one batch (exactly one, CRC-checked here) and assigns its offsets. What the return
    /// means depends on the flush policy: written to the page cache (`never`, `interval`) or fsynced
    /// (`always`).
    pub fn append(&self, batch: &[u8]) -> Result<AppendInfo> {
        self.append_raft(batch, 0, 0)
    }

    /// [`PartitionLog::append`] recording the raft term and index the batch was replicated under.
    pub fn append_raft(
        &self,
        batch_bytes: &[u8],
        raft_term: u64,
        raft_index: u64,
    ) -> Result<AppendInfo> {
        let h = batch::check(batch_bytes).map_err(StorageError::InvalidBatch)?;
        self.append_checked(batch_bytes, h, raft_term, raft_index, None)
    }

    /// Appends a batch that was already checked: a [`RecordBatch`] exists only after both its CRCs
    /// passed, so the log does not check them a second time (the caller, typically the broker
    /// receiving it from a producer, paid for that once).
    pub fn append_batch(
        &self,
        batch: &RecordBatch,
        raft_term: u64,
        raft_index: u64,
    ) -> Result<AppendInfo> {
        self.append_checked(
            batch.as_bytes(),
            *batch.header(),
            raft_term,
            raft_index,
            None,
        )
    }

    /// [`PartitionLog::append_batch`] at the batch's own base offset, which may lie past the log
    /// end (a copy of a compacted log keeps its offset gaps). An offset below the log end is refused.
    pub fn append_batch_at_own_offset(
        &self,
        batch: &RecordBatch,
        raft_term: u64,
        raft_index: u64,
    ) -> Result<AppendInfo> {
        let h = *batch.header();
        self.append_checked(
            batch.as_bytes(),
            h,
            raft_term,
            raft_index,
            Some(h.base_offset),
        )
    }

    fn append_checked(
        &self,
        batch_bytes: &[u8],
        h: sluice_protocol::BatchHeader,
        raft_term: u64,
        raft_index: u64,
        at: Option<u64>,
    ) -> Result<AppendInfo> {
        let inner = &*self.inner;
        if h.record_count == 0 {
            return Err(StorageError::EmptyBatch);
        }
        if h.length as usize != batch_bytes.len() {
            return Err(StorageError::BatchLength {
                declared: h.length as usize,
                actual: batch_bytes.len(),
            });
        }
        let mut w = lock(&inner.writer);
        inner.check_usable(&w)?;
        let end = inner.log_end.load();
        let base = match at {
            None => end,
            Some(o) if o >= end => o,
            Some(o) => {
                return Err(StorageError::OffsetOutOfRange {
                    offset: o,
                    log_start: inner.log_start.load(),
                    log_end: end,
                })
            }
        };
        let last = base + u64::from(h.last_offset_delta);
        // A segment's offsets, relative to its base (at most the log end after a roll), are u32s
        // in its index: refuse a batch (a network input) that would not fit even a new segment.
        if last - end >= u64::from(u32::MAX) {
            return Err(StorageError::OffsetOutOfRange {
                offset: last,
                log_start: inner.log_start.load(),
                log_end: end,
            });
        }
        if w.active
            .needs_roll(&inner.config, u64::from(h.length), last, h.max_timestamp_ms)
        {
            inner.roll(&mut w)?;
        }
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&batch_bytes[..HEADER_LEN]);
        batch::patch_position(&mut header, base, raft_term, raft_index)
            .map_err(StorageError::InvalidBatch)?;
        let mut patched = h;
        patched.base_offset = base;
        let position = match w
            .active
            .append(&header, &batch_bytes[HEADER_LEN..], &patched)
        {
            Ok(p) => p,
            Err(e) => return Err(inner.fail(e)),
        };
        inner.log_end.publish(last + 1);
        w.unflushed_bytes += u64::from(h.length);
        let info = AppendInfo {
            base_offset: base,
            last_offset: last,
            segment_base: w.active.base_offset(),
            position,
            flushed: false,
        };
        match inner.config.flush {
            // The owner of an `External` log flushes on its own schedule.
            FlushPolicy::Never | FlushPolicy::External => Ok(info),
            FlushPolicy::Interval { max_bytes, .. } => {
                if w.unflushed_bytes >= max_bytes {
                    w.unflushed_bytes = 0;
                    drop(w);
                    inner.signal.request();
                } else {
                    drop(w);
                    inner.signal.arm();
                }
                Ok(info)
            }
            FlushPolicy::Always => {
                drop(w);
                inner.flush_upto(last + 1)?;
                Ok(AppendInfo {
                    flushed: true,
                    ..info
                })
            }
        }
    }

    /// fsyncs everything appended so far (group commit: concurrent callers share one fsync). Returns
    /// the flushed offset.
    pub fn flush(&self) -> Result<u64> {
        let end = self.inner.log_end.load();
        self.inner.flush_upto(end)?;
        Ok(self.inner.flushed.load())
    }

    /// The offset of the first record whose timestamp is at or after `timestamp_ms`, or `None` if every
    /// record is older.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<u64>> {
        let segments = self.inner.segments_snapshot();
        for seg in segments.iter() {
            if let Some(off) = seg.offset_for_timestamp(timestamp_ms)? {
                return Ok(Some(off));
            }
        }
        Ok(None)
    }

    /// Drops every batch after the one whose last offset is `last_kept` (`None`: drop everything), for
    /// an uncommitted suffix a new raft leader overrides. `last_kept` must end a stored batch. Readers
    /// holding bytes of the dropped suffix see zeros, never a torn batch. Returns the new log end.
    pub fn truncate_after(&self, last_kept: Option<u64>) -> Result<u64> {
        let inner = &*self.inner;
        let _f = lock(&inner.flush_lock);
        let mut w = lock(&inner.writer);
        inner.check_usable(&w)?;
        crate::truncate::truncate_after(inner, &mut w, last_kept).map_err(|e| match e {
            // Refused before anything changed.
            StorageError::NotBatchBoundary(_) | StorageError::OffsetOutOfRange { .. } => e,
            // Anything else may have left the files half-way: stop rather than acknowledge into them.
            e => inner.fail(e),
        })
    }

    /// Deletes the oldest segments as the retention settings say (never the active one).
    pub fn apply_retention(&self, now_ms: i64) -> Result<crate::RetentionReport> {
        crate::retention::apply(&self.inner, now_ms, u64::MAX)
    }

    /// [`PartitionLog::apply_retention`] deleting only segments that end at or below `limit_offset`:
    /// a raft log passes the offset below which raft has purged its entries, so retention never
    /// deletes an entry raft may still need to replicate.
    pub fn apply_retention_below(
        &self,
        now_ms: i64,
        limit_offset: u64,
    ) -> Result<crate::RetentionReport> {
        crate::retention::apply(&self.inner, now_ms, limit_offset)
    }

    /// Key compaction of the sealed segments: keeps the latest record per key, drops tombstones older
    /// than the tombstone retention. Appends go on meanwhile; only the final swap takes the writer lock.
    pub fn compact(&self, now_ms: i64) -> Result<crate::CompactionReport> {
        crate::compaction::compact(&self.inner, now_ms, u64::MAX)
    }

    /// [`PartitionLog::compact`] of only the sealed segments ending at or below `limit_offset` (see
    /// [`PartitionLog::apply_retention_below`]).
    pub fn compact_below(&self, now_ms: i64, limit_offset: u64) -> Result<crate::CompactionReport> {
        crate::compaction::compact(&self.inner, now_ms, limit_offset)
    }

    /// Flushes everything, trims the active segment's files and records a clean checkpoint, so the next
    /// open does not scan. Further appends fail with [`StorageError::Closed`]; reads keep working.
    pub fn close(&self) -> Result<()> {
        let inner = &*self.inner;
        inner.signal.stop();
        let _f = lock(&inner.flush_lock);
        let mut w = lock(&inner.writer);
        if w.closed {
            return Ok(());
        }
        inner.check_usable(&w)?;
        for seg in w.unsynced.drain(..) {
            seg.sync_all().map_err(|e| inner.fail(e))?;
        }
        let active = w.active.clone();
        active.seal().map_err(|e| inner.fail(e))?;
        active.sync_all().map_err(|e| inner.fail(e))?;
        inner.flushed.raise(inner.log_end.load());
        Checkpoint {
            clean: true,
            recovery_base: active.base_offset(),
            active_base: active.base_offset(),
            active_len: active.len(),
            next_offset: inner.log_end.load(),
        }
        .write(&inner.dir)
        .map_err(|e| inner.fail(e))?;
        w.closed = true;
        Ok(())
    }

    /// First offset still in the log.
    pub fn log_start_offset(&self) -> u64 {
        self.inner.log_start.load()
    }

    /// The offset the next append gets.
    pub fn log_end_offset(&self) -> u64 {
        self.inner.log_end.load()
    }

    /// Every batch below this offset is fsynced.
    pub fn flushed_offset(&self) -> u64 {
        self.inner.flushed.load()
    }

    /// How many flush rounds (fsyncs of the active segment) have run; with group commit, fewer than
    /// the `always` appends they covered.
    pub fn flush_rounds(&self) -> u64 {
        self.inner
            .flush_rounds
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes of batches in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.inner.segments_snapshot().iter().map(|s| s.len()).sum()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<u64> {
        self.inner
            .segments_snapshot()
            .iter()
            .map(|s| s.base_offset())
            .collect()
    }

    /// The directory holding the log.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

impl Inner {
    pub(crate) fn segments_snapshot(&self) -> Arc<Vec<Arc<Segment>>> {
        crate::sync::read(&self.segments).clone()
    }

    pub(crate) fn set_segments(&self, list: Vec<Arc<Segment>>) {
        *crate::sync::write(&self.segments) = Arc::new(list);
    }

    pub(crate) fn check_usable(&self, w: &Writer) -> Result<()> {
        if let Some(msg) = lock(&self.failed).as_ref() {
            return Err(StorageError::Failed(msg.clone()));
        }
        if w.closed {
            return Err(StorageError::Closed);
        }
        Ok(())
    }

    /// Stops the log after an I/O error on the write path: a failed fsync leaves the page cache in an
    /// unknown state, so nothing is retried and every later write fails.
    pub(crate) fn fail(&self, e: StorageError) -> StorageError {
        tracing::error!(dir = %self.dir.display(), error = %e, "partition log stopped");
        let mut f = lock(&self.failed);
        if f.is_none() {
            *f = Some(e.to_string());
        }
        e
    }

    /// Seals the active segment and starts a new one at the log end. Writer lock held.
    pub(crate) fn roll(&self, w: &mut Writer) -> Result<()> {
        let old = w.active.clone();
        old.seal().map_err(|e| self.fail(e))?;
        let base = self.log_end.load();
        let new =
            Arc::new(Segment::create(&self.dir, base, "", &self.config).map_err(|e| self.fail(e))?);
        sync_dir(&self.dir).map_err(|e| self.fail(e))?;
        let mut list: Vec<Arc<Segment>> = self.segments_snapshot().as_ref().clone();
        list.push(new.clone());
        self.set_segments(list);
        w.active = new;
        tracing::debug!(dir = %self.dir.display(), base, "rolled segment");
        if self.config.flush == FlushPolicy::Never {
            w.unsynced.push(old);
        } else {
            // Interval, Always, External: make the sealed segment durable and move the recovery
            // point past it, so an unclean restart scans only the active segment.
            for seg in w.unsynced.drain(..) {
                seg.sync_all().map_err(|e| self.fail(e))?;
            }
            old.sync_all().map_err(|e| self.fail(e))?;
            w.recovery_base = base;
            Checkpoint {
                clean: false,
                recovery_base: base,
                active_base: base,
                active_len: 0,
                next_offset: base,
            }
            .write(&self.dir)
            .map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    /// Makes every batch below `target` durable. One caller fsyncs for everyone who appended before it
    /// started (group commit); the others find `flushed` already past their target.
    pub(crate) fn flush_upto(&self, target: u64) -> Result<()> {
        if self.flushed.load() >= target {
            return Ok(());
        }
        let _f = lock(&self.flush_lock);
        if self.flushed.load() >= target {
            return Ok(());
        }
        let (end, to_sync) = {
            let mut w = lock(&self.writer);
            self.check_usable(&w)?;
            let mut v: Vec<Arc<Segment>> = w.unsynced.drain(..).collect();
            v.push(w.active.clone());
            w.unflushed_bytes = 0;
            (self.log_end.load(), v)
        };
        let n = to_sync.len();
        for (i, seg) in to_sync.iter().enumerate() {
            // Sealed segments need their indexes durable too; the active one's are rebuilt by recovery.
            let r = if i + 1 < n {
                seg.sync_all()
            } else {
                seg.sync_data()
            };
            if let Err(e) = r {
                return Err(self.fail(e));
            }
        }
        if let Some(window) = self.config.page_cache_window_bytes {
            // Keep the newest `window` bytes of the whole log cached, newest segment first.
            let mut behind = 0u64;
            for seg in self.segments_snapshot().iter().rev() {
                seg.drop_cache_behind(window.saturating_sub(behind));
                behind = behind.saturating_add(seg.len());
            }
        }
        self.flushed.raise(end);
        self.flush_rounds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}
