//! Catch-up reads yield to live traffic (`broker::catch_up`): a consumer far behind a partition's
//! end gets small slices, paced to the broker's catch-up rate, only while producers are active; a
//! consumer near the end is never sliced, and once producers are quiet the one far behind gets
//! whole answers again; a refused produce does not count as live traffic. Through a real broker
//! with raw fetches.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::wire::{
    Acks, ErrorCode, FetchPartition, FetchPartitionResult, FetchRequest, FetchTopic, Request,
    Response, LATEST,
};
use sluice_protocol::{BatchBuilder, Compression, RecordBatch};
use sluice_tests::{Broker, RawConn};

/// 32 records of 8,000 bytes: a batch of ~256 KB.
fn batch(tag: usize) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..32 {
        let mut v = format!("{tag}-{i}-").into_bytes();
        v.resize(8000, b'x');
        b.append(1000, None, Some(&v), &[]);
    }
    b.seal().unwrap()
}

/// A fetch of partition 0 of `topic` from `offset` for up to 16 MiB, waiting up to 5 s.
fn fetch(c: &mut RawConn, topic: &str, offset: u64) -> FetchPartitionResult {
    let req = Request::Fetch(FetchRequest {
        max_wait_ms: 5000,
        min_bytes: 1,
        max_bytes: 16 << 20,
        topics: vec![FetchTopic {
            name: topic.into(),
            partitions: vec![FetchPartition {
                partition: 0,
                offset,
                max_bytes: 16 << 20,
            }],
        }],
    });
    let Response::Fetch(mut f) = c.call(&req).unwrap() else {
        panic!("wrong response")
    };
    let p = f.topics.remove(0).partitions.remove(0);
    assert_eq!(p.error, ErrorCode::NONE);
    for b in RecordBatch::iter_all(p.records.clone()) {
        b.expect("a fetched batch failed its checks");
    }
    p
}

fn paced_total(broker: &Broker) -> f64 {
    let admin = broker.admin_addr.expect("the admin API is on");
    let text = tokio::runtime::Runtime::new().unwrap().block_on(async {
        reqwest::get(format!("http://{admin}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    text.lines()
        .find_map(|l| l.strip_prefix("sluice_fetch_catch_up_paced_total "))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// At 4 MiB/s a slice books ~250 ms, so the fetch that follows it right away finds no room and
/// waits (counted in the metric), whatever the machine's speed. Broken once: with the catch-up
/// check disabled in the fetch handler (`catching_up` always false) the fetch from the start while
/// a producer was active got 16 MiB and the test failed at its first slice assertion.
#[test]
fn a_consumer_far_behind_gets_paced_slices_only_while_producers_are_active() {
    let broker = Broker::start(&["--catch-up-rate-mb", "4"]);
    let mut c = RawConn::connect(broker.addr);
    c.create_topic("t", 1, &[]);
    c.create_topic("live", 1, &[]);
    // ~96 MiB: a reader at the start is more than 64 MiB behind the end.
    for i in 0..384 {
        let r = c.produce_acks("t", 0, batch(i), Acks::Leader);
        assert_eq!(r.error, ErrorCode::NONE, "{}", r.message);
    }
    let end = c.list_offset("t", 0, LATEST).offset as u64;

    // Producers active (a produce just before each fetch): the reader at the start gets slices of
    // at most 1 MiB (whole batches, so at most 4 of these), each waiting for the previous one's
    // time on the schedule.
    let before = paced_total(&broker);
    let mut offset = 0;
    for i in 0..4 {
        c.produce_acks("live", 0, batch(i), Acks::Leader);
        let p = fetch(&mut c, "t", offset);
        assert!(!p.records.is_empty());
        assert!(
            p.records.len() <= 1 << 20,
            "a slice of {} bytes while producers are active",
            p.records.len()
        );
        let last = RecordBatch::iter_all(p.records).last().unwrap().unwrap();
        offset = last.header().next_offset();
    }
    assert!(
        paced_total(&broker) > before,
        "no catch-up fetch was held back"
    );

    // A reader near the end (8 MiB behind) is not catching up: it gets a whole answer at once,
    // though the schedule is full.
    c.produce_acks("live", 0, batch(99), Acks::Leader);
    c.produce_acks("t", 0, batch(98), Acks::Leader);
    let mut far = fetch(&mut c, "t", 0);
    assert!(far.records.len() <= 1 << 20);
    far = fetch(&mut c, "t", 0);
    assert!(far.records.len() <= 1 << 20);
    let near = fetch(&mut c, "t", end - 32 * 32);
    assert!(
        near.records.len() > 4 << 20,
        "a reader near the end got {} bytes",
        near.records.len()
    );

    // Producers quiet for longer than the broker counts them active: whole answers again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = fetch(&mut c, "t", 0);
        if p.records.len() > 4 << 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still sliced long after the producers stopped"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A produce the broker refuses (an unknown topic) writes nothing: not live traffic, so the
    // reader far behind still gets a whole answer. Broken once: with the broker counting every
    // produce request as live (before the proposal), this answer was a 1 MiB slice.
    let r = c.produce_acks("no-such-topic", 0, batch(97), Acks::Leader);
    assert_ne!(r.error, ErrorCode::NONE, "the produce was refused");
    let p = fetch(&mut c, "t", 0);
    assert!(
        p.records.len() > 4 << 20,
        "after a refused produce, a reader far behind got {} bytes",
        p.records.len()
    );
}
