//! Replicated partition state: what a partition keeps besides its records, in log order, the same
//! on every replica, carried in raft snapshots and rebuilt after failover.
//!
//! One trait, [`PartitionState`], with a hook for each point of a batch's life. The raft storage
//! layer calls them (the log store at append and truncation, the state machine at commit, snapshot
//! and restore); the replica calls [`PartitionState::admit`] on the leader before it proposes. Plain
//! topics keep nothing ([`NoState`]); the cluster metadata and idempotent-producer state (and next
//! group offsets and window state) are implementations. Hooks never do I/O and never fail on what a client
//! sent except through `admit`.
//!
//! Order of calls, per replica:
//! - on open: `restore` from the saved snapshot (if any), then `appended` again for every entry the
//!   log holds above the snapshot point (when [`PartitionState::tracks_appends`]), then `committed`
//!   for the committed ones as raft applies them again;
//! - leader: `admit` for each batch, in proposal order, before the batch is proposed;
//!   `leader_reset` when admitted batches will never be appended (a failed proposal, a new term);
//! - every replica: `appended` for each normal entry when it is written to the local log, in log order
//!   (before it is committed: admission sees uncommitted appends);
//! - `truncated(after)` when an uncommitted suffix is cut: undo `appended` for entries after `after`;
//! - `committed` for each normal entry once a quorum has it, in log order;
//! - `snapshot` encodes the committed state; `restore` replaces everything with a snapshot's state.

use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use sluice_protocol::wire::ErrorCode;
use sluice_protocol::RecordBatch;

use super::Membership;

/// Why the leader refuses to propose a batch (a code the client is told, and a message).
pub type Refusal = (ErrorCode, String);

/// What the leader does with a batch the state accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Propose it.
    Propose,
    /// A copy of a batch the log already holds at these offsets: propose nothing, answer with them
    /// (once they are committed, for acks `all`).
    Duplicate(Range<u64>),
    /// A copy of a batch admitted and not yet in the log: propose nothing; its outcome is the
    /// first copy's.
    InFlight,
}

/// State kept in log order beside a partition's records. See the module doc for when each hook runs.
pub trait PartitionState: Send + 'static {
    /// Leader only, in proposal order, before `batch` is proposed. It sees every batch admitted or
    /// appended before it, so two in-flight copies of one batch cannot both be admitted. An admitted
    /// batch whose proposal then fails is never `appended`; the state must not wait for it (a new
    /// term starts from what the log holds).
    fn admit(&mut self, batch: &RecordBatch) -> Result<Admission, Refusal> {
        let _ = batch;
        Ok(Admission::Propose)
    }

    /// Leader only: batches admitted so far that have not reached the log never will (a proposal
    /// failed, or a new term began). Forget them, so a retry of one is admitted again.
    fn leader_reset(&mut self) {}

    /// Leader only: `batches`, the last ones answered [`Admission::Propose`] (in admission order),
    /// will not be proposed after all (the rest of their request was refused or must wait).
    /// Forget exactly those.
    fn unadmit(&mut self, batches: &[&RecordBatch]) {
        let _ = batches;
    }

    /// Whether [`PartitionState::appended`] and [`PartitionState::truncated`] do anything (a state
    /// that only reads committed entries says no, and opening skips the replay of the log tail).
    fn tracks_appends(&self) -> bool {
        true
    }

    /// Every replica, in log order: the normal entry `index` holding `batch` was written to the
    /// local log at `offsets` (not yet committed).
    fn appended(&mut self, index: u64, offsets: Range<u64>, batch: &RecordBatch) {
        let _ = (index, offsets, batch);
    }

    /// Every replica: the uncommitted entries after raft index `after` (all of them when `None`)
    /// were cut from the log. Undo what `appended` did for them.
    fn truncated(&mut self, after: Option<u64>) {
        let _ = after;
    }

    /// Every replica, in log order: a normal entry is committed. `membership` is the group's last
    /// applied membership (the same on every replica at this point of the log).
    fn committed(&mut self, batch: &RecordBatch, membership: &Membership);

    /// The committed state (what `committed` built, never what only `appended` or `admit` saw),
    /// encoded for a snapshot: on open the appends above the snapshot are replayed into it, so an
    /// uncommitted part in the snapshot would count twice. An error fails the snapshot: raft purges
    /// the log behind a snapshot, so one that lost state could not be rebuilt from the log.
    fn snapshot(&self) -> io::Result<Bytes>;

    /// Replaces the whole state with a snapshot's (empty bytes: the initial state).
    fn restore(&mut self, state: &[u8]) -> io::Result<()>;

    /// The concrete state, for a leader service that reads what it keeps (a group coordinator
    /// reads its groups); `None` for states nobody reads that way.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// A plain topic's partition keeps no state besides the high watermark.
#[derive(Debug, Default)]
pub struct NoState;

impl PartitionState for NoState {
    fn tracks_appends(&self) -> bool {
        false
    }
    fn committed(&mut self, _batch: &RecordBatch, _membership: &Membership) {}
    fn snapshot(&self) -> io::Result<Bytes> {
        Ok(Bytes::new())
    }
    fn restore(&mut self, _state: &[u8]) -> io::Result<()> {
        Ok(())
    }
}

/// One partition's state, shared by its log store (append, truncate), state machine (commit,
/// snapshot) and replica (admit). Hooks run under this lock, so they see one order.
#[derive(Clone)]
pub struct SharedState(Arc<Mutex<Box<dyn PartitionState>>>);

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedState")
    }
}

impl SharedState {
    pub fn new(state: Box<dyn PartitionState>) -> SharedState {
        SharedState(Arc::new(Mutex::new(state)))
    }

    /// The state, locked. A poisoned lock means a hook panicked half way: the state can no longer
    /// be trusted to match the log, so this stops loudly instead of serving it.
    pub fn lock(&self) -> MutexGuard<'_, Box<dyn PartitionState>> {
        match self.0.lock() {
            Ok(g) => g,
            Err(_) => panic!("partition state lock poisoned: a state hook panicked mid-update"),
        }
    }
}
