//! AlterGroupConfig (key 16): a group's own session timeout and heartbeat interval
//! (`groups::coordinator`).

use std::sync::Arc;

use sluice_protocol::wire::{AlterGroupConfigRequest, Response};

use super::{admin_result, Answer};
use crate::broker::Broker;

pub async fn handle(broker: Arc<Broker>, req: AlterGroupConfigRequest) -> Answer {
    let outcome = broker.groups.alter_config(&req.group, &req.configs).await;
    Ok(Response::AlterGroupConfig(admin_result(outcome)))
}
