//! Consumer-group services on the broker: finding a group's coordinator (creating the internal
//! offsets topic on first use, like Kafka), and routing heartbeats, commits, fetches, resets and
//! deletions to the coordinator run that owns the group (`groups::coordinator`). A request for a
//! group this broker does not coordinate answers `NOT_COORDINATOR`, which sends the client back to
//! `FindCoordinator`.

use std::collections::BTreeSet;

use sluice_protocol::wire::ErrorCode;

use super::topics::NewTopic;
use crate::broker::Broker;
use crate::error::{Result, ServiceError};
use crate::groups::{reconcile, OFFSETS_TOPIC};
use crate::replica::groups::{GroupModel, Tp};

/// Where a group's coordinator is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorAddr {
    pub node_id: u32,
    pub host: String,
    pub partition: u32,
}

/// One committed offset, as fetch and describe answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub metadata: String,
    pub commit_ms: i64,
    pub epoch: i32,
}

/// The committed offsets of `g`, restricted to `only` when it is not empty.
pub fn committed(g: &GroupModel, only: &BTreeSet<Tp>) -> Vec<Committed> {
    g.offsets
        .iter()
        .filter(|(tp, _)| only.is_empty() || only.contains(*tp))
        .map(|((t, p), o)| Committed {
            topic: t.clone(),
            partition: *p,
            offset: o.offset,
            metadata: o.metadata.clone(),
            commit_ms: o.commit_ms,
            epoch: o.epoch,
        })
        .collect()
}

impl Broker {
    /// The broker coordinating `group`: the leader of its offsets partition. Creates the offsets
    /// topic when it does not exist yet (`COORDINATOR_NOT_AVAILABLE` until it has a leader).
    pub async fn find_coordinator(&self, group: &str) -> Result<CoordinatorAddr> {
        reconcile::check_group_id(group)?;
        if self.groups.partition_of(group).is_none() {
            self.create_offsets_topic().await?;
        }
        let Some(partition) = self.groups.partition_of(group) else {
            return Err(ServiceError::new(
                ErrorCode::COORDINATOR_NOT_AVAILABLE,
                "the offsets topic is being created",
            ));
        };
        let view = self.describe_cluster(Some(&[OFFSETS_TOPIC.to_string()]));
        let leader = view
            .topics
            .first()
            .and_then(|t| t.partitions.as_ref())
            .and_then(|ps| ps.get(partition as usize))
            .and_then(|p| p.leader);
        let host = leader.and_then(|id| self.cluster.metadata.brokers().get(&id).cloned());
        match (leader, host) {
            (Some(node_id), Some(host)) => Ok(CoordinatorAddr {
                node_id,
                host,
                partition,
            }),
            _ => Err(ServiceError::new(
                ErrorCode::COORDINATOR_NOT_AVAILABLE,
                format!("partition {partition} of {OFFSETS_TOPIC} has no leader yet"),
            )),
        }
    }

    /// Creates `__consumer_offsets`: compacted, `offsets_topic_partitions` partitions, replication
    /// factor min(3, brokers). Several brokers racing to create it is fine: one wins.
    async fn create_offsets_topic(&self) -> Result<()> {
        let brokers = self.cluster.metadata.brokers().len().max(1);
        let topic = NewTopic {
            name: OFFSETS_TOPIC.to_string(),
            partitions: self.groups.config.offsets_partitions,
            replication_factor: brokers.min(3) as u16,
            // Compaction cleans sealed segments only: 100 MiB segments (Kafka's
            // offsets.topic.segment.bytes) keep the topic near its live size, not 1 GiB behind.
            configs: vec![
                ("cleanup.policy".into(), "compact".into()),
                ("segment.bytes".into(), (100u64 << 20).to_string()),
            ],
        };
        tracing::info!(
            partitions = topic.partitions,
            replication_factor = topic.replication_factor,
            "creating {OFFSETS_TOPIC}"
        );
        self.create_internal_topic(topic).await
    }

    /// The committed offsets of `group` (every one when `partitions` is empty). An unknown group
    /// has none: that is not an error (a new group starts per its reset policy).
    pub fn fetch_offsets(&self, group: &str, partitions: &BTreeSet<Tp>) -> Result<Vec<Committed>> {
        Ok(self
            .groups
            .group(group)?
            .map(|g| committed(&g, partitions))
            .unwrap_or_default())
    }

    /// A group as its coordinator knows it (`GROUP_ID_NOT_FOUND` when it does not exist).
    pub fn describe_group(&self, group: &str) -> Result<GroupModel> {
        self.groups.group(group)?.ok_or_else(|| {
            ServiceError::new(ErrorCode::GROUP_ID_NOT_FOUND, format!("no group {group}"))
        })
    }
}
