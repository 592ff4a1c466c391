//! The consumer-group exchange on the wire, against a real broker: FindCoordinator creates the
//! offsets topic; members join with a heartbeat and get disjoint partitions; a newcomer gets
//! nothing its predecessor still owns until that one acknowledges the revocation; commits are
//! fenced by membership, epoch and ownership; bad input gets clear errors and leaves the group as
//! it was.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sluice_protocol::wire::*;
use sluice_tests::groups::*;
use sluice_tests::{Broker, RawConn};

/// Two members over 4 partitions: the second gets only what the first released, the epochs and
/// fencing of commits follow the assignment, and offsets read back.
#[test]
fn members_revoke_before_others_receive_and_commits_are_fenced() {
    let (_dir, config) = group_config();
    let broker = Broker::start(&["--config", &config]);
    let mut c = RawConn::connect(broker.addr);
    c.create("t", 4);
    let f = find(&mut c, "g");
    assert!(f.error.is_ok(), "{f:?}");
    assert_eq!(f.host, broker.addr.to_string());

    let a = join(&mut c, "g", &["t"]);
    assert!(a.error.is_ok(), "{a:?}");
    assert_eq!(
        set(&a.assignment).len(),
        4,
        "a lone member gets everything: {a:?}"
    );
    assert!(a.member_epoch > 0);
    assert_eq!(a.heartbeat_interval_ms, 100);

    // A commit from a member that owns the partition is accepted; the offset reads back.
    let r = commit(&mut c, "g", &a.member_id, a.member_epoch, 1, 10);
    assert_eq!(partition_error(&r), ErrorCode::NONE, "{r:?}");

    let b = join(&mut c, "g", &["t"]);
    assert!(b.error.is_ok(), "{b:?}");
    assert!(
        set(&b.assignment).is_empty(),
        "b must wait for a to revoke: {b:?}"
    );

    // a is told to give up two partitions (its assignment shrinks; it keeps its epoch).
    let a2 = beat(&mut c, "g", &a, &a.assignment);
    assert_eq!(set(&a2.assignment).len(), 2, "{a2:?}");
    let revoked: BTreeSet<_> = set(&a.assignment)
        .difference(&set(&a2.assignment))
        .cloned()
        .collect();
    // Until a acknowledges, b still gets nothing.
    let b2 = beat(&mut c, "g", &b, &[]);
    assert!(set(&b2.assignment).is_empty(), "{b2:?}");
    // a may still commit a partition it is revoking (in its revocation callback).
    let (_, p) = revoked.iter().next().unwrap().clone();
    let r = commit(&mut c, "g", &a.member_id, a.member_epoch, p, 20);
    assert_eq!(
        partition_error(&r),
        ErrorCode::NONE,
        "commit while revoking: {r:?}"
    );
    // a acknowledges (no longer lists them), then b receives exactly those.
    let a3 = beat(&mut c, "g", &a2, &a2.assignment);
    assert!(a3.member_epoch > a.member_epoch, "{a3:?}");
    let b3 = beat(&mut c, "g", &b2, &[]);
    assert_eq!(set(&b3.assignment), revoked, "{b3:?}");
    assert!(set(&a3.assignment).is_disjoint(&set(&b3.assignment)));

    // a can no longer commit what it gave up; b can, at its epoch.
    let r = commit(&mut c, "g", &a.member_id, a3.member_epoch, p, 30);
    assert_eq!(partition_error(&r), ErrorCode::STALE_MEMBER_EPOCH, "{r:?}");
    assert!(
        r.topics[0].partitions[0].message.contains("does not own"),
        "{r:?}"
    );
    let r = commit(&mut c, "g", &b.member_id, b3.member_epoch, p, 40);
    assert_eq!(partition_error(&r), ErrorCode::NONE, "{r:?}");
    // A stranger and an admin commit on a live group are refused.
    let r = commit(&mut c, "g", "nobody", 1, p, 50);
    assert_eq!(r.error, ErrorCode::UNKNOWN_MEMBER_ID, "{r:?}");
    let r = commit(&mut c, "g", "", -1, p, 50);
    assert_eq!(r.error, ErrorCode::NON_EMPTY_GROUP, "{r:?}");

    let Response::OffsetFetch(o) = c
        .call(&Request::OffsetFetch(OffsetFetchRequest {
            group: "g".into(),
            partitions: vec![TopicPartitions {
                topic: "t".into(),
                partitions: vec![p, 3],
            }],
        }))
        .unwrap()
    else {
        panic!()
    };
    assert!(o.error.is_ok(), "{o:?}");
    let got = |part: u32| {
        o.offsets
            .iter()
            .find(|x| x.partition == part)
            .unwrap()
            .offset
    };
    assert_eq!(got(p), 40);
    if p != 3 && !(a.assignment.is_empty()) {
        // Partition 3 was never committed unless it is p: -1 means none, not an error.
        let three = got(3);
        assert!(three == -1 || three == 10, "{o:?}");
    }

    // The group as an admin sees it.
    let Response::DescribeGroup(d) = c
        .call(&Request::DescribeGroup(DescribeGroupRequest {
            group: "g".into(),
        }))
        .unwrap()
    else {
        panic!()
    };
    assert!(d.error.is_ok(), "{d:?}");
    assert_eq!(d.members.len(), 2);
    assert_eq!(d.assignor, "uniform");
    assert_eq!(
        d.members
            .iter()
            .map(|m| m.host.as_str())
            .collect::<Vec<_>>(),
        ["127.0.0.1", "127.0.0.1"]
    );

    // a leaves: b gets everything.
    let left = heartbeat(
        &mut c,
        GroupHeartbeatRequest {
            group: "g".into(),
            member_id: a.member_id.clone(),
            member_epoch: LEAVE_EPOCH,
            ..Default::default()
        },
    );
    assert!(left.error.is_ok(), "{left:?}");
    let b4 = beat(&mut c, "g", &b3, &b3.assignment);
    assert_eq!(set(&b4.assignment).len(), 4, "{b4:?}");
}

/// A member that stops heartbeating is evicted after its session, and its partitions go to the
/// others; its late heartbeat and commits are refused (it must rejoin).
#[test]
fn a_silent_member_is_evicted_after_its_session() {
    let (_dir, config) = group_config();
    let broker = Broker::start(&["--config", &config]);
    let mut c = RawConn::connect(broker.addr);
    c.create("t", 4);
    assert!(find(&mut c, "g").error.is_ok());
    let a = join(&mut c, "g", &["t"]);
    let b = join(&mut c, "g", &["t"]);
    let a2 = beat(&mut c, "g", &a, &a.assignment);
    let _ = beat(&mut c, "g", &a2, &a2.assignment);
    // b heartbeats until it owns every partition: a, silent, is evicted once its 2 s session is
    // over.
    let mut bb = b.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while set(&bb.assignment).len() < 4 {
        assert!(Instant::now() < deadline, "b never took over: {bb:?}");
        bb = beat(&mut c, "g", &bb, &bb.assignment);
        std::thread::sleep(Duration::from_millis(100));
    }
    let late = beat(&mut c, "g", &a2, &a2.assignment);
    assert_eq!(late.error, ErrorCode::UNKNOWN_MEMBER_ID, "{late:?}");
    let r = commit(&mut c, "g", &a.member_id, a2.member_epoch, 0, 1);
    assert_eq!(r.error, ErrorCode::UNKNOWN_MEMBER_ID, "{r:?}");
}

/// Bad input: an unknown group, an unknown assignor, a malformed pattern, an empty group id, a
/// produce to the internal topic — each a clear error; the group is as it was.
#[test]
fn bad_group_requests_get_clear_errors_and_change_nothing() {
    let (_dir, config) = group_config();
    let broker = Broker::start(&["--config", &config]);
    let mut c = RawConn::connect(broker.addr);
    c.create("t", 2);
    assert!(find(&mut c, "g").error.is_ok());
    let a = join(&mut c, "g", &["t"]);
    assert!(a.error.is_ok());

    let bad = heartbeat(
        &mut c,
        GroupHeartbeatRequest {
            group: "g".into(),
            member_epoch: JOIN_EPOCH,
            topics: vec!["t".into()],
            assignor: "roundrobin".into(),
            ..Default::default()
        },
    );
    assert_eq!(bad.error, ErrorCode::UNSUPPORTED_ASSIGNOR, "{bad:?}");
    assert!(bad.message.contains("roundrobin"), "{bad:?}");
    let bad = heartbeat(
        &mut c,
        GroupHeartbeatRequest {
            group: "g".into(),
            member_epoch: JOIN_EPOCH,
            regex: "t(".into(),
            ..Default::default()
        },
    );
    assert_eq!(bad.error, ErrorCode::INVALID_REGULAR_EXPRESSION, "{bad:?}");
    let f = find(&mut c, "");
    assert_eq!(f.error, ErrorCode::INVALID_GROUP_ID, "{f:?}");
    let Response::DescribeGroup(d) = c
        .call(&Request::DescribeGroup(DescribeGroupRequest {
            group: "nope".into(),
        }))
        .unwrap()
    else {
        panic!()
    };
    // "nope" may hash to another offsets partition; on one broker this broker leads them all.
    assert_eq!(d.error, ErrorCode::GROUP_ID_NOT_FOUND, "{d:?}");
    let Response::DeleteGroup(del) = c
        .call(&Request::DeleteGroup(DeleteGroupRequest {
            group: "g".into(),
        }))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(del.error, ErrorCode::NON_EMPTY_GROUP, "{del:?}");
    let p = c.produce("__consumer_offsets", 0, sluice_tests::batch("x", 1));
    assert_eq!(p.error, ErrorCode::INVALID_TOPIC, "{p:?}");

    // The group is unaffected: one member, all partitions, same epoch.
    let a2 = beat(&mut c, "g", &a, &a.assignment);
    assert!(a2.error.is_ok(), "{a2:?}");
    assert_eq!(a2.member_epoch, a.member_epoch);
    assert_eq!(set(&a2.assignment), set(&a.assignment));
}

/// A member that keeps heartbeating but lets its processing deadline pass (its handler is stuck
/// and never extended the deadline) is evicted; one that extends it in time is not.
///
/// Checked to fail: with the coordinator's tick ignoring `deadline`, the stuck member kept its
/// partitions for the whole run.
#[test]
fn a_member_past_its_processing_deadline_is_evicted_though_it_heartbeats() {
    let (_dir, config) = group_config();
    let broker = Broker::start(&["--config", &config]);
    let mut c = RawConn::connect(broker.addr);
    c.create("t", 2);
    assert!(find(&mut c, "g").error.is_ok());
    let stuck = join(&mut c, "g", &["t"]);
    let alive = join(&mut c, "g", &["t"]);
    let deadline = Instant::now() + Duration::from_millis(800);
    let (mut s, mut a) = (stuck.clone(), alive.clone());
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        // The stuck member's client promises progress until a fixed instant that passes; the
        // live one's keeps moving the promise forward (`extend_deadline`).
        let left = deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u32;
        let r = heartbeat(
            &mut c,
            GroupHeartbeatRequest {
                group: "g".into(),
                member_id: s.member_id.clone(),
                member_epoch: s.member_epoch,
                topics: vec!["t".into()],
                deadline_ms: left.max(1),
                owned: s.assignment.clone(),
                ..Default::default()
            },
        );
        if r.error.is_ok() {
            s = r;
        } else {
            assert_eq!(r.error, ErrorCode::UNKNOWN_MEMBER_ID, "{r:?}");
            assert!(Instant::now() >= deadline, "evicted before its deadline");
            break;
        }
        let r = heartbeat(
            &mut c,
            GroupHeartbeatRequest {
                group: "g".into(),
                member_id: a.member_id.clone(),
                member_epoch: a.member_epoch,
                topics: vec!["t".into()],
                deadline_ms: 1000,
                owned: a.assignment.clone(),
                ..Default::default()
            },
        );
        assert!(r.error.is_ok(), "{r:?}");
        a = r;
        std::thread::sleep(Duration::from_millis(100));
    }
    let a2 = beat(&mut c, "g", &a, &a.assignment);
    let a3 = beat(&mut c, "g", &a2, &a2.assignment);
    assert_eq!(
        set(&a3.assignment).len(),
        2,
        "the live member took over: {a3:?}"
    );
    let gone = beat(&mut c, "g", &s, &s.assignment);
    assert_eq!(gone.error, ErrorCode::UNKNOWN_MEMBER_ID, "{gone:?}");
}

/// The group state survives a restart through raft snapshots and the log above them: with a
/// snapshot every 5 entries, 30 commits later a restarted broker serves the last offsets and the
/// same member, epoch and assignment (the member heartbeats on without rejoining).
///
/// Checked to fail: with `OffsetsState::restore` ignoring the snapshot (keeping an empty state),
/// the restarted broker answered -1 for a partition whose last commit was behind the snapshot.
#[test]
fn group_state_survives_a_restart_through_snapshots() {
    let (_dir, config) = group_config();
    let mut broker = Broker::start(&["--config", &config, "--raft-snapshot-entries", "5"]);
    let mut c = RawConn::connect(broker.addr);
    c.create("t", 4);
    assert!(find(&mut c, "g").error.is_ok());
    let a = join(&mut c, "g", &["t"]);
    for i in 0..30u64 {
        let r = commit(
            &mut c,
            "g",
            &a.member_id,
            a.member_epoch,
            (i % 4) as u32,
            i + 1,
        );
        assert_eq!(partition_error(&r), ErrorCode::NONE, "{r:?}");
    }
    broker.terminate();
    broker.restart();
    let mut c = RawConn::connect(broker.addr);
    let o = fetch_offsets(&mut c, "g", &[0, 1, 2, 3]);
    let mut got: Vec<(u32, i64)> = o.offsets.iter().map(|x| (x.partition, x.offset)).collect();
    got.sort();
    assert_eq!(got, vec![(0, 29), (1, 30), (2, 27), (3, 28)], "{o:?}");
    let a2 = beat(&mut c, "g", &a, &a.assignment);
    assert!(a2.error.is_ok(), "{a2:?}");
    assert_eq!(a2.member_epoch, a.member_epoch);
    assert_eq!(set(&a2.assignment), set(&a.assignment));
}

/// A group's own session and heartbeat interval override the broker's defaults (a member asking
/// for no session gets the group's; every answer carries the group's interval); a bad setting is
/// refused with INVALID_CONFIG and changes nothing; an empty value goes back to the default.
///
/// Checked to fail: with the heartbeat answer carrying the broker's interval instead of the
/// group's, the interval check failed (100 instead of 150).
#[test]
fn a_group_has_its_own_session_and_heartbeat_interval() {
    let (_dir, config) = group_config();
    let broker = Broker::start(&["--config", &config]);
    let mut c = RawConn::connect(broker.addr);
    c.create("t", 2);
    assert!(find(&mut c, "g").error.is_ok());
    let alter = |c: &mut RawConn, configs: &[(&str, &str)]| {
        let Response::AlterGroupConfig(r) = c
            .call(&Request::AlterGroupConfig(AlterGroupConfigRequest {
                group: "g".into(),
                configs: configs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }))
            .unwrap()
        else {
            panic!("wrong answer")
        };
        r
    };
    let r = alter(
        &mut c,
        &[
            (GROUP_SESSION_TIMEOUT, "900"),
            (GROUP_HEARTBEAT_INTERVAL, "150"),
        ],
    );
    assert!(r.error.is_ok(), "{r:?}");
    for bad in [
        vec![(GROUP_HEARTBEAT_INTERVAL, "600")],
        vec![(GROUP_SESSION_TIMEOUT, "10")],
        vec![(GROUP_SESSION_TIMEOUT, "soon")],
        vec![("consumer.max.size", "3")],
    ] {
        let r = alter(&mut c, &bad);
        assert_eq!(r.error, ErrorCode::INVALID_CONFIG, "{bad:?}: {r:?}");
    }
    let a = join(&mut c, "g", &["t"]);
    assert!(a.error.is_ok(), "{a:?}");
    assert_eq!(a.session_timeout_ms, 900);
    assert_eq!(a.heartbeat_interval_ms, 150);
    let r = alter(&mut c, &[(GROUP_HEARTBEAT_INTERVAL, "")]);
    assert!(r.error.is_ok(), "{r:?}");
    let a2 = beat(&mut c, "g", &a, &a.assignment);
    assert_eq!(
        a2.heartbeat_interval_ms, 100,
        "back to the broker's: {a2:?}"
    );
}

/// A pattern subscription is evaluated on the coordinator: a topic created after the member
/// joined is assigned to it without a restart or a rejoin (each heartbeat, and the coordinator's
/// tick, compare the subscribed topics' partitions with what the target was computed from and bump
/// the group epoch when they differ).
///
/// Checked to fail: with `refresh` not comparing them, the member never got the new topic's
/// partitions. (Turning off only the tick's refresh did not: the heartbeats do the same.)
#[test]
fn a_topic_created_later_is_picked_up_by_a_pattern() {
    let (_dir, config) = group_config();
    let broker = Broker::start(&["--config", &config]);
    let mut c = RawConn::connect(broker.addr);
    c.create("old", 1);
    assert!(find(&mut c, "g").error.is_ok());
    let a = heartbeat(
        &mut c,
        GroupHeartbeatRequest {
            group: "g".into(),
            member_epoch: JOIN_EPOCH,
            regex: "new.*".into(),
            ..Default::default()
        },
    );
    assert!(a.error.is_ok(), "{a:?}");
    assert!(a.assignment.is_empty(), "nothing matches yet: {a:?}");
    c.create("new-1", 3);
    let mut m = a.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = heartbeat(
            &mut c,
            GroupHeartbeatRequest {
                group: "g".into(),
                member_id: m.member_id.clone(),
                member_epoch: m.member_epoch,
                regex: "new.*".into(),
                owned: m.assignment.clone(),
                ..Default::default()
            },
        );
        assert!(r.error.is_ok(), "{r:?}");
        m = r;
        if set(&m.assignment).len() == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new topic was never assigned: {m:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(m.member_epoch > a.member_epoch);
    assert!(set(&m.assignment).iter().all(|(t, _)| t == "new-1"));
}
