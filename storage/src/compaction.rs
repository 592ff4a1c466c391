//! Key compaction of sealed segments: keep the latest record per key, drop tombstones (null values)
//! once they are older than the tombstone retention. Survivors keep their offsets, so offsets become
//! sparse; a batch whose records all survive is copied byte for byte.
//!
//! The rewrite runs without the writer lock into `<base>.*.cleaned` files, fsynced with their names.
//! The swap takes the writer lock, writes a `<base>.swap` marker, renames the cleaned files into
//! place and removes the marker; an open that finds a marker finishes the renames, and one that
//! finds `.cleaned` files without a marker deletes them. Segments that retention or truncation removed meanwhile are skipped.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use sluice_protocol::batch::{self, HEADER_LEN};
use sluice_protocol::{BatchBuilder, BatchHeader, RecordBatch};

use crate::durable::write_file_durably;
use crate::error::{IoContext, Result, StorageError};
use crate::io::sync_dir;
use crate::log::{lock, Inner};
use crate::segment::{OpenMode, Segment, SegmentPaths};

/// What a compaction pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    pub segments_rewritten: usize,
    pub records_before: u64,
    pub records_after: u64,
    pub tombstones_dropped: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Approximate bytes one key-map entry costs besides the key itself.
const MAP_ENTRY_OVERHEAD: usize = 64;

/// Compacts the sealed segments that end at or below `limit_offset` (a raft log passes its purge
/// point: entries raft may still read must keep their batches).
pub(crate) fn compact(inner: &Inner, now_ms: i64, limit_offset: u64) -> Result<CompactionReport> {
    let _c = lock(&inner.compaction_lock);
    let segs = inner.segments_snapshot();
    let sealed: Vec<Arc<Segment>> = segs[..segs.len().saturating_sub(1)]
        .iter()
        .take_while(|s| s.next_offset() <= limit_offset)
        .cloned()
        .collect();
    let mut report = CompactionReport::default();
    if sealed.is_empty() {
        return Ok(report);
    }
    let latest = latest_offsets(&sealed, inner.config.compaction_max_map_bytes)?;

    let mut rewritten = Vec::new();
    for seg in &sealed {
        let expire_tombstones =
            seg.max_timestamp_ms() < now_ms.saturating_sub(inner.config.tombstone_retention_ms);
        let keep = |r: &sluice_protocol::Record| match &r.key {
            None => true,
            Some(k) => {
                latest.get(&k[..]) == Some(&r.offset) && !(r.value.is_none() && expire_tombstones)
            }
        };
        // First a dry run: most segments of a steady log have nothing to drop.
        let mut before = 0u64;
        let mut after = 0u64;
        let mut tombstones = 0u64;
        for b in seg.batches() {
            let b = b?;
            if b.header().is_control() {
                continue;
            }
            for r in b.records().map_err(|e| corrupt(seg, e))? {
                let r = r.map_err(|e| corrupt(seg, e))?;
                before += 1;
                if keep(&r) {
                    after += 1;
                } else if r.value.is_none()
                    && latest.get(r.key.as_deref().unwrap_or_default()) == Some(&r.offset)
                {
                    tombstones += 1;
                }
            }
        }
        report.records_before += before;
        report.records_after += after;
        report.tombstones_dropped += tombstones;
        report.bytes_before += seg.len();
        if before == after {
            report.bytes_after += seg.len();
            continue;
        }
        let cleaned = Segment::create(&inner.dir, seg.base_offset(), ".cleaned", &inner.config)?;
        let mut no_room = false;
        for b in seg.batches() {
            let b = b?;
            let h = *b.header();
            if h.is_control() {
                if !copy_into(&cleaned, seg, b.as_bytes(), &h)? {
                    no_room = true;
                    break;
                }
                continue;
            }
            let records: Vec<_> = b
                .records()
                .map_err(|e| corrupt(seg, e))?
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| corrupt(seg, e))?;
            let kept: Vec<_> = records.iter().filter(|r| keep(r)).collect();
            if kept.len() == records.len() {
                if !copy_into(&cleaned, seg, b.as_bytes(), &h)? {
                    no_room = true;
                    break;
                }
                continue;
            }
            if kept.is_empty() {
                continue;
            }
            let codec = h.compression().map_err(|e| corrupt(seg, e))?;
            let mut builder =
                BatchBuilder::new(codec).producer(h.producer_id, h.producer_epoch, h.base_sequence);
            for r in kept {
                let delta = (r.offset - h.base_offset) as u32;
                builder.append_at(
                    delta,
                    r.timestamp_ms,
                    r.key.as_deref(),
                    r.value.as_deref(),
                    &r.headers,
                );
            }
            let sealed_batch = builder.seal().map_err(|e| corrupt(seg, e))?;
            let mut bytes = sealed_batch.to_vec();
            batch::patch_position(&mut bytes, h.base_offset, h.raft_term, h.raft_index)
                .map_err(|e| corrupt(seg, e))?;
            let (rb, _) =
                RecordBatch::decode(&bytes::Bytes::from(bytes)).map_err(|e| corrupt(seg, e))?;
            if !copy_into(&cleaned, seg, rb.as_bytes(), rb.header())? {
                no_room = true;
                break;
            }
        }
        if no_room {
            // A rewritten batch came out larger than the original (recompression of fewer records)
            // and the copy would leave its map: keep this segment as it is.
            tracing::warn!(dir = %inner.dir.display(), base = seg.base_offset(),
                "compacted copy does not fit a segment; segment left uncompacted");
            drop(cleaned);
            remove_cleaned(&inner.dir, seg.base_offset())?;
            report.records_after += before - after;
            report.tombstones_dropped -= tombstones;
            report.bytes_after += seg.len();
            continue;
        }
        cleaned.seal()?;
        cleaned.sync_all()?;
        report.bytes_after += cleaned.len();
        rewritten.push((seg.clone(), cleaned.len()));
    }

    if !rewritten.is_empty() {
        // The cleaned copies' names must be durable before a marker can name them: a power cut may
        // keep a directory's later changes and lose earlier ones, and a marker kept without one of
        // them would finish the swap with an old index beside the new log.
        sync_dir(&inner.dir)?;
    }

    // Swap under the writer lock.
    let w = lock(&inner.writer);
    inner.check_usable(&w)?;
    let mut list: Vec<Arc<Segment>> = inner.segments_snapshot().as_ref().clone();
    for (old, len) in rewritten {
        let base = old.base_offset();
        let Some(i) = list.iter().position(|s| Arc::ptr_eq(s, &old)) else {
            remove_cleaned(&inner.dir, base)?;
            continue;
        };
        swap_in(&inner.dir, base).map_err(|e| inner.fail(e))?;
        let next_base = list.get(i + 1).map(|s| s.base_offset());
        let opened = Segment::open(
            &inner.dir,
            base,
            &inner.config,
            OpenMode::Clean { len },
            false,
            next_base,
        )?;
        list[i] = Arc::new(opened.segment);
        report.segments_rewritten += 1;
    }
    inner.set_segments(list);
    drop(w);
    tracing::info!(dir = %inner.dir.display(), ?report, "compacted log");
    Ok(report)
}

/// Appends `bytes` (one whole batch with header `h`, read from `seg`) to the cleaned copy, after
/// checking what `Segment::append` asserts, since these bytes come from a file: offsets that follow
/// the copy's last batch (else the segment is corrupt), and room in the copy (`Ok(false)` if none).
fn copy_into(cleaned: &Segment, seg: &Segment, bytes: &[u8], h: &BatchHeader) -> Result<bool> {
    if !cleaned.accepts_offsets(h) || bytes.len() != h.length as usize {
        return Err(corrupt(
            seg,
            sluice_protocol::BatchError::MalformedRecord {
                index: 0,
                reason: "batch offsets go backwards or overflow the segment",
            },
        ));
    }
    if !cleaned.fits(u64::from(h.length)) {
        return Ok(false);
    }
    cleaned.append(&bytes[..HEADER_LEN], &bytes[HEADER_LEN..], h)?;
    Ok(true)
}

fn corrupt(seg: &Segment, source: sluice_protocol::BatchError) -> StorageError {
    StorageError::Corrupt {
        path: seg.log_path().to_path_buf(),
        position: 0,
        source,
    }
}

/// Latest offset of every key in `segments`, bounded in memory.
fn latest_offsets(segments: &[Arc<Segment>], limit_bytes: usize) -> Result<HashMap<Vec<u8>, u64>> {
    let mut latest: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut used = 0usize;
    for seg in segments {
        for b in seg.batches() {
            let b = b?;
            if b.header().is_control() {
                continue;
            }
            for r in b.records().map_err(|e| corrupt(seg, e))? {
                let r = r.map_err(|e| corrupt(seg, e))?;
                let Some(key) = r.key else { continue };
                if let Some(off) = latest.get_mut(&key[..]) {
                    *off = r.offset;
                } else {
                    used += key.len() + MAP_ENTRY_OVERHEAD;
                    if used > limit_bytes {
                        return Err(StorageError::CompactionMemory { limit_bytes });
                    }
                    latest.insert(key.to_vec(), r.offset);
                }
            }
        }
    }
    Ok(latest)
}

fn marker_name(base: u64) -> String {
    format!("{base:020}.swap")
}

fn marker(dir: &Path, base: u64) -> std::path::PathBuf {
    dir.join(marker_name(base))
}

/// Renames the cleaned files of `base` into place, guarded by a marker so a crash midway rolls forward.
/// The marker itself appears atomically (written durably under a temporary name, then renamed).
fn swap_in(dir: &Path, base: u64) -> Result<()> {
    let m = marker(dir, base);
    write_file_durably(dir, &marker_name(base), b"").ctx("create swap marker", &m)?;
    rename_cleaned(dir, base)?;
    sync_dir(dir)?;
    crate::io::remove_file(&m).ctx("remove swap marker", &m)?;
    sync_dir(dir)
}

fn rename_cleaned(dir: &Path, base: u64) -> Result<()> {
    let from = SegmentPaths::new(dir, base, ".cleaned");
    let to = SegmentPaths::new(dir, base, "");
    for (f, t) in [
        (from.index, to.index),
        (from.timeindex, to.timeindex),
        (from.log, to.log),
    ] {
        if f.exists() {
            crate::io::rename(&f, &t).ctx("swap in cleaned file", &t)?;
        }
    }
    Ok(())
}

fn remove_cleaned(dir: &Path, base: u64) -> Result<()> {
    let p = SegmentPaths::new(dir, base, ".cleaned");
    for f in [p.log, p.index, p.timeindex] {
        if f.exists() {
            crate::io::remove_file(&f).ctx("remove cleaned file", &f)?;
        }
    }
    Ok(())
}

/// At open: finish swaps that have a marker, discard cleaned files that do not.
pub(crate) fn finish_interrupted_swaps(dir: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    let mut markers = Vec::new();
    let mut cleaned = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(base) = crate::io::parse_segment_name(&name, "swap") {
            markers.push(base);
        } else if name.ends_with(".cleaned") || name.ends_with(".swap.tmp") {
            // A marker still under its temporary name was never renamed: the swap never started.
            cleaned.push(e.path());
        }
    }
    for &base in &markers {
        tracing::warn!(dir = %dir.display(), base, "finishing an interrupted compaction swap");
        rename_cleaned(dir, base)?;
        sync_dir(dir)?;
        let m = marker(dir, base);
        crate::io::remove_file(&m).ctx("remove swap marker", &m)?;
    }
    for path in cleaned {
        if path.exists() {
            crate::io::remove_file(&path).ctx("remove unfinished compaction output", &path)?;
        }
    }
    if !markers.is_empty() {
        sync_dir(dir)?;
    }
    Ok(())
}
