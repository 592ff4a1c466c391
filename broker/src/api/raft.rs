//! Raft (key 20, broker to broker): raft messages of every group. Appends keep their order per group
//! and connection (pipelined replication: queued into the group's stream here, in frame order, and
//! answered once raft has flushed them); votes and snapshot messages run apart. An unknown group or
//! a bad message is a top-level error for that frame.

use std::sync::Arc;

use sluice_protocol::wire::{RaftRequest, RaftResponse, Response};

use super::{Connection, Pending};
use crate::broker::Broker;
use crate::error::ServiceError;
use crate::raft::codec::KIND_APPEND;

pub async fn handle(broker: &Arc<Broker>, conn: &mut Connection, req: RaftRequest) -> Pending {
    let answer = |r: Result<bytes::Bytes, (sluice_protocol::wire::ErrorCode, String)>| match r {
        Ok(body) => Ok(Response::Raft(RaftResponse { body })),
        Err((code, msg)) => Err(ServiceError::new(code, msg)),
    };
    if req.kind == KIND_APPEND {
        let queued = conn.appends.submit(&broker.cluster.ctx.registry, req);
        return Pending::Later(Box::pin(async move {
            let r = match queued {
                Ok(rx) => rx.await.unwrap_or_else(|_| {
                    Err((
                        sluice_protocol::wire::ErrorCode::BROKER_SHUTTING_DOWN,
                        "the group's replication stream ended before this append".into(),
                    ))
                }),
                Err(e) => Err(e),
            };
            Some(answer(r))
        }));
    }
    let broker = broker.clone();
    Pending::Later(Box::pin(async move {
        Some(answer(broker.cluster.ctx.registry.handle(req).await))
    }))
}
