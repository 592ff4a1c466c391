//! Partition leadership across the cluster: moving it to each partition's preferred replica on
//! demand (`sluice cluster balance-leaders`, `POST /v1/cluster/balance-leaders`), and how many
//! partitions each broker leads. Whichever broker is asked answers for the whole cluster: it hands
//! over the partitions it leads itself and asks every other broker to do the same for theirs
//! (`cluster::forward`), then reports every partition of the metadata, one row each. The hand-over
//! and its checks are `cluster::rebalance`'s and `replica::transfer`'s; nothing here moves
//! leadership by itself or changes an assignment.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::broker::Broker;
use crate::error::Result;

pub use crate::cluster::rebalance::{LeaderOutcome, PartitionLeader};

/// How long a balance waits for another broker's part (its transfers are bounded well below it).
const REMOTE_WAIT: Duration = Duration::from_secs(20);

/// The outcome of a cluster-wide leader balance: every partition of the cluster, by topic and
/// partition, and how many moved, were already led by their preferred replica, or were skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaderBalance {
    pub moved: usize,
    pub already_preferred: usize,
    pub skipped: usize,
    pub partitions: Vec<PartitionLeader>,
}

/// How many partitions a broker leads, and how many prefer it as their leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokerLeaders {
    pub node_id: u32,
    pub leaders: usize,
    pub preferred: usize,
}

impl Broker {
    /// Moves every partition's leadership to its preferred replica where that replica is up and in
    /// sync, across the cluster, and reports what happened to each partition. A broker that does
    /// not answer leaves its partitions where they are (skipped, with its error).
    pub async fn balance_leaders(&self) -> Result<LeaderBalance> {
        let me = self.cluster.ctx.node_id;
        let others: Vec<(u32, String)> = self
            .cluster
            .metadata
            .brokers()
            .into_iter()
            .filter(|(id, _)| u64::from(*id) != me)
            .collect();
        let remote = futures_util::future::join_all(others.iter().map(|(id, addr)| async move {
            (
                *id,
                self.cluster.balance_leaders_at(addr, REMOTE_WAIT).await,
            )
        }));
        let (local, remote) = tokio::join!(self.balance_local_leaders(), remote);
        let mut rows: BTreeMap<(String, u32), PartitionLeader> = BTreeMap::new();
        let mut silent: BTreeMap<u32, String> = BTreeMap::new();
        // A partition handed over while the new leader listed its own may be reported twice: the
        // hand-over is what happened.
        let mut add = |row: PartitionLeader| {
            let key = (row.topic.clone(), row.partition);
            if rows
                .get(&key)
                .is_none_or(|r| r.outcome != LeaderOutcome::Moved)
            {
                rows.insert(key, row);
            }
        };
        local.into_iter().for_each(&mut add);
        for (id, answer) in remote {
            match answer {
                Ok(part) => part.into_iter().for_each(&mut add),
                Err(e) => {
                    tracing::warn!(broker = id, error = %e, "leader balance: a broker did not answer");
                    silent.insert(id, e.message);
                }
            }
        }
        // Partitions nobody reported: no leader is known, or their leader did not answer.
        let view = self.describe_cluster(None);
        for t in &view.topics {
            for p in t.partitions.iter().flatten() {
                let key = (t.name.clone(), p.partition);
                if rows.contains_key(&key) {
                    continue;
                }
                let reason = match p.leader {
                    None => "no leader is known".to_string(),
                    Some(l) => match silent.get(&l) {
                        Some(e) => format!("its leader, broker {l}, did not answer: {e}"),
                        None => format!("its leader, broker {l}, did not report it"),
                    },
                };
                let preferred = p.replicas.first().copied();
                rows.insert(
                    key,
                    PartitionLeader::skipped(&t.name, p.partition, preferred, p.leader, reason),
                );
            }
        }
        let partitions: Vec<PartitionLeader> = rows.into_values().collect();
        let count = |o: LeaderOutcome| partitions.iter().filter(|p| p.outcome == o).count();
        Ok(LeaderBalance {
            moved: count(LeaderOutcome::Moved),
            already_preferred: count(LeaderOutcome::AlreadyPreferred),
            skipped: count(LeaderOutcome::Skipped),
            partitions,
        })
    }

    /// The partitions this broker leads, each handed to its preferred replica where that one is
    /// up and in sync (this broker's part of [`Broker::balance_leaders`]).
    pub async fn balance_local_leaders(&self) -> Vec<PartitionLeader> {
        crate::cluster::rebalance::balance_here(
            &self.cluster,
            &self.replicas,
            self.config.raft_election_timeout,
        )
        .await
    }

    /// Per broker of the cluster, by id: the partitions it leads (as this broker sees them, like
    /// `describe_cluster`) and those whose preferred leader it is.
    pub fn leader_counts(&self) -> Vec<BrokerLeaders> {
        let view = self.describe_cluster(None);
        let mut counts: BTreeMap<u32, BrokerLeaders> = view
            .brokers
            .iter()
            .map(|b| {
                let row = BrokerLeaders {
                    node_id: b.node_id,
                    leaders: 0,
                    preferred: 0,
                };
                (b.node_id, row)
            })
            .collect();
        for p in view
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().flatten())
        {
            if let Some(b) = p.leader.and_then(|l| counts.get_mut(&l)) {
                b.leaders += 1;
            }
            if let Some(b) = p.replicas.first().and_then(|r| counts.get_mut(r)) {
                b.preferred += 1;
            }
        }
        counts.into_values().collect()
    }
}
