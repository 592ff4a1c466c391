//! One partition as the request handlers see it: a raft group over the partition's segment log.
//! Produce proposes batches to the group (on its leader); fetch reads below the high watermark (the
//! commit point); waiting fetches watch the high watermark.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::wire::{Acks, ErrorCode};
use sluice_protocol::RecordBatch;
use sluice_storage::{PartitionLog, ReadResult, StorageError};
use tokio::sync::{oneshot, watch};

use crate::cluster::group::Group;
use crate::cluster::metadata::not_leader;
use crate::raft::{Proposal, TypeConfig};

/// A partition hosted by this broker (one of its replicas).
#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub id: u32,
    pub group: Group,
    /// Bumped on every high-watermark move of any partition, for fetches that span several.
    any_tx: Arc<watch::Sender<u64>>,
}

/// An error code and the message that goes with it to the client.
pub type CodedError = (ErrorCode, String);

pub fn storage_error_code(e: &StorageError) -> ErrorCode {
    match e {
        StorageError::InvalidBatch(_)
        | StorageError::BatchLength { .. }
        | StorageError::EmptyBatch => ErrorCode::CORRUPT_MESSAGE,
        StorageError::OffsetOutOfRange { .. } => ErrorCode::OFFSET_OUT_OF_RANGE,
        StorageError::Closed => ErrorCode::BROKER_SHUTTING_DOWN,
        StorageError::NotBatchBoundary(_) | StorageError::Config(_) => ErrorCode::INVALID_REQUEST,
        _ => ErrorCode::STORAGE_ERROR,
    }
}

fn coded(e: StorageError) -> CodedError {
    (storage_error_code(&e), e.to_string())
}

type CompleteRx = oneshot::Receiver<openraft::raft::ClientWriteResult<TypeConfig>>;

/// Batches proposed to a partition's group, waiting for what their acks level needs.
#[derive(Debug)]
pub struct PendingAppend {
    acks: Vec<oneshot::Receiver<Range<u64>>>,
    commits: Vec<CompleteRx>,
    leader_hint: Option<String>,
}

impl PendingAppend {
    /// Waits for the leader's append of every batch (and, for acks `all`, their commit) and
    /// returns the first base offset. A lost leadership comes back as `NOT_LEADER`.
    pub async fn wait(self, timeout: Duration) -> Result<u64, CodedError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || {
            (
                ErrorCode::REQUEST_TIMED_OUT,
                format!("not replicated within {timeout:?}"),
            )
        };
        let mut first = None;
        for rx in self.acks {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(range)) => {
                    first.get_or_insert(range.start);
                }
                Ok(Err(_)) => return Err(not_leader(self.leader_hint.clone())),
                Err(_) => return Err(timed_out()),
            }
        }
        for rx in self.commits {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err(e))) => {
                    return Err(not_leader(match e {
                        openraft::errors::ClientWriteError::ForwardToLeader(f)
                        | openraft::errors::ClientWriteError::LogEntryDiscarded(f) => {
                            f.leader_node.map(|n| n.addr)
                        }
                        _ => None,
                    }))
                }
                Ok(Err(_)) => return Err(not_leader(self.leader_hint.clone())),
                Err(_) => return Err(timed_out()),
            }
        }
        first.ok_or_else(|| (ErrorCode::CORRUPT_MESSAGE, "empty record set".into()))
    }
}

impl Partition {
    pub fn new(topic: String, id: u32, group: Group, any_tx: Arc<watch::Sender<u64>>) -> Partition {
        // Fetches spanning partitions wake on any high-watermark move.
        let mut rx = group.high_watermark.subscribe();
        let any = any_tx.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                any.send_modify(|g| *g = g.wrapping_add(1));
            }
        });
        Partition {
            topic,
            id,
            group,
            any_tx,
        }
    }

    /// Proposes every batch in `records` (whole batches back to back) to the partition's group, in
    /// order. All batches are checked before any is proposed, so a bad batch rejects the whole set.
    /// Only the leader accepts; others answer `NOT_LEADER` with the leader's address.
    pub async fn propose(&self, records: &Bytes, acks: Acks) -> Result<PendingAppend, CodedError> {
        let batches = RecordBatch::iter_all(records.clone())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| (ErrorCode::CORRUPT_MESSAGE, e.to_string()))?;
        if batches.is_empty() {
            return Err((ErrorCode::CORRUPT_MESSAGE, "empty record set".into()));
        }
        // Control batches are the broker's own (raft's blank and membership entries); a batch
        // without records cannot be stored.
        if let Some(b) = batches
            .iter()
            .find(|b| b.header().is_control() || b.header().record_count == 0)
        {
            return Err((
                ErrorCode::INVALID_REQUEST,
                if b.header().is_control() {
                    "producers may not send control batches".into()
                } else {
                    "a batch holds no records".into()
                },
            ));
        }
        if !self.group.is_leader() {
            return Err(not_leader(self.group.leader_addr()));
        }
        self.group.touch();
        let mut pending = PendingAppend {
            acks: Vec::with_capacity(batches.len()),
            commits: Vec::new(),
            leader_hint: None,
        };
        for batch in batches {
            let (tx, rx) = oneshot::channel();
            let responder = if acks == Acks::All {
                let (r, rx) = openraft::impls::ProgressResponder::complete_only();
                pending.commits.push(rx);
                Some(r)
            } else {
                None
            };
            let proposal = Proposal {
                batch,
                ack: Some(tx),
                stored: false,
            };
            self.group
                .raft
                .client_write_ff(proposal, responder)
                .await
                .map_err(|e| (ErrorCode::BROKER_SHUTTING_DOWN, e.to_string()))?;
            pending.acks.push(rx);
        }
        Ok(pending)
    }

    /// Reads committed batches (below the high watermark) from `offset`. Only the leader serves
    /// reads, so consumers see one replica's view.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<ReadResult, CodedError> {
        if !self.group.is_leader() {
            return Err(not_leader(self.group.leader_addr()));
        }
        self.log()
            .read_below(offset, max_bytes, self.high_watermark())
            .map_err(coded)
    }

    pub fn log(&self) -> &PartitionLog {
        &self.group.log.log
    }

    pub fn high_watermark(&self) -> u64 {
        *self.group.high_watermark.borrow()
    }

    pub fn log_start_offset(&self) -> u64 {
        self.log().log_start_offset()
    }

    /// Waits until the high watermark passes `offset` or `deadline` is reached.
    pub async fn wait_beyond(&self, offset: u64, deadline: Instant) {
        let mut rx = self.group.high_watermark.subscribe();
        let wait = async {
            loop {
                if *rx.borrow_and_update() > offset {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout_at(deadline.into(), wait).await;
    }

    /// Signals fetches waiting on any partition (used after deletion).
    pub fn poke(&self) {
        self.any_tx.send_modify(|g| *g = g.wrapping_add(1));
    }
}
