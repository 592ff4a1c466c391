//! DescribeOperator (key 26): [`Broker::describe_operator`]; `OPERATOR_NOT_FOUND` in the body
//! for an unknown name.

use std::sync::Arc;

use sluice_protocol::wire::{
    DescribeOperatorRequest, DescribeOperatorResponse, ErrorCode, OperatorPartition, Response,
};

use super::create_operator::to_wire;
use super::Answer;
use crate::broker::Broker;

pub async fn handle(broker: Arc<Broker>, req: DescribeOperatorRequest) -> Answer {
    let response = match broker.describe_operator(&req.name) {
        Ok(v) => DescribeOperatorResponse {
            error: ErrorCode::NONE,
            message: String::new(),
            definition: Box::new(to_wire(&v.record.def)),
            paused: v.record.paused,
            created_ms: v.record.created_ms,
            partitions: v
                .partitions
                .iter()
                .map(|&(partition, leader, producer_id)| OperatorPartition {
                    partition,
                    leader: leader.and_then(|l| i32::try_from(l).ok()).unwrap_or(-1),
                    producer_id,
                })
                .collect(),
        },
        Err(e) => {
            let (error, message) = e.into_parts();
            DescribeOperatorResponse {
                error,
                message,
                ..DescribeOperatorResponse::default()
            }
        }
    };
    Ok(Response::DescribeOperator(response))
}
