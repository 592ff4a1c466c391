//! AlterOperator (key 27): [`Broker::set_operator_paused`].

use std::sync::Arc;

use sluice_protocol::wire::{AlterOperatorRequest, Response};

use super::{admin_result, Answer};
use crate::broker::Broker;

pub async fn handle(broker: Arc<Broker>, req: AlterOperatorRequest) -> Answer {
    let outcome = broker.set_operator_paused(&req.name, req.paused).await;
    Ok(Response::AlterOperator(admin_result(outcome)))
}
