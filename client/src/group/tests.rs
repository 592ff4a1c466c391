//! Unit tests of the group consumer's pure parts (the rebalance diff, the deadline in a heartbeat,
//! configuration checks, answer interpretation, the shared membership's loss rules) and of the
//! heartbeat task against a fake coordinator on a loopback socket (join at once, the interval the
//! coordinator gives, one request in flight, a wake heartbeats at once, a fenced member rejoins
//! with epoch 0 — but not past its processing deadline). None needs a broker.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_protocol::wire::{
    self, ErrorCode, FindCoordinatorResponse, GroupHeartbeatRequest, GroupHeartbeatResponse,
    OffsetCommitResponse, PartitionError, PartitionErrors, Request, Response, TopicPartitions,
    JOIN_EPOCH, LEAVE_EPOCH, STATIC_LEAVE_EPOCH,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::commit::{refusal_error, refused};
use super::config::{GroupConsumerConfig, Subscription};
use super::coordinator::CoordinatorLink;
use super::heartbeat::{self, verdict, Spec, Verdict};
use super::membership::{by_topic, deadline_ms, flatten, Shared, Tp};
use super::rebalance::{diff, Commits, Diff};
use crate::client::{Client, ClientConfig};
use crate::error::ClientError;

fn tp(t: &str, p: u32) -> Tp {
    (t.to_string(), p)
}

fn set(v: &[(&str, u32)]) -> BTreeSet<Tp> {
    v.iter().map(|(t, p)| tp(t, *p)).collect()
}

/// Seen failing with `revoked` and `added` swapped in `diff`.
#[test]
fn diff_revokes_what_is_no_longer_assigned_and_adds_the_new() {
    let owned = set(&[("a", 0), ("a", 1), ("b", 0)]);
    let assigned = set(&[("a", 1), ("b", 0), ("b", 1)]);
    assert_eq!(
        diff(&owned, &assigned),
        Diff {
            revoked: vec![tp("a", 0)],
            added: vec![tp("b", 1)],
        }
    );
    assert_eq!(diff(&owned, &owned), Diff::default());
    let d = diff(&BTreeSet::new(), &assigned);
    assert!(d.revoked.is_empty());
    assert_eq!(d.added.len(), 3);
    let d = diff(&owned, &BTreeSet::new());
    assert_eq!(d.revoked.len(), 3);
    assert!(d.added.is_empty());
}

/// Seen failing with 0 sent for a passed deadline (0 means "no deadline" to the coordinator, so
/// a stuck consumer would never be evicted).
#[test]
fn deadline_in_a_heartbeat_is_never_zero_and_saturates() {
    let now = Instant::now();
    assert_eq!(deadline_ms(now + Duration::from_millis(1500), now), 1500);
    assert_eq!(deadline_ms(now, now), 1, "due now");
    assert_eq!(
        deadline_ms(now, now + Duration::from_secs(5)),
        1,
        "passed: evict"
    );
    assert_eq!(
        deadline_ms(now + Duration::from_secs(100 * 24 * 3600), now),
        u32::MAX
    );
}

#[test]
fn config_checks() {
    let ok = GroupConsumerConfig::new("g", Subscription::Topics(vec!["t".into()]));
    assert!(ok.validate().is_ok());
    let bad = |f: &dyn Fn(&mut GroupConsumerConfig)| {
        let mut c = ok.clone();
        f(&mut c);
        matches!(c.validate(), Err(ClientError::InvalidConfig(_)))
    };
    assert!(bad(&|c| c.group = String::new()));
    assert!(bad(&|c| c.group = "g".repeat(256)));
    assert!(!bad(&|c| c.group = "g".repeat(255)));
    assert!(bad(&|c| c.subscription = Subscription::Topics(vec![])));
    assert!(bad(
        &|c| c.subscription = Subscription::Topics(vec!["t".into(), String::new()])
    ));
    assert!(bad(
        &|c| c.subscription = Subscription::Pattern(String::new())
    ));
    assert!(!bad(
        &|c| c.subscription = Subscription::Pattern("t.*".into())
    ));
    assert!(bad(&|c| c.auto_commit = Some(Duration::ZERO)));
    assert!(!bad(&|c| c.auto_commit = None));
    assert!(bad(&|c| c.session_timeout = Some(Duration::ZERO)));
    assert!(bad(&|c| c.max_processing = Duration::ZERO));
    assert!(bad(
        &|c| c.max_processing = Duration::from_secs(u64::MAX / 4)
    ));
    assert!(bad(&|c| c.instance_id = Some(String::new())));
    assert!(bad(&|c| c.assignor = Some(String::new())));
    // The default has no group: it must be given.
    assert!(GroupConsumerConfig::default().validate().is_err());
    let client = Client::new(ClientConfig::new("127.0.0.1:1")).expect("client");
    assert!(matches!(
        super::GroupConsumer::new(client, GroupConsumerConfig::default()),
        Err(ClientError::InvalidConfig(_))
    ));
}

#[test]
fn heartbeat_verdicts() {
    assert_eq!(verdict(ErrorCode::NONE), Verdict::Ok);
    assert_eq!(verdict(ErrorCode::UNKNOWN_MEMBER_ID), Verdict::Lost);
    assert_eq!(verdict(ErrorCode::FENCED_MEMBER_EPOCH), Verdict::Lost);
    assert_eq!(verdict(ErrorCode::NOT_COORDINATOR), Verdict::Retry);
    assert_eq!(
        verdict(ErrorCode::COORDINATOR_NOT_AVAILABLE),
        Verdict::Retry
    );
    assert_eq!(verdict(ErrorCode::REQUEST_TIMED_OUT), Verdict::Retry);
    assert_eq!(verdict(ErrorCode::UNSUPPORTED_ASSIGNOR), Verdict::Fail);
    assert_eq!(
        verdict(ErrorCode::INVALID_REGULAR_EXPRESSION),
        Verdict::Fail
    );
    assert_eq!(verdict(ErrorCode::GROUP_MAX_SIZE_REACHED), Verdict::Fail);
}

/// A refused partition is an error naming it, with its code; accepted ones are not listed.
#[test]
fn commit_refusals_name_their_partitions() {
    let pe = |partition, error: ErrorCode| PartitionError {
        partition,
        error,
        message: format!("m{partition}"),
    };
    let resp = OffsetCommitResponse {
        error: ErrorCode::NONE,
        message: String::new(),
        topics: vec![
            PartitionErrors {
                topic: "a".into(),
                partitions: vec![pe(0, ErrorCode::NONE), pe(1, ErrorCode::STALE_MEMBER_EPOCH)],
            },
            PartitionErrors {
                topic: "b".into(),
                partitions: vec![pe(2, ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)],
            },
        ],
    };
    let r = refused(&resp);
    assert_eq!(
        r.iter().map(|x| x.0.clone()).collect::<Vec<_>>(),
        vec![tp("a", 1), tp("b", 2)]
    );
    let e = refusal_error("g", &r);
    assert_eq!(e.code(), Some(ErrorCode::STALE_MEMBER_EPOCH));
    let text = e.to_string();
    assert!(
        text.contains("a/1") && text.contains("b/2") && !text.contains("a/0"),
        "{text}"
    );
    assert!(!e.is_retriable(), "a refused commit is not retried blindly");
}

fn answer(member: &str, epoch: i32, assigned: &[(&str, u32)]) -> GroupHeartbeatResponse {
    GroupHeartbeatResponse {
        member_id: member.into(),
        member_epoch: epoch,
        heartbeat_interval_ms: 50,
        session_timeout_ms: 2000,
        assignment: by_topic(&set(assigned)),
        ..GroupHeartbeatResponse::default()
    }
}

/// One loss, one drop: a second report of the same loss, and an answer to a request made before
/// it, change nothing. Seen failing with the `lost` comparison removed from `answered` (the stale
/// answer revived the old member id).
#[test]
fn a_loss_is_counted_once_and_stale_answers_are_ignored() {
    let shared = Shared::new(Instant::now() + Duration::from_secs(60));
    assert!(shared.answered(0, &answer("m1", 3, &[("t", 0), ("t", 1)])));
    shared.lock().owned = set(&[("t", 0), ("t", 1)]);
    assert_eq!(shared.lock().epoch, 3);
    assert_eq!(shared.lock().interval, Duration::from_millis(50));
    shared.lose(0, "test");
    shared.lose(0, "the same loss, seen by a commit");
    {
        let m = shared.lock();
        assert_eq!(m.lost, 1);
        assert_eq!((m.member_id.as_str(), m.epoch), ("", 0));
        assert!(m.assigned.is_none() && m.owned.is_empty());
    }
    assert!(!shared.answered(0, &answer("m1", 4, &[("t", 0)])));
    assert_eq!(shared.lock().member_id, "");
    assert!(shared.answered(1, &answer("m2", 5, &[("t", 1)])));
    assert_eq!(shared.lock().assigned, Some(set(&[("t", 1)])));
}

#[test]
fn wire_partitions_round_trip_and_commits_replace() {
    let s = set(&[("a", 2), ("a", 0), ("b", 1)]);
    let wire = by_topic(&s);
    assert_eq!(
        wire,
        vec![
            TopicPartitions {
                topic: "a".into(),
                partitions: vec![0, 2]
            },
            TopicPartitions {
                topic: "b".into(),
                partitions: vec![1]
            }
        ]
    );
    assert_eq!(flatten(&wire), s);
    let mut c = Commits::default();
    assert!(c.is_empty());
    c.add("a", 0, 5);
    c.add("a", 0, 7);
    c.add("b", 1, 1);
    assert_eq!(c.iter().collect::<Vec<_>>(), vec![("a", 0, 7), ("b", 1, 1)]);
}

#[test]
fn heartbeat_requests_carry_the_membership() {
    let mut config = GroupConsumerConfig::new("g", Subscription::Pattern("t.*".into()));
    config.session_timeout = Some(Duration::from_millis(1500));
    let spec = Spec::new(&config);
    let now = Instant::now();
    let shared = Shared::new(now + Duration::from_secs(2));
    let join = spec.heartbeat(&shared.lock(), now);
    assert_eq!(join.member_epoch, JOIN_EPOCH);
    assert_eq!(join.regex, "t.*");
    assert!(join.topics.is_empty());
    assert_eq!(join.session_timeout_ms, 1500);
    assert_eq!(join.deadline_ms, 2000);
    let Request::GroupHeartbeat(leave) = spec.leave("m") else {
        panic!("not a heartbeat")
    };
    assert_eq!(
        (leave.member_id.as_str(), leave.member_epoch),
        ("m", LEAVE_EPOCH)
    );
    config.instance_id = Some("i".into());
    let Request::GroupHeartbeat(leave) = Spec::new(&config).leave("m") else {
        panic!("not a heartbeat")
    };
    assert_eq!(leave.member_epoch, STATIC_LEAVE_EPOCH);
}

/// A fake coordinator: answers FindCoordinator with its own address and heartbeats with
/// `reply`, after `delay`; records each heartbeat with when it arrived and the most heartbeats it
/// ever had in flight.
struct Fake {
    addr: String,
    beats: Arc<Mutex<Vec<(Instant, GroupHeartbeatRequest)>>>,
    max_in_flight: Arc<Mutex<(usize, usize)>>,
}

type Reply = Arc<dyn Fn(&GroupHeartbeatRequest, usize) -> GroupHeartbeatResponse + Send + Sync>;

async fn fake(delay: Duration, reply: Reply) -> Fake {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let beats: Arc<Mutex<Vec<(Instant, GroupHeartbeatRequest)>>> = Arc::default();
    let flight: Arc<Mutex<(usize, usize)>> = Arc::default();
    let (b, f, a) = (beats.clone(), flight.clone(), addr.clone());
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            // Each answer goes out in several writes: no Nagle delay between them.
            let _ = sock.set_nodelay(true);
            let (mut rd, wr) = sock.into_split();
            let wr = Arc::new(tokio::sync::Mutex::new(wr));
            let (b, f, a, reply) = (b.clone(), f.clone(), a.clone(), reply.clone());
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
                    let (b, f, a, reply, wr) =
                        (b.clone(), f.clone(), a.clone(), reply.clone(), wr.clone());
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
/// interval ignored (2 heartbeats in 600 ms) and with `wake` not selected on (the woken heartbeat
/// came 50 ms later).
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
