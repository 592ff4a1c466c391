//! A segment: one log file of whole batches, `<base offset>.log`, with its sparse offset and time
//! indexes. The log file is memory-mapped once; reads return `Bytes` slices of that map (no copy), and
//! appends go through `pwritev` below the published end so readers never see a partial batch.
//!
//! Positions (a segment's own vocabulary, all in bytes of its log file):
//! - `len`: bytes of whole, appended batches; readers read only below it.
//! - `verified`: every batch below it had both CRCs checked since this process opened the segment.
//!
//! Only truncation moves `len` back.
//!
//! Files of this module: `open` (opening an existing segment after a clean or unclean stop),
//! `recover` (the recovery scan that cuts a torn or corrupt tail), `write` (append, seal, sync,
//! truncation: the single writer's side), `read` (readers' side: locate, verify, serve) and `cold`
//! (direct reads of byte ranges for the cold-read path, `crate::cold`).

mod cold;
mod open;
mod read;
mod recover;
mod write;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};
use sluice_protocol::batch::{BatchError, MAX_BATCH_LEN};

use crate::config::LogConfig;
use crate::error::{IoContext, Result};
use crate::index::{OffsetIndex, TimeIndex, OFFSET_ENTRY_LEN, TIME_ENTRY_LEN};
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
    /// The descriptor cold reads use, opened on the first one (see `segment::cold`).
    direct: std::sync::OnceLock<cold::DirectFile>,
    /// Truncations so far; raised before a truncation touches a byte (see `Segment::truncations`).
    truncations: std::sync::atomic::AtomicU64,
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
    // As many time entries as the offset index can hold entries.
    config.max_index_bytes / OFFSET_ENTRY_LEN as u64 * TIME_ENTRY_LEN as u64
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
            match io::remove_file(p) {
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
            direct: std::sync::OnceLock::new(),
            truncations: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Highest length ever published by this handle.
    pub(crate) fn high_len(&self) -> u64 {
        self.high_len.load()
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
}

fn all_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
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
