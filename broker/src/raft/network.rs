//! Raft RPCs between brokers over the broker's own protocol: [`Request::Raft`] frames carrying the
//! group id, on one multiplexed connection per peer broker (a `sluice_client::Client` keeps one
//! connection per address and reconnects after failures).
//!
//! Sending side: [`NetworkFactory`] (one per group) makes a [`PeerNetwork`] per target node.
//! Receiving side: [`RaftRegistry::handle`] finds the group and hands the decoded message to its
//! `Raft`. Snapshots move as a stream of whole batches from the leader's retained log (bounded
//! chunks), staged beside the follower's log, then installed (see `state_machine`).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendError,
    StreamAppendResult, VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use sluice_client::{Client, ClientConfig, ClientError};
use sluice_protocol::wire::{ErrorCode, RaftRequest, Request, Response};
use sluice_protocol::RecordBatch;
use sluice_storage::{LogConfig, PartitionLog};

use super::codec::*;
use super::log_store::{GroupLog, MAX_APPEND_BYTES};
use super::state_machine::{decode_snapshot, encode_snapshot, GroupSm, SnapshotData};
use super::{TypeConfig, Vote};

pub type RaftHandle = openraft::Raft<TypeConfig, GroupSm>;

/// Largest run of batches sent in one snapshot chunk.
const SNAPSHOT_CHUNK_BYTES: usize = 4 << 20;
/// Shortest timeout given to an RPC whatever openraft's TTL says (large appends need time).
const MIN_RPC_TIMEOUT: Duration = Duration::from_millis(500);
const SNAPSHOT_RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections to peer brokers, shared by every group on this broker.
#[derive(Debug, Clone)]
pub struct Peers {
    client: Client,
}

impl Peers {
    /// Connections that leave from `local_ip` when given (this broker's advertised address).
    pub fn new(any_addr: &str, local_ip: Option<std::net::IpAddr>) -> Result<Peers, ClientError> {
        let mut cfg = ClientConfig::new(any_addr);
        cfg.connect_timeout = Duration::from_secs(1);
        cfg.local_ip = local_ip;
        // Many groups share one connection per peer: let their RPCs overlap.
        cfg.max_in_flight = 1024;
        Ok(Peers {
            client: Client::new(cfg)?,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn call(
        &self,
        addr: &str,
        group: u64,
        kind: u8,
        body: Vec<Bytes>,
        timeout: Duration,
    ) -> Result<Bytes, RPCError<TypeConfig>> {
        let req = Request::Raft(RaftRequest { group, kind, body });
        raft_body(
            addr,
            self.client
                .request_to_with_timeout(addr, &req, timeout)
                .await,
        )
    }
}

/// The body of a raft answer, or the RPC error openraft should see.
fn raft_body(
    addr: &str,
    answer: Result<Response, ClientError>,
) -> Result<Bytes, RPCError<TypeConfig>> {
    match answer {
        Ok(Response::Raft(r)) => Ok(r.body),
        Ok(_) => Err(RPCError::Network(NetworkError::from_string(
            "unexpected answer to a raft message",
        ))),
        Err(e) => Err(rpc_error(addr, e)),
    }
}

fn rpc_error(addr: &str, e: ClientError) -> RPCError<TypeConfig> {
    if e.is_connection_error() {
        RPCError::Unreachable(Unreachable::from_string(format!("{addr}: {e}")))
    } else {
        RPCError::Network(NetworkError::from_string(format!("{addr}: {e}")))
    }
}

/// Makes the per-target network handles of one group.
#[derive(Debug, Clone)]
pub struct NetworkFactory {
    pub group: u64,
    pub peers: Peers,
    pub log: Arc<GroupLog>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerNetwork {
        PeerNetwork {
            group: self.group,
            target,
            addr: node.addr.clone(),
            peers: self.peers.clone(),
            log: self.log.clone(),
        }
    }
}

/// One group's RPCs to one target.
#[derive(Debug)]
pub struct PeerNetwork {
    group: u64,
    target: u64,
    addr: String,
    peers: Peers,
    log: Arc<GroupLog>,
}

fn bad_answer(e: impl std::fmt::Display) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string(format!("bad raft answer: {e}")))
}

impl PeerNetwork {
    async fn send(
        &self,
        kind: u8,
        body: Vec<Bytes>,
        option: &RPCOption,
    ) -> Result<Bytes, RPCError<TypeConfig>> {
        let timeout = option.soft_ttl().max(MIN_RPC_TIMEOUT);
        self.peers
            .call(&self.addr, self.group, kind, body, timeout)
            .await
    }

    /// Streams the leader's log below the snapshot's high watermark, then the snapshot itself.
    async fn send_snapshot(
        &self,
        vote: Vote,
        snapshot: openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let hw = snapshot.snapshot.state.high_watermark;
        let pin = self.log.pin_log_start();
        let log = &self.log.log;
        let start_offset = pin.offset();
        let mut offset = start_offset;
        let mut seq = 0u64;
        loop {
            let batches = if offset < hw {
                let read = log
                    .read_below(offset, SNAPSHOT_CHUNK_BYTES, hw)
                    .map_err(|e| {
                        StreamingError::Network(NetworkError::from_string(e.to_string()))
                    })?;
                offset = read.next_offset;
                read.bytes
            } else {
                Bytes::new()
            };
            let chunk = SnapshotChunk {
                vote,
                seq,
                start_offset,
                batches,
            };
            let answer = self
                .peers
                .call(
                    &self.addr,
                    self.group,
                    KIND_SNAPSHOT_CHUNK,
                    encode_snapshot_chunk(&chunk),
                    SNAPSHOT_RPC_TIMEOUT,
                )
                .await?;
            let their =
                decode_vote_only(answer).map_err(|e| StreamingError::from(bad_answer(e)))?;
            if their > vote {
                return Ok(SnapshotResponse::new(their));
            }
            seq += 1;
            if offset >= hw || chunk.batches.is_empty() {
                break;
            }
        }
        let body = encode_snapshot(&snapshot.meta, &snapshot.snapshot.state);
        let answer = self
            .peers
            .call(
                &self.addr,
                self.group,
                KIND_SNAPSHOT_DONE,
                encode_snapshot_done(&vote, &body),
                SNAPSHOT_RPC_TIMEOUT,
            )
            .await?;
        let their = decode_vote_only(answer).map_err(|e| StreamingError::from(bad_answer(e)))?;
        Ok(SnapshotResponse::new(their))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerNetwork {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        // Record bytes go out as slices of the segment maps, never joined into one buffer.
        let body = encode_append(&rpc).map_err(bad_answer)?;
        let answer = self.send(KIND_APPEND, body, &option).await?;
        decode_append_response(answer).map_err(bad_answer)
    }

    /// Pipelined: each request is written as soon as openraft makes it, up to
    /// `MAX_PIPELINED_APPENDS` and `MAX_PIPELINED_BYTES` unanswered, and answers are yielded in
    /// request order. The peer connection keeps the order of writes, and the receiving broker hands one connection's
    /// appends of a group to raft in that order (`append_pipeline`), so a follower can write and
    /// fsync the next appends while the leader still waits for earlier answers: replication
    /// rounds overlap instead of taking turns. The stream ends after the first error, conflict,
    /// higher vote or partial success, as openraft expects.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, AppendAnswer>, RPCError<TypeConfig>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        let pipeline = AppendStream::new(self, input, option.soft_ttl().max(MIN_RPC_TIMEOUT));
        let answers = futures_util::stream::unfold(Some(pipeline), |state| async move {
            let mut pipeline = state?;
            let (answer, go_on) = pipeline.next_answer().await?;
            Some((answer, go_on.then_some(pipeline)))
        });
        Box::pin(async move { Ok(Box::pin(answers) as BoxStream<'s, AppendAnswer>) })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let answer = self
            .send(KIND_VOTE, vec![encode_vote(&rpc)], &option)
            .await?;
        decode_vote_response(answer).map_err(bad_answer)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let answer = self
            .send(KIND_PRE_VOTE, vec![encode_vote(&rpc)], &option)
            .await?;
        decode_vote_response(answer).map_err(bad_answer)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        tracing::info!(group = self.group, target = self.target, "sending snapshot");
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = self.send_snapshot(vote, snapshot) => r,
        }
    }
}

/// Appends written to a peer and not answered yet, at most this many per replication stream.
const MAX_PIPELINED_APPENDS: usize = 16;
/// Batch bytes written to a peer and not answered yet, at most, per replication stream (past the
/// request that crosses it): a lagging follower's catch-up keeps two full requests on the wire,
/// not sixteen, so the connection every group shares with that peer stays short and each answer
/// comes within the timeout even on a slow link.
const MAX_PIPELINED_BYTES: usize = 2 * MAX_APPEND_BYTES;

/// One answer of a replication stream, as openraft takes it.
type AppendAnswer = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

type SentAppend = Pin<Box<dyn Future<Output = (AppendAnswer, bool)> + Send>>;

/// An append written to the peer: its answer (with whether the stream may go on after it) and
/// the bytes it carried.
struct Sent {
    answer: SentAppend,
    bytes: usize,
}

/// The leader's side of one pipelined replication stream to one peer.
struct AppendStream<S> {
    group: u64,
    addr: String,
    peers: Peers,
    /// How long the oldest unanswered append may wait, counted from when it was written or from
    /// the previous answer, whichever is later: a deep pipeline on a slow link is not timed out
    /// for the requests queued ahead of it, and a silent peer still is.
    timeout: Duration,
    /// openraft's requests; `None` once it has no more.
    input: Option<S>,
    /// Written requests, oldest first (at most [`MAX_PIPELINED_APPENDS`]).
    sent: VecDeque<Sent>,
    /// When the oldest of `sent` times out.
    oldest_deadline: Pin<Box<tokio::time::Sleep>>,
}

enum Step {
    Answer(AppendAnswer, bool),
    TimedOut,
    Request(Option<AppendEntriesRequest<TypeConfig>>),
}

impl<S> AppendStream<S>
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
{
    fn new(net: &PeerNetwork, input: S, timeout: Duration) -> AppendStream<S> {
        AppendStream {
            group: net.group,
            addr: net.addr.clone(),
            peers: net.peers.clone(),
            timeout,
            input: Some(input),
            sent: VecDeque::new(),
            oldest_deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    /// Restarts the oldest answer's clock (a request became the oldest).
    fn restart_clock(&mut self) {
        let at = tokio::time::Instant::now() + self.timeout;
        self.oldest_deadline.as_mut().reset(at);
    }

    /// Writes requests while there is room and waits for the oldest answer; `None` when openraft
    /// has no more requests and every answer was yielded.
    async fn next_answer(&mut self) -> Option<(AppendAnswer, bool)> {
        loop {
            let room = self.input.is_some()
                && self.sent.len() < MAX_PIPELINED_APPENDS
                && self.sent.iter().map(|s| s.bytes).sum::<usize>() < MAX_PIPELINED_BYTES;
            if self.sent.is_empty() && !room {
                return None;
            }
            let step = {
                let (input, sent) = (&mut self.input, &mut self.sent);
                let waiting = !sent.is_empty();
                let oldest = futures_util::future::poll_fn(|cx| match sent.front_mut() {
                    Some(f) => f.answer.as_mut().poll(cx),
                    None => Poll::Pending,
                });
                let request = futures_util::future::poll_fn(|cx| match input.as_mut() {
                    Some(s) => s.poll_next_unpin(cx),
                    None => Poll::Pending,
                });
                // Answers first: they free room and end a failed stream early. The request
                // stream is an `unfold`, so dropping an unfinished `next` loses nothing.
                tokio::select! {
                    biased;
                    (answer, go_on) = oldest => Step::Answer(answer, go_on),
                    () = self.oldest_deadline.as_mut(), if waiting => Step::TimedOut,
                    request = request, if room => Step::Request(request),
                }
            };
            match step {
                Step::Answer(answer, go_on) => {
                    self.sent.pop_front();
                    if !self.sent.is_empty() {
                        self.restart_clock();
                    }
                    return Some((answer, go_on));
                }
                Step::TimedOut => {
                    // openraft starts a new stream after an error; what was written is resent.
                    self.sent.clear();
                    let e = rpc_error(&self.addr, ClientError::Timeout(self.timeout));
                    return Some((Err(e), false));
                }
                Step::Request(None) => self.input = None,
                Step::Request(Some(rpc)) => {
                    let sent =
                        write_append(&self.peers, &self.addr, self.group, self.timeout, rpc).await;
                    if self.sent.is_empty() {
                        self.restart_clock();
                    }
                    self.sent.push_back(sent);
                }
            }
        }
    }
}

/// Writes one append; its answer (an error right away if it could not be written within
/// `timeout`: the connection's in-flight slots may all be taken by a stalled peer).
async fn write_append(
    peers: &Peers,
    addr: &str,
    group: u64,
    timeout: Duration,
    rpc: AppendEntriesRequest<TypeConfig>,
) -> Sent {
    let prev = rpc.prev_log_id;
    let last = rpc.entries.last().map(|e| e.log_id).or(prev);
    let body = match encode_append(&rpc) {
        Ok(body) => body,
        Err(e) => return failed(bad_answer(e)),
    };
    drop(rpc);
    let bytes = body.iter().map(Bytes::len).sum();
    let req = Request::Raft(RaftRequest {
        group,
        kind: KIND_APPEND,
        body,
    });
    let pending = match tokio::time::timeout(timeout, peers.client.submit_to(addr, &req)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return failed(rpc_error(addr, e)),
        Err(_) => return failed(rpc_error(addr, ClientError::Timeout(timeout))),
    };
    let addr = addr.to_string();
    let answer = Box::pin(async move {
        let resp = match raft_body(&addr, pending.await)
            .and_then(|b| decode_append_response(b).map_err(bad_answer))
        {
            Ok(resp) => resp,
            Err(e) => return (Err(e), false),
        };
        match resp {
            AppendEntriesResponse::Success => (Ok(Ok(last)), true),
            AppendEntriesResponse::PartialSuccess(m) => (Ok(Ok(m)), m == last),
            AppendEntriesResponse::Conflict => match prev {
                Some(p) => (Ok(Err(StreamAppendError::Conflict(p))), false),
                None => (Err(bad_answer("conflict before the first entry")), false),
            },
            AppendEntriesResponse::HigherVote(v) => {
                (Ok(Err(StreamAppendError::HigherVote(v))), false)
            }
        }
    });
    Sent { answer, bytes }
}

fn failed(e: RPCError<TypeConfig>) -> Sent {
    Sent {
        answer: Box::pin(std::future::ready((Err(e), false))),
        bytes: 0,
    }
}

/// A snapshot being received: the staging log and the next chunk expected.
#[derive(Debug)]
struct Staging {
    log: PartitionLog,
    next_seq: u64,
    /// The vote the transfer started under; every chunk and the end must carry it.
    vote: Vote,
    /// Raft position of the last staged batch.
    last: Option<(u64, u64)>,
}

/// One group as the receiving side sees it.
#[derive(Debug)]
pub struct GroupEntry {
    pub raft: RaftHandle,
    pub log: Arc<GroupLog>,
    pub activity: Arc<super::activity::Activity>,
    staging: tokio::sync::Mutex<Option<Staging>>,
}

impl GroupEntry {
    pub fn new(
        raft: RaftHandle,
        log: Arc<GroupLog>,
        activity: Arc<super::activity::Activity>,
    ) -> GroupEntry {
        GroupEntry {
            raft,
            log,
            activity,
            staging: tokio::sync::Mutex::new(None),
        }
    }

    fn staging_dir(&self) -> std::path::PathBuf {
        self.log.staging_dir()
    }
}

/// Every raft group running on this broker, by group id.
#[derive(Debug, Default)]
pub struct RaftRegistry {
    groups: RwLock<HashMap<u64, Arc<GroupEntry>>>,
}

type Coded = (ErrorCode, String);

fn invalid(e: impl std::fmt::Display) -> Coded {
    (ErrorCode::INVALID_REQUEST, e.to_string())
}

impl RaftRegistry {
    pub fn insert(&self, id: u64, entry: Arc<GroupEntry>) {
        self.groups
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, entry);
    }

    pub fn remove(&self, id: u64) -> Option<Arc<GroupEntry>> {
        self.groups
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
    }

    pub fn get(&self, id: u64) -> Option<Arc<GroupEntry>> {
        self.groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    pub fn all(&self) -> Vec<(u64, Arc<GroupEntry>)> {
        self.groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }

    /// Handles one raft message from a peer other than an append (those keep their order through
    /// [`super::append_pipeline::AppendPipelines`]); the answer body, or an error for the frame.
    pub async fn handle(&self, req: RaftRequest) -> Result<Bytes, Coded> {
        let Some(g) = self.get(req.group) else {
            // Not created here yet (its metadata has not arrived) or deleted: the sender retries.
            return Err((
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                format!("raft group {} is not on this broker", req.group),
            ));
        };
        let fatal = |e: &dyn std::fmt::Display| (ErrorCode::BROKER_SHUTTING_DOWN, e.to_string());
        let body = req.body_bytes();
        match req.kind {
            KIND_APPEND => Err(invalid(
                "appends go through the connection's append pipeline",
            )),
            KIND_VOTE => {
                // An election is under way: take part with a running timer.
                g.activity.touch(&g.raft);
                let rpc = decode_vote(body).map_err(invalid)?;
                let resp = g.raft.vote(rpc).await.map_err(|e| fatal(&e))?;
                Ok(encode_vote_response(&resp))
            }
            KIND_PRE_VOTE => {
                let rpc = decode_vote(body).map_err(invalid)?;
                let resp = g.raft.pre_vote(rpc).await.map_err(|e| fatal(&e))?;
                Ok(encode_vote_response(&resp))
            }
            KIND_SNAPSHOT_CHUNK => {
                g.activity.touch(&g.raft);
                let chunk = decode_snapshot_chunk(body).map_err(invalid)?;
                self.stage_chunk(&g, chunk).await
            }
            KIND_SNAPSHOT_DONE => {
                let (vote, body) = decode_snapshot_done(body).map_err(invalid)?;
                let (meta, state) = decode_snapshot(body).map_err(invalid)?;
                let staging = g.staging.lock().await.take();
                let Some(staging) = staging else {
                    return Err(invalid("snapshot finished without its segments"));
                };
                let dir = staging.log.dir().to_path_buf();
                // The staged log must be exactly the leader's log up to the snapshot, sent under
                // this vote: otherwise nothing is installed.
                let last = meta.last_log_id.map(|l| (super::term_of(&l), l.index));
                let complete = staging.vote == vote
                    && staging.log.log_end_offset() == state.high_watermark
                    && (staging.last.is_none() || staging.last == last);
                let log = staging.log.clone();
                let closed = tokio::task::spawn_blocking(move || log.close()).await;
                if !complete || !matches!(closed, Ok(Ok(()))) {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(invalid(
                        "the staged segments do not match the snapshot; not installed",
                    ));
                }
                let snapshot = openraft::Snapshot {
                    meta,
                    snapshot: SnapshotData {
                        state,
                        staged: Some(dir),
                    },
                };
                let resp = g
                    .raft
                    .install_full_snapshot(vote, snapshot)
                    .await
                    .map_err(|e| fatal(&e))?;
                // Raft may have ignored it (already committed here): nothing stays staged.
                let staged = g.staging_dir();
                if staged.exists() {
                    let _ = std::fs::remove_dir_all(&staged);
                }
                Ok(encode_vote_only(&resp.vote))
            }
            other => Err(invalid(format!("unknown raft message kind {other}"))),
        }
    }

    async fn stage_chunk(&self, g: &GroupEntry, chunk: SnapshotChunk) -> Result<Bytes, Coded> {
        let mut staging = g.staging.lock().await;
        let storage = |e: sluice_storage::StorageError| (ErrorCode::STORAGE_ERROR, e.to_string());
        // Nothing older than the vote this replica has seen may replace its staging.
        if g.raft.metrics().borrow_watched().vote > chunk.vote {
            return Err(invalid("snapshot chunk from an outdated leader"));
        }
        if chunk.seq == 0 {
            let dir = g.staging_dir();
            *staging = None;
            let start = chunk.start_offset;
            let log = tokio::task::spawn_blocking(move || {
                let _ = std::fs::remove_dir_all(&dir);
                let (log, _) = PartitionLog::open(&dir, LogConfig::default())?;
                log.reset(start)?;
                Ok::<_, sluice_storage::StorageError>(log)
            })
            .await
            .map_err(|e| (ErrorCode::UNKNOWN, e.to_string()))?
            .map_err(storage)?;
            *staging = Some(Staging {
                log,
                next_seq: 0,
                vote: chunk.vote,
                last: None,
            });
        }
        let Some(st) = staging.as_mut() else {
            return Err(invalid("snapshot chunk without a first chunk"));
        };
        if chunk.seq != st.next_seq || chunk.vote != st.vote {
            *staging = None;
            return Err(invalid(
                "snapshot chunk out of order or from another leader",
            ));
        }
        for b in RecordBatch::iter_all(chunk.batches) {
            let b = b.map_err(invalid)?;
            let h = *b.header();
            // Each batch keeps its offset (a compacted log has gaps); going backwards is refused.
            if let Err(e) = st
                .log
                .append_batch_at_own_offset(&b, h.raft_term, h.raft_index)
            {
                *staging = None;
                return Err(invalid(format!("snapshot batches out of order: {e}")));
            }
            st.last = Some((h.raft_term, h.raft_index));
        }
        st.next_seq += 1;
        Ok(encode_vote_only(&chunk.vote))
    }
}
