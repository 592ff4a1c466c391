//! ResetOffsets (key 14): moves a group's offsets, on a live group too (`groups::coordinator`).

use std::sync::Arc;

use sluice_protocol::wire::{ResetOffsetsRequest, Response};

use super::{admin_result, Answer};
use crate::broker::Broker;

pub async fn handle(broker: Arc<Broker>, req: ResetOffsetsRequest) -> Answer {
    let outcome = broker.groups.reset(&req.group, &req.offsets).await;
    Ok(Response::ResetOffsets(admin_result(outcome)))
}
