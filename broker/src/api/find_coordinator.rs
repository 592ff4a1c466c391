//! FindCoordinator (key 8): where a group's coordinator is (`admin::groups`).

use std::sync::Arc;

use sluice_protocol::wire::{ErrorCode, FindCoordinatorRequest, FindCoordinatorResponse, Response};

use super::Answer;
use crate::broker::Broker;

pub async fn handle(broker: Arc<Broker>, req: FindCoordinatorRequest) -> Answer {
    let resp = match broker.find_coordinator(&req.group).await {
        Ok(c) => FindCoordinatorResponse {
            error: ErrorCode::NONE,
            message: String::new(),
            node_id: c.node_id,
            host: c.host,
            partition: c.partition,
        },
        Err(e) => {
            let (error, message) = e.into_parts();
            FindCoordinatorResponse {
                error,
                message,
                node_id: 0,
                host: String::new(),
                partition: 0,
            }
        }
    };
    Ok(Response::FindCoordinator(resp))
}
