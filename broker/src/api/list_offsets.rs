//! ListOffsets (key 6): earliest, latest (the high watermark) or the first committed offset at or
//! after a timestamp, answered by any replica from its own view.

use std::sync::Arc;

use sluice_protocol::wire::{
    ErrorCode, ListOffsetsPartitionResult, ListOffsetsRequest, ListOffsetsResponse,
    ListOffsetsTopicResult, Response, EARLIEST, LATEST,
};

use super::{Connection, Pending};
use crate::broker::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    _conn: &mut Connection,
    req: ListOffsetsRequest,
) -> Pending {
    let topics = req
        .topics
        .iter()
        .map(|t| ListOffsetsTopicResult {
            name: t.name.clone(),
            partitions: t
                .partitions
                .iter()
                .map(|lp| {
                    let mut r = ListOffsetsPartitionResult {
                        partition: lp.partition,
                        error: ErrorCode::NONE,
                        offset: -1,
                    };
                    match broker.replicas.replica(&t.name, lp.partition) {
                        Err(e) => r.error = e.code,
                        Ok(p) => match lp.spec {
                            LATEST => r.offset = p.high_watermark() as i64,
                            EARLIEST => r.offset = p.log_start_offset() as i64,
                            ts if ts >= 0 => match p.offset_for_timestamp(ts) {
                                Ok(o) => r.offset = o.map_or(-1, |o| o as i64),
                                Err(e) => r.error = e.code,
                            },
                            _ => r.error = ErrorCode::INVALID_REQUEST,
                        },
                    }
                    r
                })
                .collect(),
        })
        .collect();
    Pending::Ready(Ok(Response::ListOffsets(ListOffsetsResponse { topics })))
}
