//! Adding a broker to the cluster: it becomes a learner of the metadata group until it has caught
//! up, then a voter. Runs on the metadata leader (forwarded there from any broker).

use std::collections::BTreeSet;

use sluice_protocol::wire::ErrorCode;

use crate::broker::Broker;
use crate::error::{Result, ServiceError};

impl Broker {
    /// Adds broker `node_id` at `address`. A retry (same id, same address) succeeds; an id already
    /// taken by another address is refused.
    pub async fn add_broker(&self, node_id: u32, address: String) -> Result<()> {
        if let Some(r) = self.cluster.add_broker_on_leader(node_id, &address).await {
            return r;
        }
        if node_id == 0 || address.is_empty() {
            return Err(ServiceError::invalid(
                "a broker needs a node id and an address",
            ));
        }
        if let Some(addr) = self.cluster.metadata.brokers().get(&node_id) {
            return if *addr == address {
                Ok(())
            } else {
                Err(ServiceError::invalid(format!(
                    "node id {node_id} is already taken by {addr}"
                )))
            };
        }
        let raft = &self.cluster.metadata.group.raft;
        let id = u64::from(node_id);
        raft.add_learner(id, openraft::BasicNode::new(address.clone()), true)
            .await
            .map_err(|e| {
                ServiceError::new(ErrorCode::NOT_LEADER, format!("adding broker {id}: {e}"))
            })?;
        let voters: BTreeSet<u64> = [id].into_iter().collect();
        raft.change_membership(openraft::ChangeMembers::AddVoterIds(voters), true)
            .await
            .map_err(|e| {
                ServiceError::new(ErrorCode::NOT_LEADER, format!("promoting broker {id}: {e}"))
            })?;
        tracing::info!(node = id, address = %address, "broker added to the cluster");
        Ok(())
    }
}
