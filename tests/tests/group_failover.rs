//! Coordinator failover on a 3-broker cluster: the broker leading the group's offsets partition is
//! SIGKILLed; another broker becomes the coordinator and serves the group at once from the
//! replicated state — the committed offsets, and the member with its epoch and assignment, which
//! keeps heartbeating and committing without rejoining.
//!
//! Checked to fail: with `Groups::apply` dropping offset records (so commits were answered but
//! never became replicated state), the new coordinator answered offset -1 for every partition.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use sluice_protocol::wire::*;
use sluice_tests::cluster::{create, eventually, Cluster};
use sluice_tests::groups::*;
use sluice_tests::RawConn;

#[test]
fn the_group_continues_on_a_new_coordinator_after_a_kill() {
    let (_dir, config) = group_config();
    let mut cluster = Cluster::start(3, &["--config", &config]);
    create(&cluster, "t", 4, 3, &[]);
    let mut any = RawConn::connect(cluster.addr(1));
    let f = find(&mut any, "g");
    assert!(f.error.is_ok(), "{f:?}");
    let old = f.node_id;
    let mut c = RawConn::connect(f.host.parse().unwrap());
    let a = join(&mut c, "g", &["t"]);
    assert!(a.error.is_ok(), "{a:?}");
    assert_eq!(set(&a.assignment).len(), 4);
    for p in 0..4 {
        let r = commit(
            &mut c,
            "g",
            &a.member_id,
            a.member_epoch,
            p,
            10 * (p as u64 + 1),
        );
        assert_eq!(partition_error(&r), ErrorCode::NONE, "{r:?}");
    }

    cluster.member(old).broker.kill();
    let survivor = if old == 1 { 2 } else { 1 };
    let mut any = RawConn::connect(cluster.addr(survivor));
    let f2 = eventually(Duration::from_secs(30), "a new coordinator", || {
        let f = find(&mut any, "g");
        (f.error.is_ok() && f.node_id != old).then_some(f)
    });
    let mut c2 = RawConn::connect(f2.host.parse().unwrap());
    let o = fetch_offsets(&mut c2, "g", &[0, 1, 2, 3]);
    assert!(o.error.is_ok(), "{o:?}");
    let mut got: Vec<(u32, i64)> = o.offsets.iter().map(|x| (x.partition, x.offset)).collect();
    got.sort();
    assert_eq!(got, vec![(0, 10), (1, 20), (2, 30), (3, 40)]);
    // The member carries on: same id, same epoch, same partitions, and its commits are accepted.
    let a2 = beat(&mut c2, "g", &a, &a.assignment);
    assert!(a2.error.is_ok(), "{a2:?}");
    assert_eq!(a2.member_epoch, a.member_epoch);
    assert_eq!(set(&a2.assignment), set(&a.assignment));
    let r = commit(&mut c2, "g", &a.member_id, a2.member_epoch, 0, 11);
    assert_eq!(partition_error(&r), ErrorCode::NONE, "{r:?}");
    assert_eq!(fetch_offsets(&mut c2, "g", &[0]).offsets[0].offset, 11);

    // The killed broker comes back as a follower of the offsets partition; nothing changes.
    cluster.member(old).broker.restart();
    let a3 = beat(&mut c2, "g", &a2, &a2.assignment);
    assert!(a3.error.is_ok(), "{a3:?}");
    assert_eq!(a3.member_epoch, a.member_epoch);
}
