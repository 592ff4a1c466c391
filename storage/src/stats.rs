//! Latency histograms kept in atomics, and the process-wide one of every fsync this crate makes
//! ([`fsync_latency`]): file `fsync`/`fdatasync` and directory fsyncs, timed in `io`'s wrappers.
//!
//! A [`LatencyHistogram`] has fixed bucket bounds ([`LATENCY_BOUNDS_SECONDS`]) and is recorded with
//! one search and two relaxed atomic adds: no lock and no allocation, so it can sit on a hot path
//! (the broker's metrics reuse it for request and commit latencies). A [`LatencySnapshot`] is read
//! bucket by bucket, not atomically as a whole; its count is the sum of its buckets, so the two
//! always agree. This module only counts: exporting the figures is the broker's business.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (a value equal to a bound counts in its bucket); one
/// more bucket holds everything above the last.
pub const LATENCY_BOUNDS_SECONDS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// [`LATENCY_BOUNDS_SECONDS`] in nanoseconds (what recording compares against).
const BOUNDS_NS: [u64; 17] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Buckets: one per bound and the overflow bucket.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_SECONDS.len() + 1;

/// A latency histogram with fixed buckets, safe to record from many threads at once.
#[derive(Debug)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative); the last is the overflow bucket.
    buckets: [AtomicU64; LATENCY_BUCKETS],
    /// Sum of every observation, in nanoseconds (wraps after ~584 years of total latency).
    sum_ns: AtomicU64,
}

/// What a [`LatencyHistogram`] held when read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySnapshot {
    /// Observations per bucket, not cumulative; bucket `i < 17` is bounded by
    /// `LATENCY_BOUNDS_SECONDS[i]`, the last holds the rest.
    pub buckets: [u64; LATENCY_BUCKETS],
    pub sum_ns: u64,
}

impl LatencySnapshot {
    /// Every observation (the sum of the buckets).
    pub fn count(&self) -> u64 {
        self.buckets.iter().fold(0u64, |a, b| a.wrapping_add(*b))
    }

    /// The sum of every observation, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }
}

impl Default for LatencyHistogram {
    fn default() -> LatencyHistogram {
        LatencyHistogram::new()
    }
}

impl LatencyHistogram {
    pub const fn new() -> LatencyHistogram {
        LatencyHistogram {
            buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS],
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Records one observation of `d`.
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // The first bound at or above `ns`; past every bound, the overflow bucket.
        let i = BOUNDS_NS.partition_point(|b| *b < ns);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
        }
    }
}

/// Every fsync of this process's logs and durable files.
static FSYNC: LatencyHistogram = LatencyHistogram::new();

/// Records the duration of one fsync (called by `io`'s wrappers around the system call).
pub(crate) fn record_fsync(d: Duration) {
    FSYNC.record(d);
}

/// How long this process's fsyncs (file and directory, successful or not) have taken.
pub fn fsync_latency() -> LatencySnapshot {
    FSYNC.snapshot()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_agree_and_rise() {
        for (s, ns) in LATENCY_BOUNDS_SECONDS.iter().zip(BOUNDS_NS) {
            assert_eq!((s * 1e9).round() as u64, ns);
        }
        assert!(BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
    }

    /// A value on a bound counts in that bucket, one just above in the next, one past every bound
    /// in the overflow bucket. Seen failing with `<=` in the search (a value on a bound moved up).
    #[test]
    fn observations_land_in_their_buckets() {
        let h = LatencyHistogram::new();
        h.record(Duration::ZERO);
        h.record(Duration::from_micros(50));
        h.record(Duration::from_nanos(50_001));
        h.record(Duration::from_millis(1));
        h.record(Duration::from_secs(11));
        h.record(Duration::MAX);
        let s = h.snapshot();
        let mut want = [0u64; LATENCY_BUCKETS];
        want[0] = 2;
        want[1] = 1;
        want[4] = 1;
        want[LATENCY_BUCKETS - 1] = 2;
        assert_eq!(s.buckets, want);
        assert_eq!(s.count(), 6);
    }

    #[test]
    fn the_sum_is_in_nanoseconds() {
        let h = LatencyHistogram::new();
        h.record(Duration::from_millis(3));
        h.record(Duration::from_micros(500));
        assert_eq!(h.snapshot().sum_ns, 3_500_000);
        assert!((h.snapshot().sum_seconds() - 0.0035).abs() < 1e-12);
    }
}
