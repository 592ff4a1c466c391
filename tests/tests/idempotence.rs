//! Idempotent produce over the wire against a real broker: `InitProducerId` hands out ids (fresh per
//! anonymous producer; the same id with a bumped epoch per named one); a batch sent again is
//! answered with its original offset and stored once, also after a SIGKILL of the broker; a gap is
//! `OUT_OF_ORDER_SEQUENCE`, an unknown producer past sequence 0 `UNKNOWN_PRODUCER_ID`, an older
//! epoch after a newer one wrote `PRODUCER_FENCED`.
//!
//! Seen failing: with every topic back on `NoState` (no producer state), the resent batch was
//! stored twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use sluice_protocol::wire::{
    Acks, ErrorCode, InitProducerIdRequest, ProducePartitionResult, Request, Response,
};
use sluice_protocol::{BatchBuilder, Compression};
use sluice_tests::{Broker, RawConn};

fn init(c: &mut RawConn, name: &str) -> (i64, i16) {
    let resp = c
        .call(&Request::InitProducerId(InitProducerIdRequest {
            name: name.into(),
        }))
        .unwrap();
    let Response::InitProducerId(r) = resp else {
        panic!("wrong response")
    };
    assert_eq!(r.error, ErrorCode::NONE, "{}", r.message);
    (r.producer_id, r.epoch)
}

/// `n` records `"{tag}-{i}"` from producer `pid` at `epoch`, first sequence `seq`.
fn batch(tag: &str, n: usize, pid: i64, epoch: i16, seq: i32) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None).producer(pid, epoch, seq);
    for i in 0..n {
        b.append(1_000, None, Some(format!("{tag}-{i}").as_bytes()), &[]);
    }
    b.seal().unwrap()
}

fn send(c: &mut RawConn, records: Bytes) -> ProducePartitionResult {
    c.produce_acks("idem", 0, records, Acks::All)
}

fn values(c: &mut RawConn) -> Vec<String> {
    c.consume_all("idem", 0)
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn a_resent_batch_is_stored_once_and_answered_with_its_first_offset() {
    let mut broker = Broker::start(&[]);
    let mut c = RawConn::connect(broker.addr);
    c.create("idem", 1);
    let (pid, epoch) = init(&mut c, "");
    assert!(pid >= 0);
    assert_eq!(epoch, 0);
    let (other, _) = init(&mut c, "");
    assert_ne!(other, pid, "anonymous producers get their own ids");

    let first = send(&mut c, batch("a", 3, pid, epoch, 0));
    assert_eq!(first.error, ErrorCode::NONE, "{}", first.message);
    let again = send(&mut c, batch("a", 3, pid, epoch, 0));
    assert_eq!(again.error, ErrorCode::NONE, "{}", again.message);
    assert_eq!(
        again.base_offset, first.base_offset,
        "a duplicate answers its first offset"
    );
    let second = send(&mut c, batch("b", 2, pid, epoch, 3));
    assert_eq!(second.error, ErrorCode::NONE, "{}", second.message);
    assert_eq!(values(&mut c), ["a-0", "a-1", "a-2", "b-0", "b-1"]);

    // A gap, and a producer this partition never saw past its first batch.
    let gap = send(&mut c, batch("gap", 1, pid, epoch, 9));
    assert_eq!(
        gap.error,
        ErrorCode::OUT_OF_ORDER_SEQUENCE,
        "{}",
        gap.message
    );
    let unknown = send(&mut c, batch("u", 1, other, 0, 4));
    assert_eq!(
        unknown.error,
        ErrorCode::UNKNOWN_PRODUCER_ID,
        "{}",
        unknown.message
    );

    // The window survives a SIGKILL: the retry after the restart is still a duplicate.
    broker.kill();
    broker.restart();
    let mut c = RawConn::connect(broker.addr);
    let retried = sluice_tests::cluster::eventually(
        std::time::Duration::from_secs(30),
        "the partition leads again",
        || {
            let r = send(&mut c, batch("b", 2, pid, epoch, 3));
            (r.error != ErrorCode::NOT_LEADER).then_some(r)
        },
    );
    assert_eq!(retried.error, ErrorCode::NONE, "{}", retried.message);
    assert_eq!(retried.base_offset, second.base_offset);
    assert_eq!(values(&mut c), ["a-0", "a-1", "a-2", "b-0", "b-1"]);
}

#[test]
fn a_named_producer_fences_its_earlier_epoch() {
    let broker = Broker::start(&[]);
    let mut c = RawConn::connect(broker.addr);
    c.create("idem", 1);
    let (pid, old) = init(&mut c, "orders");
    let (pid2, new) = init(&mut c, "orders");
    assert_eq!(pid2, pid, "a name keeps its id");
    assert_eq!(new, old + 1, "each init bumps the epoch");

    let r = send(&mut c, batch("old", 1, pid, old, 0));
    assert_eq!(r.error, ErrorCode::NONE, "{}", r.message);
    let r = send(&mut c, batch("new", 1, pid, new, 0));
    assert_eq!(r.error, ErrorCode::NONE, "{}", r.message);
    let r = send(&mut c, batch("late", 1, pid, old, 1));
    assert_eq!(r.error, ErrorCode::PRODUCER_FENCED, "{}", r.message);
    let r = send(&mut c, batch("new", 1, pid, new, 1));
    assert_eq!(r.error, ErrorCode::NONE, "{}", r.message);
    assert_eq!(values(&mut c), ["old-0", "new-0", "new-0"]);
}

/// A 3-broker cluster, replication factor 3: batches committed by a leader that is then SIGKILLed
/// are recognised by the new leader (its producer table was built from the same log): resending
/// any of the last five (of a window of eight) answers with the original offsets and stores nothing, and the producer
/// carries on with its next sequence. Seen failing with topics back on `NoState`.
#[test]
fn the_duplicate_window_survives_a_leader_kill() {
    use sluice_tests::cluster::{create, eventually, leaders, Cluster};
    use std::time::Duration;

    let mut cluster = Cluster::start(
        3,
        &[
            "--raft-heartbeat-ms",
            "100",
            "--raft-election-timeout-ms",
            "800",
        ],
    );
    create(&cluster, "idem", 1, 3, &[]);
    let leader = eventually(Duration::from_secs(30), "a leader", || {
        leaders(&cluster, "idem", 1)
    })[0];
    let mut c = RawConn::connect(cluster.addr(leader));
    let (pid, epoch) = init(&mut c, "");
    let mut offsets = Vec::new();
    for i in 0..8i32 {
        let r = send(&mut c, batch(&format!("b{i}"), 2, pid, epoch, 2 * i));
        assert_eq!(r.error, ErrorCode::NONE, "{}", r.message);
        offsets.push(r.base_offset);
    }
    cluster.member(leader).broker.kill();
    let (new_leader, mut c) = eventually(Duration::from_secs(30), "a new leader", || {
        let l = leaders(&cluster, "idem", 1)?[0];
        (l != leader).then(|| (l, RawConn::connect(cluster.addr(l))))
    });
    for (i, &offset) in offsets.iter().enumerate().skip(3) {
        let r = eventually(Duration::from_secs(30), "the new leader answers", || {
            let r = send(&mut c, batch(&format!("b{i}"), 2, pid, epoch, 2 * i as i32));
            (r.error != ErrorCode::NOT_LEADER).then_some(r)
        });
        assert_eq!(
            r.error,
            ErrorCode::NONE,
            "b{i} on broker {new_leader}: {}",
            r.message
        );
        assert_eq!(r.base_offset, offset, "b{i}: not its original offset");
    }
    let r = send(&mut c, batch("b8", 2, pid, epoch, 16));
    assert_eq!(r.error, ErrorCode::NONE, "{}", r.message);
    let want: Vec<String> = (0..9)
        .flat_map(|i| [format!("b{i}-0"), format!("b{i}-1")])
        .collect();
    assert_eq!(values(&mut c), want);
}

/// `producer.ids.max` bounds the producer ids a partition tracks: with 2, a third producer is
/// refused with `TOO_MANY_PRODUCERS` and nothing of it is stored, while the first two carry on; an
/// invalid bound refuses the topic. Seen failing with the bound check removed from admission.
#[test]
fn a_topic_bounds_the_producers_a_partition_tracks() {
    let broker = Broker::start(&[]);
    let mut c = RawConn::connect(broker.addr);
    let r = c.create_topic("idem", 1, &[("producer.ids.max", "0")]);
    assert_eq!(r.error, ErrorCode::INVALID_CONFIG, "{}", r.message);
    let r = c.create_topic("idem", 1, &[("producer.ids.max", "2")]);
    assert_eq!(r.error, ErrorCode::NONE, "{}", r.message);
    let producers: Vec<(i64, i16)> = (0..3).map(|_| init(&mut c, "")).collect();
    for (i, (pid, epoch)) in producers.iter().enumerate().take(2) {
        let r = send(&mut c, batch(&format!("p{i}"), 1, *pid, *epoch, 0));
        assert_eq!(r.error, ErrorCode::NONE, "{}", r.message);
    }
    let (pid, epoch) = producers[2];
    let r = send(&mut c, batch("p2", 1, pid, epoch, 0));
    assert_eq!(r.error, ErrorCode::TOO_MANY_PRODUCERS, "{}", r.message);
    let (pid, epoch) = producers[0];
    let r = send(&mut c, batch("p0", 1, pid, epoch, 1));
    assert_eq!(r.error, ErrorCode::NONE, "{}", r.message);
    assert_eq!(values(&mut c), ["p0-0", "p1-0", "p0-0"]);
}

/// Two copies of one batch pipelined on one connection: the second is admitted while the first is
/// still on its way into the log, waits for it, and is answered with the same offset; the log holds
/// one copy. Run a few times, as the timing decides whether the second finds the first in flight
/// or already appended (both must answer the same). Seen failing when the in-flight copy was
/// answered `REQUEST_TIMED_OUT` at once instead of waiting (round 0 hit it).
#[test]
fn a_copy_of_a_batch_in_flight_gets_the_first_copys_offset() {
    use sluice_protocol::wire::{self, ApiKey, ProducePartition, ProduceRequest, ProduceTopic};

    let broker = Broker::start(&[]);
    let mut c = RawConn::connect(broker.addr);
    c.create("idem", 1);
    let (pid, epoch) = init(&mut c, "");
    let mut want = Vec::new();
    for round in 0..5 {
        let records = batch(&format!("r{round}"), 3, pid, epoch, 3 * round);
        want.extend((0..3).map(|i| format!("r{round}-{i}")));
        let req = Request::Produce(ProduceRequest {
            acks: Acks::All,
            timeout_ms: 10_000,
            topics: vec![ProduceTopic {
                name: "idem".into(),
                partitions: vec![ProducePartition {
                    partition: 0,
                    records,
                }],
            }],
        });
        for corr in [100, 101] {
            for chunk in wire::encode_request(&req, corr) {
                c.send_raw(&chunk).unwrap();
            }
        }
        let mut offsets = Vec::new();
        for _ in 0..2 {
            let frame = c.read_frame().unwrap();
            let (_, resp) = wire::decode_response(ApiKey::Produce, frame).unwrap();
            let Ok(Response::Produce(mut r)) = resp else {
                panic!("wrong response")
            };
            let p = r.topics.remove(0).partitions.remove(0);
            assert_eq!(p.error, ErrorCode::NONE, "round {round}: {}", p.message);
            offsets.push(p.base_offset);
        }
        assert_eq!(
            offsets[0], offsets[1],
            "round {round}: copies answered different offsets"
        );
    }
    assert_eq!(values(&mut c), want);
}
