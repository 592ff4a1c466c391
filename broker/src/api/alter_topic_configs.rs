//! AlterTopicConfigs (key 29): [`Broker::alter_topic_configs`].

use std::sync::Arc;

use sluice_protocol::wire::{AlterTopicConfigsRequest, AlterTopicConfigsResponse, Response};

use super::Answer;
use crate::broker::Broker;

pub async fn handle(broker: Arc<Broker>, req: AlterTopicConfigsRequest) -> Answer {
    let response = match broker
        .alter_topic_configs(&req.name, req.set, req.delete)
        .await
    {
        Ok(configs) => AlterTopicConfigsResponse {
            configs,
            ..AlterTopicConfigsResponse::default()
        },
        Err(e) => {
            let (error, message) = e.into_parts();
            AlterTopicConfigsResponse {
                error,
                message,
                configs: Vec::new(),
            }
        }
    };
    Ok(Response::AlterTopicConfigs(response))
}
