//! ListOperators (key 25): [`Broker::list_operators`], from this broker's copy of the metadata.

use std::sync::Arc;

use sluice_protocol::wire::{ErrorCode, ListOperatorsResponse, OperatorListing, Response};

use super::Answer;
use crate::broker::Broker;

pub async fn handle(broker: Arc<Broker>, _: ()) -> Answer {
    let operators = broker
        .list_operators()
        .into_iter()
        .map(|o| OperatorListing {
            name: o.def.name,
            source: o.def.source,
            sink: o.def.sink,
            window: o.def.window,
            paused: o.paused,
        })
        .collect();
    Ok(Response::ListOperators(ListOperatorsResponse {
        error: ErrorCode::NONE,
        message: String::new(),
        operators,
    }))
}
