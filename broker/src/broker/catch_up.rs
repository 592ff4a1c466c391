//! Catch-up reads yield to live traffic. A fetch reading more than [`CATCH_UP_DISTANCE`] behind a
//! partition's end (a consumer replaying a backlog) is, while produce traffic is live on this
//! broker, cut to [`CATCH_UP_SLICE`] per partition and paced to the broker's catch-up rate
//! (`catch_up_rate_mb`), so the cores and the disk a replay would take go to producers, replication
//! and tailing consumers first — Kafka's consumer byte-rate quotas, applied only to readers that
//! are behind and only while others need the broker. Without live traffic a replay runs as fast as
//! the disk and the network allow. It never refuses a fetch or changes what it returns: only how
//! much comes at once and when.
//!
//! While pacing, cold reads (data behind the page-cache window) also read one 2 MiB chunk at a time
//! instead of their full read-ahead, so a replay's direct reads never keep the disk busy for long
//! in front of the fsync a produce waits for.
//!
//! Why small slices and not only a rate: the socket copy of one response happens at once, so a
//! 64 MiB answer paced to a rate still takes a core for tens of milliseconds in one go — exactly
//! the stall a tailing consumer's p99 sees. 1 MiB slices keep each burst near a millisecond.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A reader this far behind a partition's end (in bytes it has left to read) is catching up.
/// Tailing consumers are never this far behind in normal operation (at 50 MB/s it is more than a
/// second of traffic).
pub const CATCH_UP_DISTANCE: u64 = 64 << 20;

/// Most bytes a catching-up fetch gets per partition while it is paced.
pub const CATCH_UP_SLICE: usize = 1 << 20;

/// Size of the one direct read each cold reader has in flight while catch-up reads are paced
/// (`ColdReads::set_gentle`): short enough not to hold the disk long in front of an fsync.
/// Measured (docs/benchmarks.md, "Catch-up pacing"): 2 MiB took a tailing consumer's p99 during a
/// replay from 1.8-2.0x of its own to 1.2-1.4x.
pub const GENTLE_READ_BYTES: usize = 2 << 20;

/// Produce traffic this recent makes catch-up reads yield.
const LIVE_FOR: Duration = Duration::from_secs(1);

const _: () = assert!(CATCH_UP_SLICE as u64 <= CATCH_UP_DISTANCE);

/// The broker's catch-up pacing: whether it applies now, and the schedule of paced bytes.
#[derive(Debug)]
pub struct CatchUp {
    /// Bytes per second of paced catch-up reads; `None`: never paced.
    rate: Option<u64>,
    epoch: Instant,
    /// When the last produce arrived, in ms since `epoch` (0: none yet).
    last_produce_ms: AtomicU64,
    /// When the paced bytes handed out so far are all sent, at the rate.
    next_free: Mutex<Instant>,
}

impl CatchUp {
    pub fn new(rate_bytes_per_s: Option<u64>) -> CatchUp {
        assert!(
            rate_bytes_per_s != Some(0),
            "a catch-up rate of 0 means none"
        );
        let epoch = Instant::now();
        CatchUp {
            rate: rate_bytes_per_s,
            epoch,
            last_produce_ms: AtomicU64::new(0),
            next_free: Mutex::new(epoch),
        }
    }

    fn now_ms(&self) -> u64 {
        // +1: 0 stands for "no produce yet".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// A produce request arrived (one relaxed store per request, not per record).
    pub fn produced(&self) {
        if self.rate.is_some() {
            self.last_produce_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// Whether catch-up reads are paced now: a rate is set and produce traffic is live.
    pub fn pacing(&self) -> bool {
        let last = self.last_produce_ms.load(Ordering::Relaxed);
        self.rate.is_some()
            && last != 0
            && self.now_ms().saturating_sub(last) <= LIVE_FOR.as_millis() as u64
    }

    /// Books `bytes` of catch-up reads on the schedule; how long to hold them back so that paced
    /// bytes leave at the rate (zero when the schedule has room now).
    pub fn pace(&self, bytes: usize) -> Duration {
        self.pace_at(bytes, Instant::now())
    }

    fn pace_at(&self, bytes: usize, now: Instant) -> Duration {
        let Some(rate) = self.rate else {
            return Duration::ZERO;
        };
        let cost = Duration::from_secs_f64(bytes as f64 / rate as f64);
        let mut next = self.next_free.lock().unwrap_or_else(|p| p.into_inner());
        let start = (*next).max(now);
        *next = start + cost;
        start - now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paced bytes leave at the rate: each booking waits for the ones before it.
    #[test]
    fn bookings_queue_at_the_rate() {
        let c = CatchUp::new(Some(100 << 20));
        let now = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(
            c.pace_at(1 << 20, now),
            ms(0),
            "an idle schedule has room now"
        );
        // 1 MiB at 100 MiB/s is 10 ms: the second booking waits for the first, the third for both.
        assert_eq!(c.pace_at(1 << 20, now), ms(10));
        assert_eq!(c.pace_at(1 << 20, now + ms(5)), ms(15));
        // After a quiet spell the schedule has room again (no credit is saved up meanwhile).
        assert_eq!(c.pace_at(1 << 20, now + ms(100)), ms(0));
        assert_eq!(c.pace_at(1 << 20, now + ms(100)), ms(10));
    }

    /// Pacing applies only while produces are live, and never without a rate.
    #[test]
    fn pacing_follows_produce_traffic() {
        let c = CatchUp::new(Some(1 << 20));
        assert!(!c.pacing(), "no produce yet");
        c.produced();
        assert!(c.pacing());
        // A produce 5 s ago is no longer live.
        let mut old = CatchUp::new(Some(1 << 20));
        old.epoch = Instant::now() - Duration::from_secs(5);
        old.last_produce_ms.store(1, Ordering::Relaxed);
        assert!(!old.pacing(), "the last produce is old");
        let off = CatchUp::new(None);
        off.produced();
        assert!(!off.pacing());
        assert_eq!(off.pace(1 << 30), Duration::ZERO);
    }
}
