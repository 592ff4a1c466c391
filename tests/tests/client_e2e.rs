//! The Rust client against the real broker: several producers into a multi-partition topic consumed
//! back exactly once and in per-partition order; reconnection across broker restarts; and
//! backpressure (a producer much faster than an fsync-per-append broker keeps memory bounded and
//! loses nothing).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_client::{
    Acks, Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, SeekTo,
};
use sluice_tests::Broker;

/// Polls until `want` records arrived (or a generous number of empty polls in a row).
async fn consume(
    addr: &str,
    topic: &str,
    partitions: u32,
    want: usize,
) -> Vec<sluice_client::ConsumerRecord> {
    let mut c = Consumer::new(addr, ConsumerConfig::default()).unwrap();
    let assignment: Vec<(&str, u32)> = (0..partitions).map(|p| (topic, p)).collect();
    c.assign(&assignment);
    for p in 0..partitions {
        c.seek(topic, p, SeekTo::Earliest).await.unwrap();
    }
    let mut out = Vec::new();
    let mut empty = 0;
    while out.len() < want && empty < 50 {
        let batch = c.poll(Duration::from_millis(200)).await.unwrap();
        if batch.is_empty() {
            empty += 1;
        } else {
            empty = 0;
        }
        out.extend(batch);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_producers_are_consumed_exactly_once_in_partition_order() {
    let broker = Broker::start(&[]);
    let addr = broker.addr.to_string();
    let admin = Admin::new(addr.clone()).unwrap();
    admin.create_topic("events", 4, 1, &[]).await.unwrap();

    let producers = 3;
    let per_producer = 3_000u64;
    let mut handles = Vec::new();
    for p in 0..producers {
        let addr = addr.clone();
        handles.push(tokio::spawn(async move {
            let cfg = ProducerConfig {
                max_in_flight: 1, // strict per-partition order under retries
                ..ProducerConfig::default()
            };
            let producer = Producer::new(addr, cfg).unwrap();
            let mut deliveries = Vec::new();
            for seq in 0..per_producer {
                // Keys spread records over partitions; one key's records stay in order.
                let key = format!("p{p}-k{}", seq % 5);
                let value = format!("p{p}-{seq}");
                let d = producer
                    .send(ProducerRecord::new("events", value.clone()).key(key.clone()))
                    .await
                    .unwrap();
                deliveries.push((key, value, d));
            }
            producer.flush().await.unwrap();
            let mut acked = Vec::new();
            for (key, value, d) in deliveries {
                let meta = d.await.unwrap();
                acked.push((key, value, meta.partition, meta.offset.unwrap()));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for h in handles {
        acked.extend(h.await.unwrap());
    }
    assert_eq!(acked.len() as u64, producers * per_producer);

    let records = consume(&addr, "events", 4, acked.len()).await;
    // Exactly the acknowledged records, each once, at the offset its delivery reported.
    let got: BTreeMap<(u32, u64), (String, String)> = records
        .iter()
        .map(|r| {
            let s = |b: &Option<Bytes>| String::from_utf8(b.clone().unwrap().to_vec()).unwrap();
            ((r.partition, r.offset), (s(&r.key), s(&r.value)))
        })
        .collect();
    assert_eq!(got.len(), records.len(), "a record was delivered twice");
    let want: BTreeMap<(u32, u64), (String, String)> = acked
        .iter()
        .map(|(k, v, p, o)| ((*p, *o), (k.clone(), v.clone())))
        .collect();
    assert_eq!(got, want);
    // Per partition, offsets are dense from the first record (raft's first entries, control
    // batches, come before it; one leader throughout adds none in between); per key, sequence
    // numbers increase with offsets.
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    let mut next_offset: HashMap<u32, u64> = HashMap::new();
    for ((p, o), (k, v)) in &got {
        let n = next_offset.entry(*p).or_insert(*o);
        assert_eq!(o, n, "offsets of partition {p} are dense");
        *n += 1;
        let seq: u64 = v.rsplit('-').next().unwrap().parse().unwrap();
        if let Some(prev) = last_seq.insert(k.clone(), seq) {
            assert!(seq > prev, "key {k}: {seq} after {prev}");
        }
    }
}

/// A producer and a consumer across a SIGTERM and two SIGKILL restarts. Fails if an acknowledged
/// send's delivery failed, or if a partition read back after the restarts is not exactly the
/// acknowledged records of that partition, in send order, at their acknowledged offsets (the
/// check compared only counts before, so a lost record plus a duplicate passed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reconnect_after_broker_restarts() {
    let mut broker = Broker::start(&["--flush", "always"]);
    let addr = broker.addr.to_string();
    let admin = Admin::new(addr.clone()).unwrap();
    admin.create_topic("r", 2, 1, &[]).await.unwrap();
    let cfg = ProducerConfig {
        acks: Acks::All,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(addr.clone(), cfg).unwrap();
    let mut acked = Vec::new();
    for round in 0..3 {
        for i in 0..200 {
            let value = format!("r{round}-{i}");
            let d = producer
                .send(ProducerRecord::new("r", value.clone()))
                .await
                .unwrap();
            acked.push((value, d));
        }
        producer.flush().await.unwrap();
        if round == 0 {
            assert_eq!(broker.terminate(), Some(0));
        } else {
            broker.kill();
        }
        // Same port, same data.
        let b = &mut broker;
        tokio::task::block_in_place(|| b.restart());
    }
    // Per partition, in send order: (offset, value) of every acknowledged send.
    let mut want: BTreeMap<u32, Vec<(u64, String)>> = BTreeMap::new();
    let mut total = 0;
    for (value, d) in acked {
        let meta = d
            .await
            .expect("every acknowledged send was delivered before the restart");
        want.entry(meta.partition)
            .or_default()
            .push((meta.offset.unwrap(), value));
        total += 1;
    }
    let records = consume(&addr, "r", 2, total).await;
    let mut got: BTreeMap<u32, Vec<(u64, String)>> = BTreeMap::new();
    for r in &records {
        got.entry(r.partition).or_default().push((
            r.offset,
            String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap(),
        ));
    }
    assert_eq!(got.len(), 2, "records in both partitions");
    for (p, w) in &want {
        assert_eq!(got.get(p), Some(w), "partition {p}");
    }
    assert_eq!(got.len(), want.len());
    // The same client handles work after the restarts.
    let d = producer
        .send(ProducerRecord::new("r", "after"))
        .await
        .unwrap();
    assert!(d.await.unwrap().offset.is_some());
    admin.describe_topic("r").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_producer_against_a_slow_broker_stays_bounded_and_loses_nothing() {
    // Every append fsynced, acks all: the broker is far slower than the producer can send.
    let broker = Broker::start(&[
        "--flush",
        "always",
        "--max-inflight-bytes-per-connection",
        "67108864",
    ]);
    let addr = broker.addr.to_string();
    Admin::new(addr.clone())
        .unwrap()
        .create_topic("bp", 2, 1, &[])
        .await
        .unwrap();
    let buffer_bytes = 512 * 1024;
    let record = Bytes::from(vec![b'x'; 1000]);
    let cfg = ProducerConfig {
        acks: Acks::All,
        buffer_bytes,
        batch_bytes: 64 * 1024,
        linger: Duration::from_millis(1),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(addr.clone(), cfg).unwrap();
    let total = 20_000u64;
    let delivered = Arc::new(AtomicU64::new(0));
    let mut max_outstanding = 0u64;
    let mut waiters = tokio::task::JoinSet::new();
    let rss_before = broker.rss_kib();
    let mut rss_max = rss_before;
    for i in 0..total {
        let d = producer
            .send(ProducerRecord::new("bp", record.clone()).partition((i % 2) as u32))
            .await
            .unwrap();
        let counter = delivered.clone();
        waiters.spawn(async move {
            d.await.unwrap();
            counter.fetch_add(1, Ordering::Relaxed);
        });
        let outstanding = i + 1 - delivered.load(Ordering::Relaxed);
        max_outstanding = max_outstanding.max(outstanding);
        if i % 2_000 == 0 {
            rss_max = rss_max.max(broker.rss_kib());
        }
    }
    producer.flush().await.unwrap();
    while waiters.join_next().await.is_some() {}
    assert_eq!(delivered.load(Ordering::Relaxed), total);
    // `send` waited for buffer space: never much more unacknowledged records than the buffer holds.
    // The count of delivered records lags (it is kept by tasks woken after each delivery), so the
    // check allows twice the buffer; an unbounded buffer would run to thousands.
    let bound = 2 * ((buffer_bytes as u64) / 1000 + 64);
    assert!(
        max_outstanding <= bound,
        "{max_outstanding} records outstanding, buffer allows about {bound}"
    );
    // And the producer did get ahead of the broker, so the bound was actually exercised.
    assert!(
        max_outstanding > bound / 8,
        "only {max_outstanding} outstanding: the buffer never filled"
    );
    eprintln!("max outstanding {max_outstanding} of about {bound}");
    // 20 MB went through; the broker's memory did not grow by anything like it.
    assert!(
        rss_max < rss_before + 64 * 1024,
        "broker RSS grew from {rss_before} KiB to {rss_max} KiB"
    );
    let records = consume(&addr, "bp", 2, total as usize).await;
    assert_eq!(records.len() as u64, total);
}
