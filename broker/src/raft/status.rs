//! A raft group's view of itself at one instant, as plain numbers: term, role, leader, how far its
//! log is written, committed and applied, and on a leader how far each follower has matched. Read
//! from openraft's metrics watch; never changes the group.

use openraft::async_runtime::WatchReceiver;

use super::network::RaftHandle;

/// A member's role in its raft group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    Shutdown,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        }
    }
}

/// One group's raft state, as this broker sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RaftStatus {
    pub term: u64,
    pub role: Role,
    pub leader: Option<u64>,
    /// Index of the last entry in this broker's log.
    pub last_log_index: Option<u64>,
    /// Index of the last entry this broker knows to be committed (safe to apply here).
    pub committed_index: Option<u64>,
    /// Index of the last entry committed by a quorum, as the leader last told this broker (ahead of
    /// `committed_index` on a broker that lacks entries).
    pub cluster_committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// On the leader: per voter or learner (this broker included), the last index known to match.
    pub matched: Vec<(u64, Option<u64>)>,
}

/// The part of a [`RaftStatus`] another broker can be told (what DescribeReplicas carries): the
/// leader's per-follower progress and the quorum's commit point stay with the broker that has them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RaftSummary {
    pub term: u64,
    pub role: Role,
    pub leader: Option<u64>,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
}

impl RaftStatus {
    pub fn summary(&self) -> RaftSummary {
        RaftSummary {
            term: self.term,
            role: self.role,
            leader: self.leader,
            last_log_index: self.last_log_index,
            committed_index: self.committed_index,
            applied_index: self.applied_index,
        }
    }

    pub fn of(raft: &RaftHandle) -> RaftStatus {
        let m = raft.metrics().borrow_watched().clone();
        let role = match m.state {
            openraft::ServerState::Leader => Role::Leader,
            openraft::ServerState::Follower => Role::Follower,
            openraft::ServerState::Candidate => Role::Candidate,
            openraft::ServerState::Learner => Role::Learner,
            openraft::ServerState::Shutdown => Role::Shutdown,
        };
        RaftStatus {
            term: m.current_term,
            role,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            committed_index: m.local_committed.map(|l| l.index),
            cluster_committed_index: m.cluster_committed.map(|l| l.index),
            applied_index: m.last_applied.map(|l| l.index),
            matched: m
                .replication
                .map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect())
                .unwrap_or_default(),
        }
    }
}
