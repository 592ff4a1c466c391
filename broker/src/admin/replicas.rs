//! What each broker of the cluster holds, for the admin API's cluster-wide views (`GET
//! /v1/cluster`, `GET /v1/topics/{name}`): this broker answers for itself from memory, every other
//! broker is asked with DescribeReplicas (`cluster::forward`), all at once and each within a bound,
//! so one broker that is down or slow costs its own row an error and never the whole answer. Reads
//! only.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::broker::Broker;
use crate::error::{Result, ServiceError};
use crate::replica::report::BrokerReplicas;

/// How long another broker's answer is waited for.
const PEER_WAIT: Duration = Duration::from_secs(3);

impl Broker {
    /// What this broker holds: its metadata raft state, its replicas by role and, with
    /// `partitions`, each replica of `topics` (of every topic when empty).
    pub fn local_replicas(&self, topics: &[String], partitions: bool) -> BrokerReplicas {
        BrokerReplicas {
            node_id: self.cluster.ctx.node_id as u32,
            metadata: self.metadata_raft_status().summary(),
            counts: self.replicas.counts(),
            topics: if partitions {
                self.replicas.reports(topics)
            } else {
                Vec::new()
            },
        }
    }

    /// [`Broker::local_replicas`] of each broker of the cluster (only those in `only` when given),
    /// by broker id; a broker that does not answer within a few seconds gets its error.
    pub async fn replicas_everywhere(
        &self,
        only: Option<&BTreeSet<u32>>,
        topics: &[String],
        partitions: bool,
    ) -> Vec<(u32, Result<BrokerReplicas>)> {
        let me = self.cluster.ctx.node_id;
        let asked: Vec<(u32, String)> = self
            .cluster
            .metadata
            .brokers()
            .into_iter()
            .filter(|(id, _)| only.is_none_or(|o| o.contains(id)))
            .collect();
        futures_util::future::join_all(asked.into_iter().map(|(id, addr)| async move {
            let answer = if u64::from(id) == me {
                Ok(self.local_replicas(topics, partitions))
            } else {
                self.cluster
                    .describe_replicas_at(&addr, topics.to_vec(), partitions, PEER_WAIT)
                    .await
                    .and_then(|r| {
                        // An address now served by another broker must not pass for this one.
                        if r.node_id == id {
                            Ok(r)
                        } else {
                            Err(ServiceError::unknown(format!(
                                "broker {} answered at broker {id}'s address {addr}",
                                r.node_id
                            )))
                        }
                    })
            };
            (id, answer)
        }))
        .await
    }
}
