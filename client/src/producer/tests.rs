//! Unit tests of the producer's accumulator, delivery futures, `send` and `try_send` (the
//! partitioner's, the config's and the request splitter's are next to them, in `record`, `config`
//! and `sender`). None needs a broker: metadata is seeded into the client's cache, and the one test
//! that lets batches go out points the producer at a closed port so every batch fails.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use sluice_protocol::wire::{BrokerInfo, MetadataResponse, PartitionMetadata, TopicMetadata};
use sluice_protocol::RecordBatch;

use super::accumulator::{Data, ReadyBatch};
use super::*;

fn config(batch_bytes: usize) -> ProducerConfig {
    ProducerConfig {
        batch_bytes,
        linger: Duration::from_secs(3600),
        ..ProducerConfig::default()
    }
}

fn inner(batch_bytes: usize) -> Inner {
    let client = Client::new(ClientConfig::new("127.0.0.1:1")).expect("client");
    Inner::new(client, config(batch_bytes))
}

/// Appends a record the way `send` does once metadata and buffer space are in hand.
fn append(inner: &Inner, record: ProducerRecord, partitions: u32) -> DeliveryFuture {
    let size = record.size_estimate();
    lock(&inner.state).append(record, size, partitions, 1_000).0
}

fn unkeyed(value: &str) -> ProducerRecord {
    ProducerRecord::new("t", value.to_string())
}

/// (partition, record count) of each batch in the ready queue, in order.
fn ready(inner: &Inner) -> Vec<(u32, u32)> {
    lock(&inner.state)
        .ready
        .iter()
        .map(|b| match &b.data {
            Data::Open(builder) => (b.meta.partition, builder.record_count()),
            Data::Sealed(_) => (b.meta.partition, u32::MAX),
        })
        .collect()
}

fn sticky(inner: &Inner, topic: &str) -> u32 {
    lock(&inner.state).topic(topic).expect("topic").sticky
}

fn set_sticky(inner: &Inner, topic: &str, p: u32) {
    let mut st = lock(&inner.state);
    if let Some(i) = st.find_topic(topic) {
        st.topics[i].sticky = p;
    }
}

#[test]
fn keyed_and_explicit_records_ignore_the_sticky_partition() {
    let inner = inner(1 << 20);
    for i in 0..20 {
        append(&inner, unkeyed("x").key(format!("k{i}")), 8);
    }
    append(&inner, unkeyed("x").partition(5), 8);
    let st = lock(&inner.state);
    let acc = &st.topic("t").expect("topic");
    for i in 0..20 {
        let p = partition_for_key(format!("k{i}").as_bytes(), 8) as usize;
        assert!(acc.open[p].is_some(), "key k{i} -> partition {p}");
    }
    assert!(acc.open[5].is_some());
    let total: u32 = acc
        .open
        .iter()
        .flatten()
        .map(|b| b.builder.record_count())
        .sum();
    assert_eq!(total, 21);
}

#[test]
fn sticky_partition_holds_until_a_batch_is_sealed() {
    // Room for a few records per batch.
    let inner = inner(400);
    append(&inner, unkeyed("first").partition(0), 4);
    set_sticky(&inner, "t", 2);
    // Batch of partition 2 fills; the partition does not change until it is sealed.
    let mut sealed_at = None;
    for i in 0..20 {
        append(&inner, unkeyed(&"v".repeat(40)), 4);
        if !ready(&inner).iter().any(|(p, _)| *p == 2) {
            assert_eq!(sticky(&inner, "t"), 2, "record {i}");
        } else {
            sealed_at = Some(i);
            break;
        }
    }
    assert!(sealed_at.is_some(), "a batch of partition 2 was sealed");
    // Sealing moved the sticky partition on, and the record that did not fit went to the next one.
    assert_eq!(sticky(&inner, "t"), 3);
    let st = lock(&inner.state);
    assert_eq!(
        st.topic("t").expect("topic").open[3]
            .as_ref()
            .map(|b| b.builder.record_count()),
        Some(1)
    );
}

#[test]
fn sticky_wraps_around_partitions() {
    let inner = inner(1 << 20);
    append(&inner, unkeyed("a"), 3);
    set_sticky(&inner, "t", 2);
    append(&inner, unkeyed("b"), 3);
    {
        let mut st = lock(&inner.state);
        // Linger expiry seals everything open, including the sticky partition's batch.
        st.seal_expired(true, Instant::now(), Duration::ZERO);
    }
    assert_eq!(sticky(&inner, "t"), 0);
}

#[test]
fn batches_seal_at_batch_bytes() {
    let batch_bytes = 1000;
    let inner = inner(batch_bytes);
    let value = "v".repeat(100);
    let mut futures = Vec::new();
    for _ in 0..50 {
        futures.push(append(&inner, unkeyed(&value).partition(0), 1));
    }
    let batches: Vec<ReadyBatch> = lock(&inner.state).ready.drain(..).collect();
    assert!(batches.len() >= 5, "{} batches", batches.len());
    let mut records = 0;
    for b in batches {
        let Data::Open(builder) = b.data else {
            panic!("not sealed by the accumulator")
        };
        assert!(
            builder.size_bytes() <= batch_bytes,
            "{}",
            builder.size_bytes()
        );
        records += builder.record_count();
        // Another record would not have fit.
        assert!(builder.size_bytes() + unkeyed(&value).size_estimate() > batch_bytes);
        let bytes = builder.seal().expect("seal");
        let (batch, rest) = RecordBatch::decode(&bytes).expect("valid batch");
        assert!(rest.is_empty());
        assert!(batch
            .records()
            .expect("records")
            .all(|r| r.is_ok_and(|r| r.value.as_deref() == Some(value.as_bytes()))));
    }
    let open = lock(&inner.state).topic("t").expect("topic").open[0]
        .as_ref()
        .map_or(0, |b| b.builder.record_count());
    assert_eq!(records + open, 50);
}

#[test]
fn oversized_record_goes_alone() {
    let inner = inner(500);
    append(&inner, unkeyed("small").partition(0), 1);
    append(&inner, unkeyed(&"x".repeat(2000)).partition(0), 1);
    // The small batch was sealed to make room, then the big one sealed on its own.
    assert_eq!(ready(&inner), vec![(0, 1), (0, 1)]);
}

#[test]
fn linger_seals_only_old_batches() {
    let inner = inner(1 << 20);
    append(&inner, unkeyed("a").partition(0), 2);
    let created = Instant::now();
    let mut st = lock(&inner.state);
    let linger = Duration::from_secs(10);
    let earliest = st.seal_expired(false, created, linger);
    assert!(earliest.is_some());
    assert!(st.ready.is_empty());
    let earliest = st.seal_expired(false, created + linger, linger);
    assert!(earliest.is_none());
    assert_eq!(st.ready.len(), 1);
    assert!(!st.has_open());
}

#[test]
fn delivery_futures_share_one_completion_per_batch() {
    let inner = inner(1 << 20);
    let futures: Vec<DeliveryFuture> = (0..3)
        .map(|i| append(&inner, unkeyed(&i.to_string()).partition(1), 2))
        .collect();
    assert!(futures
        .windows(2)
        .all(|w| Arc::ptr_eq(&w[0].completion, &w[1].completion)));
    assert_eq!(Arc::strong_count(&futures[0].completion), 4);
    futures[0].completion.complete(Ok(Some(100)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let offsets: Vec<Option<u64>> = rt.block_on(async {
        let mut v = Vec::new();
        for f in futures {
            let m = f.await.expect("delivered");
            assert_eq!(&*m.topic, "t");
            assert_eq!(m.partition, 1);
            v.push(m.offset);
        }
        v
    });
    assert_eq!(offsets, vec![Some(100), Some(101), Some(102)]);
}

#[test]
fn same_batch_and_result_now_follow_the_batch() {
    let inner = inner(1 << 20);
    let a0 = append(&inner, unkeyed("a").partition(0), 2);
    let a1 = append(&inner, unkeyed("b").partition(0), 2);
    let b0 = append(&inner, unkeyed("c").partition(1), 2);
    assert!(a0.same_batch(&a1));
    assert!(!a0.same_batch(&b0));
    assert!(a0.result_now().is_none() && b0.result_now().is_none());
    a0.completion.complete(Ok(Some(40)));
    assert_eq!(a0.result_now().map(|r| r.ok()), Some(Some(Some(40))));
    assert_eq!(a1.result_now().map(|r| r.ok()), Some(Some(Some(41))));
    // The other batch is untouched; its failure reaches its record.
    assert!(b0.result_now().is_none());
    b0.completion.complete(Err(ClientError::Closed));
    assert!(matches!(b0.result_now(), Some(Err(ClientError::Closed))));
}

#[tokio::test]
async fn delivery_future_wakes_on_completion() {
    let inner = inner(1 << 20);
    let f = append(&inner, unkeyed("a"), 1);
    let completion = f.completion.clone();
    let waiter = tokio::spawn(f);
    tokio::task::yield_now().await;
    completion.complete(Err(ClientError::Timeout(Duration::from_secs(1))));
    let r = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .expect("joined");
    assert!(matches!(r, Err(ClientError::Timeout(_))));
}

#[tokio::test]
async fn futures_sharing_a_waker_entry_are_all_woken() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let inner = inner(1 << 20);
    let mut a = append(&inner, unkeyed("a"), 1);
    let mut b = append(&inner, unkeyed("b"), 1);
    let mut c = append(&inner, unkeyed("c"), 1);
    let one = Arc::new(Count(AtomicUsize::new(0)));
    let two = Arc::new(Count(AtomicUsize::new(0)));
    let w1 = Waker::from(one.clone());
    let w2 = Waker::from(two.clone());
    let mut cx1 = Context::from_waker(&w1);
    let mut cx2 = Context::from_waker(&w2);
    // a and b share one entry; then b moves to another waker, which must not take a's away.
    assert!(Pin::new(&mut a).poll(&mut cx1).is_pending());
    assert!(Pin::new(&mut b).poll(&mut cx1).is_pending());
    assert_eq!(lock(&a.completion.wakers).len(), 1);
    assert!(Pin::new(&mut b).poll(&mut cx2).is_pending());
    assert!(Pin::new(&mut c).poll(&mut cx2).is_pending());
    assert_eq!(lock(&a.completion.wakers).len(), 2);
    a.completion.complete(Ok(Some(7)));
    assert_eq!(one.0.load(Ordering::SeqCst), 1);
    assert_eq!(two.0.load(Ordering::SeqCst), 1);
    let offset = |f: &mut DeliveryFuture, cx: &mut Context<'_>| match Pin::new(f).poll(cx) {
        Poll::Ready(Ok(m)) => m.offset,
        other => panic!("{other:?}"),
    };
    assert_eq!(offset(&mut a, &mut cx1), Some(7));
    assert_eq!(offset(&mut b, &mut cx2), Some(8));
    assert_eq!(offset(&mut c, &mut cx2), Some(9));
}

/// Seeds the client's metadata cache with topic `t` of `partitions` partitions, leader node 0 at
/// `addr`.
fn seed_metadata(client: &Client, addr: &str, partitions: u32) {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    client.update_cache(
        &MetadataResponse {
            brokers: vec![BrokerInfo {
                node_id: 0,
                host: host.to_string(),
                port: port.parse().expect("port"),
            }],
            controller_id: 0,
            topics: vec![TopicMetadata {
                error: ErrorCode::NONE,
                name: "t".into(),
                partitions: (0..partitions)
                    .map(|partition| PartitionMetadata {
                        error: ErrorCode::NONE,
                        partition,
                        leader: 0,
                        replicas: vec![0],
                        high_watermark: 0,
                        log_start_offset: 0,
                    })
                    .collect(),
                configs: vec![],
            }],
        },
        false,
    );
}

/// A producer whose 1 KiB buffer a few 200-byte records fill; batches wait (no linger expiry) and
/// are not retried.
fn tiny_buffer_producer(client: Client) -> Producer {
    Producer::with_client(
        client,
        ProducerConfig {
            batch_bytes: 1024,
            buffer_bytes: 1024,
            linger: Duration::from_secs(3600),
            retries: 0,
            ..ProducerConfig::default()
        },
    )
    .expect("producer")
}

fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("127.0.0.1:{}", l.local_addr().expect("addr").port())
}

/// A full buffer makes `send` wait, and a failed batch frees its room. Fills the buffer with
/// `try_send` (it says `WouldWait` once no room is left: no timing), then sees a `send` counted by
/// `sends_waiting_for_room` before anything frees room (it once gave `send` 100 ms and took a
/// timeout for "blocked"). Seen to fail ("the send never waited for room") with `Buffer::reserve`
/// returning at once without taking permits.
#[tokio::test]
async fn send_waits_for_buffer_space_and_failures_free_it() {
    let addr = closed_port();
    let client = Client::new(ClientConfig::new(addr.clone())).expect("client");
    seed_metadata(&client, &addr, 2);
    let producer = tiny_buffer_producer(client);
    let record = || ProducerRecord::new("t", vec![7u8; 200]).partition(0);
    // `send` learns the partition count (it has room), then `try_send` fills the buffer: each
    // record reserves its size estimate, about 250 bytes.
    let mut accepted = vec![producer.send(record()).await.expect("accepted")];
    let full = loop {
        match producer.try_send(record()) {
            Ok(f) => accepted.push(f),
            Err(e) => break e,
        }
        assert!(accepted.len() < 10, "the buffer never filled");
    };
    assert!(matches!(full, TrySendError::WouldWait(_)), "{full:?}");
    assert_eq!(producer.sends_waiting_for_room(), 0);
    // A send now waits for room: counted as waiting, and not done.
    let blocked = tokio::spawn({
        let producer = producer.clone();
        async move { producer.send(record()).await.map(|_| ()) }
    });
    tokio::time::timeout(Duration::from_secs(10), async {
        while producer.sends_waiting_for_room() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the send never waited for room");
    assert!(!blocked.is_finished(), "a send counted as waiting finished");
    // A flush sends the batch to a closed port: it fails (no retries), which frees the buffer.
    tokio::time::timeout(Duration::from_secs(10), producer.flush())
        .await
        .expect("flush finished")
        .expect("flush");
    for f in accepted {
        let err = f.await.expect_err("nothing listens");
        assert!(err.is_connection_error(), "{err}");
    }
    tokio::time::timeout(Duration::from_secs(10), blocked)
        .await
        .expect("blocked send went through")
        .expect("joined")
        .expect("accepted");
    assert_eq!(producer.sends_waiting_for_room(), 0);
    producer.close().await.expect("close");
    let after = producer.send(record()).await;
    assert!(matches!(after, Err(ClientError::Closed)), "{after:?}");
}

#[tokio::test]
async fn send_rejects_bad_partition_and_huge_records() {
    let addr = closed_port();
    let client = Client::new(ClientConfig::new(addr.clone())).expect("client");
    seed_metadata(&client, &addr, 2);
    let producer = Producer::with_client(
        client,
        ProducerConfig {
            batch_bytes: 1024,
            buffer_bytes: 4096,
            ..ProducerConfig::default()
        },
    )
    .expect("producer");
    let err = producer
        .send(ProducerRecord::new("t", "x").partition(2))
        .await
        .expect_err("partition 2 of 2");
    assert!(matches!(err, ClientError::InvalidArgument(_)), "{err}");
    let err = producer
        .send(ProducerRecord::new("t", vec![0u8; 5000]))
        .await
        .expect_err("larger than the buffer");
    assert!(matches!(err, ClientError::RecordTooLarge { .. }), "{err}");
}

#[tokio::test]
async fn try_send_accepts_only_without_a_wait() {
    let addr = closed_port();
    let client = Client::new(ClientConfig::new(addr.clone())).expect("client");
    let producer = tiny_buffer_producer(client.clone());
    let record = |p: u32| ProducerRecord::new("t", vec![7u8; 200]).partition(p);
    // The topic was never looked up: accepting needs metadata, so the record comes back whole.
    match producer.try_send(record(1)) {
        Err(TrySendError::WouldWait(r)) => {
            assert_eq!(r.partition, Some(1));
            assert_eq!(r.value.as_deref(), Some(&[7u8; 200][..]));
        }
        other => panic!("expected WouldWait, got {other:?}"),
    }
    seed_metadata(&client, &addr, 2);
    // `send` learns the partition count; from then on `try_send` accepts until the buffer is full.
    let mut accepted = vec![producer.send(record(0)).await.expect("accepted")];
    loop {
        match producer.try_send(record(0)) {
            Ok(f) => accepted.push(f),
            Err(TrySendError::WouldWait(_)) => break,
            Err(TrySendError::Refused(e)) => panic!("refused: {e}"),
        }
        assert!(accepted.len() < 10, "the buffer never filled");
    }
    assert!(accepted.len() > 1);
    assert!(accepted.windows(2).all(|w| w[0].same_batch(&w[1])));
    // Refusals are send's: a partition the topic lacks, a record too large for the buffer.
    assert!(matches!(
        producer.try_send(record(5)),
        Err(TrySendError::Refused(ClientError::InvalidArgument(_)))
    ));
    assert!(matches!(
        producer.try_send(ProducerRecord::new("t", vec![0u8; 4096])),
        Err(TrySendError::Refused(ClientError::RecordTooLarge { .. }))
    ));
    producer.close().await.expect("close");
    assert!(matches!(
        producer.try_send(record(0)),
        Err(TrySendError::Refused(ClientError::Closed))
    ));
}
