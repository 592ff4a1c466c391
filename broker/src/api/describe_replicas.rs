//! DescribeReplicas (key 31): [`Broker::local_replicas`] in wire form — what this broker holds.

use std::sync::Arc;

use sluice_protocol::wire::{
    DescribeReplicasRequest, DescribeReplicasResponse, ErrorCode, RaftRole, RaftState,
    ReplicaState, Response, TopicReplicas,
};

use super::Answer;
use crate::broker::Broker;
use crate::raft::{RaftSummary, Role};

pub async fn handle(broker: Arc<Broker>, req: DescribeReplicasRequest) -> Answer {
    let r = broker.local_replicas(&req.topics, req.partitions);
    Ok(Response::DescribeReplicas(DescribeReplicasResponse {
        error: ErrorCode::NONE,
        message: String::new(),
        node_id: r.node_id,
        metadata: raft_to_wire(&r.metadata),
        hosted: r.counts.hosted,
        leading: r.counts.leading,
        following: r.counts.following,
        without_leader: r.counts.without_leader,
        topics: r
            .topics
            .into_iter()
            .map(|(topic, parts)| TopicReplicas {
                topic,
                partitions: parts
                    .into_iter()
                    .map(|p| ReplicaState {
                        partition: p.partition,
                        raft: raft_to_wire(&p.raft),
                        log_start_offset: p.log_start_offset,
                        log_end_offset: p.log_end_offset,
                        high_watermark: p.high_watermark,
                        size_bytes: p.size_bytes,
                    })
                    .collect(),
            })
            .collect(),
    }))
}

fn raft_to_wire(s: &RaftSummary) -> RaftState {
    RaftState {
        term: s.term,
        role: match s.role {
            Role::Leader => RaftRole::Leader,
            Role::Follower => RaftRole::Follower,
            Role::Candidate => RaftRole::Candidate,
            Role::Learner => RaftRole::Learner,
            Role::Shutdown => RaftRole::Shutdown,
        },
        leader: s.leader,
        last_log_index: s.last_log_index,
        committed_index: s.committed_index,
        applied_index: s.applied_index,
    }
}
