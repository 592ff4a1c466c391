//! The leader report, a leader service: a partition's new leader proposes
//! `leader_changed {topic, topic_id, partition, leader, term}` to the metadata group once per term,
//! so brokers without a replica can name the leader. A failed report is retried every
//! [`RETRY_EVERY`] until it lands or the term ends.

use std::time::Duration;

use super::state::Command;
use super::Cluster;
use crate::replica::services::{LeaderContext, LeaderService, ServiceRun};

/// How long a failed report waits before it is tried again.
pub const RETRY_EVERY: Duration = Duration::from_millis(200);

/// Reports this broker as the leader of every partition it leads, once per term.
#[derive(Debug, Clone)]
pub struct LeaderReport {
    pub cluster: Cluster,
}

impl LeaderService for LeaderReport {
    fn name(&self) -> &'static str {
        "leader-report"
    }

    fn start(&self, ctx: LeaderContext) -> ServiceRun {
        let cluster = self.cluster.clone();
        Box::pin(async move {
            let cmd = Command::LeaderChanged {
                topic: ctx.topic.to_string(),
                topic_id: ctx.topic_id,
                partition: ctx.partition,
                leader: cluster.ctx.node_id as u32,
                term: ctx.term,
            };
            loop {
                let report = cluster.propose_anywhere(&cmd);
                let outcome = tokio::select! {
                    _ = ctx.cancel.cancelled() => return,
                    r = report => r,
                };
                match outcome {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::debug!(topic = %ctx.topic, partition = ctx.partition, term = ctx.term, error = %e, "leadership report failed; retrying");
                    }
                }
                tokio::select! {
                    _ = ctx.cancel.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_EVERY) => {}
                }
            }
        })
    }
}
