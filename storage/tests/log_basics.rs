//! Append, read, reopen, time lookup, truncation and flush policies of a partition log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use sluice_protocol::RecordBatch;
use sluice_storage::{FlushPolicy, LogConfig, PartitionLog, StorageError};

#[test]
fn appends_get_dense_offsets_and_read_back_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (log, report) = PartitionLog::open(dir.path(), small_config(FlushPolicy::Never)).unwrap();
    assert!(report.clean_shutdown);
    let mut expected = Vec::new();
    for i in 0..200 {
        let info = log
            .append(&batch(&format!("b{i}"), 5, 0, 1000 + i))
            .unwrap();
        assert_eq!(info.base_offset, i as u64 * 5);
        assert_eq!(info.last_offset, i as u64 * 5 + 4);
        for j in 0..5 {
            expected.push((i as u64 * 5 + j, None, Some(format!("b{i}-{j}"))));
        }
    }
    assert!(
        log.segment_bases().len() > 3,
        "small segments should have rolled"
    );
    assert_eq!(log.log_end_offset(), 1000);
    assert_eq!(read_all(&log), expected);

    // A read from the middle of a batch returns that whole batch.
    let r = log.read(7, 1).unwrap();
    let batches: Vec<_> = RecordBatch::iter_all(r.bytes).collect();
    assert_eq!(
        batches.len(),
        1,
        "max_bytes smaller than a batch still returns one batch"
    );
    assert_eq!(batches[0].as_ref().unwrap().header().base_offset, 5);
    assert_eq!(r.next_offset, 10);

    // Out of range and at the end.
    assert!(matches!(
        log.read(1001, 100),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert!(log.read(1000, 100).unwrap().bytes.is_empty());
}

#[test]
fn reads_borrow_the_segment_map() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small_config(FlushPolicy::Never)).unwrap();
    log.append(&batch("a", 3, 0, 1)).unwrap();
    let a = log.read(0, 1 << 20).unwrap().bytes;
    let b = log.read(0, 1 << 20).unwrap().bytes;
    // Two reads of the same batch point at the same memory: the map, not a copy.
    assert_eq!(a.as_ptr(), b.as_ptr());
}

#[test]
fn clean_reopen_does_not_scan_and_unclean_reopen_does() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(FlushPolicy::Always);
    {
        let (log, _) = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
        for i in 0..50 {
            log.append(&batch(&format!("b{i}"), 4, 0, i)).unwrap();
        }
        log.close().unwrap();
        assert!(matches!(
            log.append(&batch("x", 1, 0, 0)),
            Err(StorageError::Closed)
        ));
    }
    let before = {
        let (log, report) = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
        assert!(report.clean_shutdown);
        assert_eq!(report.segments_scanned, 0);
        assert_eq!(log.log_end_offset(), 200);
        let all = read_all(&log);
        assert_eq!(all.len(), 200);
        log.append(&batch("after", 2, 0, 99)).unwrap();
        all
        // dropped without close: unclean
    };
    let (log, report) = PartitionLog::open(dir.path(), cfg).unwrap();
    assert!(!report.clean_shutdown);
    assert_eq!(
        report.segments_scanned, 1,
        "only the active segment is past the checkpoint"
    );
    assert!(report.truncated.is_none());
    let all = read_all(&log);
    assert_eq!(&all[..200], &before[..]);
    assert_eq!(all.len(), 202);
    // Appends continue at the right offset after recovery.
    assert_eq!(
        log.append(&batch("more", 1, 0, 100)).unwrap().base_offset,
        202
    );
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small_config(FlushPolicy::Never)).unwrap();
    for i in 0..300i64 {
        log.append(&batch("t", 2, 0, 10_000 + i * 10)).unwrap();
    }
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some(0));
    assert_eq!(log.offset_for_timestamp(10_000).unwrap(), Some(0));
    assert_eq!(log.offset_for_timestamp(10_001).unwrap(), Some(2));
    assert_eq!(log.offset_for_timestamp(11_500).unwrap(), Some(300));
    assert_eq!(log.offset_for_timestamp(12_990).unwrap(), Some(598));
    assert_eq!(log.offset_for_timestamp(12_991).unwrap(), None);
    log.close().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small_config(FlushPolicy::Never)).unwrap();
    assert_eq!(log.offset_for_timestamp(11_505).unwrap(), Some(302));
}

#[test]
fn truncate_after_drops_only_the_suffix_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(FlushPolicy::Interval {
        max_bytes: 1 << 20,
        max_delay: std::time::Duration::from_millis(50),
    });
    let (log, _) = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
    for i in 0..100 {
        log.append(&batch(&format!("b{i}"), 10, 0, i)).unwrap();
    }
    let segments_before = log.segment_bases().len();
    assert!(segments_before > 2);
    assert!(matches!(
        log.truncate_after(Some(104)),
        Err(StorageError::NotBatchBoundary(104))
    ));
    // Truncate into an early, sealed segment.
    assert_eq!(log.truncate_after(Some(99)).unwrap(), 100);
    assert_eq!(log.log_end_offset(), 100);
    assert!(log.segment_bases().len() < segments_before);
    assert_eq!(read_all(&log).len(), 100);
    assert!(log.flushed_offset() <= 100);
    // New appends reuse the offsets.
    assert_eq!(log.append(&batch("new", 3, 0, 5)).unwrap().base_offset, 100);
    drop(log);
    let (log, _) = PartitionLog::open(dir.path(), cfg).unwrap();
    let all = read_all(&log);
    assert_eq!(all.len(), 103);
    assert_eq!(all[100].2.as_deref(), Some("new-0"));
    assert_eq!(log.truncate_after(None).unwrap(), 0);
    assert!(read_all(&log).is_empty());
}

#[test]
fn flush_policies_state_what_is_durable() {
    for policy in [
        FlushPolicy::Never,
        FlushPolicy::interval(),
        FlushPolicy::Always,
        FlushPolicy::External,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = PartitionLog::open(dir.path(), small_config(policy)).unwrap();
        let info = log.append(&batch("x", 3, 0, 1)).unwrap();
        match policy {
            FlushPolicy::Always => {
                assert!(info.flushed);
                assert_eq!(log.flushed_offset(), 3);
            }
            _ => assert!(!info.flushed),
        }
        assert_eq!(log.flush().unwrap(), 3);
        assert_eq!(log.flushed_offset(), 3);
    }
}

/// `External`: appends are never fsynced by the log itself (no flusher: `flushed_offset` stays put
/// well past the default interval's delay) and `flush()` takes `flushed_offset` to the log end.
/// Broken once by treating `External` like `Always` on append: `flushed_offset` moved without a
/// `flush()` and the test failed.
#[test]
fn external_policy_flushes_only_when_the_owner_asks() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small_config(FlushPolicy::External)).unwrap();
    let mut end = 0;
    for i in 0..5 {
        let info = log.append(&batch(&format!("x{i}"), 3, 0, 1)).unwrap();
        assert!(!info.flushed);
        end = info.last_offset + 1;
    }
    std::thread::sleep(std::time::Duration::from_millis(250)); // > interval()'s 100 ms delay
    assert_eq!(
        log.flushed_offset(),
        0,
        "nothing flushes an External log but its owner"
    );
    assert_eq!(log.flush().unwrap(), end);
    assert_eq!(log.flushed_offset(), end);
    assert_eq!(log.log_end_offset(), end);
}

/// Under `External` a roll fsyncs the sealed segment and moves the recovery base, so an unclean
/// reopen scans only the active segment; under `Never` (same appends) it scans every segment, which
/// shows the report tells the two apart. Broken once by letting `External` rolls skip the sync and
/// checkpoint as `Never` does: the External reopen scanned every segment and the test failed.
#[test]
fn external_policy_rolls_advance_the_recovery_base() {
    let mut scanned = Vec::new();
    for policy in [FlushPolicy::External, FlushPolicy::Never] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = small_config(policy);
        let end = {
            let (log, _) = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
            for i in 0..150 {
                log.append(&batch(&format!("r{i}"), 4, 0, i)).unwrap();
            }
            assert!(log.segment_bases().len() >= 4, "the appends must roll");
            log.log_end_offset()
            // dropped without close: unclean
        };
        let (log, report) = PartitionLog::open(dir.path(), cfg).unwrap();
        assert!(!report.clean_shutdown);
        assert_eq!(report.truncated, None);
        assert_eq!(log.log_end_offset(), end);
        assert_eq!(read_all(&log).len(), 150 * 4);
        scanned.push((report.segments_scanned, log.segment_bases().len()));
    }
    let (ext, _) = scanned[0];
    let (never, segments) = scanned[1];
    assert_eq!(ext, 1, "External: only the active segment is scanned");
    assert_eq!(never, segments, "Never: every segment is scanned");
}

/// Polls (no timing assertion: up to 10 s) until the log is flushed up to `end`.
fn flushed_eventually(log: &PartitionLog, end: u64) -> bool {
    for _ in 0..2000 {
        if log.flushed_offset() == end {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    false
}

#[test]
fn interval_flusher_flushes_without_being_asked() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(FlushPolicy::Interval {
        max_bytes: 1 << 30,
        max_delay: std::time::Duration::from_millis(10),
    });
    let (log, _) = PartitionLog::open(dir.path(), cfg).unwrap();
    // Several rounds, each after the log went idle (its flusher then sleeps with no timeout until
    // an append arms it): no append is left unflushed, whether it comes right after a flush, after
    // a pause, or in a burst.
    let mut end = 0;
    for (round, pause_ms) in [0u64, 30, 0, 100, 5].into_iter().enumerate() {
        std::thread::sleep(std::time::Duration::from_millis(pause_ms));
        for i in 0..=round {
            end = log
                .append(&batch(&format!("r{round}-{i}"), 3, 0, 1))
                .unwrap()
                .last_offset
                + 1;
        }
        assert!(
            flushed_eventually(&log, end),
            "round {round}: flushed {} of {end}",
            log.flushed_offset()
        );
    }
}

#[test]
fn interval_flusher_covers_concurrent_bursts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(FlushPolicy::Interval {
        max_bytes: 1 << 30,
        max_delay: std::time::Duration::from_millis(2),
    });
    let (log, _) = PartitionLog::open(dir.path(), cfg).unwrap();
    // Bursts from several threads, each followed by an idle pause that lets the flusher go back
    // to its untimed sleep: every burst must end up flushed without anyone calling flush().
    for burst in 0..20u64 {
        std::thread::scope(|s| {
            for t in 0..4 {
                let log = &log;
                s.spawn(move || {
                    for i in 0..(5 + burst % 7) {
                        log.append(&batch(&format!("b{burst}-t{t}-{i}"), 2, 0, 1))
                            .unwrap();
                        if i % 3 == t % 3 {
                            std::thread::yield_now();
                        }
                    }
                });
            }
        });
        let end = log.log_end_offset();
        assert!(
            flushed_eventually(&log, end),
            "burst {burst}: flushed {} of {end}",
            log.flushed_offset()
        );
        std::thread::sleep(std::time::Duration::from_millis(burst % 4));
    }
}

#[test]
fn invalid_batches_are_rejected_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    let good = batch("g", 2, 0, 1);
    let mut bad = good.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(
        log.append(&bad),
        Err(StorageError::InvalidBatch(_))
    ));
    let mut two = good.to_vec();
    two.extend_from_slice(&good);
    assert!(matches!(
        log.append(&two),
        Err(StorageError::BatchLength { .. })
    ));
    assert!(log.append(&[1, 2, 3]).is_err());
    let empty = sluice_protocol::BatchBuilder::new(sluice_protocol::Compression::None)
        .seal()
        .unwrap();
    assert!(matches!(log.append(&empty), Err(StorageError::EmptyBatch)));
    assert_eq!(log.log_end_offset(), 0);
    log.append(&good).unwrap();
    assert_eq!(read_all(&log).len(), 2);
}

#[test]
fn bad_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 10,
        ..LogConfig::default()
    };
    assert!(matches!(
        PartitionLog::open(dir.path(), cfg),
        Err(StorageError::Config(_))
    ));
}

#[test]
fn bytes_held_across_a_truncation_never_fault() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small_config(FlushPolicy::Never)).unwrap();
    for i in 0..10 {
        log.append(&batch(&format!("b{i}"), 2, 0, i)).unwrap();
    }
    let held = log.read(10, 1 << 20).unwrap().bytes;
    assert!(!held.is_empty());
    log.truncate_after(Some(9)).unwrap();
    // Roll and close: the file is trimmed, but never below what a reader may still hold.
    for i in 0..40 {
        log.append(&batch(&format!("n{i}"), 2, 0, i)).unwrap();
    }
    log.close().unwrap();
    // Touching every held byte kills the test with SIGBUS if the file shrank under the map. The
    // region now holds zeros or the batches appended after the truncation, never an unmapped page.
    let touched = held
        .iter()
        .fold(0u64, |acc, &b| acc.wrapping_add(u64::from(b)));
    std::hint::black_box(touched);
}

#[test]
fn concurrent_always_appends_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small_config(FlushPolicy::Always)).unwrap();
    let threads = 8;
    let per_thread = 50;
    std::thread::scope(|s| {
        for t in 0..threads {
            let log = &log;
            s.spawn(move || {
                for i in 0..per_thread {
                    let info = log.append(&batch(&format!("t{t}-{i}"), 1, 0, i)).unwrap();
                    assert!(info.flushed);
                    assert!(log.flushed_offset() > info.last_offset);
                }
            });
        }
    });
    let appends = (threads * per_thread) as u64;
    assert_eq!(log.log_end_offset(), appends);
    // While one appender fsyncs, the others append and then find their batch already covered.
    assert!(
        log.flush_rounds() < appends,
        "{} fsync rounds for {appends} appends: no group commit",
        log.flush_rounds()
    );
}

#[test]
fn segments_roll_by_age_of_their_first_record() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 1 << 20,
        segment_ms: Some(1_000),
        ..small_config(FlushPolicy::Never)
    };
    let (log, _) = PartitionLog::open(dir.path(), cfg).unwrap();
    let mut bases = Vec::new();
    for ts in [0, 500, 1_000, 1_001, 1_500, 2_001, 2_002] {
        bases.push(log.append(&batch("a", 1, 0, ts)).unwrap().segment_base);
    }
    // A batch rolls the segment when its max timestamp is more than 1 s past the segment's first.
    assert_eq!(bases, vec![0, 0, 0, 3, 3, 3, 6]);
    assert_eq!(log.segment_bases(), vec![0, 3, 6]);
}

#[test]
fn bytes_of_a_sealed_segment_held_across_truncate_and_close_never_fault() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small_config(FlushPolicy::Never)).unwrap();
    // Two batches of ~3000 bytes: the second rolls, so segment 0 is sealed.
    let big = |tag: &str| {
        let mut b = sluice_protocol::BatchBuilder::new(sluice_protocol::Compression::None);
        b.append(1, None, Some(&vec![7u8; 2900]), &[]);
        let _ = tag;
        b.seal().unwrap()
    };
    log.append(&big("a")).unwrap();
    log.append(&big("b")).unwrap();
    assert_eq!(log.segment_bases().len(), 2);
    let held = log.read(0, usize::MAX).unwrap().bytes;
    log.truncate_after(None).unwrap();
    log.close().unwrap();
    let touched = held
        .iter()
        .fold(0u64, |acc, &b| acc.wrapping_add(u64::from(b)));
    std::hint::black_box(touched);
    // And the truncated log reopens empty.
    let (log, _) = PartitionLog::open(dir.path(), small_config(FlushPolicy::Never)).unwrap();
    assert_eq!(log.log_end_offset(), 0);
    assert!(read_all(&log).is_empty());
}

#[test]
fn a_small_page_cache_window_changes_nothing_readers_see() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        page_cache_window_bytes: Some(4096),
        ..small_config(FlushPolicy::Always)
    };
    let (log, _) = PartitionLog::open(dir.path(), cfg).unwrap();
    let mut expected = Vec::new();
    for i in 0..300 {
        log.append(&batch(&format!("w{i}"), 3, 0, i)).unwrap();
        for j in 0..3 {
            expected.push((i as u64 * 3 + j, None, Some(format!("w{i}-{j}"))));
        }
    }
    // Everything flushed and (mostly) dropped from the cache reads back from disk unchanged.
    assert_eq!(read_all(&log), expected);
}

#[test]
fn pages_read_through_the_map_are_dropped_behind_the_window_and_read_back_unchanged() {
    // Reads map the pages they touch, and the kernel's DONTNEED advice skips mapped pages, so the
    // window must unmap them first. Checked through the resident size of the segment's mapping
    // (/proc/self/smaps); bytes a reader took before the drop and every later read stay the same.
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 8 << 20,
        page_cache_window_bytes: Some(64 << 10),
        ..small_config(FlushPolicy::Always)
    };
    let (log, _) = PartitionLog::open(dir.path(), cfg).unwrap();
    let big = "v".repeat(4000);
    let mut held = Vec::new();
    // Like a leader replicating: every batch is read through the map right after its append, so
    // each page is mapped before it falls behind the window.
    let mut read_bytes = 0;
    for i in 0..200 {
        log.append(&batch(&format!("{big}{i}"), 1, 0, i)).unwrap();
        let r = log.read(i as u64, 1 << 20).unwrap();
        let copy = r.bytes.to_vec();
        read_bytes += copy.len() as u64;
        if i % 40 == 0 {
            held.push((i as u64, r.bytes.clone(), copy));
        }
    }
    let read_kib = read_bytes / 1024;
    assert!(read_kib >= 700, "read only {read_kib} KiB");
    let mapped = mapped_log_rss_kib(dir.path());
    // The window plus what fault-around maps ahead of a read; all read before it is unmapped.
    assert!(
        mapped <= 192,
        "{mapped} KiB of the ~{read_kib} KiB read are still mapped"
    );
    let expected: Vec<_> = (0..200u64)
        .map(|i| (i, None, Some(format!("{big}{i}-0"))))
        .collect();
    assert_eq!(read_all(&log), expected);
    for (offset, bytes, copy) in held {
        assert_eq!(
            &bytes[..],
            &copy[..],
            "bytes read at offset {offset} changed"
        );
    }
}

/// Resident KiB of this process's mappings of `.log` files under `dir` (from /proc/self/smaps).
fn mapped_log_rss_kib(dir: &std::path::Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let dir = dir.to_string_lossy().into_owned();
    let mut ours = false;
    let mut total = 0;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // A mapping's header line: "start-end perms offset dev inode [path]".
        if fields
            .first()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            ours = fields
                .get(5)
                .is_some_and(|p| p.starts_with(&dir) && p.ends_with(".log"));
        } else if ours && fields.first() == Some(&"Rss:") {
            total += fields[1].parse::<u64>().unwrap();
        }
    }
    total
}

#[test]
fn append_batch_takes_an_already_checked_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small_config(FlushPolicy::Never)).unwrap();
    let (checked, _) = RecordBatch::decode(&batch("c", 4, 0, 1)).unwrap();
    assert_eq!(log.append_batch(&checked, 3, 9).unwrap().base_offset, 0);
    assert_eq!(log.append_batch(&checked, 3, 10).unwrap().base_offset, 4);
    let r = log.read(0, 1 << 20).unwrap();
    let headers: Vec<_> = RecordBatch::iter_all(r.bytes)
        .map(|b| {
            let b = b.unwrap();
            (
                b.header().base_offset,
                b.header().raft_term,
                b.header().raft_index,
            )
        })
        .collect();
    assert_eq!(headers, vec![(0, 3, 9), (4, 3, 10)]);
    assert_eq!(read_all(&log).len(), 8);
}

#[test]
fn batch_headers_walk_the_log_without_reading_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small_config(FlushPolicy::Never)).unwrap();
    for i in 0..100u64 {
        log.append_raft(&batch(&format!("h{i}"), 3, 0, 1000), 7, i + 1)
            .unwrap();
    }
    assert!(log.segment_bases().len() > 2, "headers must cross segments");
    let all = log.batch_headers(0, usize::MAX).unwrap();
    assert_eq!(all.len(), 100);
    for (i, h) in all.iter().enumerate() {
        assert_eq!(h.base_offset, i as u64 * 3);
        assert_eq!(h.raft_term, 7);
        assert_eq!(h.raft_index, i as u64 + 1);
    }
    // From the middle of a batch, bounded by count.
    let some = log.batch_headers(31, 5).unwrap();
    assert_eq!(
        some.iter().map(|h| h.base_offset).collect::<Vec<_>>(),
        vec![30, 33, 36, 39, 42]
    );
    assert!(log.batch_headers(300, 10).unwrap().is_empty());
    assert!(matches!(
        log.batch_headers(301, 10),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn reset_starts_the_log_again_at_an_offset_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(FlushPolicy::Never);
    {
        let (log, _) = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
        for i in 0..50 {
            log.append(&batch(&format!("r{i}"), 2, 0, 1000)).unwrap();
        }
        log.reset(500).unwrap();
        assert_eq!(log.log_start_offset(), 500);
        assert_eq!(log.log_end_offset(), 500);
        assert!(log.read(500, 100).unwrap().bytes.is_empty());
        assert!(log.read(10, 100).is_err());
        let info = log.append(&batch("after", 2, 0, 1000)).unwrap();
        assert_eq!(info.base_offset, 500);
        // Reset backwards too (a replica whose whole log is stale).
        log.reset(20).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (20, 20));
        log.append(&batch("x", 4, 0, 1000)).unwrap();
    }
    // Unclean reopen (no close): the reset is durable.
    let (log, _) = PartitionLog::open(dir.path(), cfg).unwrap();
    assert_eq!(log.log_start_offset(), 20);
    assert_eq!(log.log_end_offset(), 24);
    assert_eq!(log.segment_bases(), vec![20]);
}

#[test]
fn retention_below_a_limit_keeps_what_the_limit_protects() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(FlushPolicy::Never);
    cfg.retention_bytes = Some(1);
    let (log, _) = PartitionLog::open(dir.path(), cfg).unwrap();
    for i in 0..400 {
        log.append(&batch(&format!("k{i}"), 2, 0, 1000)).unwrap();
    }
    let bases = log.segment_bases();
    assert!(bases.len() > 3);
    // Only segments ending at or below bases[2] may go.
    let report = log.apply_retention_below(i64::MAX, bases[2]).unwrap();
    assert_eq!(report.deleted_segments, bases[..2].to_vec());
    assert_eq!(log.log_start_offset(), bases[2]);
    let report = log.apply_retention(i64::MAX).unwrap();
    assert_eq!(log.segment_bases().len(), 1, "{report:?}");
}

#[test]
fn a_batch_can_keep_its_own_offset_past_the_end_and_the_gap_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(FlushPolicy::Never);
    {
        let (log, _) = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
        log.append(&batch("a", 2, 0, 1000)).unwrap();
        // A batch stored at offset 50 elsewhere (a compacted log's copy keeps its gaps).
        let mut bytes = batch("b", 3, 0, 1000).to_vec();
        sluice_protocol::batch::patch_position(&mut bytes, 50, 4, 9).unwrap();
        let b = RecordBatch::decode(&bytes::Bytes::from(bytes)).unwrap().0;
        let info = log.append_batch_at_own_offset(&b, 4, 9).unwrap();
        assert_eq!((info.base_offset, info.last_offset), (50, 52));
        assert_eq!(log.log_end_offset(), 53);
        // Below the end is refused.
        assert!(matches!(
            log.append_batch_at_own_offset(&b, 4, 9),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        // So far past the end that no segment could index it (relative offsets are u32s): an
        // error, not a panic in the segment's append assert. Seen panicking without the check.
        let mut far = batch("f", 1, 0, 1000).to_vec();
        sluice_protocol::batch::patch_position(&mut far, 53 + u64::from(u32::MAX), 4, 9).unwrap();
        let far = RecordBatch::decode(&bytes::Bytes::from(far)).unwrap().0;
        assert!(matches!(
            log.append_batch_at_own_offset(&far, 4, 9),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        let next = log.append(&batch("c", 1, 0, 1000)).unwrap();
        assert_eq!(next.base_offset, 53);
        // A read inside the gap returns the batch after it.
        let r = log.read(10, 1 << 20).unwrap();
        let first = RecordBatch::iter_all(r.bytes).next().unwrap().unwrap();
        assert_eq!(first.header().base_offset, 50);
    }
    // Unclean reopen keeps the gap.
    let (log, _) = PartitionLog::open(dir.path(), cfg).unwrap();
    assert_eq!(log.log_end_offset(), 54);
    let offsets: Vec<u64> = read_all(&log).iter().map(|r| r.0).collect();
    assert_eq!(offsets, vec![0, 1, 50, 51, 52, 53]);
}

/// `bytes_from` is what a reader at an offset has left to read: the whole log from its start,
/// nothing at the end, and from each batch the bytes of that batch and all after it (read back to
/// check), give or take the index interval it looks up, across segments. Broken once: counting
/// the reader's segment from its start instead of from the reader's batch made it fail.
#[test]
fn bytes_from_is_what_a_reader_has_left_to_read() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small_config(FlushPolicy::Never)).unwrap();
    for i in 0..200 {
        log.append(&batch(&format!("b{i}"), 5, 0, 1000 + i))
            .unwrap();
    }
    assert!(log.segment_bases().len() > 3);
    assert_eq!(log.bytes_from(0), log.size_bytes());
    assert_eq!(log.bytes_from(log.log_end_offset()), 0);
    // The lookup starts at the indexed batch at or below the reader's (one every 512 bytes here).
    for first in (0..1000).step_by(5 * 7) {
        let mut left = 0u64;
        let mut at = first;
        while at < log.log_end_offset() {
            let r = log.read(at, 1 << 20).unwrap();
            left += r.bytes.len() as u64;
            at = r.next_offset;
        }
        let got = log.bytes_from(first);
        assert!(
            (left..left + 1024).contains(&got),
            "from offset {first}: {got} for {left} left"
        );
    }
}
