//! What this broker holds, as numbers an operator reads: its replicas counted by role, and per
//! replica its raft state, log start and end, high watermark and bytes on disk. The same shapes
//! carry another broker's answer (DescribeReplicas) so that callers merge both alike. Reads only:
//! nothing here changes a replica.

use serde::Serialize;

use super::registry::Replicas;
use super::Replica;
use crate::raft::RaftSummary;

/// Replicas counted by role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplicaCounts {
    pub hosted: u32,
    pub leading: u32,
    pub following: u32,
    /// Hosted replicas that know no leader (elections under way, or cut off).
    pub without_leader: u32,
}

/// One replica's state on the broker that hosts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaReport {
    pub partition: u32,
    pub raft: RaftSummary,
    pub log_start_offset: u64,
    /// The end of its log, committed or not.
    pub log_end_offset: u64,
    pub high_watermark: u64,
    /// Bytes of its segment files on disk.
    pub size_bytes: u64,
}

/// One broker's answer: its metadata group state, its replicas by role and, when asked for, each
/// replica by topic (topics in name order, partitions in order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokerReplicas {
    pub node_id: u32,
    pub metadata: RaftSummary,
    pub counts: ReplicaCounts,
    pub topics: Vec<(String, Vec<ReplicaReport>)>,
}

impl Replica {
    pub fn report(&self) -> ReplicaReport {
        ReplicaReport {
            partition: self.partition(),
            raft: self.raft_status().summary(),
            log_start_offset: self.log_start_offset(),
            log_end_offset: self.log_end_offset(),
            high_watermark: self.high_watermark(),
            size_bytes: self.size_bytes(),
        }
    }
}

impl Replicas {
    /// Every hosted replica, counted by role.
    pub fn counts(&self) -> ReplicaCounts {
        let mut c = ReplicaCounts::default();
        for t in self.list() {
            for r in t.partitions.values() {
                c.hosted += 1;
                match r.leader() {
                    None => c.without_leader += 1,
                    Some(_) if r.is_leader() => c.leading += 1,
                    Some(_) => c.following += 1,
                }
            }
        }
        c
    }

    /// The hosted replicas of `topics` (of every topic when empty), by topic name; topics with no
    /// replica here are left out.
    pub fn reports(&self, topics: &[String]) -> Vec<(String, Vec<ReplicaReport>)> {
        let wanted: std::collections::HashSet<&str> = topics.iter().map(String::as_str).collect();
        self.list()
            .into_iter()
            .filter(|t| wanted.is_empty() || wanted.contains(t.name.as_str()))
            .map(|t| {
                let parts = t.partitions.values().map(|r| r.report()).collect();
                (t.name.clone(), parts)
            })
            .collect()
    }
}
