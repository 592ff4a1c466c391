//! DeleteGroup (key 15): removes a group without members, offsets and all.

use std::sync::Arc;

use sluice_protocol::wire::{DeleteGroupRequest, Response};

use super::{admin_result, Answer};
use crate::broker::Broker;

pub async fn handle(broker: Arc<Broker>, req: DeleteGroupRequest) -> Answer {
    let outcome = broker.groups.delete(&req.group).await;
    Ok(Response::DeleteGroup(admin_result(outcome)))
}
