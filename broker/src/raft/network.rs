//! Raft RPCs between brokers over the broker's own protocol: [`Request::Raft`] frames carrying the
//! group id, on one multiplexed connection per peer broker (a `sluice_client::Client` keeps one
//! connection per address and reconnects after failures).
//!
//! Sending side: [`NetworkFactory`] (one per group) makes a [`PeerNetwork`] per target node.
//! Receiving side: [`RaftRegistry::handle`] finds the group and hands the decoded message to its
//! `Raft`. Snapshots move as a stream of whole batches from the leader's retained log (bounded
//! chunks), staged beside the follower's log, then installed (see `state_machine`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::Stream;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use sluice_client::{Client, ClientConfig, ClientError};
use sluice_protocol::wire::{RaftRequest, Request, Response};

use super::codec::*;
use super::log_store::GroupLog;
use super::state_machine::{encode_snapshot, GroupSm, SnapshotData};
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

    /// Whether the broker at `addr` answers a ping (ApiVersions, the smallest request every broker
    /// answers) within `timeout`, on the shared peer connection.
    pub async fn ping(&self, addr: &str, timeout: Duration) -> bool {
        self.client
            .request_to_with_timeout(addr, &Request::ApiVersions, timeout)
            .await
            .is_ok()
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
pub(super) fn raft_body(
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

pub(super) fn rpc_error(addr: &str, e: ClientError) -> RPCError<TypeConfig> {
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
    pub(super) group: u64,
    target: u64,
    pub(super) addr: String,
    pub(super) peers: Peers,
    log: Arc<GroupLog>,
}

pub(super) fn bad_answer(e: impl std::fmt::Display) -> RPCError<TypeConfig> {
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
                    .read_below_async(offset, SNAPSHOT_CHUNK_BYTES, hw)
                    .await
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

    /// The leader's request that `req.to_node_id()` take over (openraft broadcasts it to every
    /// voter: the target campaigns, the others drop their leader lease so they vote for it).
    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferAnswer, RPCError<TypeConfig>> {
        let answer = self
            .send(
                KIND_TRANSFER_LEADER,
                vec![encode_transfer_leader(&req)],
                &option,
            )
            .await?;
        decode_transfer_answer(answer).map_err(bad_answer)
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

use super::append_stream::{AppendAnswer, AppendStream};
pub use super::registry::{GroupEntry, RaftRegistry};
