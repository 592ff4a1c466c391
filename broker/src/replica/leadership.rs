//! Who leads a partition's raft group, as a watch: fed by openraft's server-metrics watch (which
//! changes only on a vote, state, leader or membership change), never by polling.
//!
//! This module only observes raft; it never changes a vote or a membership.

use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use tokio::sync::watch;

use crate::raft::network::RaftHandle;

/// A replica's view of its group's leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// This replica leads, in `term`.
    Leader { term: u64 },
    /// Another replica leads; `leader` is its node id and `addr` its `host:port`, when known.
    Follower {
        term: u64,
        leader: u64,
        addr: Option<String>,
    },
    /// No leader is known (an election is under way, or the group has not started).
    Unknown { term: u64 },
}

impl Leadership {
    pub fn is_leader(&self) -> bool {
        matches!(self, Leadership::Leader { .. })
    }

    /// The leader's node id, if one is known.
    pub fn leader(&self, me: u64) -> Option<u64> {
        match self {
            Leadership::Leader { .. } => Some(me),
            Leadership::Follower { leader, .. } => Some(*leader),
            Leadership::Unknown { .. } => None,
        }
    }

    pub fn term(&self) -> u64 {
        match self {
            Leadership::Leader { term }
            | Leadership::Follower { term, .. }
            | Leadership::Unknown { term } => *term,
        }
    }
}

/// Reads the leadership out of raft's server metrics now (cloning only what it needs; the borrow is
/// never held across an await). Request handling asks this, not the watch: the watch is updated by
/// a task, which on a loaded machine may run a little after raft changed its mind.
pub fn current(raft: &RaftHandle) -> Leadership {
    let m = raft.server_metrics();
    let m = m.borrow_watched();
    let term = m.vote.leader_id().term;
    match (m.state, m.current_leader) {
        // Leading only once raft both is in the leader state and names itself (its vote is
        // committed): the same moment openraft starts accepting writes.
        (ServerState::Leader, Some(leader)) if leader == m.id => Leadership::Leader { term },
        (_, Some(leader)) if leader == m.id => Leadership::Unknown { term },
        (_, Some(leader)) => Leadership::Follower {
            term,
            leader,
            addr: m
                .membership_config
                .membership()
                .get_node(&leader)
                .map(|n| n.addr.clone()),
        },
        (_, None) => Leadership::Unknown { term },
    }
}

/// Starts the task that keeps a leadership watch in step with `raft`; it ends when raft stops.
pub fn watch(raft: &RaftHandle) -> watch::Receiver<Leadership> {
    let (tx, rx) = watch::channel(current(raft));
    let raft = raft.clone();
    tokio::spawn(async move {
        let mut metrics = raft.server_metrics();
        loop {
            let now = current(&raft);
            tx.send_if_modified(|cur| {
                let changed = *cur != now;
                *cur = now;
                changed
            });
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                // Nobody watches any more (the replica is gone).
                _ = tx.closed() => return,
            }
        }
    });
    rx
}
