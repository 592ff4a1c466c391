//! DeleteTopics (key 3): [`Broker::delete_topics`], one result per topic.

use std::sync::Arc;

use sluice_protocol::wire::{DeleteTopicsRequest, Response};

use super::create_topics::results;
use super::Answer;
use crate::broker::Broker;

pub async fn handle(broker: Arc<Broker>, req: DeleteTopicsRequest) -> Answer {
    Ok(Response::DeleteTopics(results(
        broker.delete_topics(req.names).await,
    )))
}
