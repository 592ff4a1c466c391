//! Proposing produced batches to a partition's raft group, and waiting for what the acks level
//! promises. Batches are checked whole, admitted by the partition state in proposal order, then
//! handed to raft in that same order; nothing here waits for a commit before the next proposal.

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::wire::{Acks, ErrorCode};
use sluice_protocol::RecordBatch;
use tokio::sync::oneshot;

use super::Replica;
use crate::error::{Result, ServiceError};
use crate::raft::{Proposal, TypeConfig};

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
    pub async fn wait(self, timeout: Duration) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || {
            ServiceError::new(
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
                Ok(Err(_)) => return Err(ServiceError::not_leader(self.leader_hint.clone())),
                Err(_) => return Err(timed_out()),
            }
        }
        for rx in self.commits {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err(e))) => {
                    return Err(ServiceError::not_leader(match e {
                        openraft::errors::ClientWriteError::ForwardToLeader(f)
                        | openraft::errors::ClientWriteError::LogEntryDiscarded(f) => {
                            f.leader_node.map(|n| n.addr)
                        }
                        _ => None,
                    }))
                }
                Ok(Err(_)) => return Err(ServiceError::not_leader(self.leader_hint.clone())),
                Err(_) => return Err(timed_out()),
            }
        }
        first.ok_or_else(|| ServiceError::new(ErrorCode::CORRUPT_MESSAGE, "empty record set"))
    }
}

/// Checks that `records` is a non-empty run of whole, valid, non-control batches with records.
fn check_batches(records: &Bytes) -> Result<Vec<RecordBatch>> {
    let batches = RecordBatch::iter_all(records.clone())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServiceError::new(ErrorCode::CORRUPT_MESSAGE, e.to_string()))?;
    if batches.is_empty() {
        return Err(ServiceError::new(
            ErrorCode::CORRUPT_MESSAGE,
            "empty record set",
        ));
    }
    // Control batches are the broker's own (raft's blank and membership entries); a batch
    // without records cannot be stored.
    if let Some(b) = batches
        .iter()
        .find(|b| b.header().is_control() || b.header().record_count == 0)
    {
        return Err(ServiceError::invalid(if b.header().is_control() {
            "producers may not send control batches"
        } else {
            "a batch holds no records"
        }));
    }
    Ok(batches)
}

pub(super) async fn propose(
    replica: &Replica,
    records: &Bytes,
    acks: Acks,
) -> Result<PendingAppend> {
    let batches = check_batches(records)?;
    if !replica.is_leader() {
        return Err(ServiceError::not_leader(replica.leader_addr()));
    }
    let group = &replica.group;
    group.touch();
    let mut pending = PendingAppend {
        acks: Vec::with_capacity(batches.len()),
        commits: Vec::new(),
        leader_hint: None,
    };
    // Admission and hand-off happen in one order for every proposer of this partition. Every batch
    // is admitted before any is proposed, so a refusal leaves none of the request in the log.
    let _order = replica.propose_order.lock().await;
    {
        let mut state = group.log.state().lock();
        for batch in &batches {
            state
                .admit(batch)
                .map_err(|(code, msg)| ServiceError::new(code, msg))?;
        }
    }
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
        group
            .raft
            .client_write_ff(proposal, responder)
            .await
            .map_err(|e| ServiceError::shutting_down(e.to_string()))?;
        pending.acks.push(rx);
    }
    Ok(pending)
}
