//! MetadataCommand (key 23, broker to broker): a command another broker wants the metadata leader
//! to propose (forwarded again if this broker no longer leads).

use std::sync::Arc;

use sluice_protocol::wire::{MetadataCommandRequest, Response};

use super::{admin_result, Answer};
use crate::broker::Broker;
use crate::cluster::state::Command;
use crate::error::ServiceError;

pub async fn handle(broker: Arc<Broker>, req: MetadataCommandRequest) -> Answer {
    let outcome = match serde_json::from_slice::<Command>(&req.command) {
        Ok(cmd) => broker.cluster.propose_anywhere(&cmd).await,
        Err(e) => Err(ServiceError::invalid(format!("bad metadata command: {e}"))),
    };
    Ok(Response::MetadataCommand(admin_result(outcome)))
}
