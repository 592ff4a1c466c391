//! Window operators running inside the broker, end to end and exactly once, against the model.
//!
//! A random keyed, out-of-order stream (fixed seed; JSON values `{"n": i, "ts": ms, "v": number}`,
//! some far behind the others, some with a non-numeric `v`, no `ts`, a fractional `ts` or no JSON
//! at all) is produced by the Rust client into a source topic, key-partitioned, so each key lives
//! in one partition. Operators are defined with `sluice operator create`. The source is then read
//! back as it is stored, each partition in log order from offset 0, and run through the
//! brute-force model of the semantics (`sluice_window::model`, which reads time and value with the
//! operator's own reader and shares nothing else with it). Per sink key, the **sequence** of sink
//! records read from the sink (key, value JSON or tombstone, timestamp; every sink partition, each
//! in offset order) must equal the model's, and the late and dead-letter topics must hold exactly
//! the model's late and bad records (the source record's key and value, its source offset in the
//! `sluice.offset` header), each once and in source order. The tests wait for equality with a
//! deadline, then wait a second more and check again: a result written twice shows up as a record
//! after the model's last. Equal sequences, not only equal final values: that is exactly once.
//!
//! Without `--idle-timeout` the watermark moves only with data, so each partition's last windows
//! never fire; the model says so too, and the sink must not have them either.
//!
//! `SLUICE_OPERATOR_ROUNDS=N` sets the broker kills of the failure tests (default 3; each round
//! produces about 1,500 more records before its kill), for a longer run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_client::{Acks, Producer, ProducerConfig, ProducerRecord};
use sluice_tests::cluster::{create as create_topic, eventually, leaders, Cluster};
use sluice_tests::operators::{
    await_model, expected, stable_source, wait_for_model, OperatorDef, Outputs, Rec,
};
use sluice_tests::{Broker, RawConn};
use sluice_window::model::Step;

/// How long an operator may take to write what the model says, after the source is complete.
const CATCH_UP: Duration = Duration::from_secs(60);
/// How long nothing more may arrive once the sink equals the model.
const SETTLE: Duration = Duration::from_secs(1);

/// Quicker elections than the defaults (as the other cluster tests use).
const FAST: &[&str] = &[
    "--raft-heartbeat-ms",
    "100",
    "--raft-election-timeout-ms",
    "800",
];

fn rounds() -> u64 {
    std::env::var("SLUICE_OPERATOR_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The random source stream: record `i` is `(key, value)`, a function of the seed and `i` only.
#[derive(Debug)]
struct Stream {
    rng: StdRng,
    n: u64,
    /// The front of event time: it moves 0 to 2 ms per record.
    base: i64,
    keys: u32,
}

impl Stream {
    fn new(seed: u64, keys: u32) -> Stream {
        Stream {
            rng: StdRng::seed_from_u64(seed),
            n: 0,
            base: 1_700_000_000_000,
            keys,
        }
    }

    fn next_record(&mut self) -> (String, String) {
        let rng = &mut self.rng;
        let n = self.n;
        self.n += 1;
        self.base += rng.gen_range(0..=2);
        let key = format!("user-{}", rng.gen_range(0..self.keys));
        // Mostly at the front, a quarter out of order within the disorder and lateness allowed,
        // some far behind (too late for every window).
        let ts = match rng.gen_range(0..100) {
            0..=69 => self.base,
            70..=94 => self.base - rng.gen_range(0..400),
            _ => self.base - rng.gen_range(700..3000),
        };
        // Whole numbers: sums are exact whatever order the operator adds them in.
        let v: i64 = rng.gen_range(-1000..1000);
        let value = match rng.gen_range(0..1000) {
            0..=19 => format!(r#"{{"n": {n}, "ts": {ts}, "v": "lots"}}"#),
            20..=34 => format!(r#"{{"n": {n}, "v": {v}}}"#),
            35..=44 => format!("not json {n}"),
            45..=49 => format!(r#"{{"n": {n}, "ts": {ts}.5, "v": {v}}}"#),
            _ => format!(r#"{{"n": {n}, "ts": {ts}, "v": {v}}}"#),
        };
        (key, value)
    }
}

fn producer_config() -> ProducerConfig {
    ProducerConfig {
        acks: Acks::All,
        idempotence: true,
        retries: 100,
        retry_backoff: Duration::from_millis(20),
        retry_backoff_max: Duration::from_millis(500),
        request_timeout: Duration::from_secs(5),
        linger: Duration::from_millis(2),
        batch_bytes: 16 << 10,
        ..ProducerConfig::default()
    }
}

/// Produces `count` records of `stream` to `topic` and waits until every one is acknowledged.
fn produce_all(
    rt: &tokio::runtime::Runtime,
    bootstrap: String,
    topic: &'static str,
    stream: &mut Stream,
    count: u64,
) {
    let records: Vec<(String, String)> = (0..count).map(|_| stream.next_record()).collect();
    rt.block_on(async move {
        let producer = Producer::new(bootstrap, producer_config()).unwrap();
        let mut pending = Vec::with_capacity(records.len());
        for (k, v) in records {
            pending.push(
                producer
                    .send(ProducerRecord::new(topic, v).key(k))
                    .await
                    .unwrap(),
            );
        }
        producer.flush().await.unwrap();
        for d in pending {
            d.await.unwrap();
        }
        producer.close().await.unwrap();
    });
}

/// The end of a failure test: the producer's last round of records, then, once the source as
/// stored is stable (within `stable_within`), each operator's topics against the model over it.
fn finish_and_check(
    rt: &tokio::runtime::Runtime,
    producer: tokio::task::JoinHandle<()>,
    stop: &AtomicBool,
    acked: &AtomicU64,
    addrs: &[SocketAddr],
    ops: &[OperatorDef],
    stable_within: Duration,
) {
    wait_acked(acked, 1_500 * (rounds() + 1));
    stop.store(true, Ordering::Relaxed);
    rt.block_on(producer).unwrap();
    let source = stable_source(addrs, "src", 2, Duration::from_secs(1), stable_within);
    eprintln!("source as stored: {}", stored(&source));
    for def in ops {
        let want = model_outputs(def, &source, false);
        wait_for_model(addrs, def, &source, &want, CATCH_UP, SETTLE);
    }
}

/// Produces `stream` to `topic` until `stop`, about 2,500 records a second, counting the
/// acknowledged ones in `acked`; failed sends (the broker was killed) are dropped, not retried by
/// hand: whatever the source stored is what the model reads.
fn spawn_producer(
    rt: &tokio::runtime::Runtime,
    bootstrap: String,
    topic: &'static str,
    mut stream: Stream,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    rt.spawn(async move {
        let producer = Producer::new(bootstrap, producer_config()).unwrap();
        let mut pending = std::collections::VecDeque::new();
        let mut failed = 0u64;
        // The first few failures are shown: a producer that stops getting acknowledgements says
        // why.
        let mut failure = |e: sluice_client::ClientError| {
            failed += 1;
            if failed <= 5 {
                eprintln!("producer: {e}");
            }
        };
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..50 {
                let (k, v) = stream.next_record();
                match producer.send(ProducerRecord::new(topic, v).key(k)).await {
                    Ok(d) => pending.push_back(d),
                    Err(e) => {
                        failure(e);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            while pending.len() > 2_000 || pending.front().is_some_and(|d| d.result_now().is_some())
            {
                match pending.pop_front().unwrap().await {
                    Ok(_) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failure(e),
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = producer.flush().await;
        for d in pending {
            match d.await {
                Ok(_) => {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => failure(e),
            }
        }
        let _ = producer.close().await;
        eprintln!("producer: {failed} records failed");
    })
}

/// Per source partition: its records and last offset.
fn stored(source: &[Vec<Rec>]) -> String {
    let parts: Vec<String> = source
        .iter()
        .enumerate()
        .map(|(p, r)| {
            let last = r.last().map(|r| r.offset);
            format!("partition {p}: {} records, last offset {last:?}", r.len())
        })
        .collect();
    parts.join("; ")
}

/// Waits until `acked` reaches `n`.
fn wait_acked(acked: &AtomicU64, n: u64) {
    eventually(Duration::from_secs(120), "acknowledged records", || {
        (acked.load(Ordering::Relaxed) >= n).then_some(())
    });
}

/// The model's outputs for `def` over `source`, with checks that the stream exercises what the
/// test is about (results, updates, late and bad records; with `tombstones`, session tombstones:
/// they are rare, so only the full fixed stream is sure to have some).
fn model_outputs(def: &OperatorDef, source: &[Vec<Rec>], tombstones_expected: bool) -> Outputs {
    let want = expected(&def.spec(), source, &[]);
    let late: usize = want.late.iter().map(Vec::len).sum();
    let bad: usize = want.bad.iter().map(Vec::len).sum();
    let updated = want.sink.values().filter(|s| s.len() > 1).count();
    let tombstones = want
        .sink
        .values()
        .flatten()
        .filter(|(v, _)| v.is_none())
        .count();
    eprintln!(
        "model of {} ({}): {} sink keys, {} sink records, {updated} keys written more than \
         once, {tombstones} tombstones, {late} late, {bad} bad",
        def.name,
        def.window,
        want.sink.len(),
        want.sink_records(),
    );
    assert!(want.sink.len() > 100, "the stream makes too few results");
    assert!(updated > 10, "the stream makes too few updates");
    if def.late_topic.is_some() {
        assert!(
            late > 10 && bad > 10,
            "too few late ({late}) or bad ({bad})"
        );
    }
    if tombstones_expected && def.window.starts_with("session") {
        assert!(tombstones > 0, "the stream makes no session tombstones");
    }
    want
}

/// Three operators over one 3-partition source, one of each window kind, all with disorder,
/// lateness, a late topic and a dead-letter topic; 20,000 records over 200 keys. The tumbling
/// operator exists before the stream is produced, the sliding and session ones are created over
/// the stored backlog. Every sink, late and dead-letter topic must equal the model.
///
/// Fails if the execution departs from the semantics anywhere (a window fired early or late, an
/// update of a late-but-accepted record not written, a session tombstone missing); if a result is
/// written twice (a sink batch re-sent under new sequences: a record after the model's last); if an
/// operator created over a backlog starts at the log end instead of offset 0 (results missing); if
/// a sink key's records go to more than one sink partition (its order is lost); if late or bad
/// records are dropped, duplicated, altered or lack the `sluice.offset` header.
#[test]
fn single_broker_output_equals_model() {
    let rt = runtime();
    let broker = Broker::start(&[]);
    let addrs = [broker.addr];
    RawConn::connect(broker.addr).create("src", 3);
    let ops = [
        OperatorDef::new("tumbling", "src", "tumbling:1s").with_disorder("200ms", "500ms"),
        OperatorDef::new("sliding", "src", "sliding:1s:250ms").with_disorder("200ms", "500ms"),
        OperatorDef::new("session", "src", "session:300ms").with_disorder("200ms", "500ms"),
    ];
    ops[0].create(broker.addr);
    let mut stream = Stream::new(14, 200);
    produce_all(&rt, broker.addr.to_string(), "src", &mut stream, 20_000);
    ops[1].create(broker.addr);
    ops[2].create(broker.addr);
    let source = stable_source(
        &addrs,
        "src",
        3,
        Duration::from_millis(200),
        Duration::from_secs(30),
    );
    assert_eq!(source.iter().map(Vec::len).sum::<usize>(), 20_000);
    for def in &ops {
        let want = model_outputs(def, &source, true);
        wait_for_model(&addrs, def, &source, &want, CATCH_UP, SETTLE);
    }
}

/// One broker, a sliding and a session operator; a producer (idempotent, acks `all`) writes
/// continuously while the broker is SIGKILLed and restarted `SLUICE_OPERATOR_ROUNDS` times (at
/// varying points of the stream). Afterwards the source as stored is what the model reads: the
/// sinks, late and dead-letter topics must equal the model's.
///
/// Fails if a restarted operator replays from the start (or from a checkpoint older than its
/// last mark) and re-sends with fresh sequences: duplicates in the sink; if it resumes past the
/// outputs that had not reached the sink when it died (a mark written before the sink
/// acknowledged, a checkpoint ahead of the mark): results lost; if its window state is not
/// restored (windows open at the kill restart empty: different counts and sums); if late or
/// dead-letter records are written again after a restart. Seen failing on purpose with the
/// mark's sequence numbers not adopted after a restart: 3,555 of 4,535 sink keys missing (the
/// sink took the new batches for old duplicates).
#[test]
fn sigkill_mid_stream_keeps_exactly_once() {
    let rt = runtime();
    let mut broker = Broker::start(&[]);
    let addrs = [broker.addr];
    RawConn::connect(broker.addr).create("src", 2);
    let ops = [
        OperatorDef::new("sliding", "src", "sliding:1s:250ms").with_disorder("200ms", "500ms"),
        OperatorDef::new("session", "src", "session:300ms").with_disorder("200ms", "500ms"),
    ];
    for def in &ops {
        def.create(broker.addr);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let producer = spawn_producer(
        &rt,
        broker.addr.to_string(),
        "src",
        Stream::new(15, 200),
        stop.clone(),
        acked.clone(),
    );
    for round in 0..rounds() {
        wait_acked(&acked, 1_500 * (round + 1));
        // A varying point within the operators' work.
        std::thread::sleep(Duration::from_millis(round * 137 % 400));
        broker.kill();
        std::thread::sleep(Duration::from_millis(200));
        broker.restart();
        eprintln!(
            "kill {round}: {} acknowledged",
            acked.load(Ordering::Relaxed)
        );
    }
    finish_and_check(
        &rt,
        producer,
        &stop,
        &acked,
        &addrs,
        &ops,
        Duration::from_secs(30),
    );
}

/// Three brokers; a source of 2 partitions with replication factor 3 (the sinks the operators
/// create get the source's replication factor); a tumbling and a session operator. While a
/// producer (idempotent, acks `all`) writes, the broker leading source partition 0 is SIGKILLed
/// `SLUICE_OPERATOR_ROUNDS` times, each time restarted once another broker leads. The sinks, late
/// and dead-letter topics must equal the model over the source as stored.
///
/// Fails if the new leader re-sends what came after the last mark without the old leader's
/// producer id and sequences (duplicates in the sink); if followers fold past the latest committed
/// mark, so the new leader believes outputs were written that never reached the sink (results
/// lost); if a resend older than the five batches the sink remembers is not counted as written
/// (`DUPLICATE_SEQUENCE`: the operator stops); if a follower's state differs from the leader's
/// (different results after the failover). Seen failing (before the lease fix in
/// `replica/propose.rs`) when a long-parked sink leader dropped the operator's writes.
#[test]
fn leader_sigkill_on_three_brokers_keeps_exactly_once() {
    let rt = runtime();
    let mut cluster = Cluster::start(3, FAST);
    create_topic(&cluster, "src", 2, 3, &[]);
    let addrs: Vec<SocketAddr> = cluster.members.iter().map(|m| m.proxy.addr).collect();
    let ops = [
        OperatorDef::new("tumbling", "src", "tumbling:1s").with_disorder("200ms", "500ms"),
        OperatorDef::new("session", "src", "session:300ms").with_disorder("200ms", "500ms"),
    ];
    for def in &ops {
        eventually(Duration::from_secs(30), "the operator created", || {
            let args = def.create_args();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let r = sluice_tests::cli::sluice(cluster.addr(1), &args, None);
            (r.code == 0 || r.stderr.contains("already exists")).then_some(())
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let producer = spawn_producer(
        &rt,
        cluster.bootstrap(),
        "src",
        Stream::new(16, 200),
        stop.clone(),
        acked.clone(),
    );
    for round in 0..rounds() {
        wait_acked(&acked, 1_500 * (round + 1));
        std::thread::sleep(Duration::from_millis(round * 137 % 400));
        let leader = eventually(Duration::from_secs(30), "source leaders", || {
            leaders(&cluster, "src", 2)
        })[0];
        cluster.member(leader).broker.kill();
        eventually(Duration::from_secs(30), "a new leader of src/0", || {
            leaders(&cluster, "src", 2)
                .filter(|l| l[0] != leader)
                .map(|_| ())
        });
        cluster.member(leader).broker.restart();
        eprintln!(
            "kill {round}: broker {leader} (leader of src/0), {} acknowledged",
            acked.load(Ordering::Relaxed)
        );
    }
    finish_and_check(
        &rt,
        producer,
        &stop,
        &acked,
        &addrs,
        &ops,
        Duration::from_secs(60),
    );
}

/// A tumbling 1 s operator on record time with `--idle-timeout 1s`; a few records stamped now,
/// then nothing. With the watermark moving only with data the last window would never fire; the
/// idle timeout must close it: within 10 s every window of the records is in the sink, once, with
/// the model's result (the model: the records, then a watermark past them all).
///
/// Fails if idle advances are not made, or not applied by the driver (the last window never
/// appears); if an advance fires a window again (a second record for its key).
#[test]
fn idle_timeout_closes_the_last_window() {
    let rt = runtime();
    let broker = Broker::start(&[]);
    let addrs = [broker.addr];
    RawConn::connect(broker.addr).create("quiet", 1);
    let mut def = OperatorDef::new("idle", "quiet", "tumbling:1s");
    def.time = "record".into();
    def.value = "number".into();
    def.aggregates = "count,sum".into();
    def.idle_timeout = Some("1s".into());
    def.create(broker.addr);
    let bootstrap = broker.addr.to_string();
    rt.block_on(async move {
        let producer = Producer::new(bootstrap, producer_config()).unwrap();
        for i in 1..=5 {
            producer
                .send(ProducerRecord::new("quiet", i.to_string()).key("k"))
                .await
                .unwrap()
                .await
                .unwrap();
        }
        producer.close().await.unwrap();
    });
    let source = stable_source(
        &addrs,
        "quiet",
        1,
        Duration::from_millis(100),
        Duration::from_secs(10),
    );
    let last = source[0].iter().map(|r| r.timestamp_ms).max().unwrap();
    let want = expected(&def.spec(), &source, &[Step::Advance(last + 10_000)]);
    assert_eq!(
        want.sink
            .values()
            .flatten()
            .filter_map(|(v, _)| v.as_ref())
            .map(|v| v["count"].as_u64().unwrap())
            .sum::<u64>(),
        5,
        "the model's windows hold the five records: {want:?}"
    );
    wait_for_model(
        &addrs,
        &def,
        &source,
        &want,
        Duration::from_secs(10),
        SETTLE,
    );
}

/// One record for a topic partition, as an execution would write it.
#[derive(Debug, Clone)]
struct Write {
    topic: String,
    partition: u32,
    key: Option<bytes::Bytes>,
    value: Option<bytes::Bytes>,
    timestamp_ms: Option<i64>,
    /// For late and dead-letter records: the source offset.
    source_offset: Option<u64>,
}

/// What an execution that does everything right writes for `def` over `source`: the crate's own
/// `Operator` fed each source partition in log order, its outputs to the same partition of the
/// sink, late and dead-letter topics.
fn faithful_writes(def: &OperatorDef, source: &[Vec<Rec>]) -> Vec<Write> {
    use sluice_window::{Input, Operator, Output};
    let mut writes = Vec::new();
    for (p, records) in source.iter().enumerate() {
        let mut op = Operator::new(def.spec());
        let mut out = Vec::new();
        for r in records {
            let input = Input {
                offset: r.offset,
                timestamp_ms: r.timestamp_ms,
                processing_ms: 0,
                key: r.key.as_deref(),
                value: r.value.as_deref(),
            };
            op.process(input, &mut out).unwrap();
        }
        for o in out {
            let (topic, offset) = match &o {
                Output::Sink {
                    key,
                    value,
                    timestamp_ms,
                } => {
                    writes.push(Write {
                        topic: def.sink.clone(),
                        partition: p as u32,
                        key: Some(key.clone()),
                        value: value.clone(),
                        timestamp_ms: Some(*timestamp_ms),
                        source_offset: None,
                    });
                    continue;
                }
                Output::Late { offset } => (def.late_topic.clone().unwrap(), *offset),
                Output::Bad { offset, .. } => (def.dead_letter_topic.clone().unwrap(), *offset),
            };
            let r = records.iter().find(|r| r.offset == offset).unwrap();
            writes.push(Write {
                topic,
                partition: p as u32,
                key: r.key.clone(),
                value: r.value.clone(),
                timestamp_ms: Some(r.timestamp_ms),
                source_offset: Some(offset),
            });
        }
    }
    writes
}

fn write_all(rt: &tokio::runtime::Runtime, bootstrap: String, writes: Vec<Write>) {
    rt.block_on(async move {
        let producer = Producer::new(bootstrap, producer_config()).unwrap();
        let mut pending = Vec::new();
        for w in writes {
            let mut r = ProducerRecord {
                topic: w.topic.as_str().into(),
                partition: Some(w.partition),
                key: w.key,
                value: w.value,
                headers: Vec::new(),
                timestamp_ms: w.timestamp_ms,
            };
            if let Some(o) = w.source_offset {
                r = r.header("sluice.offset", Some(o.to_string().into()));
            }
            pending.push(producer.send(r).await.unwrap());
        }
        producer.flush().await.unwrap();
        for d in pending {
            d.await.unwrap();
        }
        producer.close().await.unwrap();
    });
}

/// The check these tests make can fail, and says why: with no operator running, the test process
/// writes what a faithful execution would (the crate's `Operator`, through the client) into topics
/// made by hand, but holds back the last result: the check reports it missing; once it is written
/// the check passes; written a second time, the check reports a record after the model's last.
#[test]
fn the_check_catches_a_lost_and_a_duplicated_result() {
    let rt = runtime();
    let broker = Broker::start(&[]);
    let addrs = [broker.addr];
    let def = OperatorDef::new("fake", "src", "tumbling:1s").with_disorder("200ms", "500ms");
    let mut c = RawConn::connect(broker.addr);
    c.create("src", 2);
    let r = c.create_topic(&def.sink, 2, &[("cleanup.policy", "compact")]);
    assert_eq!(
        r.error,
        sluice_protocol::wire::ErrorCode::NONE,
        "{}",
        r.message
    );
    c.create(def.late_topic.as_deref().unwrap(), 2);
    c.create(def.dead_letter_topic.as_deref().unwrap(), 2);
    let bootstrap = broker.addr.to_string();
    produce_all(
        &rt,
        bootstrap.clone(),
        "src",
        &mut Stream::new(17, 200),
        3_000,
    );
    let source = stable_source(
        &addrs,
        "src",
        2,
        Duration::from_millis(200),
        Duration::from_secs(30),
    );
    let want = model_outputs(&def, &source, false);
    let mut writes = faithful_writes(&def, &source);
    let last = writes.iter().rposition(|w| w.topic == def.sink).unwrap();
    let held = writes.remove(last);
    write_all(&rt, bootstrap.clone(), writes);
    let quick = Duration::from_secs(2);
    let e = await_model(&addrs, &def, &source, &want, quick, Duration::ZERO).unwrap_err();
    assert!(e.contains("records missing at the end"), "{e}");
    write_all(&rt, bootstrap.clone(), vec![held.clone()]);
    await_model(&addrs, &def, &source, &want, CATCH_UP, SETTLE).unwrap();
    write_all(&rt, bootstrap, vec![held]);
    let e = await_model(&addrs, &def, &source, &want, quick, Duration::ZERO).unwrap_err();
    assert!(e.contains("records after the model's last"), "{e}");
}
