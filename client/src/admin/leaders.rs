//! Partition leadership on [`Admin`]: moving each partition's leadership to its preferred replica
//! (the first of its replicas) where that replica is up and in sync. The bootstrap broker answers
//! for the whole cluster (it asks the other brokers for the partitions they lead).

use sluice_protocol::wire::{BalanceLeadersRequest, LeaderMoveOutcome, Request, Response};

use super::coordinator::body_error;
use super::Admin;
use crate::client::unexpected;
use crate::error::Result;

/// What happened to one partition's leadership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderOutcome {
    /// Leadership moved to the preferred replica.
    Moved,
    /// The preferred replica led it already.
    AlreadyPreferred,
    /// Leadership stayed where it was (see [`PartitionLeader::reason`]).
    Skipped,
}

/// One partition's leadership before and after [`Admin::balance_leaders`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLeader {
    pub topic: String,
    pub partition: u32,
    /// The preferred leader (first replica), if the partition has replicas.
    pub preferred: Option<u32>,
    /// The leader before, if one was known.
    pub leader_before: Option<u32>,
    /// The leader after, if one is known.
    pub leader: Option<u32>,
    pub outcome: LeaderOutcome,
    /// Why it was skipped.
    pub reason: Option<String>,
}

impl Admin {
    /// Moves every partition's leadership to its preferred replica where that replica is up and in
    /// sync, across the cluster; one entry per partition, by topic and partition.
    pub async fn balance_leaders(&self) -> Result<Vec<PartitionLeader>> {
        let request = Request::BalanceLeaders(BalanceLeadersRequest { local: false });
        let r = self
            .client
            .retrying("balance leaders", || async {
                let Response::BalanceLeaders(r) = self.client.request(&request).await? else {
                    return Err(unexpected("answer to balance leaders"));
                };
                body_error(r.error, r.message.clone())?;
                Ok(r)
            })
            .await?;
        let id = |v: i32| u32::try_from(v).ok();
        Ok(r.partitions
            .into_iter()
            .map(|p| PartitionLeader {
                preferred: id(p.preferred),
                leader_before: id(p.leader_before),
                leader: id(p.leader),
                outcome: match p.outcome {
                    LeaderMoveOutcome::Moved => LeaderOutcome::Moved,
                    LeaderMoveOutcome::AlreadyPreferred => LeaderOutcome::AlreadyPreferred,
                    LeaderMoveOutcome::Skipped => LeaderOutcome::Skipped,
                },
                reason: (!p.reason.is_empty()).then_some(p.reason),
                topic: p.topic,
                partition: p.partition,
            })
            .collect())
    }
}
