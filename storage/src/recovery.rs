//! Opening a log directory: finish or discard an interrupted compaction swap, read the checkpoint,
//! trust what it says is durable, scan the rest batch by batch, and truncate a torn or corrupt tail.
//! [`RecoveryReport`] says what was found and dropped; the same facts are logged.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use crate::checkpoint::{self, Checkpoint};
use crate::config::LogConfig;
use crate::error::{IoContext, Result};
use crate::io::{parse_segment_name, sync_dir};
use crate::segment::{OpenMode, Segment, SegmentPaths};

/// What opening a log found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The last shutdown was clean: nothing was scanned.
    pub clean_shutdown: bool,
    /// Segments whose batches were all CRC-checked because they were past the recovery checkpoint.
    pub segments_scanned: usize,
    /// Segments whose indexes were rebuilt from the log.
    pub indexes_rebuilt: usize,
    /// The torn or corrupt tail that was cut off, if any.
    pub truncated: Option<TruncatedTail>,
    /// Segments deleted because they followed a truncation point.
    pub segments_deleted: Vec<u64>,
}

/// A tail cut off by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncatedTail {
    pub segment_base: u64,
    /// Byte position in the segment where the first bad batch started.
    pub position: u64,
    /// Bytes removed from that segment.
    pub dropped_bytes: u64,
    pub reason: String,
}

/// Opens every segment of `dir`, recovering as needed. Returns the segments (the last one writable),
/// the report and the recovery base to keep.
pub(crate) fn open_segments(
    dir: &Path,
    config: &LogConfig,
) -> Result<(Vec<Arc<Segment>>, RecoveryReport, u64)> {
    crate::durable::create_dir_durably(dir).ctx("create log directory", dir)?;
    crate::compaction::finish_interrupted_swaps(dir)?;
    let bases = list_segments(dir)?;
    let cp = Checkpoint::read(dir);
    let mut report = RecoveryReport::default();

    if bases.is_empty() {
        let seg = Segment::create(dir, 0, "", config)?;
        sync_dir(dir)?;
        write_open_checkpoint(dir, 0, &seg)?;
        report.clean_shutdown = true;
        return Ok((vec![Arc::new(seg)], report, 0));
    }

    let last_base = bases[bases.len() - 1];
    let clean = cp.is_some_and(|c| c.clean && c.active_base == last_base);
    report.clean_shutdown = clean;
    let recovery_base = cp.map_or(0, |c| c.recovery_base);
    let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(bases.len());
    for (i, &base) in bases.iter().enumerate() {
        let last = i + 1 == bases.len();
        let next_base = bases.get(i + 1).copied();
        let mode = match (clean, last) {
            (true, true) => OpenMode::Clean {
                len: cp.map_or(0, |c| c.active_len),
            },
            (true, false) => OpenMode::Trusted,
            (false, false) if base < recovery_base => OpenMode::Trusted,
            (false, _) => OpenMode::Recover,
        };
        let opened = Segment::open(dir, base, config, mode, last, next_base)?;
        if mode == OpenMode::Recover {
            report.segments_scanned += 1;
        }
        if opened.index_rebuilt {
            report.indexes_rebuilt += 1;
        }
        if let Some(prev) = segments.last() {
            if base < prev.next_offset() {
                tracing::warn!(dir = %dir.display(), base, prev_end = prev.next_offset(),
                    "segment overlaps the previous one");
            }
        }
        if let Some((position, reason)) = opened.truncated {
            tracing::warn!(dir = %dir.display(), segment = base, position,
                dropped_bytes = opened.dropped_bytes, %reason, "recovery truncated a torn or corrupt tail");
            report.truncated = Some(TruncatedTail {
                segment_base: base,
                position,
                dropped_bytes: opened.dropped_bytes,
                reason: reason.to_string(),
            });
            let mut seg = opened.segment;
            if !last {
                // Everything after a bad batch is unreachable: offsets must stay dense across it.
                for &later in &bases[i + 1..] {
                    remove_segment_files(dir, later)?;
                    report.segments_deleted.push(later);
                }
                sync_dir(dir)?;
                let len = seg.len();
                drop(seg);
                seg =
                    Segment::open(dir, base, config, OpenMode::Clean { len }, true, None)?.segment;
            }
            segments.push(Arc::new(seg));
            break;
        }
        segments.push(Arc::new(opened.segment));
    }
    if !clean {
        // What recovery kept may sit only in the page cache (the process died, the kernel did not):
        // make it durable now, so the log's flushed offset can start at its end.
        for seg in segments.iter().filter(|s| s.base_offset() >= recovery_base) {
            seg.sync_all()?;
        }
        sync_dir(dir)?;
    }
    let active = segments.last().cloned();
    let recovery_base = match (&active, clean) {
        (Some(a), true) => a.base_offset(),
        (Some(a), false) => recovery_base.min(a.base_offset()),
        (None, _) => 0,
    };
    if let Some(a) = &active {
        write_open_checkpoint(dir, recovery_base, a)?;
    }
    if !clean {
        tracing::info!(dir = %dir.display(), scanned = report.segments_scanned,
            truncated = report.truncated.is_some(), "recovered partition log");
    }
    Ok((segments, report, recovery_base))
}

/// Clears the clean flag durably before the log accepts a write, so a crash from here on recovers.
fn write_open_checkpoint(dir: &Path, recovery_base: u64, active: &Segment) -> Result<()> {
    Checkpoint {
        clean: false,
        recovery_base,
        active_base: active.base_offset(),
        active_len: 0,
        next_offset: active.next_offset(),
    }
    .write(dir)
}

/// Base offsets of the `.log` files in `dir`, ascending. Stray index files without a log are removed.
fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut logs = Vec::new();
    let mut indexes = Vec::new();
    for entry in fs::read_dir(dir).ctx("list log directory", dir)? {
        let entry = entry.ctx("list log directory", dir)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(base) = parse_segment_name(name, "log") {
            logs.push(base);
        } else if let Some(base) =
            parse_segment_name(name, "index").or_else(|| parse_segment_name(name, "timeindex"))
        {
            indexes.push((base, entry.path()));
        } else if name == "checkpoint.tmp" {
            let _ = crate::io::remove_file(&entry.path());
        } else if name != checkpoint::FILE_NAME {
            tracing::debug!(file = name, "ignoring unknown file in log directory");
        }
    }
    logs.sort_unstable();
    for (base, path) in indexes {
        if logs.binary_search(&base).is_err() {
            crate::io::remove_file(&path).ctx("remove stray index", &path)?;
        }
    }
    Ok(logs)
}

pub(crate) fn remove_segment_files(dir: &Path, base: u64) -> Result<()> {
    let p = SegmentPaths::new(dir, base, "");
    for path in [p.log, p.index, p.timeindex] {
        match crate::io::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).ctx("delete segment file", &path),
        }
    }
    Ok(())
}
