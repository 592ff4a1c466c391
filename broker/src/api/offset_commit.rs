//! OffsetCommit (key 10): stores a member's offsets through the group's coordinator, which fences
//! by member epoch and per-partition assignment epoch (`groups::reconcile::commit`).

use std::sync::Arc;

use sluice_protocol::wire::{
    ErrorCode, OffsetCommitRequest, OffsetCommitResponse, PartitionError, PartitionErrors, Response,
};

use super::Answer;
use crate::broker::Broker;

pub async fn handle(broker: Arc<Broker>, req: OffsetCommitRequest) -> Answer {
    let offsets: Vec<(String, u32, u64, String)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.topic.clone(), p.partition, p.offset, p.metadata.clone()))
        })
        .collect();
    let resp = match broker
        .groups
        .commit(&req.group, &req.member_id, req.member_epoch, &offsets)
        .await
    {
        Ok(outcomes) => {
            let mut topics: Vec<PartitionErrors> = Vec::new();
            for (topic, partition, outcome) in outcomes {
                let (error, message) = match outcome {
                    Ok(()) => (ErrorCode::NONE, String::new()),
                    Err(e) => e.into_parts(),
                };
                let entry = PartitionError {
                    partition,
                    error,
                    message,
                };
                match topics.last_mut() {
                    Some(last) if last.topic == topic => last.partitions.push(entry),
                    _ => topics.push(PartitionErrors {
                        topic,
                        partitions: vec![entry],
                    }),
                }
            }
            OffsetCommitResponse {
                error: ErrorCode::NONE,
                message: String::new(),
                topics,
            }
        }
        Err(e) => {
            let (error, message) = e.into_parts();
            OffsetCommitResponse {
                error,
                message,
                topics: Vec::new(),
            }
        }
    };
    Ok(Response::OffsetCommit(resp))
}
