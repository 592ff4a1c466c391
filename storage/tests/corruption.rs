//! Damaged files: garbage over the active segment's tail is truncated by recovery; garbage in the middle
//! of a sealed segment is reported as corruption by the read that reaches it, never served.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::*;
use sluice_storage::{AppendInfo, FlushPolicy, PartitionLog, StorageError};

fn scribble(dir: &Path, segment_base: u64, position: u64, len: usize) {
    let path = dir.join(format!("{segment_base:020}.log"));
    let f = OpenOptions::new().write(true).open(path).unwrap();
    let garbage: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(7))
        .collect();
    f.write_all_at(&garbage, position).unwrap();
}

fn fill(log: &PartitionLog, n: usize) -> Vec<AppendInfo> {
    (0..n)
        .map(|i| {
            log.append(&batch(&format!("b{i}"), 4, 0, i as i64))
                .unwrap()
        })
        .collect()
}

#[test]
fn garbage_over_the_active_tail_is_truncated_by_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(FlushPolicy::Always);
    let infos = {
        let (log, _) = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
        fill(&log, 60)
        // dropped without close: the next open recovers
    };
    let last = infos.last().unwrap();
    let prev = &infos[infos.len() - 2];
    assert_eq!(
        last.segment_base, prev.segment_base,
        "test wants the last two batches in one segment"
    );
    scribble(dir.path(), last.segment_base, last.position + 20, 40);
    let (log, report) = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
    let t = report
        .truncated
        .expect("recovery must report the torn tail");
    assert_eq!(t.segment_base, last.segment_base);
    assert_eq!(t.position, last.position);
    assert!(t.dropped_bytes > 0);
    assert_eq!(log.log_end_offset(), last.base_offset);
    let all = read_all(&log);
    assert_eq!(all.len() as u64, last.base_offset);
    assert!(all.iter().enumerate().all(|(i, r)| r.0 == i as u64));
    // The log goes on from the truncation point, and a second open finds nothing more to cut.
    assert_eq!(
        log.append(&batch("again", 2, 0, 1)).unwrap().base_offset,
        last.base_offset
    );
    drop(log);
    let (log, report) = PartitionLog::open(dir.path(), cfg).unwrap();
    assert!(report.truncated.is_none());
    assert_eq!(log.log_end_offset(), last.base_offset + 2);
}

#[test]
fn garbage_past_the_end_of_the_active_segment_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(FlushPolicy::Always);
    let infos = {
        let (log, _) = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
        fill(&log, 5)
    };
    let last = infos.last().unwrap();
    let end = last.position + batch("b4", 4, 0, 4).len() as u64;
    scribble(dir.path(), last.segment_base, end, 100);
    let (log, report) = PartitionLog::open(dir.path(), cfg).unwrap();
    assert!(report.truncated.is_some());
    assert_eq!(log.log_end_offset(), 20);
    assert_eq!(read_all(&log).len(), 20);
}

#[test]
fn a_damaged_sealed_batch_is_reported_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(FlushPolicy::Always);
    let infos = {
        let (log, _) = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
        let infos = fill(&log, 80);
        log.close().unwrap();
        infos
    };
    let first_seg: Vec<&AppendInfo> = infos.iter().filter(|i| i.segment_base == 0).collect();
    assert!(
        first_seg.len() > 6,
        "need a sealed segment with several batches"
    );
    assert!(
        infos.last().unwrap().segment_base > 0,
        "segment 0 must be sealed"
    );
    let victim = first_seg[first_seg.len() / 2];
    // Damage the records section (header intact) of a batch in the middle of the sealed segment.
    scribble(dir.path(), 0, victim.position + 90, 8);

    for clean in [true, false] {
        let (log, report) = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
        assert_eq!(report.clean_shutdown, clean);
        assert!(
            report.truncated.is_none(),
            "a sealed segment is never truncated"
        );
        match log.read(victim.base_offset, 1 << 20) {
            Err(StorageError::Corrupt { position, .. }) => assert_eq!(position, victim.position),
            other => panic!("expected corruption, got {other:?}"),
        }
        // A read from before the damage stops short of it; a read after it is unaffected.
        let r = log.read(0, 1 << 20).unwrap();
        assert_eq!(r.next_offset, victim.base_offset);
        let after = log.read(victim.last_offset + 1, 1 << 20).unwrap();
        assert!(after.next_offset > victim.last_offset + 1);
        assert_eq!(log.log_end_offset(), 320);
        drop(log); // unclean for the second round
    }
}

#[test]
fn a_damaged_batch_header_in_a_sealed_segment_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(FlushPolicy::Always);
    let infos = {
        let (log, _) = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
        let infos = fill(&log, 80);
        log.close().unwrap();
        infos
    };
    let victim = infos.iter().filter(|i| i.segment_base == 0).nth(3).unwrap();
    scribble(dir.path(), 0, victim.position + 4, 4); // the length field
    let (log, _) = PartitionLog::open(dir.path(), cfg).unwrap();
    assert!(matches!(
        log.read(victim.base_offset, 1 << 20),
        Err(StorageError::Corrupt { .. })
    ));
    // A read from before it serves the good batches and stops there, as for a failed CRC. Before
    // `Segment::read` ended the answer at a bad header past its first batch, this read failed.
    let r = log.read(0, 1 << 20).unwrap();
    assert_eq!(r.next_offset, victim.base_offset);
}
