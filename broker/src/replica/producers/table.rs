//! The idempotent-producer table of one partition at one point of its log: per producer id, the
//! epoch and the last [`WINDOW`] batches (first/last sequence, offsets once in the log), and the
//! decision for a new batch ([`Table::check`]) and its effect ([`Table::apply`]).
//!
//! Pure data: no I/O, no clock. Time is the partition's log clock (the largest batch timestamp
//! applied), so every replica applying the same batches in the same order holds the same table,
//! expiry included. What happens when (admission, append, commit, truncation) is `super`'s.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::ops::Range;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use sluice_protocol::wire::ErrorCode;
use sluice_protocol::BatchHeader;

use crate::raft::partition_state::Refusal;

/// Batches remembered per producer for duplicate detection. Kafka and Redpanda keep five, matching
/// five requests in flight; here it is eight, so a client with five requests in flight can stamp
/// and queue three more batches behind them without stepping outside the window (with five the
/// client had to stop stamping until its oldest batch completed, which cost 10-15 % of produce
/// throughput at 1 KiB records; docs/benchmarks.md).
pub const WINDOW: usize = 8;

/// Limits on what one partition remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Producer ids tracked at most; a new id past it is refused (after expiry made what room it
    /// could), so a client that makes a producer per request cannot grow the broker's memory.
    pub max_producers: usize,
    /// A producer idle this long on the log clock is forgotten (Kafka's
    /// `transactional.id.expiration.ms`, default 7 days).
    pub expire_after_ms: i64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_producers: 10_000,
            expire_after_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// The idempotence fields of one batch, as the table sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchId {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
    /// The batch's largest timestamp: it moves the log clock.
    pub timestamp_ms: i64,
}

impl BatchId {
    /// The idempotence fields of `h`, or `None` for a batch of no producer (id -1).
    pub fn of(h: &BatchHeader) -> Result<Option<BatchId>, Refusal> {
        if h.producer_id < 0 {
            return Ok(None);
        }
        if h.producer_epoch < 0 || h.base_sequence < 0 || h.record_count == 0 {
            return Err((
                ErrorCode::INVALID_REQUEST,
                "an idempotent batch needs an epoch, a base sequence and records".into(),
            ));
        }
        Ok(Some(BatchId {
            producer_id: h.producer_id,
            epoch: h.producer_epoch,
            first_seq: h.base_sequence,
            last_seq: seq_add(h.base_sequence, h.record_count - 1),
            timestamp_ms: h.max_timestamp_ms,
        }))
    }
}

/// `seq + n`, wrapping from `i32::MAX` to 0 as Kafka's sequences do.
pub fn seq_add(seq: i32, n: u32) -> i32 {
    debug_assert!(seq >= 0, "sequences are never negative");
    ((i64::from(seq) + i64::from(n)) % (i64::from(i32::MAX) + 1)) as i32
}

/// What to do with a batch that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not an idempotent batch: propose it as it is.
    Plain,
    /// The next batch of its producer: propose it.
    Append,
    /// A copy of a batch already in the log at these offsets: answer with them, write nothing.
    Duplicate(Range<u64>),
    /// A copy of a batch admitted and not yet in the log: wait for that first copy's outcome.
    InFlight,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Batch {
    first_seq: i32,
    last_seq: i32,
    /// Where it is in the log (`None` while admitted, not yet appended).
    offsets: Option<Range<u64>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Producer {
    epoch: i16,
    /// Oldest first, at most [`WINDOW`].
    batches: VecDeque<Batch>,
    last_ms: i64,
}

/// One partition's producers at one point of its log. Equal tables encode equally.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    producers: BTreeMap<i64, Producer>,
    /// The log clock: the largest batch timestamp applied.
    clock_ms: i64,
}

impl Table {
    /// Producers tracked.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The decision for `b` against this table (nothing changes).
    pub fn check(&self, b: &BatchId, limits: &Limits) -> Result<Verdict, Refusal> {
        let Some(p) = self.producers.get(&b.producer_id) else {
            if b.first_seq != 0 {
                // Its state expired (or never was): the client bumps its epoch and starts over.
                return Err((
                    ErrorCode::UNKNOWN_PRODUCER_ID,
                    format!(
                        "producer {} is not known here (expired?): sequence {} without its earlier batches",
                        b.producer_id, b.first_seq
                    ),
                ));
            }
            let room = self.len() < limits.max_producers
                || self.expired_count(limits) + limits.max_producers > self.len();
            if !room {
                return Err((
                    ErrorCode::TOO_MANY_PRODUCERS,
                    format!(
                        "this partition tracks {} producers, its limit: reuse producers instead of \
                         making one per request",
                        self.len()
                    ),
                ));
            }
            return Ok(Verdict::Append);
        };
        if b.epoch < p.epoch {
            return Err((
                ErrorCode::PRODUCER_FENCED,
                format!(
                    "producer {} epoch {} is fenced by epoch {}",
                    b.producer_id, b.epoch, p.epoch
                ),
            ));
        }
        if b.epoch > p.epoch {
            return if b.first_seq == 0 {
                Ok(Verdict::Append)
            } else {
                Err(out_of_order(b, 0))
            };
        }
        if let Some(same) = p
            .batches
            .iter()
            .find(|x| x.first_seq == b.first_seq && x.last_seq == b.last_seq)
        {
            return Ok(match &same.offsets {
                Some(o) => Verdict::Duplicate(o.clone()),
                None => Verdict::InFlight,
            });
        }
        let expected = p.batches.back().map_or(0, |x| seq_add(x.last_seq, 1));
        if b.first_seq == expected {
            return Ok(Verdict::Append);
        }
        // Wholly before the oldest batch remembered (and no wrap in between): sequences have no
        // gaps, so it was written; only its offsets are forgotten.
        let oldest = p.batches.front().map_or(expected, |x| x.first_seq);
        if b.first_seq <= b.last_seq && b.last_seq < oldest && oldest <= expected {
            return Err((
                ErrorCode::DUPLICATE_SEQUENCE,
                format!(
                    "producer {} epoch {}: sequences {}..={} were written before the {} batches \
                     this partition remembers",
                    b.producer_id, b.epoch, b.first_seq, b.last_seq, WINDOW
                ),
            ));
        }
        Err(out_of_order(b, expected))
    }

    /// Applies `b` (admitted, or in the log at `offsets`): a new producer or epoch starts its window
    /// over; a batch already in the window (admitted earlier) gets its offsets. Total: a replica
    /// applies whatever its log holds, in log order.
    pub fn apply(&mut self, b: &BatchId, offsets: Option<Range<u64>>, limits: &Limits) {
        if b.timestamp_ms > self.clock_ms {
            self.clock_ms = b.timestamp_ms;
        }
        if !self.producers.contains_key(&b.producer_id) && self.len() >= limits.max_producers {
            self.expire(limits);
        }
        let p = self.producers.entry(b.producer_id).or_insert(Producer {
            epoch: b.epoch,
            batches: VecDeque::new(),
            last_ms: b.timestamp_ms,
        });
        if b.epoch < p.epoch {
            // Admission fences older epochs, so a log never holds one after a newer epoch.
            debug_assert!(false, "producer {} epoch went back", b.producer_id);
            return;
        }
        if b.epoch > p.epoch {
            p.epoch = b.epoch;
            p.batches.clear();
        }
        p.last_ms = p.last_ms.max(b.timestamp_ms);
        if let Some(same) = p
            .batches
            .iter_mut()
            .find(|x| x.first_seq == b.first_seq && x.last_seq == b.last_seq)
        {
            if offsets.is_some() {
                same.offsets = offsets;
            }
            return;
        }
        p.batches.push_back(Batch {
            first_seq: b.first_seq,
            last_seq: b.last_seq,
            offsets,
        });
        while p.batches.len() > WINDOW {
            p.batches.pop_front();
        }
        debug_assert!(
            p.batches.len() <= WINDOW,
            "postcondition: the window is bounded"
        );
    }

    /// Makes producer `b.producer_id` known at `b.epoch` with no batches, if it is not known at
    /// all: its next batch must then start at sequence 0, and a later one is refused out of order
    /// rather than as an unknown producer (which would make its client start over).
    pub fn know(&mut self, b: &BatchId) {
        self.producers.entry(b.producer_id).or_insert(Producer {
            epoch: b.epoch,
            batches: VecDeque::new(),
            last_ms: b.timestamp_ms,
        });
    }

    /// An admitted batch reached the log at `offsets`. If its producer moved to a newer epoch
    /// meanwhile, the batch has left the window and nothing changes.
    pub fn set_offsets(&mut self, b: &BatchId, offsets: Range<u64>) {
        let Some(p) = self.producers.get_mut(&b.producer_id) else {
            return;
        };
        if p.epoch != b.epoch {
            return;
        }
        if let Some(same) = p
            .batches
            .iter_mut()
            .find(|x| x.first_seq == b.first_seq && x.last_seq == b.last_seq)
        {
            same.offsets = Some(offsets);
        }
    }

    /// Producers idle for longer than the limit on the log clock.
    fn expired_count(&self, limits: &Limits) -> usize {
        let cutoff = self.clock_ms.saturating_sub(limits.expire_after_ms);
        self.producers
            .values()
            .filter(|p| p.last_ms < cutoff)
            .count()
    }

    /// Forgets producers idle for longer than the limit on the log clock.
    pub fn expire(&mut self, limits: &Limits) {
        let cutoff = self.clock_ms.saturating_sub(limits.expire_after_ms);
        self.producers.retain(|_, p| p.last_ms >= cutoff);
    }

    /// The table as bytes (for a raft snapshot). Only tables of committed batches are encoded: a
    /// batch without offsets is a programmer error here.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u8(VERSION);
        out.put_i64_le(self.clock_ms);
        out.put_u32_le(self.producers.len() as u32);
        for (id, p) in &self.producers {
            out.put_i64_le(*id);
            out.put_i16_le(p.epoch);
            out.put_i64_le(p.last_ms);
            out.put_u8(p.batches.len() as u8);
            for b in &p.batches {
                let Some(o) = b.offsets.clone() else {
                    panic!("a committed table holds only batches that are in the log");
                };
                out.put_i32_le(b.first_seq);
                out.put_i32_le(b.last_seq);
                out.put_u64_le(o.start);
                out.put_u64_le(o.end);
            }
        }
        out.freeze()
    }

    /// The table [`Table::encode`] wrote (empty bytes: the empty table).
    pub fn decode(mut buf: &[u8]) -> io::Result<Table> {
        let bad = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("producer state: {what}"),
            )
        };
        if buf.is_empty() {
            return Ok(Table::default());
        }
        if buf.remaining() < 13 || buf.get_u8() != VERSION {
            return Err(bad("unknown version or too short"));
        }
        let clock_ms = buf.get_i64_le();
        let n = buf.get_u32_le() as usize;
        let mut producers = BTreeMap::new();
        for _ in 0..n {
            if buf.remaining() < 19 {
                return Err(bad("truncated producer"));
            }
            let id = buf.get_i64_le();
            let epoch = buf.get_i16_le();
            let last_ms = buf.get_i64_le();
            let k = buf.get_u8() as usize;
            if k > WINDOW || buf.remaining() < k * 24 {
                return Err(bad("bad batch window"));
            }
            let mut batches = VecDeque::with_capacity(k);
            for _ in 0..k {
                let first_seq = buf.get_i32_le();
                let last_seq = buf.get_i32_le();
                let start = buf.get_u64_le();
                let end = buf.get_u64_le();
                if first_seq < 0 || last_seq < 0 || end <= start {
                    return Err(bad("bad batch"));
                }
                batches.push_back(Batch {
                    first_seq,
                    last_seq,
                    offsets: Some(start..end),
                });
            }
            if id < 0
                || epoch < 0
                || producers
                    .insert(
                        id,
                        Producer {
                            epoch,
                            batches,
                            last_ms,
                        },
                    )
                    .is_some()
            {
                return Err(bad("bad or repeated producer id"));
            }
        }
        if buf.has_remaining() {
            return Err(bad("trailing bytes"));
        }
        Ok(Table {
            producers,
            clock_ms,
        })
    }
}

/// Encoding version of [`Table::encode`].
const VERSION: u8 = 1;

fn out_of_order(b: &BatchId, expected: i32) -> Refusal {
    (
        ErrorCode::OUT_OF_ORDER_SEQUENCE,
        format!(
            "producer {} epoch {}: sequence {} where {} was expected",
            b.producer_id, b.epoch, b.first_seq, expected
        ),
    )
}
