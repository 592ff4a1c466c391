//! The heartbeat task against a fake coordinator on a loopback socket: it joins at once,
//! heartbeats at the interval the coordinator gives, one request in flight, at once when woken; a
//! revoked partition is reported owned until its release ends, which is heard at once; a fenced
//! member rejoins with epoch 0, but not past its processing deadline. No broker needed.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_protocol::wire::{
    self, ErrorCode, FindCoordinatorResponse, GroupHeartbeatRequest, GroupHeartbeatResponse,
    OffsetCommitRequest, OffsetCommitResponse, PartitionError, PartitionErrors, Request, Response,
    JOIN_EPOCH,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::config::{GroupConsumerConfig, Subscription};
use super::coordinator::CoordinatorLink;
use super::heartbeat::{self, Spec};
use super::membership::{flatten, Shared};
use super::tests::{answer, set};
use crate::client::{Client, ClientConfig};

/// A fake coordinator: answers FindCoordinator with its own address and heartbeats with
/// `reply`, after `delay`; records each heartbeat with when it arrived and the most heartbeats it
/// ever had in flight. Offset commits are accepted whole after `delay`, each recorded with when it
/// arrived and when it was answered.
pub(super) struct Fake {
    pub(super) addr: String,
    beats: Arc<Mutex<Vec<(Instant, GroupHeartbeatRequest)>>>,
    max_in_flight: Arc<Mutex<(usize, usize)>>,
    pub(super) commits: Commits,
}

/// Offset commits as the fake saw them: arrival, answer (once sent), request.
pub(super) type Commits = Arc<Mutex<Vec<(Instant, Option<Instant>, OffsetCommitRequest)>>>;

pub(super) type Reply =
    Arc<dyn Fn(&GroupHeartbeatRequest, usize) -> GroupHeartbeatResponse + Send + Sync>;

pub(super) async fn fake(delay: Duration, reply: Reply) -> Fake {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let beats: Arc<Mutex<Vec<(Instant, GroupHeartbeatRequest)>>> = Arc::default();
    let flight: Arc<Mutex<(usize, usize)>> = Arc::default();
    let commits: Commits = Arc::default();
    let (b, f, a, cm) = (beats.clone(), flight.clone(), addr.clone(), commits.clone());
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            // Each answer goes out in several writes: no Nagle delay between them.
            let _ = sock.set_nodelay(true);
            let (mut rd, wr) = sock.into_split();
            let wr = Arc::new(tokio::sync::Mutex::new(wr));
            let (b, f, a, cm, reply) = (b.clone(), f.clone(), a.clone(), cm.clone(), reply.clone());
            tokio::spawn(async move {
                loop {
                    let mut len = [0u8; 4];
                    if rd.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
                    if rd.read_exact(&mut buf).await.is_err() {
                        return;
                    }
                    let Ok((h, Ok(req))) = wire::decode_request(bytes::Bytes::from(buf)) else {
                        return;
                    };
                    let (b, f, a, cm, reply, wr) = (
                        b.clone(),
                        f.clone(),
                        a.clone(),
                        cm.clone(),
                        reply.clone(),
                        wr.clone(),
                    );
                    tokio::spawn(async move {
                        let resp = match req {
                            Request::FindCoordinator(_) => {
                                Response::FindCoordinator(FindCoordinatorResponse {
                                    error: ErrorCode::NONE,
                                    message: String::new(),
                                    node_id: 1,
                                    host: a,
                                    partition: 0,
                                })
                            }
                            Request::GroupHeartbeat(hb) => {
                                let n = {
                                    let mut v = b.lock().expect("beats");
                                    v.push((Instant::now(), hb.clone()));
                                    v.len()
                                };
                                {
                                    let mut g = f.lock().expect("flight");
                                    g.0 += 1;
                                    g.1 = g.1.max(g.0);
                                }
                                tokio::time::sleep(delay).await;
                                f.lock().expect("flight").0 -= 1;
                                Response::GroupHeartbeat(reply(&hb, n))
                            }
                            Request::OffsetCommit(c) => {
                                let n = {
                                    let mut v = cm.lock().expect("commits");
                                    v.push((Instant::now(), None, c.clone()));
                                    v.len() - 1
                                };
                                tokio::time::sleep(delay).await;
                                cm.lock().expect("commits")[n].1 = Some(Instant::now());
                                Response::OffsetCommit(accepted(&c))
                            }
                            _ => return,
                        };
                        let mut w = wr.lock().await;
                        for chunk in wire::encode_response(h.correlation_id, &resp) {
                            if w.write_all(&chunk).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
        }
    });
    Fake {
        addr,
        beats,
        max_in_flight: flight,
        commits,
    }
}

/// Every partition of `c` accepted.
fn accepted(c: &OffsetCommitRequest) -> OffsetCommitResponse {
    OffsetCommitResponse {
        error: ErrorCode::NONE,
        message: String::new(),
        topics: c
            .topics
            .iter()
            .map(|t| PartitionErrors {
                topic: t.topic.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| PartitionError {
                        partition: p.partition,
                        error: ErrorCode::NONE,
                        message: String::new(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn start_task(addr: &str, deadline: Duration) -> (Arc<Shared>, tokio::task::JoinHandle<()>) {
    let client = Client::new(ClientConfig::new(addr)).expect("client");
    let config = GroupConsumerConfig::new("g", Subscription::Topics(vec!["t".into()]));
    let shared = Arc::new(Shared::new(Instant::now() + deadline));
    let link = Arc::new(CoordinatorLink::new(client, "g"));
    let task = tokio::spawn(heartbeat::run(
        shared.clone(),
        link,
        Arc::new(Spec::new(&config)),
    ));
    (shared, task)
}

/// Joins at once, then heartbeats at the coordinator's 50 ms (not the 3 s default), one at a time
/// although each answer takes 30 ms, and at once when woken. Seen failing with the answer's
/// interval ignored (1 heartbeat in 600 ms) and with `wake` not selected on (no heartbeat within
/// 2 s of the wake).
#[tokio::test]
async fn heartbeats_at_the_coordinators_interval_one_at_a_time_and_at_once_when_woken() {
    let interval = Arc::new(AtomicU32::new(50));
    let i = interval.clone();
    let reply: Reply = Arc::new(move |_, _| GroupHeartbeatResponse {
        heartbeat_interval_ms: i.load(Ordering::Relaxed),
        ..answer("m1", 1, &[("t", 0)])
    });
    let fake = fake(Duration::from_millis(30), reply).await;
    let (shared, task) = start_task(&fake.addr, Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let n = fake.beats.lock().expect("beats").len();
    // 600 ms / (30 ms answer + 50 ms interval) is about 7; far fewer means the interval was not
    // taken, far more that heartbeats overlapped.
    assert!((4..=12).contains(&n), "{n} heartbeats in 600 ms");
    assert_eq!(fake.max_in_flight.lock().expect("flight").1, 1);
    let beats = fake.beats.lock().expect("beats").clone();
    assert_eq!(beats[0].1.member_epoch, JOIN_EPOCH);
    assert_eq!(beats[1].1.member_id, "m1");
    assert_eq!(shared.lock().assigned, Some(set(&[("t", 0)])));

    // With a 10 s interval, a wake heartbeats at once.
    interval.store(10_000, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(shared.lock().interval, Duration::from_secs(10));
    let before = fake.beats.lock().expect("beats").len();
    let woken = Instant::now();
    shared.lock().owned = set(&[("t", 0)]);
    shared.wake.notify_one();
    loop {
        if fake.beats.lock().expect("beats").len() > before {
            break;
        }
        assert!(
            woken.elapsed() < Duration::from_secs(2),
            "no heartbeat after a wake"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let last = fake
        .beats
        .lock()
        .expect("beats")
        .last()
        .cloned()
        .expect("beat");
    assert!(last.0.duration_since(woken) < Duration::from_millis(40));
    assert_eq!(flatten(&last.1.owned), set(&[("t", 0)]));
    task.abort();
}

/// Under a 10 s interval: a revoked partition whose final commit is in flight is still listed as
/// owned, even by a heartbeat woken after the consumer published without it; the end of its
/// release is heard at once (a heartbeat within 40 ms, without it). Seen failing with the
/// heartbeat built from `owned` alone (the woken heartbeat released t/0 early).
#[tokio::test]
async fn a_release_is_reported_until_it_ends_and_heard_at_once() {
    let reply: Reply = Arc::new(|_, _| GroupHeartbeatResponse {
        heartbeat_interval_ms: 10_000,
        ..answer("m1", 1, &[("t", 1)])
    });
    let fake = fake(Duration::ZERO, reply).await;
    let (shared, task) = start_task(&fake.addr, Duration::from_secs(60));
    let beats = |n: usize| {
        let beats = fake.beats.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                if let Some(b) = beats.lock().expect("beats").get(n).cloned() {
                    return b;
                }
                assert!(Instant::now() < deadline, "no heartbeat {n}");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    beats(0).await;
    assert!(shared.start_release(0, &set(&[("t", 0)]), set(&[("t", 1)])));
    shared.publish(0, set(&[("t", 1)]));
    shared.wake.notify_one();
    let (_, during) = beats(1).await;
    assert_eq!(flatten(&during.owned), set(&[("t", 0), ("t", 1)]));
    let ended = Instant::now();
    shared.finish_release(0, &set(&[("t", 0)]));
    let (at, after) = beats(2).await;
    assert!(at.duration_since(ended) < Duration::from_millis(40));
    assert_eq!(flatten(&after.owned), set(&[("t", 1)]));
    task.abort();
}

/// A fenced member drops its membership and rejoins with epoch 0 and no member id; a member past
/// its processing deadline does not rejoin until woken with a new deadline. Seen failing with the
/// deadline check removed from the task (it rejoined at once).
#[tokio::test]
async fn a_fenced_member_rejoins_unless_its_deadline_passed() {
    // The second heartbeat is fenced; every other one succeeds.
    let reply: Reply = Arc::new(|hb, n| {
        if n == 2 {
            GroupHeartbeatResponse {
                error: ErrorCode::FENCED_MEMBER_EPOCH,
                message: "fenced".into(),
                ..GroupHeartbeatResponse::default()
            }
        } else {
            let id = if hb.member_epoch == JOIN_EPOCH {
                format!("m{n}")
            } else {
                hb.member_id.clone()
            };
            answer(&id, 1, &[("t", 0)])
        }
    });
    let fake = fake(Duration::ZERO, reply).await;
    let (shared, task) = start_task(&fake.addr, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.beats.lock().expect("beats").len() < 3 {
        assert!(Instant::now() < deadline, "no rejoin");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let beats = fake.beats.lock().expect("beats").clone();
    assert_eq!(beats[1].1.member_id, "m1");
    assert_eq!(beats[2].1.member_epoch, JOIN_EPOCH, "rejoins with epoch 0");
    assert_eq!(beats[2].1.member_id, "");
    assert!(
        beats[2].0.duration_since(beats[1].0) < Duration::from_millis(40),
        "not at once"
    );
    assert_eq!(shared.lock().lost, 1);
    task.abort();

    // Past its deadline, a fenced member waits.
    let fake = fake_fenced_after_join().await;
    let (shared, task) = start_task(&fake.addr, Duration::from_millis(300));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let n = fake.beats.lock().expect("beats").len();
    assert_eq!(shared.lock().lost, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.beats.lock().expect("beats").len(),
        n,
        "rejoined past its deadline"
    );
    shared.extend_deadline(Instant::now() + Duration::from_secs(60));
    shared.wake.notify_one();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let beats = fake.beats.lock().expect("beats").clone();
    assert!(beats.len() > n, "no rejoin after a new deadline");
    assert_eq!(beats[n].1.member_epoch, JOIN_EPOCH);
    task.abort();
}

/// Joins; every heartbeat after the join once the deadline passed is fenced.
async fn fake_fenced_after_join() -> Fake {
    let reply: Reply = Arc::new(|hb, n| {
        if hb.member_epoch == JOIN_EPOCH || n == 1 {
            answer(&format!("m{n}"), 1, &[])
        } else if hb.deadline_ms <= 1 {
            GroupHeartbeatResponse {
                error: ErrorCode::UNKNOWN_MEMBER_ID,
                message: "evicted".into(),
                ..GroupHeartbeatResponse::default()
            }
        } else {
            answer(&hb.member_id, 1, &[])
        }
    });
    fake(Duration::ZERO, reply).await
}
