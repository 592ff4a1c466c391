//! The broker's health as an operator asks it: whether it is ready to serve (`/readyz`), and the
//! raft state of the metadata group and this broker's replicas by role (`GET /v1/cluster`). Reads only:
//! nothing here changes the cluster.

use serde::Serialize;

use crate::broker::Broker;
use crate::raft::RaftStatus;
pub use crate::replica::report::ReplicaCounts;

/// Why this broker is or is not ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// What keeps it from being ready; empty when ready.
    pub reasons: Vec<String>,
}

/// Most not-ready partitions named in a readiness answer (a broker with thousands of replicas
/// opening must not answer a probe with a megabyte).
const MAX_REASONS: usize = 20;

impl Broker {
    /// Ready: this broker is a member of the cluster, its metadata group knows a leader and has
    /// applied all it knows committed, and every replica the metadata assigns to this broker is open
    /// here and knows its leader (so it leads or follows).
    pub fn readiness(&self) -> Readiness {
        let mut reasons = Vec::new();
        let me = self.cluster.ctx.node_id;
        let meta = RaftStatus::of(&self.cluster.metadata.group.raft);
        if meta.leader.is_none() {
            reasons.push("the metadata group has no leader".to_string());
        }
        if meta.applied_index < meta.cluster_committed_index {
            reasons.push(format!(
                "metadata applied to {:?} of {:?} committed",
                meta.applied_index, meta.cluster_committed_index
            ));
        }
        if !self.cluster.metadata.brokers().contains_key(&(me as u32)) {
            reasons.push(format!("broker {me} is not (yet) a member of the cluster"));
        }
        let state = self.cluster.metadata.state();
        let mut missing = 0usize;
        for (name, rec) in &state.topics {
            let local = self.replicas.get(name).filter(|t| t.id == rec.id);
            for (p, replicas) in rec.replicas.iter().enumerate() {
                if !replicas.iter().any(|b| u64::from(*b) == me) {
                    continue;
                }
                let part = local.as_ref().and_then(|t| t.partitions.get(&(p as u32)));
                let why = match part {
                    None => "not open",
                    Some(r) if r.leader().is_none() => "has no leader",
                    Some(_) => continue,
                };
                missing += 1;
                if missing <= MAX_REASONS {
                    reasons.push(format!("replica {name}/{p} {why}"));
                }
            }
        }
        if missing > MAX_REASONS {
            reasons.push(format!("and {} more replicas", missing - MAX_REASONS));
        }
        Readiness {
            ready: reasons.is_empty(),
            reasons,
        }
    }

    /// The metadata group's raft state as this broker sees it.
    pub fn metadata_raft_status(&self) -> RaftStatus {
        RaftStatus::of(&self.cluster.metadata.group.raft)
    }

    /// This broker's replicas by role.
    pub fn replica_counts(&self) -> ReplicaCounts {
        self.replicas.counts()
    }
}
