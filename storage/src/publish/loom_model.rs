//! loom models of the readable-end publication as the log really does it (run with
//! `RUSTFLAGS="--cfg loom" cargo test -p sluice-storage --lib --target-dir target/loom --
//! publish::loom_model`). Each model mirrors, step for step, the code it names; the batches are two
//! bytes (an offset tag, then a value that depends on the offset), the log one segment.
//!
//! - Appending (`Segment::append`, then `PartitionLog::append_checked`): the writer writes the batch,
//!   publishes the segment's next offset and length, and only then the log end. A reader
//!   (`PartitionLog::read_below`, `Segment::read`) loads the log end, then the segment length, and
//!   serves batches below both. A reader that sees log end `e` must find every offset below `e` in
//!   the segment: if it did not, `read_below` would answer "nothing before `e`" and a consumer would
//!   skip those offsets. loom also reports a data race if a reader touches a byte the writer is still
//!   writing.
//! - Truncating (`truncate::truncate_after`, `Segment::truncate_to`): the log end retreats, then the
//!   segment's next offset and length, then the dropped bytes are zeroed through the file (so they
//!   change under the map: modelled with relaxed atomic bytes). Readers running meanwhile never serve
//!   an offset at or past the end they loaded, never serve zeroed bytes, and a read of the batch that
//!   stays never fails; a reader that starts after `truncate_after` returned sees exactly the kept
//!   batch.
//!
//! Checked to fail when broken (each once, not committed): publishing the log end before the segment
//! length (`appends_publish_the_segment_length_before_the_log_end`: "log end 1 but the segment
//! serves [] "); `Relaxed` in `Watermark::publish` and `load` (loom: causality violation on the
//! batch bytes); `Segment::read` returning a header error for a batch after the first one instead of
//! ending the answer there (`a_truncation_never_fails_or_overserves_a_read`: a read of offset 0
//! failed while the suffix was zeroed; this was the code before this model, now fixed). The order of
//! the two retreats is not observable here: a reader loads the log end first, so it can always load
//! the old end and then the new length, whichever retreats first.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::Watermark;
use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use loom::sync::Arc;
use loom::thread;

/// Bytes of one batch: the offset tag (offset + 1; 0 means no batch), then the value.
const BATCH: usize = 2;

fn value_of(offset: u64) -> u8 {
    10 + offset as u8
}

// ---------------------------------------------------------------------------------------------------
// Appends: bytes are plain memory written before publication (loom checks every access).

struct AppendLog {
    bytes: [UnsafeCell<u8>; 2 * BATCH],
    seg_next: Watermark,
    seg_len: Watermark,
    log_end: Watermark,
}

// SAFETY: access to `bytes` follows the publication protocol under test; loom checks it.
unsafe impl Sync for AppendLog {}

impl AppendLog {
    /// `Segment::append` (write, publish next offset, publish length), then the log end. Writer only.
    fn append(&self, offset: u64) {
        let pos = offset as usize * BATCH;
        // SAFETY: the single writer is the only one touching bytes at or above the published length.
        self.bytes[pos].with_mut(|p| unsafe { *p = offset as u8 + 1 });
        self.bytes[pos + 1].with_mut(|p| unsafe { *p = value_of(offset) });
        self.seg_next.publish(offset + 1);
        self.seg_len.publish((pos + BATCH) as u64);
        self.log_end.publish(offset + 1);
    }

    /// `read_below(0, ..)`: the log end, then the segment's batches below its length and the end.
    fn read(&self) -> (u64, Vec<u64>) {
        let end = self.log_end.load();
        let len = self.seg_len.load() as usize;
        let mut served = Vec::new();
        let mut pos = 0;
        while pos < len {
            // SAFETY: bytes below a published length are never written again (no truncation here).
            let tag = self.bytes[pos].with(|p| unsafe { *p });
            assert_ne!(tag, 0, "an unwritten header below the published length");
            let base = u64::from(tag - 1);
            if base >= end {
                break;
            }
            let v = self.bytes[pos + 1].with(|p| unsafe { *p });
            assert_eq!(
                v,
                value_of(base),
                "an unwritten value below the published length"
            );
            served.push(base);
            pos += BATCH;
        }
        (end, served)
    }
}

#[test]
fn appends_publish_the_segment_length_before_the_log_end() {
    loom::model(|| {
        let log = Arc::new(AppendLog {
            bytes: std::array::from_fn(|_| UnsafeCell::new(0)),
            seg_next: Watermark::new(0),
            seg_len: Watermark::new(0),
            log_end: Watermark::new(0),
        });
        let writer = {
            let log = log.clone();
            thread::spawn(move || {
                log.append(0);
                log.append(1);
            })
        };
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let log = log.clone();
                thread::spawn(move || {
                    let (end, served) = log.read();
                    let want: Vec<u64> = (0..end).collect();
                    assert_eq!(
                        served, want,
                        "log end {end} but the segment serves {served:?}"
                    );
                })
            })
            .collect();
        writer.join().unwrap();
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(log.read(), (2, vec![0, 1]));
    });
}

// ---------------------------------------------------------------------------------------------------
// Truncation: the dropped bytes are zeroed through the file while readers may be mapping them, so the
// bytes are relaxed atomics (any reader may see either value at any time).

struct TruncLog {
    bytes: [AtomicU8; 2 * BATCH],
    seg_next: Watermark,
    seg_len: Watermark,
    log_end: Watermark,
}

impl TruncLog {
    fn append(&self, offset: u64) {
        let pos = offset as usize * BATCH;
        self.bytes[pos].store(offset as u8 + 1, Ordering::Relaxed);
        self.bytes[pos + 1].store(value_of(offset), Ordering::Relaxed);
        self.seg_next.publish(offset + 1);
        self.seg_len.publish((pos + BATCH) as u64);
        self.log_end.publish(offset + 1);
    }

    /// `truncate_after(Some(last_kept))` on a batch boundary: the log end first, then
    /// `Segment::truncate_to` (next offset, length, then zero the dropped bytes through the file).
    fn truncate_after(&self, last_kept: u64) {
        let new_end = last_kept + 1;
        let pos = new_end as usize * BATCH;
        let old_len = self.seg_len.load() as usize;
        self.log_end.retreat(new_end);
        self.seg_next.retreat(new_end);
        self.seg_len.retreat(pos as u64);
        for b in &self.bytes[pos..old_len] {
            b.store(0, Ordering::Relaxed);
        }
    }

    /// `read_below(0, ..)` with `Segment::read`'s checks: a header that does not decode (here: tag 0)
    /// or a batch that fails its CRC (here: a value not matching the tag) is an error if it is the
    /// first batch of the answer, and ends the answer otherwise. `Err` carries the position.
    fn read(&self) -> Result<(u64, Vec<u64>), usize> {
        let end = self.log_end.load();
        let len = self.seg_len.load() as usize;
        let mut served = Vec::new();
        let mut pos = 0;
        while pos < len {
            let tag = self.bytes[pos].load(Ordering::Relaxed);
            if tag == 0 {
                if pos == 0 {
                    return Err(pos);
                }
                break;
            }
            let base = u64::from(tag - 1);
            if base >= end {
                break;
            }
            if self.bytes[pos + 1].load(Ordering::Relaxed) != value_of(base) {
                if pos == 0 {
                    return Err(pos);
                }
                break;
            }
            served.push(base);
            pos += BATCH;
        }
        Ok((end, served))
    }
}

#[test]
fn a_truncation_never_fails_or_overserves_a_read() {
    loom::model(|| {
        let log = Arc::new(TruncLog {
            bytes: std::array::from_fn(|_| AtomicU8::new(0)),
            seg_next: Watermark::new(0),
            seg_len: Watermark::new(0),
            log_end: Watermark::new(0),
        });
        // Both batches are in before the readers start, as when a follower's uncommitted suffix is
        // overridden; `done` is `truncate_after` returning (its writer lock released).
        log.append(0);
        log.append(1);
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (log, done) = (log.clone(), done.clone());
            thread::spawn(move || {
                log.truncate_after(0);
                done.store(true, Ordering::Release);
            })
        };
        let during = {
            let log = log.clone();
            thread::spawn(move || {
                let (end, served) = log.read().expect("a read of the kept batch never fails");
                assert!(end == 1 || end == 2, "end {end}");
                assert!(
                    served.first() == Some(&0) && served.iter().all(|&o| o < end),
                    "end {end}, served {served:?}"
                );
            })
        };
        let after = {
            let (log, done) = (log.clone(), done.clone());
            thread::spawn(move || {
                if done.load(Ordering::Acquire) {
                    assert_eq!(log.read(), Ok((1, vec![0])), "a read after the truncation");
                }
            })
        };
        writer.join().unwrap();
        during.join().unwrap();
        after.join().unwrap();
        assert_eq!(log.read(), Ok((1, vec![0])));
    });
}
