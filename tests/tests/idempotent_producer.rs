//! The client's idempotent producer against lost answers: a proxy between producer and broker
//! (`sluice_tests::lossy`) cuts the connection instead of forwarding every 20th response, after the
//! broker handled the request. The producer (acks `all`, retries) resends what it never heard
//! about. With idempotence every record is stored exactly once, in send order per partition, at the
//! offset its delivery reported; with idempotence off the same run stores duplicates, which shows
//! the check can fail. And the same producer through leader SIGKILLs on a 3-broker cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_client::{Acks, Producer, ProducerConfig, ProducerRecord};
use sluice_tests::lossy::{Loss, LossyProxy};
use sluice_tests::{Broker, RawConn};

const RECORDS: u64 = 3000;
const PARTITIONS: u32 = 2;

/// A one-broker cluster whose advertised address is a lossy proxy in front of it, so every client
/// connection (bootstrap, metadata, produce) goes through the proxy.
fn lossy_broker(nth: u64) -> (Broker, LossyProxy) {
    lossy_broker_losing(nth, Loss::Responses)
}

fn lossy_broker_losing(nth: u64, loss: Loss) -> (Broker, LossyProxy) {
    let real: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = LossyProxy::losing(real, nth, loss);
    let peers = format!("1@{}", proxy.addr);
    let broker = Broker::start_at(&real.to_string(), &["--node-id", "1", "--peers", &peers]);
    (broker, proxy)
}

/// Sends `RECORDS` values `v0..` keyed over the partitions and returns what was acknowledged:
/// value -> (partition, offset). Every send must be acknowledged.
async fn produce(bootstrap: String, idempotence: bool) -> HashMap<String, (u32, u64)> {
    let cfg = ProducerConfig {
        acks: Acks::All,
        idempotence,
        retries: 100,
        retry_backoff: Duration::from_millis(10),
        retry_backoff_max: Duration::from_millis(200),
        request_timeout: Duration::from_secs(5),
        linger: Duration::from_millis(1),
        // Small batches: many produce requests, so many answers to lose.
        batch_bytes: 300,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(bootstrap, cfg).unwrap();
    let mut pending = Vec::new();
    for i in 0..RECORDS {
        let value = format!("v{i}");
        let d = producer
            .send(ProducerRecord::new("lossy", value.clone()).key(format!("k{}", i % 7)))
            .await
            .unwrap();
        pending.push((value, d));
    }
    producer.flush().await.unwrap();
    let mut acked = HashMap::new();
    for (v, d) in pending {
        let meta = d.await.unwrap_or_else(|e| panic!("{v} failed: {e}"));
        acked.insert(v, (meta.partition, meta.offset.unwrap()));
    }
    producer.close().await.unwrap();
    acked
}

/// Every stored value per partition, in log order.
fn stored(broker: &Broker) -> BTreeMap<u32, Vec<(u64, String)>> {
    let mut c = RawConn::connect(broker.addr);
    (0..PARTITIONS)
        .map(|p| (p, c.consume_all("lossy", p)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_never_duplicate_an_idempotent_producer() {
    let (broker, proxy) = lossy_broker(20);
    RawConn::connect(broker.addr).create("lossy", PARTITIONS);
    let acked = produce(proxy.addr.to_string(), true).await;
    let lost = proxy.lost.load(std::sync::atomic::Ordering::SeqCst);
    assert!(lost > 5, "only {lost} answers lost: the run tested little");
    let stored = stored(&broker);
    let mut count: HashMap<&str, usize> = HashMap::new();
    for (p, records) in &stored {
        let mut last = None;
        for (offset, v) in records {
            *count.entry(v.as_str()).or_default() += 1;
            let i: u64 = v[1..].parse().unwrap();
            assert!(
                last.is_none_or(|l| l < i),
                "partition {p}: {v} at {offset} after v{}: out of send order",
                last.unwrap_or(0)
            );
            last = Some(i);
        }
    }
    for (v, (p, offset)) in &acked {
        assert_eq!(
            count.get(v.as_str()),
            Some(&1),
            "{v} stored {:?} times",
            count.get(v.as_str())
        );
        let at = stored[p].iter().find(|(o, _)| o == offset).map(|(_, s)| s);
        assert_eq!(
            at,
            Some(v),
            "{v}: acknowledged at {p}/{offset}, which holds {at:?}"
        );
    }
    assert_eq!(count.len() as u64, RECORDS, "stored values");
    eprintln!("idempotent: {RECORDS} records, {lost} answers lost, none stored twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_duplicate_a_producer_without_idempotence() {
    let (broker, proxy) = lossy_broker(20);
    RawConn::connect(broker.addr).create("lossy", PARTITIONS);
    let _ = produce(proxy.addr.to_string(), false).await;
    let stored = stored(&broker);
    let total: usize = stored.values().map(Vec::len).sum();
    let lost = proxy.lost.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        total as u64 > RECORDS,
        "{lost} answers lost and no record stored twice: the lossy proxy did not test retries"
    );
    eprintln!("not idempotent: {RECORDS} records sent, {total} stored ({lost} answers lost)");
}

/// A batch that finally fails (no retries; the proxy loses every 15th request, so the broker never
/// sees it) leaves a hole in its partition's sequences; the producer starts a new epoch (a fresh producer id) and carries on: records sent
/// after each failure are acknowledged again, and every acknowledged record is stored once. Seen
/// failing with the new generation switched off: after the first failure every later batch of the
/// partition was refused `OUT_OF_ORDER_SEQUENCE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_starts_a_new_epoch_and_the_producer_carries_on() {
    let (broker, proxy) = lossy_broker_losing(15, Loss::Requests);
    RawConn::connect(broker.addr).create("lossy", PARTITIONS);
    let cfg = ProducerConfig {
        acks: Acks::All,
        retries: 0,
        request_timeout: Duration::from_secs(5),
        linger: Duration::from_millis(1),
        batch_bytes: 300,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(proxy.addr.to_string(), cfg).unwrap();
    let (mut acked, mut failed) = (Vec::new(), 0u64);
    let mut acked_after_failure = 0u64;
    for i in 0..1500u64 {
        let value = format!("v{i}");
        let d = producer
            .send(ProducerRecord::new("lossy", value.clone()).key(format!("k{}", i % 7)))
            .await
            .unwrap();
        // One at a time: each outcome is known before the next send.
        match d.await {
            Ok(meta) => {
                if failed > 0 {
                    acked_after_failure += 1;
                }
                acked.push((value, meta.partition, meta.offset.unwrap()));
            }
            Err(_) => failed += 1,
        }
    }
    producer.close().await.unwrap();
    assert!(failed > 0, "no batch failed: nothing was tested");
    // Each lost request fails about one record (sends go one at a time; a cut connection can fail
    // the next send too): 115 with recovery, 638 without.
    assert!(
        failed <= 1500 / 10,
        "{failed} failed: more than the lost requests, so batches after a hole were refused"
    );
    assert!(
        acked_after_failure + failed >= 1400,
        "only {acked_after_failure} acknowledged after the first failure ({failed} failed)"
    );
    let stored = stored(&broker);
    let mut count: HashMap<&str, usize> = HashMap::new();
    for records in stored.values() {
        for (_, v) in records {
            *count.entry(v.as_str()).or_default() += 1;
        }
    }
    for (v, p, offset) in &acked {
        assert_eq!(
            count.get(v.as_str()),
            Some(&1),
            "{v} stored {:?} times",
            count.get(v.as_str())
        );
        assert!(
            stored[p].iter().any(|(o, s)| o == offset && s == v),
            "{v} not at {p}/{offset}"
        );
    }
    eprintln!(
        "{} acknowledged, {failed} failed, {acked_after_failure} after the first failure",
        acked.len()
    );
}

/// Two producers with one `producer_name`: the second's init bumps the epoch; once it wrote, the
/// first's next batch is refused `PRODUCER_FENCED`, and every later send of the first fails at once
/// with that error (it writes nothing more) while the second carries on. Seen failing with the
/// fence not kept (`Idempotence::completed` treating `PRODUCER_FENCED` as a hole): the first
/// producer took more records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_producer_is_fenced_by_its_successor() {
    use sluice_protocol::wire::ErrorCode;
    let broker = Broker::start(&[]);
    RawConn::connect(broker.addr).create("fence", 1);
    let cfg = ProducerConfig {
        acks: Acks::All,
        producer_name: Some("orders".into()),
        ..ProducerConfig::default()
    };
    let send = |p: &Producer, v: &str| {
        let (p, v) = (p.clone(), v.to_string());
        async move { p.send(ProducerRecord::new("fence", v)).await }
    };
    let first = Producer::new(broker.addr.to_string(), cfg.clone()).unwrap();
    send(&first, "a").await.unwrap().await.unwrap();
    let second = Producer::new(broker.addr.to_string(), cfg).unwrap();
    send(&second, "b").await.unwrap().await.unwrap();
    let fenced = send(&first, "c").await.unwrap().await.unwrap_err();
    assert!(
        matches!(&fenced, sluice_client::ClientError::Broker { code, .. } if *code == ErrorCode::PRODUCER_FENCED),
        "{fenced}"
    );
    let later = send(&first, "d")
        .await
        .expect_err("a fenced producer takes no more records");
    assert!(
        matches!(later, sluice_client::ClientError::Broker { code, .. } if code == ErrorCode::PRODUCER_FENCED)
    );
    send(&second, "e").await.unwrap().await.unwrap();
    let values: Vec<String> = RawConn::connect(broker.addr)
        .consume_all("fence", 0)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(values, ["a", "b", "e"]);
}

/// Values acknowledged so far, per partition (read by the test while the producer runs).
type Acked = Arc<Vec<AtomicU64>>;

/// Sends `v0`, `v1`, … keyed over the partitions of `topic` until `stop`, acks `all`, idempotent,
/// retrying; returns (partition, offset, value) of every acknowledged send and the failed ones.
async fn produce_until(
    bootstrap: String,
    topic: &'static str,
    stop: Arc<AtomicBool>,
    acked: Acked,
) -> (Vec<(u32, u64, String)>, Vec<String>) {
    let cfg = ProducerConfig {
        acks: Acks::All,
        idempotence: true,
        retries: 1000,
        retry_backoff: Duration::from_millis(20),
        retry_backoff_max: Duration::from_millis(500),
        request_timeout: Duration::from_secs(5),
        linger: Duration::from_millis(2),
        // Small batches: several in flight per partition when the leader dies.
        batch_bytes: 300,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(bootstrap, cfg).unwrap();
    let (mut pending, mut done, mut failed) = (VecDeque::new(), Vec::new(), Vec::new());
    let mut note = |v: String, r: sluice_client::Result<sluice_client::RecordMetadata>| match r {
        Ok(meta) => {
            acked[meta.partition as usize].fetch_add(1, Ordering::Relaxed);
            done.push((meta.partition, meta.offset.unwrap(), v));
        }
        Err(e) => failed.push(format!("{v}: {e}")),
    };
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let value = format!("v{n}");
        let d = producer
            .send(ProducerRecord::new(topic, value.clone()).key(format!("k{}", n % 7)))
            .await
            .unwrap();
        pending.push_back((value, d));
        n += 1;
        // Note acknowledgements as they come; at most a few hundred records outstanding.
        while pending.len() > 300
            || pending
                .front()
                .is_some_and(|(_, d)| d.result_now().is_some())
        {
            let (v, d) = pending.pop_front().unwrap();
            note(v, d.await);
        }
        if n.is_multiple_of(50) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    producer.flush().await.unwrap();
    for (v, d) in pending {
        note(v, d.await);
    }
    producer.close().await.unwrap();
    (done, failed)
}

/// The real producer (idempotence on, acks `all`, retries) writes while the leader of a partition
/// is SIGKILLed, twice, on a 3-broker cluster with replication factor 3: its batches in flight to
/// the dead leader are retried on the new one, which answers those the old leader committed with
/// their original offsets and stores the rest. Every record is acknowledged, stored exactly once at
/// the offset its delivery reported, and each partition holds its values in send order.
/// Seen failing with `idempotence: false` (twice of two runs: a retried batch stored again after
/// later ones, e.g. `v1175` at 506 after `v1272`). It did not fail with the broker's handling of a
/// dropped proposal broken (`ProducerState::dropped` a no-op and `accept_append` always true, three
/// runs): these kills did not make raft drop an admitted proposal; the in-process
/// `replica::tests::a_batch_raft_dropped_is_stored_exactly_once_by_its_retry` covers that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_writes_exactly_once_through_leader_kills() {
    use sluice_tests::cluster::{create, eventually, leaders, Cluster};
    const TOPIC: &str = "kills";
    let mut cluster = Cluster::start(
        3,
        &[
            "--raft-heartbeat-ms",
            "100",
            "--raft-election-timeout-ms",
            "800",
        ],
    );
    create(&cluster, TOPIC, PARTITIONS, 3, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::new((0..PARTITIONS).map(|_| AtomicU64::new(0)).collect());
    let producer = tokio::spawn(produce_until(
        cluster.bootstrap(),
        TOPIC,
        stop.clone(),
        acked.clone(),
    ));
    // `n` more acknowledgements in partition `p` than now, within a minute.
    let progress = |p: u32, n: u64, what: &str| {
        let from = acked[p as usize].load(Ordering::Relaxed);
        eventually(Duration::from_secs(60), what, || {
            (acked[p as usize].load(Ordering::Relaxed) >= from + n).then_some(())
        });
    };
    for p in 0..PARTITIONS {
        progress(p, 200, "acknowledgements before the kills");
    }
    for round in 0..2u32 {
        let p = round % PARTITIONS;
        let leader = eventually(Duration::from_secs(30), "leaders", || {
            leaders(&cluster, TOPIC, PARTITIONS)
        })[p as usize];
        cluster.member(leader).broker.kill();
        progress(p, 200, "acknowledgements after the leader kill");
        cluster.member(leader).broker.restart();
        progress(p, 200, "acknowledgements after the restart");
    }
    stop.store(true, Ordering::Relaxed);
    let (done, failed) = producer.await.unwrap();
    assert!(failed.is_empty(), "failed sends: {failed:?}");
    let leaders = eventually(Duration::from_secs(30), "leaders", || {
        leaders(&cluster, TOPIC, PARTITIONS)
    });
    let mut count: HashMap<String, usize> = HashMap::new();
    let mut at: HashMap<(u32, u64), String> = HashMap::new();
    for p in 0..PARTITIONS {
        let records = RawConn::connect(cluster.addr(leaders[p as usize])).consume_all(TOPIC, p);
        let mut last: Option<u64> = None;
        for (offset, v) in records {
            let i: u64 = v[1..].parse().unwrap();
            assert!(
                last.is_none_or(|l| l < i),
                "partition {p}: {v} at {offset} after v{}: out of send order",
                last.unwrap_or(0)
            );
            last = Some(i);
            *count.entry(v.clone()).or_default() += 1;
            at.insert((p, offset), v);
        }
    }
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    for (p, offset, v) in &done {
        assert_eq!(
            at.get(&(*p, *offset)),
            Some(v),
            "{v} acknowledged at {p}/{offset}"
        );
    }
    eprintln!(
        "leader kills: {} acknowledged, each stored once, in send order",
        done.len()
    );
}
