//! The partition seam end to end, on real broker processes: offset-for-timestamp never names an
//! uncommitted offset; and leader services start on election (with the term) and stop when
//! leadership is lost. (No OS thread per replica: `replica_threads.rs`, a binary of its own.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use sluice_protocol::wire::{Acks, ErrorCode, LATEST};
use sluice_tests::cluster::{create, eventually, leaders, Cluster};
use sluice_tests::{batch_at, Broker, RawConn};

/// Quick failure detection, as in the cluster suite.
const FAST: &[&str] = &[
    "--raft-heartbeat-ms",
    "100",
    "--raft-election-timeout-ms",
    "800",
];

/// A leader cut off from its followers still appends (acks `leader`) but cannot commit. Asked for
/// the timestamp of that uncommitted record, it must answer "none" (-1), never the offset of a
/// record that may yet be cut; a committed record's timestamp still finds its offset. Fails on the
/// code before the partition seam, where ListOffsets read the storage log directly (it answered the
/// uncommitted offset).
#[test]
fn offset_for_timestamp_never_names_an_uncommitted_offset() {
    let cluster = Cluster::start(3, FAST);
    create(&cluster, "ts", 1, 3, &[]);
    // A leader may change before the cut (an election on a loaded machine): then try again.
    for attempt in 0..5 {
        let leader = eventually(Duration::from_secs(30), "a leader", || {
            leaders(&cluster, "ts", 1).map(|l| l[0])
        });
        let mut c = RawConn::connect(cluster.addr(leader));
        let committed = c.produce("ts", 0, batch_at(&format!("old{attempt}"), 1, 1_000));
        if committed.error == ErrorCode::NOT_LEADER {
            continue;
        }
        assert_eq!(committed.error, ErrorCode::NONE, "{}", committed.message);
        cluster.isolate(leader);
        let appended = c.produce_acks("ts", 0, batch_at("new", 1, 5_000), Acks::Leader);
        if appended.error == ErrorCode::NOT_LEADER {
            cluster.heal();
            continue;
        }
        assert_eq!(appended.error, ErrorCode::NONE, "{}", appended.message);
        let hw = c.list_offset("ts", 0, LATEST).offset;
        assert!(
            appended.base_offset as i64 >= hw,
            "the cut-off leader committed offset {} (high watermark {hw})",
            appended.base_offset
        );
        let by_time = c.list_offset("ts", 0, 5_000);
        assert_eq!(by_time.error, ErrorCode::NONE);
        assert_eq!(
            by_time.offset, -1,
            "offset-for-timestamp named the uncommitted offset {} (high watermark {hw})",
            appended.base_offset
        );
        let old = c.list_offset("ts", 0, 1_000);
        assert_eq!(old.offset, committed.base_offset as i64);
        cluster.heal();
        return;
    }
    panic!("no stable leader in 5 attempts");
}

/// The term in the last "leader services <what>" line of `broker`'s log for `topic`.
fn service_terms(broker: &Broker, what: &str, topic: &str) -> Vec<u64> {
    broker
        .log_lines(&format!("leader services {what}"))
        .iter()
        .filter(|l| l.contains(&format!("topic={topic} ")))
        .filter_map(|l| l.rsplit("term=").next()?.trim().parse().ok())
        .collect()
}

/// A 3-broker cluster: the first leader starts its leader services with its term; SIGKILLed, the
/// new leader starts them with a higher term; cut off while the others elect a third, the second
/// leader stops them once it learns of the new term (after healing), and the third starts them.
/// Fails if services are started on followers, keep running after leadership is lost, or are
/// driven by anything but the leadership watch (a term that never appears in the log).
#[test]
fn leader_services_start_on_election_and_stop_on_loss() {
    let mut cluster = Cluster::start(3, FAST);
    create(&cluster, "svc", 1, 3, &[]);
    let first = leaders(&cluster, "svc", 1).unwrap()[0];
    let t1 = eventually(
        Duration::from_secs(10),
        "services on the first leader",
        || {
            service_terms(&cluster.member(first).broker, "started", "svc")
                .last()
                .copied()
        },
    );
    for m in &cluster.members {
        if m.id != first {
            assert!(
                service_terms(&m.broker, "started", "svc").is_empty(),
                "a follower started leader services"
            );
        }
    }
    cluster.member(first).broker.kill();
    let second = eventually(Duration::from_secs(30), "a new leader", || {
        leaders(&cluster, "svc", 1)
            .map(|l| l[0])
            .filter(|l| *l != first)
    });
    let t2 = eventually(
        Duration::from_secs(10),
        "services on the new leader",
        || {
            service_terms(&cluster.member(second).broker, "started", "svc")
                .last()
                .copied()
        },
    );
    assert!(t2 > t1, "the new leader's term {t2} is not above {t1}");
    cluster.member(first).broker.restart();
    // Cut the second leader off: the other two elect a third, and once the link is back the
    // second learns of the higher term and must stop its services.
    cluster.isolate(second);
    let third = eventually(Duration::from_secs(30), "a third leader", || {
        let m = cluster
            .members
            .iter()
            .find(|m| m.id != second)
            .map(|m| m.proxy.addr)?;
        let mut c = RawConn::connect(m);
        let md = c.try_metadata(Some(vec!["svc".into()]))?;
        let l = md.topics.first()?.partitions.first()?.leader;
        u32::try_from(l).ok().filter(|l| *l != second)
    });
    let t3 = eventually(
        Duration::from_secs(10),
        "services on the third leader",
        || {
            service_terms(&cluster.member(third).broker, "started", "svc")
                .last()
                .copied()
                .filter(|t| *t > t2)
        },
    );
    cluster.heal();
    eventually(
        Duration::from_secs(30),
        "the second leader stopping its services",
        || {
            service_terms(&cluster.member(second).broker, "stopped", "svc")
                .contains(&t2)
                .then_some(())
        },
    );
    assert!(t3 > t2);
}
