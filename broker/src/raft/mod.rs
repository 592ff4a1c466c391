//! Replication: every partition (and the cluster metadata) is an openraft group whose raft log *is*
//! the group's segment log ([`sluice_storage::PartitionLog`]).
//!
//! - [`entry`]: how raft entries map to stored batches (normal entries are the produced batches;
//!   blank and membership entries are control batches consumers skip) — pure;
//! - [`meta_file`]: the vote and purge point, each saved durably before raft is told so;
//! - [`log_store`]: `RaftLogStorage`/`RaftLogReader` over the segment log, with the raft-index ->
//!   offset map and the fsync worker that fires append callbacks in order;
//! - [`state_machine`]: the small applied state (high watermark, metadata) and its snapshots;
//! - [`codec`]: raft messages on the wire (explicit layout, no serde) — pure;
//! - [`network`]: raft RPCs over the broker's own protocol, one connection per peer broker, with
//!   pipelined replication streams;
//! - [`append_pipeline`]: the follower's side of those streams: one connection's appends of a
//!   group reach raft in order, without waiting for each other's answers;
//! - [`activity`]: whether a group is quiesced (ticker parked) and when it last saw work;
//! - [`group`]: starting and stopping one raft group over a segment log;
//! - [`status`]: a group's raft state at one instant (term, role, positions), for status views;
//! - [`partition_state`]: the replicated-state hooks ([`partition_state::PartitionState`]) the log
//!   store and state machine drive.

pub mod activity;
pub mod append_pipeline;
pub mod append_stream;
pub mod codec;
pub mod entries;
pub mod entry;
pub mod group;
pub mod index_map;
pub mod log_storage;
pub mod log_store;
pub mod meta_file;
pub mod network;
pub mod partition_state;
pub mod registry;
pub mod state_machine;
pub mod status;

pub use status::{RaftStatus, RaftSummary, Role};

use std::fmt;

use sluice_protocol::RecordBatch;
use tokio::sync::oneshot;

/// What a leader-side append reports to the produce handler waiting on it: the offsets the batch got.
pub type AppendAck = oneshot::Sender<std::ops::Range<u64>>;

/// The application data of a normal raft entry: one record batch (already CRC-checked by whoever
/// built the entry), plus, on the leader only, the ticket of its admission and the channel the
/// produce handler waits on for the offsets the batch was appended at (acks `leader`).
pub struct Proposal {
    pub batch: RecordBatch,
    /// Declared before `ack`, so it drops first: a proposal raft drops records its ticket before the
    /// produce handler can see the closed `ack` and its producer can retry.
    pub ticket: Option<partition_state::Ticket>,
    pub ack: Option<AppendAck>,
    /// The batch was read from a log (a leader's, sent to a follower): it carries the offsets it
    /// was stored at, which a follower's append must reproduce. Fresh proposals carry none.
    pub stored: bool,
}

impl Proposal {
    /// A new batch proposed on this broker.
    pub fn new(batch: RecordBatch) -> Proposal {
        Proposal {
            batch,
            ticket: None,
            ack: None,
            stored: false,
        }
    }

    /// A batch as some replica stored it.
    pub fn stored(batch: RecordBatch) -> Proposal {
        Proposal {
            batch,
            ticket: None,
            ack: None,
            stored: true,
        }
    }
}

impl fmt::Debug for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Proposal({} bytes)", self.batch.as_bytes().len())
    }
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "batch of {} bytes", self.batch.as_bytes().len())
    }
}

/// The state machine's answer to an applied entry: the offset after it (the new high watermark).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub next_offset: u64,
}

openraft::declare_raft_types!(
    /// Sluice's raft types: u64 node ids, standard leader ids (one leader per term, so a log id is
    /// (term, index) and fits the batch header), `host:port` nodes.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        Term = u64,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
);

pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type Membership = openraft::Membership<u64, openraft::BasicNode>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;

/// A log id from its parts.
pub fn log_id(term: u64, index: u64) -> LogId {
    openraft::LogId::new(
        openraft::vote::leader_id_std::CommittedLeaderId::new(term),
        index,
    )
}

/// The term of a log id.
pub fn term_of(id: &LogId) -> u64 {
    id.leader_id.term
}

/// A lock whose holder panicked is a programmer error: what it guards may be half-updated, and raft
/// would act on it. These stop loudly instead of carrying on with `into_inner()`.
pub(crate) fn poisoned(what: &str) -> ! {
    panic!("{what} lock poisoned: a panic happened mid-update")
}

/// `m` locked, or a loud stop if it is poisoned.
pub(crate) fn lock<'a, T>(m: &'a std::sync::Mutex<T>, what: &str) -> std::sync::MutexGuard<'a, T> {
    m.lock().unwrap_or_else(|_| poisoned(what))
}

/// An `io::Error` carrying a message (storage traits speak `io::Error`).
pub(crate) fn io_error(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::other(msg.into())
}
