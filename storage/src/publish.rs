//! [`Watermark`]: how the single writer publishes the readable end of a segment to many readers.
//!
//! The writer first writes bytes (and index entries) below the new end, then stores the end with
//! `Release`. A reader loads the end with `Acquire` and touches only bytes below it, so it sees every byte
//! the writer wrote before publishing. Ends only grow, except when the writer truncates an uncommitted
//! suffix, which it does while holding the writer lock. The protocol is model-checked with loom
//! (`RUSTFLAGS="--cfg loom" cargo test -p sluice-storage --lib publish`).

use crate::sync::{AtomicU64, Ordering};

/// A monotonically published position (a byte length, an entry count or an offset).
#[derive(Debug)]
pub(crate) struct Watermark(AtomicU64);

impl Watermark {
    pub(crate) fn new(value: u64) -> Self {
        Watermark(AtomicU64::new(value))
    }

    /// The last published value; everything below it was written before it was published.
    pub(crate) fn load(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Publishes `value` after the bytes below it were written. Only the single writer calls this.
    pub(crate) fn publish(&self, value: u64) {
        debug_assert!(
            value >= self.0.load(Ordering::Relaxed),
            "watermark moved back"
        );
        self.0.store(value, Ordering::Release);
    }

    /// Moves the watermark back (truncation of an uncommitted suffix); writer only.
    pub(crate) fn retreat(&self, value: u64) {
        debug_assert!(
            value <= self.0.load(Ordering::Relaxed),
            "retreat moved forward"
        );
        self.0.store(value, Ordering::Release);
    }

    /// Raises the watermark to at least `value` (used by readers for the verified-bytes mark, which
    /// any reader may advance).
    pub(crate) fn raise(&self, value: u64) {
        self.0.fetch_max(value, Ordering::AcqRel);
    }
}

#[cfg(all(test, loom))]
mod loom_model {
    //! One writer appends two "batches" into a buffer and publishes the end after each; two readers
    //! read everything below the end they observe. loom explores every interleaving and reports a data
    //! race if a reader could touch a byte the writer has not finished writing.

    use super::Watermark;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;

    const LEN: usize = 4;

    struct Segment {
        bytes: [UnsafeCell<u8>; LEN],
        end: Watermark,
    }

    // SAFETY: access to `bytes` follows the publication protocol under test; loom checks it.
    unsafe impl Sync for Segment {}

    #[test]
    fn readers_never_see_unpublished_bytes() {
        loom::model(|| {
            let seg = Arc::new(Segment {
                bytes: std::array::from_fn(|_| UnsafeCell::new(0)),
                end: Watermark::new(0),
            });
            let writer = {
                let seg = seg.clone();
                thread::spawn(move || {
                    for batch in 0..2 {
                        for i in batch * 2..batch * 2 + 2 {
                            // SAFETY: the writer is the only one touching bytes at or above `end`.
                            seg.bytes[i].with_mut(|p| unsafe { *p = i as u8 + 1 });
                        }
                        seg.end.publish((batch * 2 + 2) as u64);
                    }
                })
            };
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    let seg = seg.clone();
                    thread::spawn(move || {
                        let end = seg.end.load() as usize;
                        for i in 0..end {
                            // SAFETY: bytes below a published end are never written again.
                            let v = seg.bytes[i].with(|p| unsafe { *p });
                            assert_eq!(v, i as u8 + 1, "reader saw an unwritten byte");
                        }
                    })
                })
                .collect();
            writer.join().unwrap();
            for r in readers {
                r.join().unwrap();
            }
        });
    }
}
