//! BalanceLeaders (key 30): [`Broker::balance_leaders`] for the whole cluster, or with `local` (what
//! brokers ask each other) [`Broker::balance_local_leaders`] for the partitions this broker leads.

use std::sync::Arc;

use sluice_protocol::wire::{
    BalanceLeadersRequest, BalanceLeadersResponse, ErrorCode, LeaderMove, LeaderMoveOutcome,
    Response,
};

use super::Answer;
use crate::admin::leaders::{LeaderOutcome, PartitionLeader};
use crate::broker::Broker;

pub async fn handle(broker: Arc<Broker>, req: BalanceLeadersRequest) -> Answer {
    let (error, message, rows) = if req.local {
        (
            ErrorCode::NONE,
            String::new(),
            broker.balance_local_leaders().await,
        )
    } else {
        match broker.balance_leaders().await {
            Ok(b) => (ErrorCode::NONE, String::new(), b.partitions),
            Err(e) => {
                let (code, message) = e.into_parts();
                (code, message, Vec::new())
            }
        }
    };
    Ok(Response::BalanceLeaders(BalanceLeadersResponse {
        error,
        message,
        partitions: rows.into_iter().map(to_wire).collect(),
    }))
}

fn to_wire(p: PartitionLeader) -> LeaderMove {
    let id = |v: Option<u32>| v.and_then(|v| i32::try_from(v).ok()).unwrap_or(-1);
    LeaderMove {
        preferred: id(p.preferred),
        leader_before: id(p.leader_before),
        leader: id(p.leader),
        outcome: match p.outcome {
            LeaderOutcome::Moved => LeaderMoveOutcome::Moved,
            LeaderOutcome::AlreadyPreferred => LeaderMoveOutcome::AlreadyPreferred,
            LeaderOutcome::Skipped => LeaderMoveOutcome::Skipped,
        },
        reason: p.reason.unwrap_or_default(),
        topic: p.topic,
        partition: p.partition,
    }
}
