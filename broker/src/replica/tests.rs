//! The seam in process, on a real one-voter raft group over a real segment log: admission sees
//! every batch admitted before it, so of two concurrent proposals of the same batch exactly one is
//! admitted (the shape idempotent producers build on; fails when `propose` skips `admit`), and
//! batches reach the log in the order they were admitted, whatever the concurrency (fails when the
//! hand-off to raft is not under the same `propose_order` lock as admission: tried by releasing it,
//! and yielding, between the two). And with the real producer state: a batch raft drops is stored
//! exactly once by its retry, and never a later batch of its producer before it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::wire::{Acks, ErrorCode};
use sluice_protocol::{BatchBuilder, Compression, RecordBatch};
use sluice_storage::{FlushPolicy, LogConfig, PartitionLog};

use super::state::{Admission, PartitionState, Refusal};
use super::Replica;
use crate::raft::group::{Group, RaftContext};
use crate::raft::network::{Peers, RaftRegistry};
use crate::raft::Membership;

/// Refuses a batch whose value it has admitted or seen appended already, and records the order of
/// admissions and appends.
#[derive(Debug, Default)]
struct Dedupe {
    seen: BTreeSet<Vec<u8>>,
    order: Arc<std::sync::Mutex<Order>>,
}

/// Values in the order they were admitted, and in the order they were appended.
type Order = (Vec<Vec<u8>>, Vec<Vec<u8>>);

fn value(batch: &RecordBatch) -> Vec<u8> {
    let r = batch.records().unwrap().next().unwrap().unwrap();
    r.value.unwrap().to_vec()
}

impl PartitionState for Dedupe {
    fn admit(&mut self, batch: &RecordBatch, _ticket: u64) -> Result<Admission, Refusal> {
        if self.seen.insert(value(batch)) {
            self.order.lock().unwrap().0.push(value(batch));
            Ok(Admission::Propose)
        } else {
            Err((ErrorCode::INVALID_REQUEST, "duplicate".into()))
        }
    }
    fn appended(&mut self, _index: u64, _offsets: Range<u64>, batch: &RecordBatch) {
        self.seen.insert(value(batch));
        self.order.lock().unwrap().1.push(value(batch));
    }
    fn committed(&mut self, _batch: &RecordBatch, _membership: &Membership) {}
    fn snapshot(&self) -> io::Result<Bytes> {
        Ok(Bytes::new())
    }
    fn restore(&mut self, _state: &[u8]) -> io::Result<()> {
        Ok(())
    }
}

fn batch(v: &str) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    b.append(1_000, None, Some(v.as_bytes()), &[]);
    b.seal().unwrap()
}

async fn one_voter_replica(dir: &std::path::Path, state: Box<dyn PartitionState>) -> Arc<Replica> {
    let config = crate::config::BrokerConfig::default();
    let ctx = RaftContext {
        node_id: 1,
        peers: Peers::new("127.0.0.1:1", None).unwrap(),
        registry: Arc::new(RaftRegistry::default()),
        config: Arc::new(crate::raft::group::raft_config(&config).unwrap()),
    };
    let cfg = LogConfig {
        flush: FlushPolicy::External,
        ..LogConfig::default()
    };
    let (log, _) = PartitionLog::open(dir, cfg).unwrap();
    let group = Group::start(&ctx, 7, log, state).await.unwrap();
    let members: BTreeMap<u64, openraft::BasicNode> =
        [(1, openraft::BasicNode::new("127.0.0.1:1"))].into();
    group.initialize(members).await.unwrap();
    let replica = Arc::new(Replica::new(
        Arc::from("t"),
        1,
        0,
        group,
        Vec::new(),
        Arc::new(tokio::sync::watch::channel(0).0),
        crate::metrics::PartitionMetrics::default(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !replica.is_leader() {
        assert!(tokio::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    replica
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_concurrent_copies_of_a_batch_exactly_one_is_admitted() {
    let dir = tempfile::tempdir().unwrap();
    let replica = one_voter_replica(dir.path(), Box::new(Dedupe::default())).await;
    for round in 0..50 {
        let b = batch(&format!("batch-{round}"));
        let (r1, r2) = (replica.clone(), replica.clone());
        let (b1, b2) = (b.clone(), b.clone());
        let first = tokio::spawn(async move { r1.propose(&b1, Acks::Leader).await });
        let second = tokio::spawn(async move { r2.propose(&b2, Acks::Leader).await });
        let outcomes = [first.await.unwrap(), second.await.unwrap()];
        let admitted: Vec<_> = outcomes.into_iter().filter_map(Result::ok).collect();
        assert_eq!(admitted.len(), 1, "round {round}: both copies admitted");
        for p in admitted {
            p.wait(Duration::from_secs(10)).await.unwrap();
        }
    }
    // And once appended, a copy is still refused (the state saw it in log order).
    let again = replica.propose(&batch("batch-0"), Acks::Leader).await;
    assert_eq!(again.unwrap_err().code, ErrorCode::INVALID_REQUEST);
    replica.stop(&RaftRegistry::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_reach_the_log_in_admission_order() {
    let dir = tempfile::tempdir().unwrap();
    let state = Dedupe::default();
    let order = state.order.clone();
    let replica = one_voter_replica(dir.path(), Box::new(state)).await;
    let proposers: Vec<_> = (0..4)
        .map(|p| {
            let r = replica.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                for i in 0..100 {
                    pending.push(
                        r.propose(&batch(&format!("{p}-{i}")), Acks::Leader)
                            .await
                            .unwrap(),
                    );
                    // Let the other proposers interleave.
                    tokio::task::yield_now().await;
                }
                for w in pending {
                    w.wait(Duration::from_secs(10)).await.unwrap();
                }
            })
        })
        .collect();
    for p in proposers {
        p.await.unwrap();
    }
    let (admitted, appended) = order.lock().unwrap().clone();
    assert_eq!(admitted.len(), 400);
    assert_eq!(
        appended, admitted,
        "the log order differs from the admission order"
    );
    replica.stop(&RaftRegistry::default()).await;
}

fn idempotent(seq: i32, v: &str) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None).producer(11, 0, seq);
    b.append(1_000, None, Some(v.as_bytes()), &[]);
    b.seal().unwrap()
}

/// The values of the data batches in the log, in log order, and how many void batches it holds.
fn stored(replica: &Replica) -> (Vec<String>, usize) {
    let read = replica.read(0, 1 << 20).unwrap();
    let (mut values, mut voids) = (Vec::new(), 0);
    for b in RecordBatch::iter_all(read.bytes) {
        let b = b.unwrap();
        if !b.header().is_control() {
            values.push(String::from_utf8(value(&b)).unwrap());
            continue;
        }
        let r = b.records().unwrap().next().unwrap().unwrap();
        if r.key.as_deref() == Some(crate::raft::entry::KEY_VOID) {
            voids += 1;
        }
    }
    (values, voids)
}

/// Raft drops proposals of an idempotent producer without storing them (`refuse_next` hands them
/// over expecting a term no leader has, so raft refuses and drops them, as when a leader's lease
/// lapses between admission and hand-off), and the producer retries:
/// - A alone is dropped: its retry is admitted at once and stored. Before, the retry found A's
///   admission still "in flight", waited the whole 10 s and answered `REQUEST_TIMED_OUT` (seen with
///   `ProducerState::dropped` a no-op).
/// - B and C in one request, B dropped and C handed to raft after it: C must not be stored after
///   the hole (it is stored as a void batch) and the retry of both stores each once, in order.
///   Before, C was stored without B and B's retry was refused `OUT_OF_ORDER_SEQUENCE` (seen with
///   `accept_append` always true).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_raft_dropped_is_stored_exactly_once_by_its_retry() {
    let dir = tempfile::tempdir().unwrap();
    let state = super::topic_state::TopicState::default();
    let replica = one_voter_replica(dir.path(), Box::new(state)).await;
    let wait = Duration::from_secs(10);
    let a = idempotent(0, "a");
    replica.refuse_next.store(1, Ordering::Release);
    let first = replica.propose(&a, Acks::All).await.unwrap();
    assert_eq!(
        first.wait(wait).await.unwrap_err().code,
        ErrorCode::NOT_LEADER
    );
    replica
        .propose(&a, Acks::All)
        .await
        .unwrap()
        .wait(wait)
        .await
        .unwrap();

    let bc = sluice_protocol::wire::codec::concat(&[idempotent(1, "b"), idempotent(2, "c")]);
    replica.refuse_next.store(1, Ordering::Release);
    let first = replica.propose(&bc, Acks::All).await.unwrap();
    assert_eq!(
        first.wait(wait).await.unwrap_err().code,
        ErrorCode::NOT_LEADER
    );
    let retry = replica.propose(&bc, Acks::All).await.unwrap();
    retry.wait(wait).await.unwrap();
    let (values, voids) = stored(&replica);
    assert_eq!(values, ["a", "b", "c"]);
    assert_eq!(voids, 1, "C's first proposal is stored void");
    replica.stop(&RaftRegistry::default()).await;
}
