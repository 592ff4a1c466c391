//! OffsetFetch (key 11): a group's committed offsets, from its coordinator (`admin::groups`).

use std::sync::Arc;

use sluice_protocol::wire::{
    CommittedOffset, ErrorCode, OffsetFetchRequest, OffsetFetchResponse, Response, TopicPartitions,
};

use super::Answer;
use crate::admin::groups::Committed;
use crate::broker::Broker;

pub(super) fn to_wire(c: Committed) -> CommittedOffset {
    CommittedOffset {
        topic: c.topic,
        partition: c.partition,
        offset: i64::try_from(c.offset).unwrap_or(i64::MAX),
        metadata: c.metadata,
        commit_timestamp_ms: c.commit_ms,
        assignment_epoch: c.epoch,
    }
}

pub async fn handle(broker: Arc<Broker>, req: OffsetFetchRequest) -> Answer {
    let wanted = TopicPartitions::flatten(&req.partitions);
    let resp = match broker.fetch_offsets(&req.group, &wanted) {
        Ok(found) => {
            let mut offsets: Vec<CommittedOffset> = found.into_iter().map(to_wire).collect();
            // Asked-for partitions without a commit answer -1 (none), never an error.
            for (t, p) in &wanted {
                if !offsets.iter().any(|o| &o.topic == t && o.partition == *p) {
                    offsets.push(CommittedOffset {
                        topic: t.clone(),
                        partition: *p,
                        offset: -1,
                        metadata: String::new(),
                        commit_timestamp_ms: -1,
                        assignment_epoch: -1,
                    });
                }
            }
            OffsetFetchResponse {
                error: ErrorCode::NONE,
                message: String::new(),
                offsets,
            }
        }
        Err(e) => {
            let (error, message) = e.into_parts();
            OffsetFetchResponse {
                error,
                message,
                offsets: Vec::new(),
            }
        }
    };
    Ok(Response::OffsetFetch(resp))
}
