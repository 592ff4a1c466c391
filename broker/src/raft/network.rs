//! Raft RPCs between brokers over the broker's own protocol: [`Request::Raft`] frames carrying the
//! group id, on one multiplexed connection per peer broker (a `sluice_client::Client` keeps one
//! connection per address and reconnects after failures).
//!
//! Sending side: [`NetworkFactory`] (one per group) makes a [`PeerNetwork`] per target node.
//! Receiving side: [`RaftRegistry::handle`] finds the group and hands the decoded message to its
//! `Raft`. Snapshots move as a stream of whole batches from the leader's retained log (bounded
//! chunks), staged beside the follower's log, then installed (see `state_machine`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use sluice_client::{Client, ClientConfig, ClientError};
use sluice_protocol::wire::{ErrorCode, RaftRequest, Request, Response};
use sluice_protocol::RecordBatch;
use sluice_storage::{LogConfig, PartitionLog};

use super::codec::*;
use super::log_store::GroupLog;
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
        match self
            .client
            .request_to_with_timeout(addr, &req, timeout)
            .await
        {
            Ok(Response::Raft(r)) => Ok(r.body),
            Ok(_) => Err(RPCError::Network(NetworkError::from_string(
                "unexpected answer to a raft message",
            ))),
            Err(e) if e.is_connection_error() => Err(RPCError::Unreachable(
                Unreachable::from_string(format!("{addr}: {e}")),
            )),
            Err(e) => Err(RPCError::Network(NetworkError::from_string(format!(
                "{addr}: {e}"
            )))),
        }
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
        let log = &self.log.log;
        let mut offset = log.log_start_offset();
        let start_offset = offset;
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

    /// Handles one raft message from a peer; the answer body, or an error for the frame.
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
            KIND_APPEND => {
                let rpc = decode_append(body).map_err(invalid)?;
                if !rpc.entries.is_empty() {
                    g.activity.touch(&g.raft);
                }
                let resp = g.raft.append_entries(rpc).await.map_err(|e| fatal(&e))?;
                Ok(encode_append_response(&resp))
            }
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
