//! Produce (key 4). Runs in connection order: the request's bytes are taken from the broker-wide
//! produce budget (past it, this connection stops reading), and every partition's record set is
//! proposed to its replica, so one connection's batches land in the order they were sent. What the
//! acks level waits for (the leader's append, or the quorum commit) runs apart.

use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::wire::{
    Acks, ErrorCode, ProducePartitionResult, ProduceRequest, ProduceResponse, ProduceTopicResult,
    Response,
};

use super::{Connection, Pending};
use crate::broker::Broker;
use crate::error::ServiceError;
use crate::replica::PendingAppend;

pub async fn handle(broker: &Arc<Broker>, conn: &mut Connection, req: ProduceRequest) -> Pending {
    // Produce bytes of all connections together are bounded too.
    let want = conn.frame_len.min(broker.config.max_produce_bytes) as u32;
    let Ok(budget) = broker.produce_budget.clone().acquire_many_owned(want).await else {
        return Pending::Ready(Err(ServiceError::shutting_down("the broker is stopping")));
    };
    let (response, proposed) = propose(broker, &req).await;
    let timeout = broker.config.replication_timeout;
    let acks = req.acks;
    Pending::Later(Box::pin(async move {
        let _budget = budget;
        let resp = finish(response, proposed, timeout).await;
        (acks != Acks::None).then_some(Ok(Response::Produce(resp)))
    }))
}

/// (topic index, partition index, pending append) of each accepted proposal.
type Proposed = Vec<(usize, usize, PendingAppend)>;

/// Proposes every partition's record set to its replica, in request order.
async fn propose(broker: &Broker, req: &ProduceRequest) -> (ProduceResponse, Proposed) {
    let mut proposed = Vec::new();
    let mut topics = Vec::with_capacity(req.topics.len());
    for (ti, t) in req.topics.iter().enumerate() {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for (pi, p) in t.partitions.iter().enumerate() {
            let mut r = ProducePartitionResult {
                partition: p.partition,
                error: ErrorCode::NONE,
                message: String::new(),
                base_offset: 0,
                log_start_offset: 0,
            };
            let outcome = match broker.replicas.replica(&t.name, p.partition) {
                Ok(part) => {
                    r.log_start_offset = part.log_start_offset();
                    part.propose(&p.records, req.acks).await
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(pending) => proposed.push((ti, pi, pending)),
                Err(e) => (r.error, r.message) = e.into_parts(),
            }
            partitions.push(r);
        }
        topics.push(ProduceTopicResult {
            name: t.name.clone(),
            partitions,
        });
    }
    (ProduceResponse { topics }, proposed)
}

/// Waits for what the acks level promises and fills in offsets or errors.
async fn finish(
    mut resp: ProduceResponse,
    proposed: Proposed,
    timeout: Duration,
) -> ProduceResponse {
    for (ti, pi, p) in proposed {
        let outcome = p.wait(timeout).await;
        if let Some(r) = resp
            .topics
            .get_mut(ti)
            .and_then(|t| t.partitions.get_mut(pi))
        {
            match outcome {
                Ok(base) => r.base_offset = base,
                Err(e) => (r.error, r.message) = e.into_parts(),
            }
        }
    }
    resp
}
