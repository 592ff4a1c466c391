//! AlterReplicas (key 22): start a partition move (`complete` = false), or record one as complete
//! (`complete` = true, what a partition leader sent before moves were reported as metadata
//! commands).

use std::sync::Arc;

use sluice_protocol::wire::{AlterReplicasRequest, Response};

use super::{admin_result, Answer};
use crate::broker::Broker;

pub async fn handle(broker: Arc<Broker>, req: AlterReplicasRequest) -> Answer {
    let outcome = if req.complete {
        broker
            .complete_reassignment(req.topic, req.partition, req.replicas)
            .await
    } else {
        broker
            .reassign_partition(req.topic, req.partition, req.replicas)
            .await
    };
    Ok(Response::AlterReplicas(admin_result(outcome)))
}
