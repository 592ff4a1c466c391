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
//! - leader: `admit` for each batch, in proposal order, before the batch is proposed, with the
//!   [`Ticket`] number its proposal carries to the log; `leader_reset` when admitted batches will
//!   never be appended (a failed hand-off, a new term); `dropped` when raft dropped a proposal
//!   without storing it (noticed when its ticket is dropped, passed on at the next lock);
//!   `accept_append` just before a ticketed proposal is written (a refused one is stored as a
//!   void control batch in its place);
//! - every replica: `appended` for each normal entry when it is written to the local log, in log order
//!   (before it is committed: admission sees uncommitted appends);
//! - `truncated(after)` when an uncommitted suffix is cut: undo `appended` for entries after `after`;
//! - `committed` for each normal entry once a quorum has it, in log order;
//! - `snapshot` encodes the committed state; `restore` replaces everything with a snapshot's state.

use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use sluice_protocol::wire::ErrorCode;
use sluice_protocol::RecordBatch;
use tokio::sync::watch;

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
    /// term starts from what the log holds). `ticket` is the number the batch's proposal carries
    /// (increasing in admission order), for `dropped` and `accept_append`.
    fn admit(&mut self, batch: &RecordBatch, ticket: u64) -> Result<Admission, Refusal> {
        let _ = (batch, ticket);
        Ok(Admission::Propose)
    }

    /// Leader only: raft dropped the proposal numbered `ticket` without storing it (it lost its
    /// term or lease before appending, or stopped). Forget its admission, so a retry is admitted
    /// again; an admission it does not hold (already appended, or forgotten) is no news.
    fn dropped(&mut self, ticket: u64) {
        let _ = ticket;
    }

    /// Leader only, just before the proposal numbered `ticket` holding `batch` is written to the
    /// log: whether it may be. Raft stores proposals in the order they were handed over, so every
    /// admission before `ticket` still waiting was dropped. `false` (its admission was forgotten,
    /// and storing it could leave a hole before it): the log stores a void control batch at its
    /// place instead and its producer is answered `NOT_LEADER`.
    fn accept_append(&mut self, ticket: u64, batch: &RecordBatch) -> bool {
        let _ = (ticket, batch);
        true
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
/// snapshot) and replica (admit). Hooks run under this lock, so they see one order. It also issues
/// the [`Ticket`]s of the leader's proposals and passes the numbers of dropped ones on to
/// [`PartitionState::dropped`] whenever it is locked.
#[derive(Clone)]
pub struct SharedState(Arc<Shared>);

struct Shared {
    state: Mutex<Box<dyn PartitionState>>,
    drops: Arc<Drops>,
    next_ticket: AtomicU64,
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedState")
    }
}

impl SharedState {
    pub fn new(state: Box<dyn PartitionState>) -> SharedState {
        SharedState(Arc::new(Shared {
            state: Mutex::new(state),
            drops: Arc::new(Drops {
                any: AtomicBool::new(false),
                numbers: Mutex::new(Vec::new()),
                seen: watch::channel(0).0,
            }),
            next_ticket: AtomicU64::new(1),
        }))
    }

    /// The state, locked, told first of the proposals dropped since it was last locked. A poisoned
    /// lock means a hook panicked half way: the state can no longer be trusted to match the log, so
    /// this stops loudly instead of serving it.
    pub fn lock(&self) -> MutexGuard<'_, Box<dyn PartitionState>> {
        let mut g = match self.0.state.lock() {
            Ok(g) => g,
            Err(_) => panic!("partition state lock poisoned: a state hook panicked mid-update"),
        };
        // One load on the hot path (no write to a line other threads read); the list only when a
        // proposal was dropped.
        if self.0.drops.any.load(Ordering::Acquire)
            && self.0.drops.any.swap(false, Ordering::AcqRel)
        {
            for n in self.0.drops.take() {
                g.dropped(n);
            }
        }
        g
    }

    /// A new ticket for a proposal about to be admitted (numbers increase).
    pub fn ticket(&self) -> Ticket {
        Ticket {
            number: self.0.next_ticket.fetch_add(1, Ordering::Relaxed),
            drops: Some(self.0.drops.clone()),
        }
    }

    /// Changes each time a ticketed proposal is dropped: a produce waiting for a copy of a batch in
    /// flight wakes and decides again.
    pub fn drops(&self) -> watch::Receiver<u64> {
        self.0.drops.seen.subscribe()
    }
}

/// The numbers of ticketed proposals dropped since the state was last locked.
struct Drops {
    /// Whether `numbers` may hold any: read on every lock, so one atomic, not the list's lock.
    any: AtomicBool,
    numbers: Mutex<Vec<u64>>,
    seen: watch::Sender<u64>,
}

impl Drops {
    // Never panics on a poisoned lock: it runs in `Drop`, perhaps while unwinding.
    fn numbers(&self) -> MutexGuard<'_, Vec<u64>> {
        self.numbers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self) -> Vec<u64> {
        std::mem::take(&mut *self.numbers())
    }
}

/// The leader's number for one admitted proposal, carried in it to the log. If the proposal is
/// dropped before the log settles it (raft refused or discarded it), dropping the ticket records
/// its number, and the state forgets the admission at its next lock. No lock of the state is
/// taken here, so a ticket may drop anywhere, under the state's lock included.
pub struct Ticket {
    number: u64,
    drops: Option<Arc<Drops>>,
}

impl Ticket {
    pub fn number(&self) -> u64 {
        self.number
    }

    /// Its proposal's fate is decided (stored, stored void, or never proposed): nothing to record.
    pub fn settle(mut self) {
        self.drops = None;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(d) = self.drops.take() {
            d.numbers().push(self.number);
            d.any.store(true, Ordering::Release);
            d.seen.send_modify(|n| *n += 1);
        }
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ticket({})", self.number)
    }
}
