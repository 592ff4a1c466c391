//! A broker runs no OS thread per partition replica. A test binary of its own: creating 300 raft
//! groups loads both cores for seconds, which must not starve other tests' clusters into elections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sluice_protocol::wire::ErrorCode;
use sluice_tests::{batch_at, Broker, RawConn};

/// One broker hosting 300 partition replicas runs far fewer OS threads than replicas: nothing in a
/// replica (its log's flusher, its raft group, its leader services) takes a thread of its own.
/// Fails when partition logs run the storage engine's per-log interval flusher thread.
#[test]
fn no_os_thread_per_partition_replica() {
    let broker = Broker::start(&[]);
    let mut c = RawConn::connect(broker.addr);
    let r = c.create_topic("many", 300, &[]);
    assert_eq!(r.error, ErrorCode::NONE, "{}", r.message);
    // Every replica is open and led (the create answers once they know their leaders): write to a
    // few so their logs have been appended to and flushed.
    for p in [0, 150, 299] {
        let w = c.produce("many", p, batch_at("x", 1, 1_000));
        assert_eq!(w.error, ErrorCode::NONE, "{}", w.message);
    }
    let threads = broker.thread_count();
    assert!(
        threads < 100,
        "{threads} threads for 300 partition replicas: something runs a thread per replica"
    );
}
