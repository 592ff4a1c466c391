//! Consumer-group requests on raw frames, for tests that drive the exchange themselves: find the
//! coordinator, join, heartbeat, commit and fetch offsets, each retried while the answer is
//! retriable (a coordinator that is still starting, or moving).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sluice_protocol::wire::*;

use crate::RawConn;

/// Group settings that make a test quick: 2 s sessions, heartbeats every 100 ms.
pub fn group_config() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.toml");
    std::fs::write(
        &path,
        "group_session_timeout_ms = 2000\ngroup_min_session_timeout_ms = 500\ngroup_heartbeat_interval_ms = 100\noffsets_topic_partitions = 4\n",
    )
    .unwrap();
    (dir, path.to_string_lossy().into_owned())
}

pub fn find(c: &mut RawConn, group: &str) -> FindCoordinatorResponse {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let Response::FindCoordinator(r) = c
            .call(&Request::FindCoordinator(FindCoordinatorRequest {
                group: group.into(),
            }))
            .unwrap()
        else {
            panic!("wrong answer")
        };
        if r.error.is_ok() || !r.error.is_retriable() || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn heartbeat(c: &mut RawConn, req: GroupHeartbeatRequest) -> GroupHeartbeatResponse {
    // A coordinator that just started may still answer NOT_COORDINATOR for a moment.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let Response::GroupHeartbeat(r) = c.call(&Request::GroupHeartbeat(req.clone())).unwrap()
        else {
            panic!("wrong answer")
        };
        if !r.error.is_retriable() || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn join(c: &mut RawConn, group: &str, topics: &[&str]) -> GroupHeartbeatResponse {
    heartbeat(
        c,
        GroupHeartbeatRequest {
            group: group.into(),
            member_epoch: JOIN_EPOCH,
            client_id: "test".into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        },
    )
}

pub fn beat(
    c: &mut RawConn,
    group: &str,
    r: &GroupHeartbeatResponse,
    owned: &[TopicPartitions],
) -> GroupHeartbeatResponse {
    heartbeat(
        c,
        GroupHeartbeatRequest {
            group: group.into(),
            member_id: r.member_id.clone(),
            member_epoch: r.member_epoch,
            client_id: "test".into(),
            topics: vec!["t".into()],
            owned: owned.to_vec(),
            ..Default::default()
        },
    )
}

pub fn set(v: &[TopicPartitions]) -> BTreeSet<(String, u32)> {
    v.iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.topic.clone(), *p)))
        .collect()
}

pub fn commit(
    c: &mut RawConn,
    group: &str,
    member: &str,
    epoch: i32,
    partition: u32,
    offset: u64,
) -> OffsetCommitResponse {
    let Response::OffsetCommit(r) = c
        .call(&Request::OffsetCommit(OffsetCommitRequest {
            group: group.into(),
            member_id: member.into(),
            member_epoch: epoch,
            topics: vec![OffsetCommitTopic {
                topic: "t".into(),
                partitions: vec![OffsetCommitPartition {
                    partition,
                    offset,
                    metadata: "m".into(),
                }],
            }],
        }))
        .unwrap()
    else {
        panic!("wrong answer")
    };
    r
}

pub fn partition_error(r: &OffsetCommitResponse) -> ErrorCode {
    if !r.error.is_ok() {
        return r.error;
    }
    r.topics[0].partitions[0].error
}

/// The committed offsets of `group` for `partitions` of topic `t` (-1: none), by partition.
pub fn fetch_offsets(c: &mut RawConn, group: &str, partitions: &[u32]) -> OffsetFetchResponse {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let Response::OffsetFetch(o) = c
            .call(&Request::OffsetFetch(OffsetFetchRequest {
                group: group.into(),
                partitions: vec![TopicPartitions {
                    topic: "t".into(),
                    partitions: partitions.to_vec(),
                }],
            }))
            .unwrap()
        else {
            panic!("wrong answer")
        };
        if !o.error.is_retriable() || Instant::now() > deadline {
            return o;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
