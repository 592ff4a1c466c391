//! InitProducerId (key 7): a producer's id and epoch (`admin::producers`).

use std::sync::Arc;

use sluice_protocol::wire::{ErrorCode, InitProducerIdRequest, InitProducerIdResponse, Response};

use super::Answer;
use crate::broker::Broker;

pub async fn handle(broker: Arc<Broker>, req: InitProducerIdRequest) -> Answer {
    let resp = match broker.init_producer_id(&req.name).await {
        Ok((producer_id, epoch)) => InitProducerIdResponse {
            error: ErrorCode::NONE,
            message: String::new(),
            producer_id,
            epoch,
        },
        Err(e) => {
            let (error, message) = e.into_parts();
            InitProducerIdResponse {
                error,
                message,
                producer_id: -1,
                epoch: -1,
            }
        }
    };
    Ok(Response::InitProducerId(resp))
}
