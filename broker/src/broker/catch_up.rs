//! Catch-up reads yield to live traffic. A fetch reading more than [`CATCH_UP_DISTANCE`] behind a
//! partition's end (a consumer replaying a backlog) is, while produce traffic is live on this
//! broker, given at most one [`CATCH_UP_SLICE`] per answer, and such slices follow a schedule at
//! the broker's catch-up rate (`catch_up_rate_mb`, one total for all catching-up readers): a slice
//! is read only when the schedule has room, and books its time on it; a fetch with nothing else to
//! answer waits for room (within its own max wait). So the cores and the disk a replay would take
//! go to producers, replication and tailing consumers first — Kafka's consumer byte-rate quotas,
//! applied only to readers that are behind and only while others need the broker. Nothing is held
//! back once read (no answer sleeps with its bytes), and a tailing partition in the same fetch is
//! answered at once. Without live traffic a replay runs as fast as the disk and network allow.
//!
//! While producers are active, cold reads (data behind the page-cache window, for consumers,
//! followers catching up and operators alike) also read one [`GENTLE_READ_BYTES`] chunk at a time
//! instead of their full read-ahead, so they never keep the disk busy for long in front of the
//! fsync a produce waits for.
//!
//! Why small slices and not only a rate: the socket copy of one answer happens at once, so a
//! 64 MiB answer paced to a rate still takes a core for tens of milliseconds in one go — exactly
//! the stall a tailing consumer's p99 sees. 1 MiB slices keep each burst near a millisecond.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_storage::ColdReads;

/// A reader this far behind a partition's end (in bytes it has left to read) is catching up.
/// Tailing consumers are never this far behind in normal operation (at 50 MB/s it is more than a
/// second of traffic).
pub const CATCH_UP_DISTANCE: u64 = 64 << 20;

/// Most bytes a catching-up fetch gets per partition while it is paced.
pub const CATCH_UP_SLICE: usize = 1 << 20;

/// Size of the one direct read each cold reader has in flight while producers are active
/// (`ColdReads::gentle_for`): short enough not to hold the disk long in front of an fsync.
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
    /// Told to read gently while producers are active.
    cold: Option<Arc<ColdReads>>,
    epoch: Instant,
    /// When the last produce arrived, in ms since `epoch` (0: none yet).
    last_produce_ms: AtomicU64,
    /// When the slices booked so far are all sent, at the rate.
    next_free: Mutex<Instant>,
}

impl CatchUp {
    pub fn new(rate_bytes_per_s: Option<u64>, cold: Option<Arc<ColdReads>>) -> CatchUp {
        assert!(
            rate_bytes_per_s != Some(0),
            "a catch-up rate of 0 means none"
        );
        let epoch = Instant::now();
        CatchUp {
            rate: rate_bytes_per_s,
            cold,
            epoch,
            last_produce_ms: AtomicU64::new(0),
            next_free: Mutex::new(epoch),
        }
    }

    fn now_ms(&self) -> u64 {
        // +1: 0 stands for "no produce yet".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// This broker accepted a produce (it leads at least one of its partitions and proposed the
    /// records): live traffic. A few relaxed stores per request, nothing per record.
    pub fn produced(&self) {
        if self.rate.is_some() {
            self.last_produce_ms.store(self.now_ms(), Ordering::Relaxed);
            if let Some(c) = &self.cold {
                c.gentle_for(GENTLE_READ_BYTES, LIVE_FOR);
            }
        }
    }

    /// Whether catch-up reads are paced now: a rate is set and produce traffic is live.
    pub fn pacing(&self) -> bool {
        let last = self.last_produce_ms.load(Ordering::Relaxed);
        self.rate.is_some()
            && last != 0
            && self.now_ms().saturating_sub(last) <= LIVE_FOR.as_millis() as u64
    }

    /// `None` when the schedule has room for a slice now; otherwise how long until it has.
    pub fn wait_for_room(&self) -> Option<Duration> {
        self.wait_for_room_at(Instant::now())
    }

    fn wait_for_room_at(&self, now: Instant) -> Option<Duration> {
        let next = *self.next_free.lock().unwrap_or_else(|p| p.into_inner());
        (next > now).then(|| next - now)
    }

    /// Books `bytes` read for catching-up readers on the schedule (no-op for 0 or without a rate).
    pub fn book(&self, bytes: usize) {
        self.book_at(bytes, Instant::now());
    }

    fn book_at(&self, bytes: usize, now: Instant) {
        let Some(rate) = self.rate.filter(|_| bytes > 0) else {
            return;
        };
        let cost = Duration::from_secs_f64(bytes as f64 / rate as f64);
        let mut next = self.next_free.lock().unwrap_or_else(|p| p.into_inner());
        *next = (*next).max(now) + cost;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Booked slices leave at the rate: the schedule has room again once their time has passed,
    /// and a quiet spell saves no credit.
    #[test]
    fn slices_queue_at_the_rate() {
        let c = CatchUp::new(Some(100 << 20), None);
        let now = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(c.wait_for_room_at(now), None, "an idle schedule has room");
        // 1 MiB at 100 MiB/s is 10 ms.
        c.book_at(1 << 20, now);
        assert_eq!(c.wait_for_room_at(now), Some(ms(10)));
        c.book_at(1 << 20, now + ms(5));
        assert_eq!(c.wait_for_room_at(now + ms(5)), Some(ms(15)));
        assert_eq!(c.wait_for_room_at(now + ms(20)), None);
        c.book_at(1 << 20, now + ms(100));
        assert_eq!(c.wait_for_room_at(now + ms(100)), Some(ms(10)));
        c.book_at(0, now + ms(100));
        assert_eq!(
            c.wait_for_room_at(now + ms(100)),
            Some(ms(10)),
            "nothing read, nothing booked"
        );
    }

    /// Pacing applies only while produces are live, and never without a rate.
    #[test]
    fn pacing_follows_produce_traffic() {
        let c = CatchUp::new(Some(1 << 20), None);
        assert!(!c.pacing(), "no produce yet");
        c.produced();
        assert!(c.pacing());
        // A produce 5 s ago is no longer live.
        let mut old = CatchUp::new(Some(1 << 20), None);
        old.epoch = Instant::now() - Duration::from_secs(5);
        old.last_produce_ms.store(1, Ordering::Relaxed);
        assert!(!old.pacing(), "the last produce is old");
        let off = CatchUp::new(None, None);
        off.produced();
        assert!(!off.pacing());
        off.book(1 << 30);
        assert_eq!(off.wait_for_room(), None);
    }
}
