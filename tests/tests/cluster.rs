//! Multi-broker clusters of real `sluice` processes (see `sluice_tests::cluster`): leaders killed
//! with SIGKILL while producers write with acks `all`, a broker cut off by the network, a follower
//! that must catch up from the leader's segments after retention deleted what it lacked.
//!
//! `SLUICE_CHAOS_ROUNDS` sets the kill rounds of the chaos test (default 4; docs/testing.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_client::{
    Acks, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, SeekTo,
};
use sluice_protocol::wire::{
    ErrorCode, InitProducerIdRequest, Request, Response, EARLIEST, LATEST,
};
use sluice_protocol::{BatchBuilder, Compression, RecordBatch};
use sluice_storage::{LogConfig, PartitionLog};
use sluice_tests::cluster::{create, eventually, leaders, metadata, Cluster};
use sluice_tests::RawConn;

/// Quicker failure detection than the defaults, yet with room for several brokers sharing two
/// busy cores (a heartbeat delayed past the timeout only causes an extra election).
const FAST: &[&str] = &[
    "--raft-heartbeat-ms",
    "100",
    "--raft-election-timeout-ms",
    "800",
];

/// The harness's log filter plus the replicas' debug lines ("group parked").
const PARK_LOG: &str = "warn,openraft=error,sluice_broker::replica=debug";

/// Three brokers that snapshot every 20 entries, keep only 5 behind, and run retention and
/// compaction every 100 ms: a stopped follower soon needs what raft has purged.
fn purging_args() -> Vec<&'static str> {
    let mut args: Vec<&str> = FAST.to_vec();
    args.extend([
        "--raft-snapshot-entries",
        "20",
        "--raft-keep-entries",
        "5",
        "--maintenance-interval-ms",
        "100",
    ]);
    args
}

fn purging_cluster() -> Cluster {
    Cluster::start(3, &purging_args())
}

/// Waits until broker `id`'s own replica of `topic`/0 has a high watermark of at least `end`.
fn wait_for_replica(cluster: &Cluster, id: u32, topic: &str, end: u64) {
    eventually(Duration::from_secs(60), "a replica to catch up", || {
        let mut f = RawConn::connect(cluster.addr(id));
        let m = f.try_metadata(Some(vec![topic.to_string()]))?;
        let p = m.topics.first()?.partitions.first()?;
        (p.high_watermark >= end).then_some(())
    });
}

/// SIGTERM every broker; each must exit 0.
fn stop_all(cluster: &mut Cluster) {
    for m in &mut cluster.members {
        assert_eq!(m.broker.terminate(), Some(0), "broker {} exit", m.id);
    }
}

/// Every batch of a stopped broker's replica of `topic`/`partition`, read from its files.
fn replica_batches(cluster: &Cluster, id: u32, topic: &str, partition: u32) -> Vec<RecordBatch> {
    let m = cluster.members.iter().find(|m| m.id == id).unwrap();
    let dir = m
        .broker
        .data_dir()
        .join("topics")
        .join(topic)
        .join(partition.to_string());
    let (log, _) = PartitionLog::open(&dir, LogConfig::default()).unwrap();
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let r = log.read(offset, 1 << 20).unwrap();
        out.extend(RecordBatch::iter_all(r.bytes).map(|b| b.unwrap()));
        offset = r.next_offset;
    }
    out
}

/// (offset, value) of every data record in `batches`.
fn records(batches: &[RecordBatch]) -> Vec<(u64, String)> {
    batches
        .iter()
        .filter(|b| !b.header().is_control())
        .flat_map(|b| b.records().unwrap().map(|r| r.unwrap()).collect::<Vec<_>>())
        .map(|r| {
            (
                r.offset,
                String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
            )
        })
        .collect()
}

/// The send number of a chaos value `v{n}`.
fn seq(value: &str) -> u64 {
    value[1..].parse().unwrap()
}

/// Leaders are SIGKILLed (and other brokers too, every other round) while one producer writes with
/// acks all and no retries, and a consumer reads along. Fails if: a round ends with no value sent
/// after its restarts acknowledged (within 30 s, and again counted from the acknowledgements
/// afterwards); the consumer saw nothing in some partition; a partition's acknowledged offsets do
/// not increase with send order; an acknowledged value is missing from the log, stored twice or
/// at another offset; a consumed value was lost; replicas differ below the high watermark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_leader_kills_and_replicas_agree() {
    let rounds: usize = std::env::var("SLUICE_CHAOS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let partitions = 3u32;
    let mut cluster = Cluster::start(3, FAST);
    create(&cluster, "chaos", partitions, 3, &[]);
    let bootstrap = cluster.bootstrap();
    let stop = Arc::new(AtomicBool::new(false));
    // How many values the producer has started to send, and 1 + the highest one acknowledged: the
    // rounds below wait for acknowledgements of values sent after each restart.
    let sent = Arc::new(AtomicU64::new(0));
    let acked_upto = Arc::new(AtomicU64::new(0));

    // A producer with acks all and no retries: every value is sent once, so an acknowledged value
    // must be in the log exactly once (retries after an unknown outcome could store one twice).
    let producer = {
        let (bootstrap, stop) = (bootstrap.clone(), stop.clone());
        let (sent, acked_upto) = (sent.clone(), acked_upto.clone());
        tokio::spawn(async move {
            let cfg = ProducerConfig {
                acks: Acks::All,
                retries: 0,
                linger: Duration::from_millis(2),
                request_timeout: Duration::from_secs(5),
                ..ProducerConfig::default()
            };
            let producer = Producer::new(bootstrap, cfg).unwrap();
            let mut pending = std::collections::VecDeque::new();
            let mut acked = Vec::new();
            let mut failed = 0u64;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let value = format!("v{n}");
                n += 1;
                sent.store(n, Ordering::Relaxed);
                match producer
                    .send(ProducerRecord::new("chaos", value.clone()).key(format!("k{}", n % 7)))
                    .await
                {
                    Ok(d) => pending.push_back((value, d)),
                    Err(_) => {
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                // Await the oldest deliveries while more than 64 are pending, or while the oldest
                // is already done (so acknowledgements are noted promptly, not 64 sends late).
                while pending.len() > 64
                    || pending
                        .front()
                        .is_some_and(|(_, d)| d.result_now().is_some())
                {
                    let (v, d) = pending.pop_front().unwrap();
                    match d.await {
                        Ok(meta) => {
                            acked_upto.fetch_max(seq(&v) + 1, Ordering::Relaxed);
                            acked.push((meta.partition, meta.offset.unwrap(), v));
                        }
                        Err(_) => failed += 1,
                    }
                }
            }
            let _ = producer.flush().await;
            for (v, d) in pending {
                match d.await {
                    Ok(meta) => acked.push((meta.partition, meta.offset.unwrap(), v)),
                    Err(_) => failed += 1,
                }
            }
            (acked, failed)
        })
    };
    // A consumer reading along from the leaders: what it sees must never be lost later.
    let consumer = {
        let (bootstrap, stop) = (bootstrap.clone(), stop.clone());
        tokio::spawn(async move {
            let mut c = Consumer::new(bootstrap, ConsumerConfig::default()).unwrap();
            let assignment: Vec<(&str, u32)> = (0..partitions).map(|p| ("chaos", p)).collect();
            c.assign(&assignment);
            for p in 0..partitions {
                while c.seek("chaos", p, SeekTo::Earliest).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match c.poll(Duration::from_millis(100)).await {
                    Ok(batch) => seen.extend(batch.into_iter().map(|r| {
                        (
                            r.partition,
                            r.offset,
                            String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                        )
                    })),
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            seen
        })
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    // Per round, the send numbers from its last restart to the next round's kill: values sent in
    // that window and acknowledged show the cluster took writes again after that round.
    let mut windows: Vec<(u64, u64)> = Vec::new();
    let warmup_end = sent.load(Ordering::Relaxed);
    for round in 0..rounds {
        if let Some(w) = windows.last_mut() {
            w.1 = sent.load(Ordering::Relaxed);
        }
        // Kill the leader of one partition; every other round also a second broker at the same
        // time (no majority until one is back: writes stall, then must resume), every third round
        // a second broker after the leader is back.
        let p = round % partitions as usize;
        let leader = eventually(Duration::from_secs(30), "a leader", || {
            leaders(&cluster, "chaos", partitions)
        })[p];
        let other = (leader % 3) + 1;
        cluster.member(leader).broker.kill();
        if round % 2 == 1 {
            cluster.member(other).broker.kill();
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.member(leader).broker.restart();
        if round % 2 == 1 {
            cluster.member(other).broker.restart();
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if round % 3 == 2 {
            cluster.member(other).broker.kill();
            tokio::time::sleep(Duration::from_millis(1000)).await;
            cluster.member(other).broker.restart();
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        // Every broker is back: writes sent from now on must be acknowledged before the next kill.
        let from = sent.load(Ordering::Relaxed);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while acked_upto.load(Ordering::Relaxed) <= from + 10 {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: no write sent after the restart was acknowledged within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        windows.push((from, u64::MAX));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = producer.await.unwrap();
    let seen = consumer.await.unwrap();
    // Acknowledgements per round, counted from what the producer got back (not the warm-up's).
    let per_round: Vec<usize> = windows
        .iter()
        .map(|(from, to)| {
            acked
                .iter()
                .filter(|a| (*from..*to).contains(&seq(&a.2)))
                .count()
        })
        .collect();
    let warmup = acked.iter().filter(|a| seq(&a.2) < warmup_end).count();
    assert!(warmup > 0, "nothing acknowledged before the first kill");
    for (round, n) in per_round.iter().enumerate() {
        assert!(
            *n > 0,
            "round {round}: nothing sent after its restart was acknowledged \
             (per round {per_round:?}, warm-up {warmup}, {failed} failed)"
        );
    }
    // The consumer read along in every partition.
    for p in 0..partitions {
        assert!(
            seen.iter().any(|s| s.0 == p),
            "the consumer saw nothing in partition {p} ({} seen in all)",
            seen.len()
        );
    }
    // One producer, sends in order: per partition, a later acknowledged value has a later offset.
    for p in 0..partitions {
        let offsets: Vec<(u64, &str)> = acked
            .iter()
            .filter(|a| a.0 == p)
            .map(|a| (a.1, a.2.as_str()))
            .collect();
        if let Some(w) = offsets.windows(2).find(|w| w[0].0 >= w[1].0) {
            panic!(
                "partition {p}: {} acknowledged at {} but {} (sent later) at {}",
                w[0].1, w[0].0, w[1].1, w[1].0
            );
        }
    }

    // Let every replica catch up, note the high watermarks, then stop everyone cleanly.
    let hw: Vec<u64> = eventually(Duration::from_secs(30), "settled replicas", || {
        let m = metadata(&cluster, "chaos")?;
        let t = m.topics.into_iter().find(|t| t.name == "chaos")?;
        Some(t.partitions.iter().map(|p| p.high_watermark).collect())
    });
    // Every replica's own high watermark reaches the leader's before the brokers stop.
    eventually(Duration::from_secs(60), "every replica caught up", || {
        for m in &cluster.members {
            let mut c = RawConn::connect(m.proxy.addr);
            let meta = c.try_metadata(Some(vec!["chaos".into()]))?;
            let t = meta.topics.into_iter().find(|t| t.name == "chaos")?;
            for (p, part) in t.partitions.iter().enumerate() {
                if part.high_watermark < hw[p] {
                    return None;
                }
            }
        }
        Some(())
    });
    stop_all(&mut cluster);

    for p in 0..partitions {
        let logs: Vec<Vec<RecordBatch>> = (1..=3)
            .map(|id| replica_batches(&cluster, id, "chaos", p))
            .collect();
        // Identical up to the high watermark: same batches, same offsets, same raft positions.
        let below = |batches: &Vec<RecordBatch>| -> Vec<(u64, u64, u64, u32)> {
            batches
                .iter()
                .filter(|b| b.header().base_offset < hw[p as usize])
                .map(|b| {
                    let h = b.header();
                    (h.base_offset, h.raft_term, h.raft_index, h.crc)
                })
                .collect()
        };
        let reference = below(&logs[0]);
        assert!(
            reference.last().map(|b| b.0) < Some(hw[p as usize]),
            "partition {p}: high watermark {} inside the log",
            hw[p as usize]
        );
        for (i, l) in logs.iter().enumerate().skip(1) {
            let other = below(l);
            let first_diff = reference
                .iter()
                .zip(&other)
                .position(|(a, b)| a != b)
                .map(|at| (at, reference[at], other[at]));
            assert!(
                other == reference,
                "partition {p}: replica {} differs from replica 1: {} vs {} batches below {}, \
                 first difference {first_diff:?}",
                i + 1,
                other.len(),
                reference.len(),
                hw[p as usize]
            );
        }
        let stored: BTreeMap<u64, String> = records(&logs[0]).into_iter().collect();
        let mut count: HashMap<&str, usize> = HashMap::new();
        for v in stored.values() {
            *count.entry(v.as_str()).or_default() += 1;
        }
        for (ap, off, v) in acked.iter().filter(|a| a.0 == p) {
            assert_eq!(
                stored.get(off),
                Some(v),
                "partition {ap}: acknowledged {v} at offset {off} is missing"
            );
            assert_eq!(
                count[v.as_str()],
                1,
                "acknowledged {v} stored more than once"
            );
        }
        for (sp, off, v) in seen.iter().filter(|s| s.0 == p) {
            assert_eq!(
                stored.get(off),
                Some(v),
                "partition {sp}: a consumer saw {v} at {off}, which was later lost"
            );
        }
    }
    eprintln!(
        "chaos: {rounds} rounds, {} acknowledged (warm-up {warmup}, per round {per_round:?}), \
         {failed} failed, {} consumed",
        acked.len(),
        seen.len()
    );
}

/// A leader cut off from the others cannot acknowledge an acks-all write; the majority elects and
/// serves; after healing the old leader follows. Its own files are read after it stops: fails if
/// its unacknowledged write is still in its log, or if its log below the new leader's end differs
/// from what the new leader serves (the old check read only the new leader, which never had the
/// write). The write does reach the cut-off leader's files: stopped before healing, its log holds
/// `cut-0`, `cut-1` after the first write's records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_cannot_commit_and_catches_up_after_healing() {
    let mut cluster = Cluster::start(3, FAST);
    create(&cluster, "cut", 1, 3, &[]);
    // A first acknowledged write (retried with a fresh tag while the first election settles).
    let mut attempt = 0;
    let (leader, tag) = eventually(Duration::from_secs(30), "a first write", || {
        attempt += 1;
        let leader = leaders(&cluster, "cut", 1)?[0];
        let mut c = RawConn::connect(cluster.addr(leader));
        let tag = format!("before{attempt}");
        let r = c.produce_acks(
            "cut",
            0,
            sluice_tests::batch(&tag, 3),
            sluice_protocol::wire::Acks::All,
        );
        (r.error == ErrorCode::NONE).then_some((leader, tag))
    });
    let mut c = RawConn::connect(cluster.addr(leader));

    cluster.isolate(leader);
    // The old leader cannot reach a quorum: acks all times out or is refused, never acknowledged.
    let cut = c.produce_acks(
        "cut",
        0,
        sluice_tests::batch("cut", 2),
        sluice_protocol::wire::Acks::All,
    );
    assert_ne!(
        cut.error,
        ErrorCode::NONE,
        "a cut-off leader acknowledged acks all"
    );
    // The majority elects a new leader and keeps serving.
    let new_leader = eventually(Duration::from_secs(30), "a new leader", || {
        let others: Vec<u32> = (1..=3).filter(|i| *i != leader).collect();
        for o in others {
            let mut c = RawConn::connect(cluster.addr(o));
            let m = c.metadata(Some(vec!["cut".into()]));
            let Some(l) = m
                .topics
                .first()
                .and_then(|t| t.partitions.first())
                .map(|p| p.leader)
            else {
                continue;
            };
            if l > 0 && l as u32 != leader {
                return Some(l as u32);
            }
        }
        None
    });
    let mut n = RawConn::connect(cluster.addr(new_leader));
    let during = eventually(
        Duration::from_secs(30),
        "a write on the majority side",
        || {
            let r = n.produce_acks(
                "cut",
                0,
                sluice_tests::batch("majority", 4),
                sluice_protocol::wire::Acks::All,
            );
            (r.error == ErrorCode::NONE).then_some(r)
        },
    );

    cluster.heal();
    // After healing, the old leader follows and holds the majority's records (and not its own
    // unacknowledged ones).
    let end = n.list_offset("cut", 0, LATEST).offset as u64;
    assert!(end > during.base_offset);
    eventually(
        Duration::from_secs(30),
        "the old leader to catch up",
        || {
            let mut c = RawConn::connect(cluster.addr(leader));
            let m = c.metadata(Some(vec!["cut".into()]));
            let p = m.topics.first()?.partitions.first()?;
            (p.high_watermark >= end && p.leader as u32 == new_leader).then_some(())
        },
    );
    let all = n.consume_all("cut", 0);
    let values: Vec<&str> = all.iter().map(|r| r.1.as_str()).collect();
    assert!(values.contains(&"majority-0"), "{values:?}");
    assert!(
        !values.contains(&"cut-0"),
        "an unacknowledged write of the cut-off leader survived"
    );
    assert_eq!(
        values
            .iter()
            .filter(|v| v.starts_with(&format!("{tag}-")))
            .count(),
        3,
        "{values:?}"
    );
    // The old leader's own log, read from its files once it has stopped: its unacknowledged
    // write was replaced by the new leader's log, which it now holds record for record.
    assert_eq!(cluster.member(leader).broker.terminate(), Some(0));
    let old_log = records(&replica_batches(&cluster, leader, "cut", 0));
    assert!(
        !old_log.iter().any(|r| r.1.starts_with("cut-")),
        "the old leader's log still holds its unacknowledged write: {old_log:?}"
    );
    let below_end: Vec<(u64, String)> = old_log.into_iter().filter(|r| r.0 < end).collect();
    assert_eq!(
        below_end, all,
        "the old leader's log differs from the new leader's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_leaders_log_start_catches_up_from_its_segments() {
    let mut cluster = purging_cluster();
    create(
        &cluster,
        "lag",
        1,
        3,
        &[("segment.bytes", "4096"), ("retention.bytes", "8192")],
    );
    let leader = leaders(&cluster, "lag", 1).unwrap()[0];
    let follower = (leader % 3) + 1;
    let mut c = RawConn::connect(cluster.addr(leader));
    let produce = |c: &mut RawConn, tag: &str, n: usize| {
        for i in 0..n {
            let r = c.produce_acks(
                "lag",
                0,
                sluice_tests::batch(&format!("{tag}{i}"), 5),
                sluice_protocol::wire::Acks::All,
            );
            assert_eq!(r.error, ErrorCode::NONE, "{}", r.message);
        }
    };
    produce(&mut c, "a", 20);
    cluster.member(follower).broker.kill();
    let follower_end = c.list_offset("lag", 0, LATEST).offset as u64;

    // The leader moves on; its retention deletes everything the stopped follower lacks.
    produce(&mut c, "b", 300);
    eventually(
        Duration::from_secs(30),
        "retention past the follower's end",
        || {
            let m = c.metadata(Some(vec!["lag".into()]));
            (m.topics[0].partitions[0].log_start_offset > follower_end).then_some(())
        },
    );

    cluster.member(follower).broker.restart();
    produce(&mut c, "c", 5);
    let end = c.list_offset("lag", 0, LATEST).offset as u64;
    wait_for_replica(&cluster, follower, "lag", end);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_all(&mut cluster);
    // The follower now holds the leader's retained log: the same batches at the same offsets from
    // the leader's log start on, with nothing older than that start.
    let key = |b: &RecordBatch| {
        let h = b.header();
        (h.base_offset, h.raft_term, h.raft_index, h.crc)
    };
    let lead: Vec<_> = replica_batches(&cluster, leader, "lag", 0)
        .iter()
        .map(key)
        .filter(|k| k.0 < end)
        .collect();
    let foll: Vec<_> = replica_batches(&cluster, follower, "lag", 0)
        .iter()
        .map(key)
        .filter(|k| k.0 < end)
        .collect();
    assert!(
        lead[0].0 > follower_end,
        "the leader kept what the follower needed"
    );
    // Each replica runs retention on its own: compare from the later of the two log starts.
    let start = lead[0].0.max(foll[0].0);
    let from = |v: &Vec<(u64, u64, u64, u32)>| -> Vec<_> {
        v.iter().filter(|k| k.0 >= start).cloned().collect()
    };
    assert!(!from(&lead).is_empty());
    assert_eq!(from(&foll), from(&lead));
    let c_records: Vec<_> = records(&replica_batches(&cluster, follower, "lag", 0))
        .into_iter()
        .filter(|(_, v)| v.starts_with('c'))
        .collect();
    assert_eq!(
        c_records.len(),
        25,
        "the writes after the restart reached the follower"
    );
}

/// A partition group that has parked (no heartbeats) loses its leader to SIGKILL; the survivors
/// elect and a producer follows. Parking is observed twice: each broker logs (at debug) when its
/// replica of the group parks, and the test waits for all three lines (not for a guessed 4 s); the
/// proxies, which count the raft requests reaching each broker, then see none of the partition's
/// group for 2 s (right after the first write they see some: the control that the count works).
/// The 2 s window stays a window: an absence can only be watched for a while (a heartbeat every
/// 100 ms to each of two followers adds about 40 requests in it). Fails if the group never parks
/// (seen with `Activity::quiesce` refusing to park: no line within 60 s), if requests flow once it
/// is parked, if the producer sees an error, or if offsets do not increase. It once slept 4 s and
/// hoped the group had parked by then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_partition_fails_over_and_producers_follow_the_new_leader() {
    let mut cluster = Cluster::start_logging(3, FAST, Some(PARK_LOG));
    create(&cluster, "idle", 1, 3, &[]);
    let bootstrap = cluster.bootstrap();
    let cfg = ProducerConfig {
        acks: Acks::All,
        retries: 10,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(bootstrap, cfg).unwrap();
    let first = producer
        .send(ProducerRecord::new("idle", "before"))
        .await
        .unwrap()
        .await
        .unwrap();
    // Parks logged so far per broker: the write woke the group, so each logs a new one when it
    // parks again.
    let parks = |cluster: &Cluster| -> Vec<usize> {
        cluster
            .members
            .iter()
            .map(|m| m.broker.log_lines("group parked").len())
            .collect()
    };
    let woken = parks(&cluster);
    // Awake: the group's raft requests flow after the write.
    let awake = cluster.partition_raft_requests();
    eventually(
        Duration::from_secs(10),
        "raft requests after a write",
        || (cluster.partition_raft_requests() > awake).then_some(()),
    );
    // Every replica parks its raft timers (no heartbeats, no election timer) ...
    eventually(Duration::from_secs(60), "every replica parked", || {
        let now = parks(&cluster);
        now.iter().zip(&woken).all(|(n, w)| n > w).then_some(())
    });
    // ... and then no raft request of the partition's group reaches any broker.
    let parked = cluster.partition_raft_requests();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = cluster.partition_raft_requests();
    assert_eq!(
        later,
        parked,
        "the idle group did not park: {} raft requests in 2 s",
        later - parked
    );
    let leader = leaders(&cluster, "idle", 1).unwrap()[0];
    cluster.member(leader).broker.kill();
    // The survivors notice the dead broker and elect; the producer finds the new leader by itself:
    // the application sees no error.
    let mut offsets = vec![first.offset.unwrap()];
    for i in 0..20 {
        let d = producer
            .send(ProducerRecord::new("idle", format!("after-{i}")))
            .await
            .unwrap();
        offsets.push(d.await.unwrap().offset.unwrap());
    }
    let new_leader = eventually(Duration::from_secs(10), "the new leader", || {
        leaders(&cluster, "idle", 1).filter(|l| l[0] != leader)
    })[0];
    assert_ne!(new_leader, leader);
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
}

/// An idempotent batch sent to the leader of a group that has been parked for longer than raft's
/// leader lease (the election timeout's maximum, 1.6 s here) is stored. A parked leader sends no
/// heartbeats, so no quorum has acknowledged it within the lease, and raft refuses a write handed
/// to it then; the batch must not be left admitted as "in flight" behind such a refusal. Parking is
/// observed in the replicas' logs (as in the test above), then the test waits past the lease and
/// retries the batch on retriable errors until a deadline.
///
/// Seen failing: the first try answered `NOT_LEADER` with no leader known (raft refused the write:
/// lease expired), and every retry of the same batch `REQUEST_TIMED_OUT` "a copy of this batch is
/// still in flight" (its admission was never undone) until the deadline; a window operator writing
/// to such a partition after a leader kill stalled the same way.
#[test]
fn an_idempotent_batch_to_a_long_parked_leader_is_stored() {
    let cluster = Cluster::start_logging(3, FAST, Some(PARK_LOG));
    create(&cluster, "parked", 1, 3, &[]);
    let leader_conn = || {
        let leader = eventually(Duration::from_secs(30), "a leader", || {
            leaders(&cluster, "parked", 1)
        })[0];
        RawConn::connect(cluster.addr(leader))
    };
    let mut c = leader_conn();
    let Response::InitProducerId(init) = c
        .call(&Request::InitProducerId(InitProducerIdRequest {
            name: "".into(),
        }))
        .unwrap()
    else {
        panic!("wrong response")
    };
    assert_eq!(init.error, ErrorCode::NONE, "{}", init.message);
    let batch = |seq: i32| {
        let mut b =
            BatchBuilder::new(Compression::None).producer(init.producer_id, init.epoch, seq);
        b.append(1_000, None, Some(format!("record-{seq}").as_bytes()), &[]);
        b.seal().unwrap()
    };
    // Stores `batch(seq)`, retrying retriable errors (as a producer would) until a deadline.
    let store = |seq: i32, what: &str| {
        eventually(Duration::from_secs(40), what, || {
            let r = leader_conn().produce("parked", 0, batch(seq));
            match r.error {
                ErrorCode::NONE => Some(r.base_offset),
                e if e.is_retriable() => {
                    eprintln!("batch {seq}: {e}: {}", r.message);
                    None
                }
                e => panic!("batch {seq}: {e}: {}", r.message),
            }
        })
    };
    let parks = || -> Vec<usize> {
        cluster
            .members
            .iter()
            .map(|m| m.broker.log_lines("group parked").len())
            .collect()
    };
    let first = store(0, "the first batch stored");
    let woken = parks();
    eventually(Duration::from_secs(60), "every replica parked", || {
        let now = parks();
        now.iter().zip(&woken).all(|(n, w)| n > w).then_some(())
    });
    // Past the leader lease of the last quorum acknowledgement (before the leader parked).
    std::thread::sleep(Duration::from_secs(3));
    let second = store(1, "the batch sent to the parked leader stored");
    assert!(second > first, "offsets {first} then {second}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_broker_joins_and_a_partition_moves_onto_it() {
    let mut cluster = Cluster::start(3, FAST);
    create(&cluster, "move", 1, 3, &[]);
    let leader = leaders(&cluster, "move", 1).unwrap()[0];
    let mut c = RawConn::connect(cluster.addr(leader));
    for i in 0..10 {
        let r = c.produce_acks(
            "move",
            0,
            sluice_tests::batch(&format!("old{i}"), 5),
            sluice_protocol::wire::Acks::All,
        );
        assert_eq!(r.error, ErrorCode::NONE, "{}", r.message);
    }

    // Broker 4 joins the running cluster.
    cluster.join(4, FAST);
    eventually(Duration::from_secs(30), "broker 4 in the cluster", || {
        let m = metadata(&cluster, "move")?;
        (m.brokers.len() == 4).then_some(())
    });

    // Move the partition off one follower and onto broker 4.
    let gone = (1..=3).find(|b| *b != leader).unwrap();
    let mut target: Vec<u32> = (1..=3).filter(|b| *b != gone).collect();
    target.push(4);
    let admin = sluice_client::Admin::new(cluster.bootstrap()).unwrap();
    admin.reassign_partition("move", 0, &target).await.unwrap();
    let mut want = target.clone();
    want.sort_unstable();
    eventually(Duration::from_secs(30), "the move to finish", || {
        let m = metadata(&cluster, "move")?;
        let mut r = m.topics.first()?.partitions.first()?.replicas.clone();
        r.sort_unstable();
        (r == want).then_some(())
    });
    let gone_dir = cluster
        .members
        .iter()
        .find(|m| m.id == gone)
        .unwrap()
        .broker
        .data_dir()
        .join("topics/move/0");
    eventually(Duration::from_secs(30), "the old replica to go", || {
        (!gone_dir.exists()).then_some(())
    });

    // The moved partition keeps taking acks all writes (quorum now includes broker 4).
    let new_leader = eventually(Duration::from_secs(30), "a leader", || {
        leaders(&cluster, "move", 1)
    })[0];
    let mut c = RawConn::connect(cluster.addr(new_leader));
    for i in 0..5 {
        let r = eventually(Duration::from_secs(30), "a write after the move", || {
            let r = c.produce_acks(
                "move",
                0,
                sluice_tests::batch(&format!("new{i}"), 5),
                sluice_protocol::wire::Acks::All,
            );
            if r.error != ErrorCode::NONE {
                eprintln!("write after the move: {} {}", r.error, r.message);
            }
            (r.error == ErrorCode::NONE).then_some(r)
        });
        assert_eq!(r.error, ErrorCode::NONE);
    }
    let end = c.list_offset("move", 0, LATEST).offset as u64;
    wait_for_replica(&cluster, 4, "move", end);
    stop_all(&mut cluster);
    let key = |b: &RecordBatch| {
        let h = b.header();
        (h.base_offset, h.raft_term, h.raft_index, h.crc)
    };
    let on = |id: u32| -> Vec<_> {
        replica_batches(&cluster, id, "move", 0)
            .iter()
            .map(key)
            .filter(|k| k.0 < end)
            .collect()
    };
    assert_eq!(on(4), on(new_leader), "the new replica holds the same log");
    let values: Vec<String> = records(&replica_batches(&cluster, 4, "move", 0))
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert!(values.contains(&"old0-0".to_string()) && values.contains(&"new4-4".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_partition_off_its_leader_keeps_it_writable() {
    let cluster = Cluster::start(3, FAST);
    create(&cluster, "off", 1, 2, &[]);
    let replicas: Vec<u32> = {
        let m = metadata(&cluster, "off").unwrap();
        m.topics[0].partitions[0].replicas.clone()
    };
    let spare = (1..=3).find(|b| !replicas.contains(b)).unwrap();
    let mut tries = 0;
    let (leader, first) = eventually(Duration::from_secs(30), "a first write", || {
        tries += 1;
        let leader = leaders(&cluster, "off", 1)?[0];
        let mut c = RawConn::connect(cluster.addr(leader));
        let tag = format!("first{tries}");
        let r = c.produce_acks(
            "off",
            0,
            sluice_tests::batch(&tag, 4),
            sluice_protocol::wire::Acks::All,
        );
        (r.error == ErrorCode::NONE).then_some((leader, format!("{tag}-3")))
    });
    let keep = *replicas.iter().find(|r| **r != leader).unwrap();

    // Replace the leader's replica with the spare broker's.
    let admin = sluice_client::Admin::new(cluster.bootstrap()).unwrap();
    admin
        .reassign_partition("off", 0, &[keep, spare])
        .await
        .unwrap();
    let mut want = vec![keep, spare];
    want.sort_unstable();
    eventually(Duration::from_secs(30), "the move to finish", || {
        let m = metadata(&cluster, "off")?;
        let mut r = m.topics.first()?.partitions.first()?.replicas.clone();
        r.sort_unstable();
        (r == want).then_some(())
    });
    // A leader among the new replicas takes writes, and holds what was written before.
    let mut n = 0;
    let new_leader = eventually(
        Duration::from_secs(30),
        "a write on the new replicas",
        || {
            n += 1;
            let l = leaders(&cluster, "off", 1)?[0];
            if l == leader {
                return None;
            }
            let mut c = RawConn::connect(cluster.addr(l));
            let r = c.produce_acks(
                "off",
                0,
                sluice_tests::batch(&format!("after{n}"), 2),
                sluice_protocol::wire::Acks::All,
            );
            (r.error == ErrorCode::NONE).then_some(l)
        },
    );
    assert!(want.contains(&new_leader));
    let mut c = RawConn::connect(cluster.addr(new_leader));
    let values: Vec<String> = c.consume_all("off", 0).into_iter().map(|r| r.1).collect();
    assert!(values.contains(&first), "{values:?}");
}

/// A follower stopped while the leader writes keyed batches and compacts comes back after raft has
/// purged what it lacks. Fails if the follower's batches (base offset, last offset delta, raft
/// index) differ from the leader's, if either log has no offset gap, or if the latest value of a
/// key differs. (The follower's batches were computed before but only printed, never compared.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_of_a_compacted_topic_receives_the_gaps_too() {
    let mut cluster = purging_cluster();
    create(
        &cluster,
        "compacted",
        1,
        3,
        &[("segment.bytes", "4096"), ("cleanup.policy", "compact")],
    );
    let leader = leaders(&cluster, "compacted", 1).unwrap()[0];
    let follower = (leader % 3) + 1;
    let mut c = RawConn::connect(cluster.addr(leader));
    // Keyed batches over few keys: compaction empties whole old batches, leaving offset gaps. The
    // follower stops after the first 30, and raft purges what it lacks meanwhile.
    for i in 0..330 {
        if i == 30 {
            cluster.member(follower).broker.kill();
        }
        let mut b = sluice_protocol::BatchBuilder::new(sluice_protocol::Compression::None);
        // Early even batches have keys of their own (they stay); the rest share three keys (all
        // but the latest go), so compaction keeps every other early batch.
        let key = if i < 100 && i % 2 == 0 {
            format!("u{i}")
        } else {
            format!("k{}", i % 3)
        };
        // Current timestamps: time retention (7 days by default) must not delete anything here.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        b.append(
            now,
            Some(key.as_bytes()),
            Some(format!("v{i}").as_bytes()),
            &[],
        );
        let r = c.produce_acks(
            "compacted",
            0,
            b.seal().unwrap(),
            sluice_protocol::wire::Acks::All,
        );
        assert_eq!(r.error, ErrorCode::NONE, "{}", r.message);
    }
    // The leader compacts what raft no longer holds: wait until its log, as served, has a gap
    // (was: a 2 s sleep, which a slow compaction would outlast).
    eventually(Duration::from_secs(60), "the leader to compact", || {
        let start = c.list_offset("compacted", 0, EARLIEST).offset as u64;
        let f = c.fetch("compacted", 0, start, 0);
        let batches: Vec<RecordBatch> = RecordBatch::iter_all(f.records)
            .map(|b| b.unwrap())
            .collect();
        batches
            .windows(2)
            .any(|w| w[0].header().next_offset() != w[1].header().base_offset)
            .then_some(())
    });
    cluster.member(follower).broker.restart();
    let end = c.list_offset("compacted", 0, LATEST).offset as u64;
    wait_for_replica(&cluster, follower, "compacted", end);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_all(&mut cluster);
    let key = |b: &RecordBatch| {
        let h = b.header();
        (h.base_offset, h.last_offset_delta, h.raft_index)
    };
    let lead: Vec<_> = replica_batches(&cluster, leader, "compacted", 0)
        .iter()
        .map(key)
        .collect();
    let foll: Vec<_> = replica_batches(&cluster, follower, "compacted", 0)
        .iter()
        .map(key)
        .collect();
    let gaps = |v: &Vec<(u64, u32, u64)>| {
        v.windows(2)
            .any(|w| w[0].0 + u64::from(w[0].1) + 1 != w[1].0)
    };
    assert!(
        gaps(&lead),
        "compaction left no gap on the leader: {lead:?}"
    );
    // Both replicas hold the latest value of every key, at the same offsets.
    let latest = |id: u32| -> BTreeMap<String, (u64, String)> {
        let mut m = BTreeMap::new();
        for b in replica_batches(&cluster, id, "compacted", 0) {
            if b.header().is_control() {
                continue;
            }
            for r in b.records().unwrap() {
                let r = r.unwrap();
                let k = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
                let v = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
                m.insert(k, (r.offset, v));
            }
        }
        m
    };
    assert_eq!(latest(follower), latest(leader), "{lead:?}\n{foll:?}");
    assert_eq!(latest(leader)["k2"].1, "v329");
    // The follower holds the leader's batches themselves: same base offsets, same last offset
    // deltas (so the same gaps), same raft indexes.
    assert!(gaps(&foll), "the follower's log has no gap: {foll:?}");
    assert_eq!(
        foll, lead,
        "the follower's batches differ from the leader's"
    );
}

/// The metadata log's segment files (base offsets, ascending) on broker `id`.
fn meta_segments(cluster: &mut Cluster, id: u32) -> Vec<u64> {
    let dir = cluster.member(id).broker.data_dir().join("meta");
    let mut bases: Vec<u64> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    bases.sort_unstable();
    bases
}

/// Every topic broker `id` knows, by name.
fn known_topics(cluster: &Cluster, id: u32) -> Option<Vec<String>> {
    let mut c = RawConn::connect(cluster.addr(id));
    let m = c.try_metadata(None)?;
    let mut names: Vec<String> = m.topics.into_iter().map(|t| t.name).collect();
    names.sort();
    Some(names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_log_drops_purged_segments_and_new_brokers_get_its_snapshot() {
    // Small metadata segments and frequent snapshots: a few topics fill and purge several.
    let mut args = purging_args();
    args.extend(["--meta-segment-bytes", "4096"]);
    let mut cluster = Cluster::start(3, &args);
    let mut want: Vec<String> = (0..30).map(|i| format!("m{i:02}")).collect();
    for t in &want {
        create(&cluster, t, 1, 3, &[]);
    }
    // Every broker deletes the segments raft purged behind its snapshots.
    for id in 1..=3 {
        eventually(
            Duration::from_secs(30),
            "purged metadata segments deleted",
            || {
                let bases = meta_segments(&mut cluster, id);
                (bases.first().is_some_and(|b| *b > 0)).then_some(bases)
            },
        );
    }
    // A new broker starts from the leader's snapshot (the log it would replay is gone) and knows
    // every topic.
    cluster.join(4, &args);
    eventually(
        Duration::from_secs(60),
        "broker 4 to know every topic",
        || (known_topics(&cluster, 4)? == want).then_some(()),
    );
    // A broker restarted on a metadata log that starts past 0 still knows every topic and takes
    // part in new changes.
    cluster.member(2).broker.kill();
    cluster.member(2).broker.restart();
    eventually(
        Duration::from_secs(60),
        "broker 2 to know every topic",
        || (known_topics(&cluster, 2)? == want).then_some(()),
    );
    create(&cluster, "after", 1, 3, &[]);
    want.push("after".to_string());
    want.sort();
    for id in 1..=4 {
        eventually(
            Duration::from_secs(30),
            "every broker to know the new topic",
            || (known_topics(&cluster, id)? == want).then_some(()),
        );
    }
    stop_all(&mut cluster);
}
