//! The leader's side of a pipelined replication stream (`PeerNetwork::stream_append`) against a
//! scripted peer on a loopback socket: requests go out before earlier answers arrive, answers are
//! yielded in request order whatever order they arrive in, and the stream ends at a conflict.
//! (The follower's side runs in every multi-broker test in `tests/tests/cluster.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use openraft::entry::RaftEntry;
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, StreamAppendError};
use openraft::BasicNode;
use sluice_broker::raft::codec::{encode_append_response, KIND_APPEND};
use sluice_broker::raft::log_store::GroupLog;
use sluice_broker::raft::network::{NetworkFactory, Peers};
use sluice_broker::raft::{log_id, Entry, LogId, TypeConfig, Vote};
use sluice_protocol::wire::{self, RaftResponse, Request, Response};
use sluice_storage::{LogConfig, PartitionLog};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const GROUP: u64 = 7;

/// Append `n` of a stream: blank entries `3n+1..=3n+3` after `3n` (term 1).
fn append(n: u64) -> AppendEntriesRequest<TypeConfig> {
    let prev = (n > 0).then(|| log_id(1, 3 * n));
    AppendEntriesRequest {
        vote: Vote::new_committed(1, 1),
        prev_log_id: prev,
        leader_commit: None,
        entries: (1..=3)
            .map(|i| Entry::new_blank(log_id(1, 3 * n + i)))
            .collect(),
    }
}

fn last_of(n: u64) -> Option<LogId> {
    Some(log_id(1, 3 * n + 3))
}

/// Reads one request frame: its correlation id and raft message kind.
async fn read_append(s: &mut TcpStream) -> (u32, u8, u64) {
    let len = s.read_u32_le().await.unwrap() as usize;
    let mut buf = BytesMut::zeroed(len);
    s.read_exact(&mut buf).await.unwrap();
    let (header, request) = wire::decode_request(buf.freeze()).unwrap();
    let Request::Raft(r) = request.unwrap() else {
        panic!("expected a raft message");
    };
    (header.correlation_id, r.kind, r.group)
}

async fn answer(s: &mut TcpStream, corr: u32, resp: AppendEntriesResponse<TypeConfig>) {
    let body = encode_append_response(&resp);
    for chunk in wire::encode_response(corr, &Response::Raft(RaftResponse { body })) {
        s.write_all(&chunk).await.unwrap();
    }
}

/// A stream to a scripted peer: the network handle and the peer's accepted socket.
async fn stream_to_peer(
    dir: &std::path::Path,
) -> (sluice_broker::raft::network::PeerNetwork, TcpListener) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (log, _) = PartitionLog::open(dir, LogConfig::default()).unwrap();
    let mut factory = NetworkFactory {
        group: GROUP,
        peers: Peers::new(&addr, None).unwrap(),
        log: GroupLog::open(log).unwrap(),
    };
    let net = factory.new_client(2, &BasicNode::new(addr)).await;
    (net, listener)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_written_before_earlier_answers_and_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut net, listener) = stream_to_peer(dir.path()).await;
    let peer = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        // All three arrive while none is answered: the stream does not wait for answers.
        let mut got = Vec::new();
        for _ in 0..3 {
            let (corr, kind, group) = read_append(&mut s).await;
            assert_eq!((kind, group), (KIND_APPEND, GROUP));
            got.push(corr);
        }
        // Answered newest first; the stream must still yield them oldest first.
        for corr in got.into_iter().rev() {
            answer(&mut s, corr, AppendEntriesResponse::Success).await;
        }
        s
    });
    let input = futures_util::stream::iter((0..3).map(append));
    let option = RPCOption::new(Duration::from_secs(5));
    let answers: Vec<_> = tokio::time::timeout(Duration::from_secs(20), async {
        net.stream_append(input, option)
            .await
            .unwrap()
            .collect::<Vec<_>>()
            .await
    })
    .await
    .expect("the stream finishes");
    let flushed: Vec<_> = answers.into_iter().map(|a| a.unwrap().unwrap()).collect();
    assert_eq!(flushed, vec![last_of(0), last_of(1), last_of(2)]);
    peer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_ends_the_stream_and_later_answers_are_not_yielded() {
    let dir = tempfile::tempdir().unwrap();
    let (mut net, listener) = stream_to_peer(dir.path()).await;
    let peer = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(read_append(&mut s).await.0);
        }
        answer(&mut s, got[2], AppendEntriesResponse::Success).await;
        answer(&mut s, got[0], AppendEntriesResponse::Success).await;
        answer(&mut s, got[1], AppendEntriesResponse::Conflict).await;
        s
    });
    let input = futures_util::stream::iter((0..3).map(append));
    let option = RPCOption::new(Duration::from_secs(5));
    let answers: Vec<_> = tokio::time::timeout(Duration::from_secs(20), async {
        net.stream_append(input, option)
            .await
            .unwrap()
            .collect::<Vec<_>>()
            .await
    })
    .await
    .expect("the stream finishes");
    assert_eq!(answers.len(), 2, "nothing after the conflict: {answers:?}");
    assert_eq!(answers[0].as_ref().unwrap(), &Ok(last_of(0)));
    assert_eq!(
        answers[1].as_ref().unwrap(),
        &Err(StreamAppendError::Conflict(log_id(1, 3)))
    );
    peer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_append_times_out_as_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (mut net, listener) = stream_to_peer(dir.path()).await;
    let peer = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        read_append(&mut s).await;
        // Never answers; keeps the socket open until the stream gave up.
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(s);
    });
    let input = futures_util::stream::iter((0..1).map(append));
    // The stream never waits less than its 500 ms floor, however short openraft's TTL.
    let option = RPCOption::new(Duration::from_millis(10));
    let answers: Vec<_> = tokio::time::timeout(Duration::from_secs(20), async {
        net.stream_append(input, option)
            .await
            .unwrap()
            .collect::<Vec<_>>()
            .await
    })
    .await
    .expect("the stream gives up");
    assert_eq!(answers.len(), 1);
    assert!(answers[0].is_err(), "{answers:?}");
    peer.abort();
}
