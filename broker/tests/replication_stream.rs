//! The leader's side of a pipelined replication stream (`PeerNetwork::stream_append`) against a
//! scripted peer on a loopback socket: requests go out before earlier answers arrive, answers are
//! yielded in request order whatever order they arrive in, the stream ends at a conflict, the bytes
//! in flight are bounded, and only a peer that stops answering times out (a deep pipeline is timed
//! from the previous answer, not from its write). (The follower's side runs in every multi-broker
//! test in `tests/tests/cluster.rs`.)
//!
//! The deep-pipeline timing test runs on tokio's paused clock, moved only by the test
//! (`time::advance`; a spinning task keeps the runtime from ever idling, so the clock never
//! auto-advances: auto-advance is unsound over TCP, where the kernel may hold an ACK while the
//! runtime looks idle, which fired 3.75 s request timeouts in a 5 MiB transfer). The byte bound is
//! observed through the stream's debug line "append stream full", captured in process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use openraft::entry::RaftEntry;
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, StreamAppendError};
use openraft::BasicNode;
use sluice_broker::raft::codec::{decode_append, encode_append_response, KIND_APPEND};
use sluice_broker::raft::log_store::GroupLog;
use sluice_broker::raft::network::{NetworkFactory, Peers};
use sluice_broker::raft::{log_id, Entry, LogId, Proposal, TypeConfig, Vote};
use sluice_protocol::wire::{self, RaftResponse, Request, Response};
use sluice_protocol::{BatchBuilder, Compression, RecordBatch};
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

/// One request frame as the peer reads it.
struct Received {
    corr: u32,
    kind: u8,
    group: u64,
    /// The decoded append's `prev_log_id` index (0 for none).
    prev: u64,
}

/// Reads one request frame.
async fn read_append(s: &mut TcpStream) -> Received {
    let len = s.read_u32_le().await.unwrap() as usize;
    let mut buf = BytesMut::zeroed(len);
    s.read_exact(&mut buf).await.unwrap();
    let (header, request) = wire::decode_request(buf.freeze()).unwrap();
    let Request::Raft(r) = request.unwrap() else {
        panic!("expected a raft message");
    };
    let rpc = decode_append(r.body_bytes()).unwrap();
    Received {
        corr: header.correlation_id,
        kind: r.kind,
        group: r.group,
        prev: rpc.prev_log_id.map_or(0, |l| l.index),
    }
}

/// Reads `n` request frames; their correlation ids.
async fn read_corrs(s: &mut TcpStream, n: usize) -> Vec<u32> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        got.push(read_append(s).await.corr);
    }
    got
}

async fn answer(s: &mut TcpStream, corr: u32, resp: AppendEntriesResponse<TypeConfig>) {
    try_answer(s, corr, resp).await.unwrap();
}

/// [`answer`], reporting a write error (the stream gave up and closed the connection).
async fn try_answer(
    s: &mut TcpStream,
    corr: u32,
    resp: AppendEntriesResponse<TypeConfig>,
) -> std::io::Result<()> {
    let body = encode_append_response(&resp);
    for chunk in wire::encode_response(corr, &Response::Raft(RaftResponse { body })) {
        s.write_all(&chunk).await?;
    }
    Ok(())
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

/// Runs a stream of `input` to completion (a hang fails the test after a minute).
async fn run_stream<S>(
    net: &mut sluice_broker::raft::network::PeerNetwork,
    input: S,
    option: RPCOption,
) -> Vec<Result<openraft::raft::StreamAppendResult<TypeConfig>, String>>
where
    S: futures_util::Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
{
    tokio::time::timeout(Duration::from_secs(60), async {
        net.stream_append(input, option)
            .await
            .unwrap()
            .map(|a| a.map_err(|e| e.to_string()))
            .collect::<Vec<_>>()
            .await
    })
    .await
    .expect("the stream ends")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_written_before_earlier_answers_and_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut net, listener) = stream_to_peer(dir.path()).await;
    let peer = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        // All three arrive while none is answered: the stream does not wait for answers.
        let mut got = Vec::new();
        // ... in the order openraft made them (the follower relies on it).
        for n in 0..3 {
            let r = read_append(&mut s).await;
            assert_eq!((r.kind, r.group, r.prev), (KIND_APPEND, GROUP, 3 * n));
            got.push(r.corr);
        }
        // Answered newest first; the stream must still yield them oldest first.
        for corr in got.into_iter().rev() {
            answer(&mut s, corr, AppendEntriesResponse::Success).await;
        }
        s
    });
    let input = futures_util::stream::iter((0..3).map(append));
    let answers = run_stream(&mut net, input, RPCOption::new(Duration::from_secs(5))).await;
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
        let got = read_corrs(&mut s, 3).await;
        answer(&mut s, got[2], AppendEntriesResponse::Success).await;
        answer(&mut s, got[0], AppendEntriesResponse::Success).await;
        answer(&mut s, got[1], AppendEntriesResponse::Conflict).await;
        s
    });
    let input = futures_util::stream::iter((0..3).map(append));
    let answers = run_stream(&mut net, input, RPCOption::new(Duration::from_secs(5))).await;
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
    let (read_tx, read_rx) = tokio::sync::oneshot::channel();
    let peer = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        read_append(&mut s).await;
        let _ = read_tx.send(());
        // Never answers and never closes: only the stream's own timeout can end it.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(s);
    });
    let input = futures_util::stream::iter((0..1).map(append));
    // The stream never waits less than its 500 ms floor, however short openraft's TTL.
    let answers = run_stream(&mut net, input, RPCOption::new(Duration::from_millis(10))).await;
    read_rx.await.expect("the peer received the append");
    assert_eq!(answers.len(), 1);
    let err = answers[0].as_ref().expect_err("an error, not an answer");
    assert!(err.contains("timed out"), "a timeout: {err}");
    peer.abort();
}

/// A deep pipeline is timed from the previous answer, not from each append's write. The stream's
/// timeout is openraft's soft TTL (1.5 s of the 2 s given); the three appends are written at once
/// and answered 1.2 s apart, so the third comes 3.6 s after its write but never 1.5 s after the
/// answer before it. Virtual time, moved only here: each 1.2 s step is taken once the stream has
/// yielded the previous answer, so no scheduling delay can stretch or shrink a gap (the test once
/// slept 1.2 s on the wall clock against that 1.5 s). Seen to fail (the second answer timed out)
/// with `restart_clock` not called after an answer in `AppendStream::next_answer`.
#[tokio::test(start_paused = true)]
async fn a_deep_pipeline_is_timed_from_the_previous_answer() {
    // Always runnable: the runtime never idles, so the paused clock moves only by `advance`.
    let spinner = tokio::spawn(async {
        loop {
            tokio::task::yield_now().await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let (net, listener) = stream_to_peer(dir.path()).await;
    let (yielded_tx, mut yielded) = tokio::sync::mpsc::unbounded_channel();
    let stream = tokio::spawn(async move {
        let mut net = net;
        let input = futures_util::stream::iter((0..3).map(append));
        let mut answers = net
            .stream_append(input, RPCOption::new(Duration::from_secs(2)))
            .await
            .unwrap();
        let mut out = Vec::new();
        while let Some(a) = answers.next().await {
            out.push(a.map_err(|e| e.to_string()));
            let _ = yielded_tx.send(());
        }
        out
    });
    let (mut s, _) = listener.accept().await.unwrap();
    let got = read_corrs(&mut s, 3).await;
    for corr in got {
        tokio::time::advance(Duration::from_millis(1200)).await;
        if try_answer(&mut s, corr, AppendEntriesResponse::Success)
            .await
            .is_err()
        {
            break; // The stream gave up: its answers say why.
        }
        // The stream took this answer (or ended) before time moves on.
        let _ = yielded.recv().await;
    }
    let answers = stream.await.unwrap();
    spinner.abort();
    let flushed: Vec<_> = answers.into_iter().map(|a| a.unwrap().unwrap()).collect();
    assert_eq!(flushed, vec![last_of(0), last_of(1), last_of(2)]);
}

/// Append `n` of a stream of one big entry each: index `n + 1` after `n`.
fn big_append(n: u64, value_bytes: usize) -> AppendEntriesRequest<TypeConfig> {
    let mut b = BatchBuilder::with_capacity(Compression::None, value_bytes + 256);
    b.append(0, None, Some(&vec![7u8; value_bytes]), &[]);
    let batch = RecordBatch::decode(&b.seal().unwrap()).unwrap().0;
    AppendEntriesRequest {
        vote: Vote::new_committed(1, 1),
        prev_log_id: (n > 0).then(|| log_id(1, n)),
        leader_commit: None,
        entries: vec![Entry::new_normal(log_id(1, n + 1), Proposal::stored(batch))],
    }
}

/// Every line the broker's raft code logs at debug in this test process (a global subscriber,
/// installed once).
fn captured_lines() -> Arc<Mutex<Vec<String>>> {
    static LINES: OnceLock<Arc<Mutex<Vec<String>>>> = OnceLock::new();
    LINES
        .get_or_init(|| {
            let lines: Arc<Mutex<Vec<String>>> = Arc::default();
            let sink = lines.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(
                    "sluice_broker::raft=debug",
                ))
                .with_ansi(false)
                .with_writer(move || Capture(sink.clone()))
                .finish();
            tracing::subscriber::set_global_default(subscriber).unwrap();
            lines
        })
        .clone()
}

/// A log writer that keeps what it is given.
struct Capture(Arc<Mutex<Vec<String>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(buf).into_owned());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits (bounded: a hang guard) until the stream has logged `n` times that it is full with
/// `appends` unanswered.
async fn full_lines(lines: &Mutex<Vec<String>>, appends: usize, n: usize) {
    let needle = format!("appends={appends} ");
    let count = || {
        let text = lines.lock().unwrap().concat();
        text.lines()
            .filter(|l| l.contains("append stream full") && l.contains(&needle))
            .count()
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        while count() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the stream never waited with {appends} appends unanswered"));
}

/// The stream stops writing at 16 MiB unanswered, and says so: the peer reads four 5 MiB appends
/// and then waits for the stream's debug line "append stream full" with 4 appends unanswered (a
/// stream that wrote a fifth first would log 5, or nothing), answers one, reads the fifth, sees
/// the stream full with 4 again, then answers the rest. It once took 500 ms without a fifth
/// append for "bounded", which a stalled sender passed too. Seen to fail ("never waited with 4
/// appends unanswered": all six were written at once) with the byte bound taken out of `room` in
/// `AppendStream::next_answer`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_in_flight_are_bounded() {
    const VALUE: usize = 5 << 20;
    let lines = captured_lines();
    let dir = tempfile::tempdir().unwrap();
    let (mut net, listener) = stream_to_peer(dir.path()).await;
    let peer = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        // 4 x 5 MiB reach the 16 MiB bound (the fourth crosses it); the fifth waits for room.
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(read_append(&mut s).await);
        }
        full_lines(&lines, 4, 1).await;
        answer(&mut s, got[0].corr, AppendEntriesResponse::Success).await;
        // One answer makes room for exactly one more.
        let fifth = read_append(&mut s).await;
        assert_eq!(fifth.prev, 4);
        full_lines(&lines, 4, 2).await;
        for r in got.iter().skip(1).chain([&fifth]) {
            answer(&mut s, r.corr, AppendEntriesResponse::Success).await;
        }
        let sixth = read_append(&mut s).await;
        assert_eq!(sixth.prev, 5);
        answer(&mut s, sixth.corr, AppendEntriesResponse::Success).await;
        s
    });
    let input = futures_util::stream::iter((0..6).map(|n| big_append(n, VALUE)));
    let answers = run_stream(&mut net, input, RPCOption::new(Duration::from_secs(5))).await;
    // The peer's verdict first: it says which bound failed (the stream then only timed out).
    if let Err(e) = peer.await {
        std::panic::resume_unwind(e.into_panic());
    }
    let flushed: Vec<_> = answers.into_iter().map(|a| a.unwrap().unwrap()).collect();
    assert_eq!(
        flushed,
        (1..=6).map(|i| Some(log_id(1, i))).collect::<Vec<_>>()
    );
}
