//! Produce (key 4). Runs in connection order: the request's bytes are taken from the broker-wide
//! produce budget (past it, this connection stops reading), and every partition's record set is
//! proposed to its replica, so one connection's batches land in the order they were sent. What the
//! acks level waits for (the leader's append, or the quorum commit) runs apart. Two optional
//! bounds refuse instead of waiting: a record set over `max_message_bytes` (`MESSAGE_TOO_LARGE`),
//! and a produce arriving while `max_pending_produces` are waiting for their acks (`THROTTLED`).

use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::wire::{
    Acks, ErrorCode, ProducePartitionResult, ProduceRequest, ProduceResponse, ProduceTopicResult,
    Response,
};

use super::{Connection, Pending};
use crate::broker::Broker;
use crate::error::ServiceError;
use crate::metrics::{Bound, Rejection};
use crate::replica::PendingAppend;

pub async fn handle(broker: &Arc<Broker>, conn: &mut Connection, req: ProduceRequest) -> Pending {
    // A slot for the whole wait, or THROTTLED now: nothing of the request is proposed.
    let slot = match &broker.produce_slots {
        None => None,
        Some(slots) => match slots.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            Err(_) => {
                broker.metrics.throttled_produce();
                let resp = refuse_all(&req, ErrorCode::THROTTLED, "too many produces pending");
                let acks = req.acks;
                return Pending::Later(Box::pin(async move {
                    (acks != Acks::None).then_some(Ok(Response::Produce(resp)))
                }));
            }
        },
    };
    // Produce bytes of all connections together are bounded too.
    let want = conn.frame_len.min(broker.config.max_produce_bytes) as u32;
    let budget = match broker.produce_budget.clone().try_acquire_many_owned(want) {
        Ok(b) => b,
        Err(_) => {
            broker.metrics.waited(Bound::Produce);
            let Ok(b) = broker.produce_budget.clone().acquire_many_owned(want).await else {
                return Pending::Ready(Err(ServiceError::shutting_down("the broker is stopping")));
            };
            b
        }
    };
    let pending = broker.metrics.produce_pending();
    let (response, proposed) = propose(broker, &req).await;
    if !proposed.is_empty() {
        // Live traffic for catch-up pacing: only records this broker leads and accepted (a
        // produce refused, or sent to a follower, writes nothing here).
        broker.catch_up.produced();
    }
    let timeout = broker.config.replication_timeout;
    let acks = req.acks;
    Pending::Later(Box::pin(async move {
        let _budget = budget;
        let _slot = slot;
        let _pending = pending;
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
            let too_large = broker
                .config
                .max_message_bytes
                .filter(|max| p.records.len() > *max);
            let outcome = match (broker.replicas.replica(&t.name, p.partition), too_large) {
                // Only the broker writes its internal topics (the group coordinator, through the
                // replica directly).
                _ if crate::replica::settings::is_internal(&t.name) => Err(ServiceError::new(
                    ErrorCode::INVALID_TOPIC,
                    format!(
                        "{} is an internal topic: clients cannot produce to it",
                        t.name
                    ),
                )),
                (Ok(_), Some(max)) => Err({
                    broker.metrics.rejected(Rejection::MessageTooLarge);
                    ServiceError::new(
                        ErrorCode::MESSAGE_TOO_LARGE,
                        format!(
                            "{} record bytes exceed max_message_bytes ({max})",
                            p.records.len()
                        ),
                    )
                }),
                (Ok(part), None) => {
                    r.log_start_offset = part.log_start_offset();
                    part.propose(&p.records, req.acks).await
                }
                (Err(e), _) => Err(e),
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

/// Every partition of `req` answered with `code`.
fn refuse_all(req: &ProduceRequest, code: ErrorCode, message: &str) -> ProduceResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| ProduceTopicResult {
            name: t.name.clone(),
            partitions: t
                .partitions
                .iter()
                .map(|p| ProducePartitionResult {
                    partition: p.partition,
                    error: code,
                    message: message.into(),
                    base_offset: 0,
                    log_start_offset: 0,
                })
                .collect(),
        })
        .collect();
    ProduceResponse { topics }
}

/// Waits for what the acks level promises and fills in offsets or errors.
async fn finish(
    mut resp: ProduceResponse,
    proposed: Proposed,
    timeout: Duration,
) -> ProduceResponse {
    // Waited together, so each partition's commit is seen (and its commit latency measured) when
    // it happens, not after the partitions before it in the request.
    let outcomes = futures_util::future::join_all(
        proposed
            .into_iter()
            .map(|(ti, pi, p)| async move { (ti, pi, p.wait(timeout).await) }),
    )
    .await;
    for (ti, pi, outcome) in outcomes {
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
