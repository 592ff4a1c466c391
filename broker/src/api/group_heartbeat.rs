//! GroupHeartbeat (key 9): a member's join, heartbeat or leave, handled by the group's
//! coordinator (`groups::coordinator`). It runs in connection order only to read the member's
//! address from the connection; the coordinator's answer comes later, apart.

use std::sync::Arc;

use sluice_protocol::wire::{
    ErrorCode, GroupHeartbeatRequest, GroupHeartbeatResponse, Response, TopicPartitions,
};

use super::{Connection, Pending};
use crate::broker::Broker;
use crate::groups::reconcile::Heartbeat;

pub async fn handle(
    broker: &Arc<Broker>,
    conn: &mut Connection,
    req: GroupHeartbeatRequest,
) -> Pending {
    let broker = broker.clone();
    let host = conn.peer.map(|a| a.ip().to_string()).unwrap_or_default();
    Pending::Later(Box::pin(async move {
        let hb = Heartbeat {
            member_id: req.member_id,
            member_epoch: req.member_epoch,
            instance_id: req.instance_id,
            client_id: req.client_id,
            host,
            topics: req.topics,
            regex: req.regex,
            assignor: req.assignor,
            session_timeout_ms: req.session_timeout_ms,
            owned: TopicPartitions::flatten(&req.owned),
        };
        let interval = broker
            .groups
            .config
            .heartbeat_interval
            .as_millis()
            .min(u32::MAX.into()) as u32;
        let resp = match broker
            .groups
            .heartbeat(&req.group, hb, req.deadline_ms)
            .await
        {
            Ok(a) => GroupHeartbeatResponse {
                error: ErrorCode::NONE,
                message: String::new(),
                member_id: a.member_id,
                member_epoch: a.member_epoch,
                heartbeat_interval_ms: a.heartbeat_interval_ms,
                session_timeout_ms: a.session_timeout_ms,
                assignment: TopicPartitions::group(&a.assignment),
            },
            Err(e) => {
                let (error, message) = e.into_parts();
                GroupHeartbeatResponse {
                    error,
                    message,
                    heartbeat_interval_ms: interval,
                    ..GroupHeartbeatResponse::default()
                }
            }
        };
        Some(Ok(Response::GroupHeartbeat(resp)))
    }))
}
