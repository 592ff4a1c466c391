//! Where the bench's record values and timestamps come from: one buffer of random bytes generated
//! before the clock starts, cut into consecutive per-record slices (no allocation; at least twice
//! the batch size, so no batch holds two equal values and compression sees incompressible data),
//! e2e's stamped values (the send time, then such a slice, in a shared arena), and the wall clock
//! derived from `Instant` readings the sender takes anyway. No I/O.

use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};

use super::STAMP_BYTES;

/// `len` non-repeating pseudo-random bytes, so nothing downstream can shortcut on patterns. They
/// are leaked to be a `'static` slice: a value cut from it is a static `Bytes`, which costs no
/// reference-count operations, where a slice of a shared buffer costs two atomic operations per
/// record (a measurable share of a 100-byte record). The largest buffer made so far is kept and
/// sliced for every later pool that fits in it, so a run that produces many times (the fill, then
/// each tail phase) leaks one buffer, not one per phase (MAX_POOL bytes at most, or about 3
/// records for records over 64 MiB).
fn random_bytes(len: usize) -> Bytes {
    static LARGEST: Mutex<Option<Bytes>> = Mutex::new(None);
    let mut largest = LARGEST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(b) = largest.as_ref().filter(|b| b.len() >= len) {
        return b.slice(..len);
    }
    let mut x = super::random_u64() | 1;
    let mut v = vec![0u8; len];
    for chunk in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let b = Bytes::from_static(Vec::leak(v));
    *largest = Some(b.clone());
    b
}

/// Random bytes that values are sliced from, in order, wrapping around at the end.
#[derive(Debug, Clone)]
pub(super) struct Pool {
    bytes: Bytes,
    record_size: usize,
    next: usize,
}

/// Bounds of the random buffer: at least twice the batch size (no repeats within a batch).
const MIN_POOL: usize = 8 << 20;
const MAX_POOL: usize = 128 << 20;

impl Pool {
    pub(super) fn new(record_size: usize, batch_bytes: usize) -> Pool {
        let len = batch_bytes
            .saturating_mul(2)
            .clamp(MIN_POOL, MAX_POOL)
            .max(record_size.saturating_mul(2))
            .saturating_add(record_size);
        Pool {
            bytes: random_bytes(len),
            record_size,
            next: 0,
        }
    }

    /// The next `record_size` bytes of the buffer.
    fn next(&mut self) -> Bytes {
        if self.next + self.record_size > self.bytes.len() {
            self.next = 0;
        }
        let v = self.bytes.slice(self.next..self.next + self.record_size);
        self.next += self.record_size;
        v
    }
}

/// Where a producer's record values come from.
#[derive(Debug)]
pub(super) enum Values {
    /// Slices of the random buffer.
    Plain(Pool),
    /// The send timestamp (ns since `base`, u64 LE) followed by a slice of the random buffer past
    /// its first 8 bytes, written into a shared arena that is replaced when full: one allocation per
    /// arena, not per record.
    Stamped {
        pool: Pool,
        arena: BytesMut,
        base: Instant,
    },
}

/// Records per stamped-value arena.
const ARENA_RECORDS: usize = 1024;

impl Values {
    pub(super) fn next(&mut self, now: Instant) -> Bytes {
        match self {
            Values::Plain(pool) => pool.next(),
            Values::Stamped { pool, arena, base } => {
                let payload = pool.next();
                let len = payload.len();
                if arena.capacity() < len {
                    *arena = BytesMut::with_capacity(len * ARENA_RECORDS);
                }
                let ns = u64::try_from(now.saturating_duration_since(*base).as_nanos())
                    .unwrap_or(u64::MAX);
                arena.extend_from_slice(&ns.to_le_bytes());
                arena.extend_from_slice(&payload[STAMP_BYTES..]);
                arena.split().freeze()
            }
        }
    }
}

/// Wall-clock milliseconds derived from `Instant` readings the sender takes anyway: records carry
/// an explicit timestamp, so the client does not read the clock again per record.
pub(super) struct WallClock {
    base: Instant,
    base_ms: i64,
}

impl WallClock {
    pub(super) fn new() -> WallClock {
        let base_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        WallClock {
            base: Instant::now(),
            base_ms,
        }
    }

    pub(super) fn ms(&self, now: Instant) -> i64 {
        let since = i64::try_from(now.saturating_duration_since(self.base).as_millis());
        self.base_ms.saturating_add(since.unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn stamp(v: &[u8]) -> u64 {
        u64::from_le_bytes(v[..8].try_into().unwrap())
    }

    #[test]
    fn stamped_values_carry_the_send_time_and_random_bytes() {
        let base = Instant::now();
        let pool = Pool::new(64, 1 << 20);
        let mut v = Values::Stamped {
            pool: pool.clone(),
            arena: BytesMut::new(),
            base,
        };
        let t1 = base + Duration::from_nanos(1234);
        let a = v.next(t1);
        let b = v.next(t1 + Duration::from_nanos(1));
        assert_eq!(a.len(), 64);
        assert_eq!(stamp(&a), 1234);
        assert_eq!(stamp(&b), 1235);
        assert_eq!(a[8..], pool.bytes[8..64]);
        assert_eq!(b[8..], pool.bytes[72..128]);
        // Many more than one arena's worth stay intact.
        let all: Vec<Bytes> = (0..3 * ARENA_RECORDS as u64)
            .map(|i| v.next(base + Duration::from_nanos(i)))
            .collect();
        for (i, x) in all.iter().enumerate() {
            assert_eq!(stamp(x), i as u64);
        }
    }

    #[test]
    fn plain_values_are_distinct_slices_of_one_buffer() {
        let mut pool = Pool::new(1000, 1 << 20);
        assert!(pool.bytes.len() >= 2 << 20);
        let a = pool.next();
        let b = pool.next();
        assert_eq!(a.len(), 1000);
        assert_eq!(distance(&a, &b), 1000);
        assert_ne!(a, b);
        // A batch's worth of values never repeats one.
        let batch: Vec<Bytes> = (0..(1 << 20) / 1000).map(|_| pool.next()).collect();
        let distinct: std::collections::HashSet<&[u8]> = batch.iter().map(|b| &b[..]).collect();
        assert_eq!(distinct.len(), batch.len());
        // Wraps around without running past the end.
        for _ in 0..20_000 {
            assert_eq!(pool.next().len(), 1000);
        }
    }

    /// Byte distance between the starts of two slices of one buffer.
    fn distance(a: &Bytes, b: &Bytes) -> usize {
        b.as_ptr() as usize - a.as_ptr() as usize
    }

    #[test]
    fn huge_records_still_fit_the_pool() {
        let mut pool = Pool::new(20 << 20, 1 << 20);
        assert_eq!(pool.next().len(), 20 << 20);
        assert_eq!(pool.next().len(), 20 << 20);
    }
}
