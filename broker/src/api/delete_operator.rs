//! DeleteOperator (key 28): [`Broker::delete_operator`]; the operator's topics stay.

use std::sync::Arc;

use sluice_protocol::wire::{DeleteOperatorRequest, Response};

use super::{admin_result, Answer};
use crate::broker::Broker;

pub async fn handle(broker: Arc<Broker>, req: DeleteOperatorRequest) -> Answer {
    let outcome = broker.delete_operator(&req.name).await;
    Ok(Response::DeleteOperator(admin_result(outcome)))
}
