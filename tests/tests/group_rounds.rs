//! The coordinator decides the requests queued for one offsets partition together, as one raft
//! write per round, against a real broker: many commits in flight at once cost a few writes, not one
//! each, and every one of them is decided and stored as if alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;

use sluice_protocol::wire::*;
use sluice_protocol::RecordBatch;
use sluice_tests::groups::*;
use sluice_tests::{Broker, RawConn};

const OFFSETS: &str = "__consumer_offsets";

/// The data batches (raft's control entries left out) of `partition` of the offsets topic from
/// `from`, and the offset after the last one.
fn batches_from(c: &mut RawConn, partition: u32, from: u64) -> (Vec<RecordBatch>, u64) {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let p = c.fetch(OFFSETS, partition, offset, 0);
        assert_eq!(p.error, ErrorCode::NONE, "{p:?}");
        if p.records.is_empty() {
            return (out, offset);
        }
        for b in RecordBatch::iter_all(p.records.clone()) {
            let b = b.unwrap();
            if b.header().base_offset >= offset && !b.header().is_control() {
                out.push(b.clone());
            }
            offset = offset.max(b.header().next_offset());
        }
    }
}

/// 48 commits sent back to back on one connection (OffsetCommit runs detached, so they reach the
/// coordinator together): all are accepted and read back, and the offsets partition grows by a few
/// batches rather than one per commit. Seen failing (48 batches) with `MAX_ROUND_JOBS` set to 1.
#[test]
fn commits_in_flight_together_are_written_in_few_rounds() {
    const COMMITS: u32 = 48;
    let (_dir, config) = group_config();
    let broker = Broker::start(&["--config", &config]);
    let mut c = RawConn::connect(broker.addr);
    c.create("t", COMMITS);
    let f = find(&mut c, "g");
    assert!(f.error.is_ok(), "{f:?}");
    let a = join(&mut c, "g", &["t"]);
    assert!(a.error.is_ok(), "{a:?}");
    assert_eq!(set(&a.assignment).len(), COMMITS as usize, "{a:?}");
    let (_, before) = batches_from(&mut c, f.partition, 0);

    // Every frame first, then every answer.
    let mut frames = Vec::new();
    for p in 0..COMMITS {
        let req = Request::OffsetCommit(OffsetCommitRequest {
            group: "g".into(),
            member_id: a.member_id.clone(),
            member_epoch: a.member_epoch,
            topics: vec![OffsetCommitTopic {
                topic: "t".into(),
                partitions: vec![OffsetCommitPartition {
                    partition: p,
                    offset: 100 + u64::from(p),
                    metadata: String::new(),
                }],
            }],
        });
        for chunk in encode_request(&req, 1000 + p) {
            frames.extend_from_slice(&chunk);
        }
    }
    c.stream.write_all(&frames).unwrap();
    for _ in 0..COMMITS {
        let frame = c.read_frame().expect("an answer");
        let (_, resp) = decode_response(ApiKey::OffsetCommit, frame).unwrap();
        let Ok(Response::OffsetCommit(r)) = resp else {
            panic!("wrong answer: {resp:?}")
        };
        assert_eq!(partition_error(&r), ErrorCode::NONE, "{r:?}");
    }

    let o = fetch_offsets(&mut c, "g", &(0..COMMITS).collect::<Vec<_>>());
    assert!(o.error.is_ok(), "{o:?}");
    for p in &o.offsets {
        assert_eq!(p.offset, 100 + i64::from(p.partition), "{p:?}");
    }
    assert_eq!(o.offsets.len(), COMMITS as usize);

    let (written, _) = batches_from(&mut c, f.partition, before);
    let records: u32 = written.iter().map(|b| b.header().record_count).sum();
    assert_eq!(records, COMMITS, "one offset record per commit");
    assert!(
        written.len() <= COMMITS as usize / 4,
        "{} batches for {COMMITS} commits in flight together",
        written.len()
    );
}

/// Refused commits for groups that do not exist, sent for a while (so that many of them share a
/// round with the coordinator's tick), leave no group behind. Seen failing (ghost groups listed,
/// `Empty`) without the tick skipping groups a round only read (3 runs of 3, with no wait between
/// the last answer and the listing).
#[test]
fn refused_requests_for_unknown_groups_leave_no_group_behind() {
    let (_dir, config) = group_config();
    let broker = Broker::start(&["--config", &config]);
    let mut c = RawConn::connect(broker.addr);
    c.create("t", 1);
    let f = find(&mut c, "g");
    assert!(f.error.is_ok(), "{f:?}");
    let until = std::time::Instant::now() + std::time::Duration::from_millis(1500);
    let mut sent = 0u32;
    while std::time::Instant::now() < until {
        let mut frames = Vec::new();
        for i in 0..32 {
            let req = Request::OffsetCommit(OffsetCommitRequest {
                group: format!("ghost-{}", (sent + i) % 64),
                member_id: "nobody".into(),
                member_epoch: 1,
                topics: vec![OffsetCommitTopic {
                    topic: "t".into(),
                    partitions: vec![OffsetCommitPartition {
                        partition: 0,
                        offset: 1,
                        metadata: String::new(),
                    }],
                }],
            });
            for chunk in encode_request(&req, sent + i) {
                frames.extend_from_slice(&chunk);
            }
        }
        c.stream.write_all(&frames).unwrap();
        for _ in 0..32 {
            let frame = c.read_frame().expect("an answer");
            let (_, resp) = decode_response(ApiKey::OffsetCommit, frame).unwrap();
            let Ok(Response::OffsetCommit(r)) = resp else {
                panic!("wrong answer: {resp:?}")
            };
            assert_eq!(r.error, ErrorCode::UNKNOWN_MEMBER_ID, "{r:?}");
        }
        sent += 32;
    }
    // No wait here: a coordinator writes each round, its tick included, before it answers the
    // round's requests, so every group a round could leave behind is there once the last answer is.
    let Response::ListGroups(l) = c.call(&Request::ListGroups).unwrap() else {
        panic!("wrong answer")
    };
    let ghosts: Vec<&str> = l
        .groups
        .iter()
        .map(|g| g.group.as_str())
        .filter(|g| g.starts_with("ghost-"))
        .collect();
    assert!(ghosts.is_empty(), "{ghosts:?} after {sent} refused commits");
}
