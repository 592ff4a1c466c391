//! The idempotent-producer state against a model that keeps every batch and decides by scanning
//! them (no window bookkeeping, no tip maintenance): random sends (the next batch, copies of recent
//! ones, gaps, old and new epochs, unknown producers), proposals that raft appends, drops (told or
//! not) or that reach the log after their admission was forgotten, commits, truncations of the
//! uncommitted suffix, leader resets and snapshot/restore with the replay an open does. Every
//! admission must decide as the model does, and no batch may be stored after a hole in its
//! producer's sequences. Plus the bounds: the producer limit and expiry.
//!
//! Seen failing: with `truncated` not dropping admitted batches (a cut term's proposals kept in the
//! tip), a send the model admits came back `InFlight`. It also found that applying an admitted
//! batch's offsets once it reached the log could set its producer's epoch back (now `set_offsets`).
//! With `accept_append` always true, a proposal whose admission was forgotten was accepted into
//! the log; with `dropped` a no-op, a retry of a dropped batch came back `InFlight`; without the
//! dropped producers kept known in the tip, a later batch of a producer whose first batch was
//! dropped came back `UNKNOWN_PRODUCER_ID` instead of `OUT_OF_ORDER_SEQUENCE`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;

use proptest::prelude::*;
use sluice_protocol::wire::ErrorCode;
use sluice_protocol::{BatchBuilder, Compression, RecordBatch};

use super::{seq_add, BatchId, Limits, ProducerState, WINDOW};
use crate::raft::partition_state::{Admission, PartitionState};
use crate::raft::Membership;

fn batch(pid: i64, epoch: i16, seq: i32, n: u32, ts: i64) -> RecordBatch {
    let mut b = BatchBuilder::new(Compression::None).producer(pid, epoch, seq);
    for i in 0..n {
        b.append(ts, None, Some(format!("{pid}-{seq}-{i}").as_bytes()), &[]);
    }
    RecordBatch::decode(&b.seal().unwrap()).unwrap().0
}

/// Every batch the partition holds or has admitted, in order; decisions by scanning them.
#[derive(Debug, Default, Clone)]
struct Model {
    /// In the log: (raft index, id, offsets); the first `committed` of them are committed.
    log: Vec<(u64, BatchId, Range<u64>)>,
    committed: usize,
    /// Admitted and not forgotten, with their tickets, in admission order.
    admitted: Vec<(u64, BatchId)>,
    /// Proposals handed to raft and not yet stored or dropped, in hand-off order.
    queue: VecDeque<(u64, BatchId)>,
    /// Per producer, the first of its dropped admissions, until one of its batches is stored or
    /// the term ends: such a producer is known even with no batch at all.
    dropped: BTreeMap<i64, BatchId>,
}

impl Model {
    fn all(&self) -> impl Iterator<Item = (BatchId, Option<Range<u64>>)> + '_ {
        self.log
            .iter()
            .map(|(_, id, o)| (*id, Some(o.clone())))
            .chain(self.admitted.iter().map(|(_, id)| (*id, None)))
    }

    /// Raft dropped the proposal `ticket`: it and the later admissions of its producer go.
    fn forget(&mut self, ticket: u64) {
        let Some(pid) = self
            .admitted
            .iter()
            .find(|(t, _)| *t == ticket)
            .map(|(_, id)| id.producer_id)
        else {
            return;
        };
        let first = self
            .admitted
            .iter()
            .find(|(t, _)| *t == ticket)
            .map(|(_, id)| *id);
        self.admitted
            .retain(|(t, id)| *t < ticket || id.producer_id != pid);
        if let Some(first) = first {
            self.dropped.entry(pid).or_insert(first);
        }
    }

    /// The term ended (or the process restarted): nothing admitted or dropped counts any more.
    fn reset(&mut self) {
        self.admitted.clear();
        self.dropped.clear();
    }

    /// No hole: `id` follows its producer's last batch in the log (or starts an epoch at 0).
    fn follows(&self, id: &BatchId) -> bool {
        match self
            .log
            .iter()
            .rev()
            .find(|(_, x, _)| x.producer_id == id.producer_id)
        {
            Some((_, last, _)) if last.epoch == id.epoch => {
                id.first_seq == seq_add(last.last_seq, 1)
            }
            _ => id.first_seq == 0,
        }
    }

    fn decide(&self, b: &BatchId) -> Result<Admission, ErrorCode> {
        let mine: Vec<_> = self
            .all()
            .filter(|(x, _)| x.producer_id == b.producer_id)
            .collect();
        let Some((last, _)) = mine.last() else {
            return match self.dropped.get(&b.producer_id) {
                // Its first batch was dropped: known at that epoch, with nothing written yet.
                Some(d) if b.epoch < d.epoch => Err(ErrorCode::PRODUCER_FENCED),
                Some(_) if b.first_seq != 0 => Err(ErrorCode::OUT_OF_ORDER_SEQUENCE),
                None if b.first_seq != 0 => Err(ErrorCode::UNKNOWN_PRODUCER_ID),
                _ => Ok(Admission::Propose),
            };
        };
        if b.epoch < last.epoch {
            return Err(ErrorCode::PRODUCER_FENCED);
        }
        if b.epoch > last.epoch {
            return if b.first_seq == 0 {
                Ok(Admission::Propose)
            } else {
                Err(ErrorCode::OUT_OF_ORDER_SEQUENCE)
            };
        }
        let this_epoch: Vec<_> = mine.iter().filter(|(x, _)| x.epoch == b.epoch).collect();
        let window = &this_epoch[this_epoch.len().saturating_sub(WINDOW)..];
        if let Some((_, o)) = window
            .iter()
            .find(|(x, _)| x.first_seq == b.first_seq && x.last_seq == b.last_seq)
        {
            return Ok(match o {
                Some(o) => Admission::Duplicate(o.clone()),
                None => Admission::InFlight,
            });
        }
        if b.first_seq == seq_add(last.last_seq, 1) {
            Ok(Admission::Propose)
        } else if window
            .first()
            .is_some_and(|(w, _)| b.first_seq <= b.last_seq && b.last_seq < w.first_seq)
        {
            // Older than the window: written before, offsets forgotten.
            Err(ErrorCode::DUPLICATE_SEQUENCE)
        } else {
            Err(ErrorCode::OUT_OF_ORDER_SEQUENCE)
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A send by producer `pid` of `n` records: 0 the next batch, 1 a copy of a recent one, 2 a gap,
    /// 3 an older epoch, 4 a new epoch from 0, 5 a new epoch not from 0.
    Send {
        pid: i64,
        kind: u8,
        n: u32,
        back: usize,
    },
    /// Raft stores the oldest proposal handed to it.
    Append,
    /// Raft drops the oldest proposal handed to it, and its ticket tells (`told`) or not.
    Drop {
        told: bool,
    },
    Commit,
    Truncate {
        keep: usize,
    },
    LeaderReset,
    SnapshotRestore,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..4i64, 0..6u8, 1..4u32, 0..7usize)
            .prop_map(|(pid, kind, n, back)| Op::Send { pid, kind, n, back }),
        4 => Just(Op::Append),
        1 => any::<bool>().prop_map(|told| Op::Drop { told }),
        2 => Just(Op::Commit),
        1 => (0..4usize).prop_map(|keep| Op::Truncate { keep }),
        1 => Just(Op::LeaderReset),
        1 => Just(Op::SnapshotRestore),
    ]
}

/// The batch a send of `kind` by `pid` carries, from what the model holds.
fn make(model: &Model, pid: i64, kind: u8, n: u32, back: usize) -> BatchId {
    let mine: Vec<BatchId> = model
        .all()
        .map(|(x, _)| x)
        .filter(|x| x.producer_id == pid)
        .collect();
    let (epoch, next) = mine
        .last()
        .map_or((0, 0), |l| (l.epoch, seq_add(l.last_seq, 1)));
    let id = |epoch: i16, first: i32| BatchId {
        producer_id: pid,
        epoch,
        first_seq: first,
        last_seq: seq_add(first, n - 1),
        timestamp_ms: 1_000,
    };
    match kind {
        1 if !mine.is_empty() => mine[mine.len() - 1 - back.min(mine.len() - 1)],
        2 => id(epoch, seq_add(next, 1 + back as u32)),
        3 if epoch > 0 => id(epoch - 1, next),
        4 => id(epoch + 1, 0),
        5 => id(epoch + 1, 1 + back as i32),
        _ => id(epoch, next),
    }
}

fn to_batch(id: &BatchId) -> RecordBatch {
    let n = u32::try_from(i64::from(id.last_seq) - i64::from(id.first_seq) + 1).unwrap();
    batch(id.producer_id, id.epoch, id.first_seq, n, id.timestamp_ms)
}

fn membership() -> Membership {
    Membership::default()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn admission_decides_as_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        let limits = Limits { max_producers: 1_000, expire_after_ms: i64::MAX / 4 };
        let mut state = ProducerState::new(limits);
        let mut model = Model::default();
        let (mut index, mut offset, mut tickets) = (0u64, 0u64, 0u64);
        for op in ops {
            match op {
                Op::Send { pid, kind, n, back } => {
                    let id = make(&model, pid, kind, n, back);
                    let want = model.decide(&id);
                    tickets += 1;
                    let got = state.admit(&to_batch(&id), tickets).map_err(|(code, _)| code);
                    prop_assert_eq!(&got, &want, "send {:?}", id);
                    if got == Ok(Admission::Propose) {
                        model.admitted.push((tickets, id));
                        model.queue.push_back((tickets, id));
                    }
                }
                Op::Append => {
                    let Some((ticket, id)) = model.queue.pop_front() else {
                        continue;
                    };
                    // Raft keeps order: admissions before this one still waiting were dropped.
                    while let Some(&(t, _)) = model.admitted.first() {
                        if t >= ticket {
                            break;
                        }
                        model.forget(t);
                    }
                    let want = model.admitted.first().is_some_and(|(t, _)| *t == ticket);
                    let got = state.accept_append(ticket, &to_batch(&id));
                    prop_assert_eq!(got, want, "append of {:?}", id);
                    index += 1;
                    if !got {
                        // Stored void in its place: a batch of no producer.
                        state.appended(index, offset..offset + 1, &batch(-1, -1, -1, 1, -1));
                        offset += 1;
                        continue;
                    }
                    prop_assert!(model.follows(&id), "{:?} stored after a hole: {:?}", id, model.log);
                    model.admitted.remove(0);
                    model.dropped.remove(&id.producer_id);
                    let n = u64::try_from(i64::from(id.last_seq) - i64::from(id.first_seq) + 1).unwrap();
                    let offsets = offset..offset + n;
                    offset += n;
                    state.appended(index, offsets.clone(), &to_batch(&id));
                    model.log.push((index, id, offsets));
                }
                Op::Drop { told } => {
                    let Some((ticket, _)) = model.queue.pop_front() else {
                        continue;
                    };
                    if told {
                        model.forget(ticket);
                        state.dropped(ticket);
                    }
                }
                Op::Commit => {
                    if model.committed == model.log.len() {
                        continue;
                    }
                    let id = model.log[model.committed].1;
                    state.committed(&to_batch(&id), &membership());
                    model.committed += 1;
                }
                Op::Truncate { keep } => {
                    let keep = (model.committed + keep).min(model.log.len());
                    let after = keep.checked_sub(1).map(|i| model.log[i].0);
                    state.truncated(after);
                    model.log.truncate(keep);
                    model.reset();
                }
                Op::LeaderReset => {
                    state.leader_reset();
                    model.reset();
                }
                Op::SnapshotRestore => {
                    // A restart: restore the committed state, replay the log above it (open).
                    let snap = state.snapshot().unwrap();
                    let mut fresh = ProducerState::new(limits);
                    fresh.restore(&snap).unwrap();
                    for (i, id, o) in &model.log[model.committed..] {
                        fresh.appended(*i, o.clone(), &to_batch(id));
                    }
                    prop_assert_eq!(fresh.committed_table(), state.committed_table());
                    state = fresh;
                    model.reset();
                    model.queue.clear();
                }
            }
        }
    }

    /// Any bytes given to `restore` are refused or restored, never a panic.
    #[test]
    fn restore_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut state = ProducerState::default();
        let _ = state.restore(&bytes);
    }
}

fn admit(
    state: &mut ProducerState,
    pid: i64,
    epoch: i16,
    seq: i32,
    ts: i64,
) -> Result<Admission, ErrorCode> {
    // Tickets for tests that never append through `accept_append`.
    state
        .admit(&batch(pid, epoch, seq, 1, ts), 0)
        .map_err(|(c, _)| c)
}

fn append_commit(state: &mut ProducerState, index: u64, pid: i64, epoch: i16, seq: i32, ts: i64) {
    let b = batch(pid, epoch, seq, 1, ts);
    state.appended(index, index..index + 1, &b);
    state.committed(&b, &membership());
}

/// A partition tracks at most `max_producers` ids: one more is refused with `TOO_MANY_PRODUCERS`
/// while the others are fresh, and admitted once the log clock has passed their idle time (they
/// expire). Seen failing with the bound check removed (the fourth producer admitted).
#[test]
fn the_producer_bound_refuses_a_new_id_until_idle_ones_expire() {
    let limits = Limits {
        max_producers: 3,
        expire_after_ms: 10_000,
    };
    let mut state = ProducerState::new(limits);
    for pid in 0..3 {
        assert_eq!(admit(&mut state, pid, 0, 0, 1_000), Ok(Admission::Propose));
        append_commit(&mut state, pid as u64 + 1, pid, 0, 0, 1_000);
    }
    assert_eq!(
        admit(&mut state, 9, 0, 0, 1_000),
        Err(ErrorCode::TOO_MANY_PRODUCERS)
    );
    // Producer 0 keeps writing; the clock moves past the others' idle time.
    assert_eq!(admit(&mut state, 0, 0, 1, 20_000), Ok(Admission::Propose));
    append_commit(&mut state, 4, 0, 0, 1, 20_000);
    assert_eq!(admit(&mut state, 9, 0, 0, 20_000), Ok(Admission::Propose));
    append_commit(&mut state, 5, 9, 0, 0, 20_000);
    assert!(
        state.committed_table().len() <= 3,
        "{:?}",
        state.committed_table()
    );
}

/// A producer idle past `expire_after_ms` (on the log clock) is forgotten: its next batch is
/// `UNKNOWN_PRODUCER_ID`, and a restart of it at sequence 0 is admitted; a producer still within
/// its time keeps its window (a copy is still a duplicate). Seen failing with `expire` a no-op.
#[test]
fn idle_producers_expire_on_the_log_clock() {
    let limits = Limits {
        max_producers: 2,
        expire_after_ms: 10_000,
    };
    let mut state = ProducerState::new(limits);
    append_commit(&mut state, 1, 1, 0, 0, 1_000);
    append_commit(&mut state, 2, 2, 0, 0, 1_000);
    append_commit(&mut state, 3, 2, 0, 1, 30_000);
    // A third producer needs room: producer 1 (idle since 1 000) expires, producer 2 stays.
    append_commit(&mut state, 4, 3, 0, 0, 30_000);
    assert_eq!(
        admit(&mut state, 1, 0, 1, 30_000),
        Err(ErrorCode::UNKNOWN_PRODUCER_ID)
    );
    assert_eq!(
        admit(&mut state, 2, 0, 1, 30_000),
        Ok(Admission::Duplicate(3..4))
    );
}

/// An older epoch is fenced once a newer one wrote; the newer one carries on from sequence 0.
#[test]
fn a_newer_epoch_fences_the_older_one() {
    let mut state = ProducerState::default();
    append_commit(&mut state, 1, 7, 0, 0, 1_000);
    assert_eq!(admit(&mut state, 7, 1, 0, 1_000), Ok(Admission::Propose));
    assert_eq!(
        admit(&mut state, 7, 0, 1, 1_000),
        Err(ErrorCode::PRODUCER_FENCED)
    );
    assert_eq!(admit(&mut state, 7, 1, 1, 1_000), Ok(Admission::Propose));
}

fn admit_as(
    state: &mut ProducerState,
    ticket: u64,
    pid: i64,
    seq: i32,
) -> Result<Admission, ErrorCode> {
    state
        .admit(&batch(pid, 0, seq, 1, 1_000), ticket)
        .map_err(|(c, _)| c)
}

/// Raft drops the proposal of producer 5's batch A (told through its ticket) while the next batch
/// B of the same producer is already on its way: A's retry is admitted at once (before, it waited
/// for the copy "in flight" and timed out), B's retry is refused out of order until A is retried,
/// and B's first proposal, reaching the log, is not stored. Another producer's admission stays.
/// Seen failing with `dropped` a no-op (B's retry came back `InFlight`), with `accept_append`
/// always true, and with dropped producers not kept known (B's retry `UNKNOWN_PRODUCER_ID`).
#[test]
fn a_dropped_proposal_takes_the_later_admissions_of_its_producer_with_it() {
    let mut state = ProducerState::default();
    assert_eq!(admit_as(&mut state, 1, 5, 0), Ok(Admission::Propose));
    assert_eq!(admit_as(&mut state, 2, 5, 1), Ok(Admission::Propose));
    assert_eq!(admit_as(&mut state, 3, 6, 0), Ok(Admission::Propose));
    state.dropped(1);
    assert_eq!(
        admit_as(&mut state, 4, 5, 1),
        Err(ErrorCode::OUT_OF_ORDER_SEQUENCE)
    );
    assert_eq!(admit_as(&mut state, 5, 6, 0), Ok(Admission::InFlight));
    assert!(!state.accept_append(2, &batch(5, 0, 1, 1, 1_000)));
    assert!(state.accept_append(3, &batch(6, 0, 0, 1, 1_000)));
    state.appended(1, 0..1, &batch(6, 0, 0, 1, 1_000));
    assert_eq!(admit_as(&mut state, 6, 5, 0), Ok(Admission::Propose));
    assert_eq!(admit_as(&mut state, 7, 5, 1), Ok(Admission::Propose));
    assert!(state.accept_append(6, &batch(5, 0, 0, 1, 1_000)));
}

/// The hole this closes: producer 5's A (sequence 0) is admitted, then B (sequence 1); raft drops
/// A without a word and stores B. Before, `appended` took B, so the log held B without A, and A's
/// retry was answered `DUPLICATE_SEQUENCE` ("written before the window"), which window operators
/// count as stored: A was lost. Now B reaching the log while A is still admitted shows A was
/// dropped (raft keeps proposal order): B is refused (stored void), and A's retry is admitted.
/// Seen failing with `accept_append` always true (B stored, A's retry `DUPLICATE_SEQUENCE`).
#[test]
fn a_batch_is_never_stored_after_a_dropped_batch_of_its_producer() {
    let mut state = ProducerState::default();
    assert_eq!(admit_as(&mut state, 1, 5, 0), Ok(Admission::Propose));
    assert_eq!(admit_as(&mut state, 2, 5, 1), Ok(Admission::Propose));
    let b = batch(5, 0, 1, 1, 1_000);
    if state.accept_append(2, &b) {
        state.appended(1, 0..1, &b);
    } else {
        state.appended(1, 0..1, &batch(-1, -1, -1, 1, -1));
    }
    assert_eq!(admit_as(&mut state, 3, 5, 0), Ok(Admission::Propose));
    assert_eq!(admit_as(&mut state, 4, 5, 1), Ok(Admission::Propose));
}
