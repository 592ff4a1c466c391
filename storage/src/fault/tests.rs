//! Injected I/O faults (the seam is compiled into the crate's unit tests, so no feature is needed):
//! failed fsyncs and writes stop the log while reads keep working, a full disk is
//! an error, a torn append is cut by the next open and never served, and a failed rename in the
//! durable-file helper leaves the previous file whole. Every plan is scoped to the test's own
//! temporary directory, so the tests run in parallel without seeing each other's faults.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use bytes::Bytes;
use sluice_protocol::batch::HEADER_LEN;
use sluice_protocol::{BatchBuilder, Compression, RecordBatch};

use crate::fault::{Errno, Op, Plan, Torn};
use crate::{write_file_durably, AppendInfo, FlushPolicy, LogConfig, PartitionLog, StorageError};

/// Small segments so appends roll after ~4 KiB (as `storage/tests/common`).
pub(super) fn small_config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 512,
        max_index_bytes: 64 * 1024,
        retention_ms: None,
        segment_ms: None,
        flush,
        ..LogConfig::default()
    }
}

/// A batch of `n` records with values `"{tag}-{i}"`, no keys.
fn batch(tag: &str, n: usize, _keys: usize, ts: i64) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..n {
        b.append(ts, None, Some(format!("{tag}-{i}").as_bytes()), &[]);
    }
    b.seal().unwrap()
}

fn fill(log: &PartitionLog, tag: &str, n: usize) -> Vec<AppendInfo> {
    (0..n)
        .map(|i| {
            log.append(&batch(&format!("{tag}{i}"), 4, 0, i as i64))
                .unwrap()
        })
        .collect()
}

/// The values of every record the log serves, in order, read through the public read API.
fn values(log: &PartitionLog) -> Vec<String> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let r = log.read(offset, 64 * 1024).unwrap();
        if r.bytes.is_empty() {
            break;
        }
        for b in RecordBatch::iter_all(r.bytes) {
            for rec in b.unwrap().records().unwrap() {
                let rec = rec.unwrap();
                out.push(String::from_utf8(rec.value.unwrap().to_vec()).unwrap());
            }
        }
        offset = r.next_offset;
    }
    out
}

fn expected(tag: &str, batches: usize) -> Vec<String> {
    (0..batches)
        .flat_map(|i| (0..4).map(move |j| format!("{tag}{i}-{j}")))
        .collect()
}

fn errno_of(e: &StorageError) -> Option<i32> {
    match e {
        StorageError::Io { source, .. } => source.raw_os_error(),
        _ => None,
    }
}

/// Every write-path operation after the failure is refused with `Failed`; reads serve what was
/// written before it.
fn assert_stopped_but_readable(log: &PartitionLog, tag: &str, batches: usize) {
    let err = log.append(&batch("late", 1, 0, 0)).unwrap_err();
    assert!(matches!(err, StorageError::Failed(_)), "append: {err:?}");
    let err = log.flush().unwrap_err();
    assert!(matches!(err, StorageError::Failed(_)), "flush: {err:?}");
    let err = log.truncate_after(Some(3)).unwrap_err();
    assert!(matches!(err, StorageError::Failed(_)), "truncate: {err:?}");
    assert_eq!(values(log), expected(tag, batches));
}

/// An fsync error makes the log refuse appends, flushes and truncation, while everything written
/// before it stays readable. Broken once by making `Inner::fail` not set the failed flag: the
/// append after the failed flush succeeded and the test failed.
#[test]
fn an_fsync_error_stops_the_log_but_not_its_readers() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small_config(FlushPolicy::Never)).unwrap();
    fill(&log, "a", 3);
    let armed = Plan::new(dir.path()).fail(Op::Sync, 1, Errno::Eio).arm();
    let err = log.flush().unwrap_err();
    assert_eq!(errno_of(&err), Some(libc::EIO), "{err:?}");
    assert_eq!(armed.fired(), 1);
    assert_eq!(
        log.flushed_offset(),
        0,
        "a failed fsync must not count as flushed"
    );
    drop(armed); // the disk is fine again; the log must stay stopped anyway
    assert_stopped_but_readable(&log, "a", 3);
}

/// A write error fails the append that hit it and stops the log; earlier batches stay readable and
/// the failed one is not published. Broken once by returning the append's write error without
/// `inner.fail`: the next append succeeded and the test failed.
#[test]
fn a_write_error_stops_the_log_but_not_its_readers() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small_config(FlushPolicy::Never)).unwrap();
    fill(&log, "a", 3);
    let end = log.log_end_offset();
    let armed = Plan::new(dir.path()).fail(Op::Write, 1, Errno::Eio).arm();
    let err = log.append(&batch("lost", 4, 0, 9)).unwrap_err();
    assert_eq!(errno_of(&err), Some(libc::EIO), "{err:?}");
    assert_eq!(armed.fired(), 1);
    assert_eq!(
        log.log_end_offset(),
        end,
        "a failed append is not published"
    );
    drop(armed);
    assert_stopped_but_readable(&log, "a", 3);
}

/// ENOSPC on an append's write is `StorageError::Io` (context "append to segment", raw OS error
/// ENOSPC) and, like any write error on the write path, stops the log: a partial pwritev may have
/// left bytes the log does not account for, so nothing is retried into the same file. Broken once
/// like the write-error test (no `inner.fail`): the second append was not refused.
#[test]
fn a_full_disk_on_append_is_an_io_error_and_stops_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small_config(FlushPolicy::Never)).unwrap();
    fill(&log, "a", 2);
    let _armed = Plan::new(dir.path())
        .fail_from(Op::Write, 1, Errno::Enospc)
        .arm();
    let err = log.append(&batch("full", 4, 0, 9)).unwrap_err();
    match &err {
        StorageError::Io {
            context, source, ..
        } => {
            assert_eq!(*context, "append to segment");
            assert_eq!(source.raw_os_error(), Some(libc::ENOSPC));
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert_stopped_but_readable(&log, "a", 2);
}

/// An append whose write is torn after `keep` bytes, then the process "crashes" (the log is dropped
/// without `close`): the next open cuts the segment at the torn batch, reports the cut, and serves
/// exactly the batches before it; the log then continues at the cut. For cuts inside the header,
/// at its end and inside the records, with the torn write reporting success (the crash came after
/// the syscall returned) or an error. Broken once by skipping the recovery truncation's `set_len`:
/// the file-length check failed; and once by not recording the cut in the report: the `truncated`
/// check failed.
#[test]
fn a_torn_append_is_cut_on_reopen_and_never_served() {
    let probe = batch("t", 4, 0, 9).len();
    let keeps = [1, 7, HEADER_LEN - 1, HEADER_LEN, HEADER_LEN + 1, probe - 1];
    for keep in keeps {
        for then in [Torn::ThenSuccess, Torn::ThenError(Errno::Eio)] {
            torn_case(keep, then);
        }
    }
}

fn torn_case(keep: usize, then: Torn) {
    let case = format!("keep {keep}, {then:?}");
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(FlushPolicy::Never);
    let (log, _) = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
    let infos = fill(&log, "a", 3);
    let last = infos[2];
    let seg_len = last.position + batch("a2", 4, 0, 2).len() as u64;
    let armed = Plan::new(dir.path()).tear_write(1, keep, then).arm();
    let r = log.append(&batch("t", 4, 0, 9));
    assert_eq!(armed.fired(), 1, "{case}");
    match then {
        Torn::ThenSuccess => assert!(r.is_ok(), "{case}: {r:?}"),
        Torn::ThenError(_) => assert!(r.is_err(), "{case}: {r:?}"),
    }
    drop(armed);
    drop(log); // crash: no close, no checkpoint saying clean
    let seg = dir.path().join(format!("{:020}.log", last.segment_base));
    assert_eq!(
        file_len(&seg),
        seg_len + keep as u64,
        "{case}: torn bytes on disk"
    );

    let (log, report) = PartitionLog::open(dir.path(), cfg).unwrap();
    assert!(!report.clean_shutdown, "{case}");
    let cut = report
        .truncated
        .unwrap_or_else(|| panic!("{case}: no cut reported"));
    assert_eq!(cut.segment_base, last.segment_base, "{case}");
    assert_eq!(cut.position, seg_len, "{case}");
    assert_eq!(cut.dropped_bytes, keep as u64, "{case}");
    assert_eq!(file_len(&seg), seg_len, "{case}: the torn bytes are cut");
    assert_eq!(log.log_end_offset(), last.last_offset + 1, "{case}");
    assert_eq!(values(&log), expected("a", 3), "{case}");
    assert!(
        log.read(last.last_offset + 1, 1 << 20)
            .unwrap()
            .bytes
            .is_empty(),
        "{case}: nothing is served at the cut"
    );
    let info = log.append(&batch("b0", 4, 0, 9)).unwrap();
    assert_eq!(info.base_offset, last.last_offset + 1, "{case}");
    assert_eq!(
        info.position, seg_len,
        "{case}: the log continues at the cut"
    );
    let mut want = expected("a", 3);
    want.extend(expected("b", 1));
    assert_eq!(values(&log), want, "{case}");
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

/// A failed rename or a torn write of the temporary file in `write_file_durably` leaves the previous
/// file whole. Broken once by writing the body straight to `dir/name` (no temporary file): the
/// previous content was gone and the test failed.
#[test]
fn a_failed_durable_write_leaves_the_previous_file_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    write_file_durably(dir.path(), "state", b"old state").unwrap();
    {
        let armed = Plan::new(dir.path()).fail(Op::Rename, 1, Errno::Eio).arm();
        let err = write_file_durably(dir.path(), "state", b"new state").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
        assert_eq!(armed.fired(), 1);
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"old state");
    {
        let armed = Plan::new(dir.path())
            .tear_write(1, 3, Torn::ThenError(Errno::Enospc))
            .arm();
        let err = write_file_durably(dir.path(), "state", b"new state").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(armed.fired(), 1);
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"old state");
    write_file_durably(dir.path(), "state", b"new state").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new state");
}

/// A failed checkpoint rename on a roll stops the log and leaves the previous checkpoint file as
/// it was. Broken like the durable-write test (no temporary file): the checkpoint bytes changed.
#[test]
fn a_failed_checkpoint_rename_on_roll_keeps_the_old_checkpoint_and_stops_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(FlushPolicy::Always);
    let (log, _) = PartitionLog::open(dir.path(), cfg).unwrap();
    let checkpoint = dir.path().join("checkpoint");
    let before = std::fs::read(&checkpoint).unwrap();
    let armed = Plan::new(&checkpoint).fail(Op::Rename, 1, Errno::Eio).arm();
    // Appends until a roll writes a checkpoint (small segments roll after ~4 KiB).
    let mut err = None;
    for i in 0..200 {
        if let Err(e) = log.append(&batch(&format!("a{i}"), 4, 0, i)) {
            err = Some(e);
            break;
        }
    }
    let err = err.expect("a roll should have written a checkpoint");
    assert_eq!(errno_of(&err), Some(libc::EIO), "{err:?}");
    assert_eq!(armed.fired(), 1);
    assert_eq!(std::fs::read(&checkpoint).unwrap(), before);
    let err = log.append(&batch("late", 1, 0, 0)).unwrap_err();
    assert!(matches!(err, StorageError::Failed(_)), "{err:?}");
}

/// A plan affects only paths under its scope: a log in another directory never sees it, and the
/// plan counts only its own directory's operations.
#[test]
fn a_plan_is_scoped_to_its_directory() {
    let faulty = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let armed = Plan::new(faulty.path())
        .fail_from(Op::Write, 1, Errno::Eio)
        .fail_from(Op::Sync, 1, Errno::Eio)
        .arm();
    let (log, _) = PartitionLog::open(other.path(), small_config(FlushPolicy::Always)).unwrap();
    fill(&log, "a", 20);
    assert_eq!(values(&log), expected("a", 20));
    assert_eq!(armed.count(Op::Write), 0);
    assert_eq!(armed.fired(), 0);
}
