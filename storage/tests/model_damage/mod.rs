//! The model test's operations that rewrite or damage stored batches: compaction (the model keeps
//! the latest record per key in the sealed segments, drops tombstones older than the tombstone
//! retention, rebuilds a batch that lost records exactly as `compaction.rs` does, leaves the active
//! segment alone) and corruption (a byte of one stored batch flipped while the log is stopped).
//!
//! What the model expects after a corruption, from `docs/architecture.md` ("Recovery", "Reads are
//! zero-copy and verified") and `recovery.rs`:
//! - an unclean open scans the last segment and every segment from the checkpoint's recovery base on:
//!   if the damaged batch is in one of those, the scan cuts its segment there (reported at exactly
//!   that position) and deletes every later segment; the model drops the batch and everything after;
//! - a segment the open trusts (a clean open, or one below the recovery base) is never cut: the log
//!   keeps its positions, a read of the damaged batch fails with `Corrupt` at its position, a read of
//!   any other batch serves exactly the batches from it up to the damaged one (or to the end of its
//!   segment), and a read that has to walk through the damaged batch may fail with `Corrupt`;
//! - a clean open walks the active segment's headers after its last index entry: a damaged header
//!   there makes it recover that segment (cut as above), anywhere else it is trusted.
//!
//! After a corruption that was not cut the test stops the log cleanly, flips the byte back and
//! reopens, so later operations run on an undamaged log.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use sluice_protocol::BatchBuilder;
use sluice_storage::{CompactionReport, PartitionLog, StorageError};

use super::{
    check_batches, config, fail, ok, DamagedByte, Harness, MBatch, MRecord, Model,
    TOMBSTONE_RETENTION_MS,
};

/// Applies `compact(now)` to the model; returns the report the log must give.
pub(super) fn compact(model: &mut Model, now: i64) -> CompactionReport {
    let sealed = model.segments.len() - 1;
    let mut latest: HashMap<String, u64> = HashMap::new();
    for r in model.segments[..sealed]
        .iter()
        .flat_map(|s| &s.batches)
        .flat_map(|b| &b.records)
    {
        if let Some(k) = &r.key {
            latest.insert(k.clone(), r.offset);
        }
    }
    let mut report = CompactionReport::default();
    for seg in &mut model.segments[..sealed] {
        let expire = seg.max_ts() < now.saturating_sub(TOMBSTONE_RETENTION_MS);
        let is_latest = |r: &MRecord| r.key.as_ref().and_then(|k| latest.get(k)) == Some(&r.offset);
        let keep =
            |r: &MRecord| r.key.is_none() || (is_latest(r) && !(r.value.is_none() && expire));
        let records = || seg.batches.iter().flat_map(|b| &b.records);
        let before = records().count() as u64;
        let after = records().filter(|r| keep(r)).count() as u64;
        report.records_before += before;
        report.records_after += after;
        report.tombstones_dropped += records()
            .filter(|r| !keep(r) && r.value.is_none() && is_latest(r))
            .count() as u64;
        report.bytes_before += seg.len();
        if before == after {
            report.bytes_after += seg.len();
            continue;
        }
        let mut batches = Vec::new();
        for b in &seg.batches {
            let kept: Vec<MRecord> = b.records.iter().filter(|r| keep(r)).cloned().collect();
            if kept.len() == b.records.len() {
                batches.push(b.clone());
            } else if let Some(last) = kept.last().map(|r| r.offset) {
                batches.push(MBatch {
                    base: b.base,
                    last,
                    len: rebuilt_len(b, &kept),
                    records: kept,
                    codec: b.codec,
                });
            }
        }
        seg.batches = batches;
        seg.high_water = seg.len();
        report.bytes_after += seg.len();
        report.segments_rewritten += 1;
    }
    report
}

/// Length of `b` rebuilt with only `kept`, each at its own offset (as `compaction.rs` rebuilds it).
fn rebuilt_len(b: &MBatch, kept: &[MRecord]) -> u64 {
    let mut builder = BatchBuilder::new(b.codec);
    for r in kept {
        let delta = u32::try_from(r.offset - b.base).unwrap();
        builder.append_at(
            delta,
            r.ts,
            r.key.as_deref().map(str::as_bytes),
            r.value.as_deref().map(str::as_bytes),
            &[],
        );
    }
    builder.seal().unwrap().len() as u64
}

fn flip(path: &Path, at: u64, mask: u8) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= mask;
    f.write_all_at(&b, at).unwrap();
}

/// Stops the log (after `close` if `clean`), flips `mask` into one byte of a stored batch, reopens,
/// and checks what the module doc says.
pub(super) fn corrupt(
    h: &mut Harness,
    pick: &Index,
    byte: &DamagedByte,
    mask: u8,
    clean: bool,
) -> Result<(), TestCaseError> {
    let all: Vec<(usize, usize)> = h
        .model
        .segments
        .iter()
        .enumerate()
        .flat_map(|(si, s)| (0..s.batches.len()).map(move |bi| (si, bi)))
        .collect();
    if all.is_empty() {
        return Ok(());
    }
    let (si, bi) = *pick.get(&all);
    let seg = &h.model.segments[si];
    let victim = &seg.batches[bi];
    let pos: u64 = seg.batches[..bi].iter().map(|b| b.len).sum();
    let at = pos
        + match byte {
            DamagedByte::Header(i) => *i as u64,
            DamagedByte::Any(i) => i.index(victim.len as usize) as u64,
        };
    let path = h.dir.path().join(format!("{:020}.log", seg.base));
    let what = format!(
        "batch {} at {pos} of segment {} (byte {at}, clean stop {clean}, recovery base {})",
        victim.base, seg.base, h.model.recovery_base
    );
    let last = si + 1 == h.model.segments.len();
    let scanned = !clean && (last || seg.base >= h.model.recovery_base);
    let later: Vec<u64> = h.model.segments[si + 1..].iter().map(|s| s.base).collect();

    let log = h.log.take().expect("open");
    if clean {
        ok(log.close(), "close")?;
    }
    drop(log);
    flip(&path, at, mask);
    let (log, report) = ok(
        PartitionLog::open(h.dir.path(), config(h.policy)),
        "open after corruption",
    )?;
    prop_assert_eq!(report.clean_shutdown, clean, "{}: {:?}", &what, &report);
    // An unclean open also cuts the zeroed suffix a truncation left in the active segment.
    let active = h.model.segments.last().expect("never empty");
    let zero_tail = report.truncated.as_ref().is_some_and(|t| {
        !clean
            && (t.segment_base, t.position) == (active.base, active.len())
            && (t.segment_base, t.position) != (seg.base, pos)
    });
    if let Some(t) = report.truncated.as_ref().filter(|_| !zero_tail) {
        prop_assert!(
            scanned || (clean && last),
            "{}: a trusted segment was cut: {:?}",
            &what,
            &report
        );
        prop_assert_eq!(
            (t.segment_base, t.position),
            (seg.base, pos),
            "{}: where recovery cut",
            &what
        );
        prop_assert_eq!(&report.segments_deleted, &later, "{}: deleted", &what);
        h.model.segments.truncate(si + 1);
        h.model.segments[si].batches.truncate(bi);
        h.log = Some(log);
        h.model.reopened(clean);
        return Ok(());
    }
    prop_assert!(
        !scanned,
        "{}: recovery scanned the segment and kept the damaged batch: {:?}",
        &what,
        &report
    );
    prop_assert!(
        report.segments_deleted.is_empty(),
        "{}: {:?}",
        &what,
        &report
    );
    h.model.reopened(clean);
    check_damaged(&log, &h.model, si, bi, pos).map_err(|e| fail(format!("{what}: {e}")))?;

    // Repair, so later operations run on an undamaged log.
    ok(log.close(), "close")?;
    drop(log);
    flip(&path, at, mask);
    let (log, report) = ok(
        PartitionLog::open(h.dir.path(), config(h.policy)),
        "open after repair",
    )?;
    prop_assert!(
        report.clean_shutdown && report.truncated.is_none(),
        "{}: reopen after repair: {:?}",
        &what,
        &report
    );
    h.log = Some(log);
    h.model.reopened(true);
    Ok(())
}

/// The log with batch `bi` of segment `si` (at byte `pos`) damaged and kept: positions as the model
/// says, the damaged batch never served.
fn check_damaged(
    log: &PartitionLog,
    model: &Model,
    si: usize,
    bi: usize,
    pos: u64,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.log_start_offset(), model.start(), "log start");
    prop_assert_eq!(log.log_end_offset(), model.end(), "log end");
    prop_assert_eq!(log.segment_bases(), model.bases(), "segment bases");
    // A walk that stops at the damage never reaches the zeroed suffix a truncation may have left at
    // the end of a sealed segment (the open cuts it off once the segment walks again).
    prop_assert!(log.size_bytes() >= model.size(), "bytes in segments");
    let victim = &model.segments[si].batches[bi];
    match log.read(victim.base, usize::MAX) {
        Err(StorageError::Corrupt { position, .. }) => {
            prop_assert_eq!(position, pos, "position of the damage")
        }
        other => return Err(fail(format!("read of the damaged batch: {other:?}"))),
    }
    for (sj, seg) in model.segments.iter().enumerate() {
        for (bj, b) in seg.batches.iter().enumerate() {
            if (sj, bj) == (si, bi) {
                continue;
            }
            let what = format!("read({}) with batch {} damaged", b.base, victim.base);
            let r = log.read(b.base, usize::MAX);
            let through_damage = sj == si && bj > bi;
            if through_damage && matches!(r, Err(StorageError::Corrupt { .. })) {
                continue;
            }
            let r = ok(r, &what)?;
            let upto = if sj == si && bj < bi {
                bi
            } else {
                seg.batches.len()
            };
            let expected: Vec<&MBatch> = seg.batches[bj..upto].iter().collect();
            check_batches(r.bytes, &expected, &what)?;
            prop_assert_eq!(
                r.next_offset,
                expected[expected.len() - 1].next(),
                "{}",
                what
            );
        }
    }
    Ok(())
}
