//! Idempotent-producer state of one partition, as a replicated [`PartitionState`]: per producer id
//! the epoch and the last [`WINDOW`] batches, so that a retried batch is answered with its original
//! offsets instead of being written twice, a gap is refused (`OUT_OF_ORDER_SEQUENCE`) and an older
//! epoch is fenced (`PRODUCER_FENCED`). Modelled on Redpanda's `rm_stm` and Kafka's
//! `ProducerStateManager`.
//!
//! Three tables, each a [`Table`] at one point of the log:
//! - `committed`: what committed batches built. Raft snapshots carry it; it never sees a batch that
//!   could still be cut.
//! - `pending`: the appended, uncommitted batches in log order (raft index, ids, offsets). A
//!   truncation drops a suffix of it; a commit moves its front into `committed`.
//! - `tip`: `committed`, then `pending`, then `admitted` (batches the leader admitted and handed to
//!   raft that are not in the log yet). Admission decides against it, so it sees every batch
//!   before it in proposal order and two copies of one batch can never both be proposed.
//!
//! `tip` is rebuilt from the other two after a truncation, a leader reset or a dropped proposal;
//! otherwise it is updated in place. Nothing here does I/O or reads a clock (see `table`).
//!
//! No gaps within an epoch. A proposal raft drops without storing it (the leader lost its term or
//! its lease before appending it) takes its admission with it, and every later admission of the
//! same producer, which can no longer reach the log in sequence order. So a retry of the dropped
//! batch is admitted again at once, and a retry of a later one is refused `OUT_OF_ORDER_SEQUENCE`
//! until the dropped one is retried (clients retry those in order; Redpanda's `rm_stm` resets a
//! producer's in-flight requests after a failed replicate the same way). The later proposals may
//! already be on their way into raft: the log store asks `accept_append` before writing each, and
//! one whose admission is gone is stored as a void batch instead. Raft stores proposals in the
//! order they were handed over, so an admission still waiting when a later one is written was
//! dropped, even if no drop was reported. Hence the log never holds a batch whose predecessor in
//! its producer's epoch is missing, which is what `DUPLICATE_SEQUENCE` (a sequence older than the
//! window was written) rests on.

mod table;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::ops::Range;

use bytes::Bytes;
use sluice_protocol::RecordBatch;

pub use table::{seq_add, BatchId, Limits, Table, Verdict, WINDOW};

use crate::raft::partition_state::{Admission, PartitionState, Refusal};
use crate::raft::Membership;

/// An appended, uncommitted batch of a producer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    index: u64,
    id: BatchId,
    offsets: Range<u64>,
}

/// The idempotent-producer state of one partition (see the module doc).
#[derive(Debug, Default)]
pub struct ProducerState {
    limits: Limits,
    committed: Table,
    pending: VecDeque<Pending>,
    /// Admitted on this leader, not yet appended, in proposal order, with their tickets.
    admitted: VecDeque<(u64, BatchId)>,
    /// Producers (and the epoch) of dropped admissions, kept known in `tip` until this leader's
    /// term ends or they reach the log: a producer whose first batch was dropped must see
    /// `OUT_OF_ORDER_SEQUENCE` for its later ones, not `UNKNOWN_PRODUCER_ID`.
    dropped_producers: BTreeMap<i64, BatchId>,
    tip: Table,
}

impl ProducerState {
    pub fn new(limits: Limits) -> ProducerState {
        ProducerState {
            limits,
            ..ProducerState::default()
        }
    }

    /// The table admission decides against (tests compare it with a model).
    pub fn tip(&self) -> &Table {
        &self.tip
    }

    /// The committed table (what a snapshot holds).
    pub fn committed_table(&self) -> &Table {
        &self.committed
    }

    fn rebuild_tip(&mut self) {
        let mut tip = self.committed.clone();
        for p in &self.pending {
            tip.apply(&p.id, Some(p.offsets.clone()), &self.limits);
        }
        for (_, a) in &self.admitted {
            tip.apply(a, None, &self.limits);
        }
        for d in self.dropped_producers.values() {
            tip.know(d);
        }
        self.tip = tip;
    }

    /// Forgets the admission `ticket` and every later one of its producer (see the module doc);
    /// the caller rebuilds the tip. False if it holds no such admission.
    fn forget(&mut self, ticket: u64) -> bool {
        let Some(&(_, id)) = self.admitted.iter().find(|(t, _)| *t == ticket) else {
            return false;
        };
        self.admitted
            .retain(|(t, a)| *t < ticket || a.producer_id != id.producer_id);
        // Bounded like the producers themselves; past that, such a producer starts over.
        if self.dropped_producers.len() < self.limits.max_producers {
            self.dropped_producers.entry(id.producer_id).or_insert(id);
        }
        true
    }
}

impl PartitionState for ProducerState {
    fn admit(&mut self, batch: &RecordBatch, ticket: u64) -> Result<Admission, Refusal> {
        let Some(id) = BatchId::of(batch.header())? else {
            return Ok(Admission::Propose);
        };
        Ok(match self.tip.check(&id, &self.limits)? {
            Verdict::Plain | Verdict::Append => {
                self.tip.apply(&id, None, &self.limits);
                self.admitted.push_back((ticket, id));
                Admission::Propose
            }
            Verdict::Duplicate(offsets) => Admission::Duplicate(offsets),
            Verdict::InFlight => Admission::InFlight,
        })
    }

    fn leader_reset(&mut self) {
        if !self.admitted.is_empty() || !self.dropped_producers.is_empty() {
            self.admitted.clear();
            self.dropped_producers.clear();
            self.rebuild_tip();
        }
    }

    fn dropped(&mut self, ticket: u64) {
        if self.forget(ticket) {
            self.rebuild_tip();
        }
    }

    fn accept_append(&mut self, ticket: u64, batch: &RecordBatch) -> bool {
        if !matches!(BatchId::of(batch.header()), Ok(Some(_))) {
            return true;
        }
        // Raft keeps proposal order: admissions before this one that are still waiting were
        // dropped, reported or not.
        let mut forgot = false;
        while let Some(&(t, _)) = self.admitted.front() {
            if t >= ticket {
                break;
            }
            forgot |= self.forget(t);
        }
        if forgot {
            self.rebuild_tip();
        }
        self.admitted.front().is_some_and(|(t, _)| *t == ticket)
    }

    fn unadmit(&mut self, batches: &[&RecordBatch]) {
        let mut changed = false;
        for b in batches.iter().rev() {
            if let Ok(Some(id)) = BatchId::of(b.header()) {
                // The caller's batches are the newest admissions, newest last.
                assert_eq!(
                    self.admitted.back().map(|(_, a)| a),
                    Some(&id),
                    "unadmit of a batch that is not the newest admission"
                );
                self.admitted.pop_back();
                changed = true;
            }
        }
        if changed {
            self.rebuild_tip();
        }
    }

    fn appended(&mut self, index: u64, offsets: Range<u64>, batch: &RecordBatch) {
        // A batch that is not idempotent, or malformed idempotence fields the leader let through
        // (it refuses them): nothing to remember.
        let Ok(Some(id)) = BatchId::of(batch.header()) else {
            return;
        };
        debug_assert!(
            self.pending.back().is_none_or(|p| p.index < index),
            "appends arrive in log order"
        );
        // Known from the log from now on.
        self.dropped_producers.remove(&id.producer_id);
        if self.admitted.front().is_some_and(|(_, a)| *a == id) {
            // This leader's own proposal reaching its log: the tip already holds it.
            self.admitted.pop_front();
            self.tip.set_offsets(&id, offsets.clone());
        } else if self.admitted.is_empty() {
            self.tip.apply(&id, Some(offsets.clone()), &self.limits);
        } else {
            // Someone else's entry while proposals of ours are outstanding (we lost leadership):
            // those will never be appended here in the order admitted (if one still reaches
            // this log, `accept_append` refuses it).
            self.admitted.clear();
            self.pending.push_back(Pending { index, id, offsets });
            self.rebuild_tip();
            return;
        }
        self.pending.push_back(Pending { index, id, offsets });
    }

    fn truncated(&mut self, after: Option<u64>) {
        let keep = |p: &Pending| after.is_some_and(|a| p.index <= a);
        while self.pending.back().is_some_and(|p| !keep(p)) {
            self.pending.pop_back();
        }
        // Admitted batches are proposals of a term that is over if its entries are being cut.
        self.admitted.clear();
        self.dropped_producers.clear();
        self.rebuild_tip();
    }

    fn committed(&mut self, batch: &RecordBatch, _membership: &Membership) {
        let Ok(Some(id)) = BatchId::of(batch.header()) else {
            return;
        };
        let offsets = match self.pending.front() {
            Some(p) if p.id == id => {
                let p = self.pending.pop_front();
                p.map(|p| p.offsets)
            }
            _ => None,
        };
        // Every committed batch was appended first, on every replica (open replays the log above
        // the snapshot before raft applies it again).
        let Some(offsets) = offsets else {
            panic!(
                "committed batch of producer {} seq {} is not the oldest pending append",
                id.producer_id, id.first_seq
            );
        };
        self.committed.apply(&id, Some(offsets), &self.limits);
    }

    fn snapshot(&self) -> io::Result<Bytes> {
        Ok(self.committed.encode())
    }

    fn restore(&mut self, state: &[u8]) -> io::Result<()> {
        self.committed = Table::decode(state)?;
        self.pending.clear();
        self.admitted.clear();
        self.dropped_producers.clear();
        self.tip = self.committed.clone();
        Ok(())
    }
}
