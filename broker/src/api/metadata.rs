//! Metadata (key 1): brokers, the controller and topics, from [`Broker::describe_cluster`].

use std::sync::Arc;

use sluice_protocol::wire::{
    BrokerInfo, ErrorCode, MetadataRequest, MetadataResponse, PartitionMetadata, Response,
    TopicMetadata,
};

use super::{Connection, Pending};
use crate::broker::Broker;

pub async fn handle(broker: &Arc<Broker>, _conn: &mut Connection, req: MetadataRequest) -> Pending {
    let view = broker.describe_cluster(req.topics.as_deref());
    let topics = view
        .topics
        .into_iter()
        .map(|t| match t.partitions {
            None => TopicMetadata {
                error: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                name: t.name,
                partitions: Vec::new(),
                configs: Vec::new(),
            },
            Some(parts) => TopicMetadata {
                error: ErrorCode::NONE,
                name: t.name,
                configs: t.configs,
                partitions: parts
                    .into_iter()
                    .map(|p| PartitionMetadata {
                        error: if p.leader.is_some() {
                            ErrorCode::NONE
                        } else {
                            ErrorCode::NOT_LEADER
                        },
                        partition: p.partition,
                        leader: p.leader.map_or(-1, |l| l as i32),
                        replicas: p.replicas,
                        high_watermark: p.high_watermark,
                        log_start_offset: p.log_start_offset,
                    })
                    .collect(),
            },
        })
        .collect();
    Pending::Ready(Ok(Response::Metadata(MetadataResponse {
        brokers: view
            .brokers
            .into_iter()
            .map(|b| BrokerInfo {
                node_id: b.node_id,
                host: b.host,
                port: b.port,
            })
            .collect(),
        controller_id: view.controller.map_or(-1, |c| c as i32),
        topics,
    })))
}
