//! [`Watermark`]: how the single writer publishes the readable end of a segment to many readers.
//!
//! The writer first writes bytes (and index entries) below the new end, then stores the end with
//! `Release`. A reader loads the end with `Acquire` and touches only bytes below it, so it sees every byte
//! the writer wrote before publishing. Ends only grow, except when the writer truncates an uncommitted
//! suffix, which it does while holding the writer lock. The protocol is model-checked with loom
//! (`RUSTFLAGS="--cfg loom" cargo test -p sluice-storage --lib publish`; `publish/loom_model.rs`):
//! the two watermarks of an append (the segment length before the log end) and a truncation's
//! `retreat` while readers run.

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
mod loom_model;
