//! A broker runs no OS thread per partition replica. A test binary of its own: creating 300 raft
//! groups loads both cores for seconds, which must not starve other tests' clusters into elections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use sluice_protocol::wire::ErrorCode;
use sluice_tests::cluster::eventually;
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
    // The create answers within 10 s even if not every replica is open yet (a slow disk): wait for
    // all 300 to be open and led, then write to a few so their logs are appended to and flushed.
    eventually(Duration::from_secs(120), "300 replicas led", || {
        let m = c.try_metadata(Some(vec!["many".into()]))?;
        let t = m.topics.first()?;
        // A replica open here reports its high watermark (past raft's first entries); metadata for
        // one not open yet says 0.
        (t.partitions.len() == 300 && t.partitions.iter().all(|p| p.high_watermark > 0))
            .then_some(())
    });
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
