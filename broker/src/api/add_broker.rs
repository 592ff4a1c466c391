//! AddBroker (key 21, broker to broker): a `--join`ing broker asks to be added;
//! [`Broker::add_broker`] runs on the metadata leader.

use std::sync::Arc;

use sluice_protocol::wire::{AddBrokerRequest, Response};

use super::{admin_result, Answer};
use crate::broker::Broker;

pub async fn handle(broker: Arc<Broker>, req: AddBrokerRequest) -> Answer {
    Ok(Response::AddBroker(admin_result(
        broker.add_broker(req.node_id, req.address).await,
    )))
}
