//! DescribeOperator (key 26): [`Broker::describe_operator`]; `OPERATOR_NOT_FOUND` in the body
//! for an unknown name.

use std::sync::Arc;

use sluice_protocol::wire::{
    DescribeOperatorRequest, DescribeOperatorResponse, ErrorCode, OperatorPartition,
    OperatorRunStats, Response,
};

use super::create_operator::to_wire;
use super::Answer;
use crate::broker::Broker;
use crate::operators::stats::PartitionStats;

fn run_stats(s: PartitionStats) -> OperatorRunStats {
    OperatorRunStats {
        from_leader: s.leader,
        position: s.position,
        high_watermark: s.high_watermark,
        lag_ms: s.lag_ms,
        watermark_ms: s.window.watermark_ms.unwrap_or(i64::MIN),
        keys: s.window.keys,
        windows: s.window.windows,
        state_bytes: s.window.state_bytes,
        late: s.window.late,
        bad: s.window.bad,
        emitted: s.window.emitted,
        emit_p99_us: s.emit_p99_ms.map_or(-1, |ms| (ms * 1000.0) as i64),
        failed: s.failed.or(s.window.failed).unwrap_or_default(),
    }
}

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
                    run: broker
                        .operator_stats
                        .get(&req.name, partition)
                        .map(run_stats),
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
