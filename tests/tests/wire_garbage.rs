//! Wire garbage against every API key of the protocol's table (`ApiKey::ALL`, so a new API is
//! covered as soon as it is added; [`sample`] is an exhaustive match, so it must also be given a
//! valid example): frames with a valid header and a body that does not decode — random bytes, a
//! valid request cut at every length, a valid request with `0xffffffff` (a huge count or length)
//! written over each position — and a frame cut short on the wire. Each is answered with an
//! `INVALID_REQUEST` error for its correlation id or closes its own connection, never hangs; an
//! unsupported version and unknown API keys get their error answers. Meanwhile another connection
//! produces and consumes and reads back exactly what it wrote, in order; the broker is still
//! running at the end.
//!
//! Checked to fail: with `net/connection.rs` dropping a frame whose body does not decode (no
//! answer, connection left open), the first garbage frame (ApiVersions, 1 byte) failed as a hang:
//! `closed_within` reported the connection still open after the wait.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use sluice_protocol::wire::codec::concat;
use sluice_protocol::wire::*;
use sluice_tests::{batch, Broker, RawConn};

/// How long the broker has to answer or close before the test calls it a hang.
const WAIT: Duration = Duration::from_secs(10);

/// A valid request of `api` (never sent whole: only its cuts and overwrites are). Exhaustive on
/// purpose: a new API does not compile here until it has an example.
fn sample(api: ApiKey) -> Request {
    match api {
        ApiKey::ApiVersions => Request::ApiVersions,
        ApiKey::Metadata => Request::Metadata(MetadataRequest {
            topics: Some(vec!["t".into(), "other".into()]),
        }),
        ApiKey::CreateTopics => Request::CreateTopics(CreateTopicsRequest {
            topics: vec![NewTopic {
                name: "never-created".into(),
                partitions: 3,
                replication_factor: 1,
                configs: vec![("retention.ms".into(), "1000".into())],
            }],
        }),
        ApiKey::DeleteTopics => Request::DeleteTopics(DeleteTopicsRequest {
            names: vec!["t".into(), "x".into()],
        }),
        ApiKey::Produce => Request::Produce(ProduceRequest {
            acks: Acks::All,
            timeout_ms: 1_000,
            topics: vec![ProduceTopic {
                name: "t".into(),
                partitions: vec![ProducePartition {
                    partition: 0,
                    records: batch("cut", 2),
                }],
            }],
        }),
        ApiKey::Fetch => Request::Fetch(FetchRequest {
            max_wait_ms: 0,
            min_bytes: 1,
            max_bytes: 1 << 20,
            topics: vec![FetchTopic {
                name: "t".into(),
                partitions: vec![FetchPartition {
                    partition: 1,
                    offset: 0,
                    max_bytes: 1 << 20,
                }],
            }],
        }),
        ApiKey::ListOffsets => Request::ListOffsets(ListOffsetsRequest {
            topics: vec![ListOffsetsTopic {
                name: "t".into(),
                partitions: vec![ListOffsetsPartition {
                    partition: 0,
                    spec: -1,
                }],
            }],
        }),
        ApiKey::InitProducerId => Request::InitProducerId(InitProducerIdRequest {
            name: "orders".into(),
        }),
        ApiKey::Raft => Request::Raft(RaftRequest {
            group: 0,
            kind: 2,
            body: vec![Bytes::from(vec![7u8; 34])],
        }),
        ApiKey::AddBroker => Request::AddBroker(AddBrokerRequest {
            node_id: 77,
            address: "127.0.0.1:1".into(),
        }),
        ApiKey::AlterReplicas => Request::AlterReplicas(AlterReplicasRequest {
            topic: "t".into(),
            partition: 0,
            replicas: vec![1, 2],
            complete: false,
        }),
        ApiKey::MetadataCommand => Request::MetadataCommand(MetadataCommandRequest {
            command: Bytes::from_static(b"\x01\x02\x03 not a command"),
        }),
        ApiKey::FindCoordinator => Request::FindCoordinator(FindCoordinatorRequest {
            group: "garbage-group".into(),
        }),
        ApiKey::GroupHeartbeat => Request::GroupHeartbeat(GroupHeartbeatRequest {
            group: "garbage-group".into(),
            member_id: "m".into(),
            member_epoch: 3,
            topics: vec!["t".into()],
            regex: "t.*".into(),
            owned: vec![TopicPartitions {
                topic: "t".into(),
                partitions: vec![0, 1],
            }],
            ..Default::default()
        }),
        ApiKey::OffsetCommit => Request::OffsetCommit(OffsetCommitRequest {
            group: "garbage-group".into(),
            member_id: "m".into(),
            member_epoch: 1,
            topics: vec![OffsetCommitTopic {
                topic: "t".into(),
                partitions: vec![OffsetCommitPartition {
                    partition: 0,
                    offset: 5,
                    metadata: "md".into(),
                }],
            }],
        }),
        ApiKey::OffsetFetch => Request::OffsetFetch(OffsetFetchRequest {
            group: "garbage-group".into(),
            partitions: vec![TopicPartitions {
                topic: "t".into(),
                partitions: vec![0],
            }],
        }),
        ApiKey::ListGroups => Request::ListGroups,
        ApiKey::DescribeGroup => Request::DescribeGroup(DescribeGroupRequest {
            group: "garbage-group".into(),
        }),
        ApiKey::ResetOffsets => Request::ResetOffsets(ResetOffsetsRequest {
            group: "garbage-group".into(),
            offsets: vec![("t".into(), 0, 0)],
        }),
        ApiKey::DeleteGroup => Request::DeleteGroup(DeleteGroupRequest {
            group: "garbage-group".into(),
        }),
        ApiKey::AlterGroupConfig => Request::AlterGroupConfig(AlterGroupConfigRequest {
            group: "garbage-group".into(),
            configs: vec![("consumer.session.timeout.ms".into(), "9000".into())],
        }),
        // Garbage never acts (the bodies are checked not to decode), so these name nothing real.
        ApiKey::CreateOperator => Request::CreateOperator(CreateOperatorRequest {
            definition: OperatorDefinition {
                name: "never-created".into(),
                source: "t".into(),
                sink: "never-created-sink".into(),
                window: "sliding:1m:10s".into(),
                time: "field:ts".into(),
                value: "number".into(),
                aggregates: vec!["count".into(), "sum".into()],
                out_of_orderness_ms: 500,
                allowed_lateness_ms: 0,
                late_topic: "never-created-late".into(),
                dead_letter_topic: String::new(),
                idle_timeout_ms: 0,
                max_state_bytes: 0,
            },
        }),
        ApiKey::ListOperators => Request::ListOperators,
        ApiKey::DescribeOperator => {
            Request::DescribeOperator(DescribeOperatorRequest { name: "op".into() })
        }
        ApiKey::AlterOperator => Request::AlterOperator(AlterOperatorRequest {
            name: "op".into(),
            paused: true,
        }),
        ApiKey::DeleteOperator => {
            Request::DeleteOperator(DeleteOperatorRequest { name: "op".into() })
        }
        ApiKey::AlterTopicConfigs => Request::AlterTopicConfigs(AlterTopicConfigsRequest {
            name: "t".into(),
            set: vec![("retention.ms".into(), "1000".into())],
            delete: vec!["retention.bytes".into()],
        }),
        ApiKey::BalanceLeaders => Request::BalanceLeaders(BalanceLeadersRequest { local: false }),
        ApiKey::DescribeReplicas => Request::DescribeReplicas(DescribeReplicasRequest {
            topics: vec!["t".into()],
            partitions: true,
        }),
    }
}

/// Bodies for `api` that its decoder refuses (checked here, so none of them can act).
fn garbage_bodies(api: ApiKey, rng: &mut impl Rng) -> Vec<Bytes> {
    let valid = concat(&sample(api).encode_body());
    let mut out = Vec::new();
    // Random bytes of a few lengths.
    for len in [1, 7, 33, 200, 1000] {
        out.push(Bytes::from(
            (0..len).map(|_| rng.gen()).collect::<Vec<u8>>(),
        ));
    }
    // Every cut of a valid body.
    out.extend((0..valid.len()).map(|n| valid.slice(..n)));
    // A huge count or length at every position of a valid body (and past its end).
    for at in 0..=valid.len() {
        let mut b = valid.to_vec();
        b.resize(b.len().max(at + 4), 0);
        b[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        out.push(Bytes::from(b));
    }
    out.push(Bytes::from(vec![0xff; 64]));
    out.retain(|b| Request::decode_body(api, b.clone()).is_err());
    out
}

fn frame(key: u16, version: u16, corr: u32, body: &[u8]) -> Vec<u8> {
    let mut f = ((8 + body.len()) as u32).to_le_bytes().to_vec();
    f.extend_from_slice(&key.to_le_bytes());
    f.extend_from_slice(&version.to_le_bytes());
    f.extend_from_slice(&corr.to_le_bytes());
    f.extend_from_slice(body);
    f
}

/// Sends `frame` on `conn` and waits for an error answer to `corr` with `code`, or for the broker
/// to close the connection. Panics if it does neither within [`WAIT`]. Returns whether the
/// connection is still open.
fn expect_error_or_close(
    conn: &mut RawConn,
    api: ApiKey,
    corr: u32,
    frame: &[u8],
    code: ErrorCode,
    what: &str,
) -> bool {
    if conn.send_raw(frame).is_err() {
        return false;
    }
    conn.stream.set_read_timeout(Some(WAIT)).unwrap();
    match conn.read_frame() {
        Some(resp) => {
            let (c, r) =
                decode_response(api, resp).unwrap_or_else(|e| panic!("{what}: bad answer: {e}"));
            assert_eq!(c, corr, "{what}: answer to another request");
            let Err(err) = r else {
                panic!("{what}: garbage was answered with success")
            };
            assert_eq!(err.code, code, "{what}: {}", err.message);
            true
        }
        None => {
            assert!(
                conn.closed_within(Duration::from_millis(1)) || conn.closed_within(WAIT),
                "{what}: the broker neither answered nor closed (hung)"
            );
            false
        }
    }
}

/// Produces to and consumes from `t` until `stop`, checking each answer; returns what it wrote per
/// partition, in order.
fn writer(addr: SocketAddr, stop: Arc<AtomicBool>, rounds: Arc<AtomicUsize>) -> [Vec<String>; 2] {
    let mut c = RawConn::connect(addr);
    let mut wrote: [Vec<String>; 2] = Default::default();
    let mut i = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let p = i % 2;
        let r = c.produce("t", p as u32, batch(&format!("w{i}"), 2));
        assert_eq!(r.error, ErrorCode::NONE, "{}", r.message);
        wrote[p].extend((0..2).map(|j| format!("w{i}-{j}")));
        let got: Vec<String> = c
            .consume_all("t", p as u32)
            .into_iter()
            .map(|r| r.1)
            .collect();
        assert_eq!(got, wrote[p], "partition {p} while garbage arrived");
        i += 1;
        rounds.fetch_add(1, Ordering::SeqCst);
    }
    wrote
}

#[test]
fn garbage_for_every_api_key_is_refused_and_disturbs_nothing() {
    let seed = std::env::var("SLUICE_GARBAGE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("wire garbage seed {seed} (SLUICE_GARBAGE_SEED replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut broker = Broker::start(&[]);
    RawConn::connect(broker.addr).create("t", 2);

    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let w = {
        let (addr, stop, rounds) = (broker.addr, stop.clone(), rounds.clone());
        std::thread::spawn(move || writer(addr, stop, rounds))
    };
    while rounds.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    let before = rounds.load(Ordering::SeqCst);

    let mut conn = RawConn::connect(broker.addr);
    let mut corr = 1000u32;
    let (mut sent, mut closed) = (0, 0);
    for api in ApiKey::ALL {
        let (lo, hi) = api.versions();
        let at_start = rounds.load(Ordering::SeqCst);
        let bodies = garbage_bodies(api, &mut rng);
        assert!(bodies.len() >= 5, "{api:?}: too few garbage bodies");
        for (n, body) in bodies.iter().enumerate() {
            corr += 1;
            let what = format!("{api:?} body {n} ({} bytes)", body.len());
            let f = frame(api as u16, lo, corr, body);
            let code = ErrorCode::INVALID_REQUEST;
            if !expect_error_or_close(&mut conn, api, corr, &f, code, &what) {
                conn = RawConn::connect(broker.addr);
                closed += 1;
            }
            sent += 1;
        }
        // A version above the highest: UNSUPPORTED_VERSION.
        corr += 1;
        let f = frame(
            api as u16,
            hi + 1,
            corr,
            &concat(&sample(api).encode_body()),
        );
        let what = format!("{api:?} version {}", hi + 1);
        if !expect_error_or_close(
            &mut conn,
            api,
            corr,
            &f,
            ErrorCode::UNSUPPORTED_VERSION,
            &what,
        ) {
            conn = RawConn::connect(broker.addr);
        }
        // A frame cut short on the wire: promises 100 more bytes, then the client stops writing.
        let mut c = RawConn::connect(broker.addr);
        let mut f = frame(api as u16, lo, 1, &[1, 2, 3]);
        let len = u32::from_le_bytes(f[..4].try_into().unwrap()) + 100;
        f[..4].copy_from_slice(&len.to_le_bytes());
        c.send_raw(&f).unwrap();
        c.stream.shutdown(Shutdown::Write).unwrap();
        assert!(
            c.closed_within(WAIT),
            "{api:?}: a frame cut short was not closed (hung)"
        );
        // The writer completes a round between two APIs' garbage (or has failed: joined below).
        while rounds.load(Ordering::SeqCst) == at_start && !w.is_finished() {
            std::thread::yield_now();
        }
    }
    // Keys no row of the table has: UNKNOWN_API, and the connection stays usable.
    let unknown: Vec<u16> = [7u16, 19, 24, 99, 1000, u16::MAX]
        .into_iter()
        .filter(|k| ApiKey::from_u16(*k).is_err())
        .collect();
    assert!(!unknown.is_empty());
    let mut c = RawConn::connect(broker.addr);
    for key in unknown {
        corr += 1;
        let f = frame(key, 0, corr, &[1, 2, 3, 4]);
        assert!(
            expect_error_or_close(
                &mut c,
                ApiKey::Metadata,
                corr,
                &f,
                ErrorCode::UNKNOWN_API,
                &format!("key {key}")
            ),
            "unknown key {key} closed the connection"
        );
    }
    assert!(c
        .call(&Request::Metadata(MetadataRequest { topics: None }))
        .is_ok());

    // The writer made progress while garbage arrived, and reads back exactly what it wrote.
    let during = rounds.load(Ordering::SeqCst) - before;
    assert!(during >= ApiKey::ALL.len() || w.is_finished());
    stop.store(true, Ordering::SeqCst);
    let wrote = w.join().expect("the writer failed");
    eprintln!("{sent} garbage frames ({closed} closed, the others answered)");
    eprintln!("the writer did {during} rounds meanwhile");
    let mut check = RawConn::connect(broker.addr);
    for (p, want) in wrote.iter().enumerate() {
        let got: Vec<String> = check
            .consume_all("t", p as u32)
            .into_iter()
            .map(|r| r.1)
            .collect();
        assert_eq!(&got, want, "partition {p}");
    }
    assert!(broker.is_running(), "the broker died");
}
