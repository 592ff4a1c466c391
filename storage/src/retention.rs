//! Retention: deletes whole segments, oldest first, by age (newest record older than `retention_ms`)
//! and by size (while the log stays at least `retention_bytes` without them). Never the active segment.
//! The limits are the log's [`LogConfig`]'s, or the caller's ([`PartitionLog::apply_retention_with`]:
//! an owner whose topic settings change while the log is open passes the current ones).

use crate::config::LogConfig;
use crate::error::Result;
use crate::io::sync_dir;
use crate::log::{lock, Inner, PartitionLog};
use crate::recovery::remove_segment_files;

/// What retention deletes by: age and size (`None`: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionLimits {
    /// Delete segments whose newest record is older than this (ms).
    pub ms: Option<i64>,
    /// Delete the oldest segments while the log stays at least this large without them.
    pub bytes: Option<u64>,
}

impl RetentionLimits {
    /// The limits a log was opened with.
    pub fn of(config: &LogConfig) -> RetentionLimits {
        RetentionLimits {
            ms: config.retention_ms,
            bytes: config.retention_bytes,
        }
    }
}

impl PartitionLog {
    /// [`PartitionLog::apply_retention_below`] by `limits` instead of the limits the log was opened
    /// with.
    pub fn apply_retention_with(
        &self,
        now_ms: i64,
        limit_offset: u64,
        limits: RetentionLimits,
    ) -> Result<RetentionReport> {
        apply_limits(&self.inner, now_ms, limit_offset, limits)
    }
}

/// What retention deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub deleted_segments: Vec<u64>,
    pub bytes_deleted: u64,
    pub log_start_offset: u64,
}

/// Deletes what the settings say, but only segments wholly below `limit_offset` (a replicated log
/// passes the point raft no longer needs; others pass `u64::MAX`).
pub(crate) fn apply(inner: &Inner, now_ms: i64, limit_offset: u64) -> Result<RetentionReport> {
    apply_limits(
        inner,
        now_ms,
        limit_offset,
        RetentionLimits::of(&inner.config),
    )
}

fn apply_limits(
    inner: &Inner,
    now_ms: i64,
    limit_offset: u64,
    limits: RetentionLimits,
) -> Result<RetentionReport> {
    let mut w = lock(&inner.writer);
    inner.check_usable(&w)?;
    let segs = inner.segments_snapshot();
    let mut total: u64 = segs.iter().map(|s| s.len()).sum();
    let mut n = 0;
    let mut report = RetentionReport::default();
    for s in &segs[..segs.len().saturating_sub(1)] {
        let by_time = limits
            .ms
            .is_some_and(|ms| s.max_timestamp_ms() < now_ms.saturating_sub(ms));
        let by_size = limits.bytes.is_some_and(|limit| total - s.len() >= limit);
        if !(by_time || by_size) || s.next_offset() > limit_offset {
            break;
        }
        total -= s.len();
        report.bytes_deleted += s.len();
        report.deleted_segments.push(s.base_offset());
        n += 1;
    }
    report.log_start_offset = inner.log_start.load();
    if n == 0 {
        return Ok(report);
    }
    let kept = segs[n..].to_vec();
    let start = kept[0].base_offset();
    inner.log_start.publish(start.max(inner.log_start.load()));
    inner.set_segments(kept);
    w.unsynced.retain(|s| s.base_offset() >= start);
    drop(w);
    for &base in &report.deleted_segments {
        remove_segment_files(&inner.dir, base).map_err(|e| inner.fail(e))?;
    }
    sync_dir(&inner.dir).map_err(|e| inner.fail(e))?;
    report.log_start_offset = start;
    tracing::info!(dir = %inner.dir.display(), deleted = n, log_start = start, "retention deleted segments");
    Ok(report)
}
