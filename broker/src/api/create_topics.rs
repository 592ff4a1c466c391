//! CreateTopics (key 2): [`Broker::create_topics`], one result per topic.

use std::sync::Arc;

use sluice_protocol::wire::{CreateTopicsRequest, ErrorCode, Response, TopicResult, TopicResults};

use super::Answer;
use crate::admin::topics::{NewTopic, TopicOutcome};
use crate::broker::Broker;

pub async fn handle(broker: Arc<Broker>, req: CreateTopicsRequest) -> Answer {
    let topics = req
        .topics
        .into_iter()
        .map(|t| NewTopic {
            name: t.name,
            partitions: t.partitions,
            replication_factor: t.replication_factor,
            configs: t.configs,
        })
        .collect();
    Ok(Response::CreateTopics(results(
        broker.create_topics(topics).await,
    )))
}

/// The wire form of per-topic outcomes (shared with DeleteTopics).
pub(super) fn results(outcomes: Vec<TopicOutcome>) -> TopicResults {
    TopicResults {
        results: outcomes
            .into_iter()
            .map(|(name, r)| {
                let (error, message) = match r {
                    Ok(()) => (ErrorCode::NONE, String::new()),
                    Err(e) => e.into_parts(),
                };
                TopicResult {
                    name,
                    error,
                    message,
                }
            })
            .collect(),
    }
}
