//! The receiving side of raft RPCs: every group running on this broker, by id, and the handling of
//! one raft message from a peer (votes, leadership transfers, snapshot chunks and their install;
//! appends go through `append_pipeline` to keep their order). An unknown group answers
//! `UNKNOWN_TOPIC_OR_PARTITION` and the sender retries.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use sluice_protocol::wire::{ErrorCode, RaftRequest};
use sluice_protocol::RecordBatch;
use sluice_storage::{LogConfig, PartitionLog};

use super::codec::*;
use super::log_store::GroupLog;
use super::network::RaftHandle;
use super::state_machine::{decode_snapshot, SnapshotData};
use super::Vote;

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
            .unwrap_or_else(|_| super::poisoned("raft registry"))
            .insert(id, entry);
    }

    pub fn remove(&self, id: u64) -> Option<Arc<GroupEntry>> {
        self.groups
            .write()
            .unwrap_or_else(|_| super::poisoned("raft registry"))
            .remove(&id)
    }

    pub fn get(&self, id: u64) -> Option<Arc<GroupEntry>> {
        self.groups
            .read()
            .unwrap_or_else(|_| super::poisoned("raft registry"))
            .get(&id)
            .cloned()
    }

    pub fn all(&self) -> Vec<(u64, Arc<GroupEntry>)> {
        self.groups
            .read()
            .unwrap_or_else(|_| super::poisoned("raft registry"))
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
            KIND_TRANSFER_LEADER => {
                // The leader stops heartbeating while it hands over: every voter runs its election
                // timer again, so a transfer that fails still ends in an election.
                g.activity.touch(&g.raft);
                let rpc = decode_transfer_leader(body).map_err(invalid)?;
                let answer = g
                    .raft
                    .handle_transfer_leader(rpc)
                    .await
                    .map_err(|e| fatal(&e))?;
                Ok(encode_transfer_answer(&answer))
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
