//! Proposing produced batches to a partition's raft group, and waiting for what the acks level
//! promises. Batches are checked whole, admitted by the partition state in proposal order, then
//! handed to raft in that same order; nothing here waits for a commit before the next proposal.

use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;
use sluice_protocol::wire::{Acks, ErrorCode};
use sluice_protocol::RecordBatch;
use tokio::sync::oneshot;

use super::state::Admission;
use super::{Leadership, Replica};
use crate::error::{Result, ServiceError};
use crate::metrics::Latency;
use crate::raft::partition_state::Ticket;
use crate::raft::{Proposal, TypeConfig};

type CompleteRx = oneshot::Receiver<openraft::raft::ClientWriteResult<TypeConfig>>;

/// Batches proposed to a partition's group, waiting for what their acks level needs.
#[derive(Debug)]
pub struct PendingAppend {
    acks: Vec<oneshot::Receiver<Range<u64>>>,
    commits: Vec<CompleteRx>,
    /// Duplicates of batches already in the log, with acks `all`: committed once the high
    /// watermark reaches the largest of these (watched only when there is one).
    committed_by: Option<(u64, tokio::sync::watch::Receiver<u64>)>,
    leader_hint: Option<String>,
    /// When the first of `commits` was handed to raft, and the partition's commit latency
    /// histogram, which records how long they took to commit.
    commit_timer: Option<(Instant, Latency)>,
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
        if let Some((at, latency)) = &self.commit_timer {
            latency.record(at.elapsed());
        }
        if let Some((end, mut hw)) = self.committed_by {
            let reached = async {
                while *hw.borrow_and_update() < end {
                    if hw.changed().await.is_err() {
                        return false;
                    }
                }
                true
            };
            match tokio::time::timeout_at(deadline, reached).await {
                Ok(true) => {}
                Ok(false) => return Err(ServiceError::not_leader(self.leader_hint.clone())),
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
    let deadline = tokio::time::Instant::now() + IN_FLIGHT_WAIT;
    // Subscribed only once a copy is found in flight (rare), then decided again before waiting,
    // so a move between the first try and the subscription is not missed.
    let mut watches = None;
    loop {
        if let Some(pending) = propose_once(replica, &batches, acks).await? {
            return Ok(pending);
        }
        let Some((hw, drops)) = watches.as_mut() else {
            watches = Some((
                replica.group.high_watermark.subscribe(),
                replica.group.log.state().drops(),
            ));
            continue;
        };
        // A copy of one of these batches is still on its way into the log: its outcome is this
        // request's. Wait until the log moves (it is appended and committed, or a new term drops
        // it) or raft drops a proposal (perhaps that copy), then decide again: a duplicate then,
        // or admitted afresh.
        let moved = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                r = hw.changed() => r,
                r = drops.changed() => r,
            }
        })
        .await;
        if !matches!(moved, Ok(Ok(()))) {
            return Err(ServiceError::new(
                ErrorCode::REQUEST_TIMED_OUT,
                "a copy of this batch is still in flight; retry it",
            ));
        }
    }
}

/// Proposes the broker's own control batches (window operator marks) with acks `all`: whole,
/// valid batches, each a control batch (a programmer error otherwise).
pub(super) async fn propose_control(replica: &Replica, records: &Bytes) -> Result<PendingAppend> {
    let batches = RecordBatch::iter_all(records.clone())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServiceError::new(ErrorCode::CORRUPT_MESSAGE, e.to_string()))?;
    assert!(
        !batches.is_empty() && batches.iter().all(|b| b.header().is_control()),
        "propose_control takes control batches only"
    );
    // Control batches belong to no producer: admission always proposes them.
    match propose_once(replica, &batches, Acks::All).await? {
        Some(pending) => Ok(pending),
        None => panic!("a control batch was found in flight: they have no producer"),
    }
}

/// Makes sure raft will take this leader's writes: it refuses them (and drops them, so their
/// admissions would stay "in flight" for the rest of the term and every copy of such a batch would
/// wait for it in vain) once no quorum has acknowledged the leader within its lease (the election
/// timeout's maximum). A parked leader sends no heartbeats, so its lease lapses soon after it
/// parks. A leader whose last quorum acknowledgement is older than half the lease sends a heartbeat
/// round and waits (at most a lease) until a quorum answers it, which renews the lease; half, so
/// that the rest covers the hand-off to raft. A single voter is its own quorum.
async fn confirm_lease(replica: &Replica) -> Result<()> {
    let raft = &replica.group.raft;
    let lease = Duration::from_millis(raft.config().election_timeout_max);
    let fresh = {
        let m = raft.metrics();
        let m = m.borrow_watched();
        m.membership_config.membership().voter_ids().count() == 1
            || m.last_quorum_acked
                .as_ref()
                .is_some_and(|acked| acked.elapsed() < lease / 2)
    };
    if fresh {
        return Ok(());
    }
    match raft
        .get_read_linearizer(openraft::LinearizerOption::new(Some(lease / 2), true))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => Err(match e.api_error() {
            Some(openraft::errors::LinearizableReadError::ForwardToLeader(f)) => {
                ServiceError::not_leader(f.leader_node.as_ref().map(|n| n.addr.clone()))
            }
            // Likely deposed by now: clients look the leader up again.
            Some(openraft::errors::LinearizableReadError::QuorumNotEnough(q)) => ServiceError::new(
                ErrorCode::NOT_LEADER,
                format!("not the leader: no quorum of replicas confirms it ({q})"),
            ),
            None => ServiceError::shutting_down(e.to_string()),
        }),
    }
}

/// How long a produce whose batch copies one still being proposed waits for that copy's outcome.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(10);

/// Admits and proposes `batches`; `None` if one of them is a copy of a batch still in flight (then
/// nothing of the request is proposed).
async fn propose_once(
    replica: &Replica,
    batches: &[RecordBatch],
    acks: Acks,
) -> Result<Option<PendingAppend>> {
    if !replica.is_leader() {
        return Err(ServiceError::not_leader(replica.leader_addr()));
    }
    let group = &replica.group;
    group.touch();
    let mut pending = PendingAppend {
        acks: Vec::with_capacity(batches.len()),
        commits: Vec::new(),
        committed_by: None,
        leader_hint: None,
        commit_timer: None,
    };
    // Admission and hand-off happen in one order for every proposer of this partition. Every batch
    // is admitted before any is proposed, so a refusal leaves none of the request in the log.
    let mut order = replica.propose_order.lock().await;
    // A leader handing over takes no writes for the rest of its term: admit nothing it would drop.
    if replica
        .transfer
        .handing_over(replica.leadership_now().term())
    {
        return Err(ServiceError::not_leader(None));
    }
    // Under the order lock: nothing queued behind other proposals ages the lease checked here.
    confirm_lease(replica).await?;
    let admissions = {
        let shared = group.log.state();
        let mut state = shared.lock();
        if let Leadership::Leader { term } = replica.leadership_now() {
            if *order != term {
                // Proposals admitted in an earlier term that never reached the log never will.
                state.leader_reset();
                *order = term;
            }
        }
        let mut admissions = Vec::with_capacity(batches.len());
        let mut proposed: Vec<&RecordBatch> = Vec::new();
        for batch in batches {
            let ticket = shared.ticket();
            let a = match state.admit(batch, ticket.number()) {
                Ok(a) => a,
                Err((code, msg)) => {
                    // Batches of this request admitted before the refusal are never proposed.
                    state.unadmit(&proposed);
                    settle_all(admissions);
                    ticket.settle();
                    return Err(ServiceError::new(code, msg));
                }
            };
            match a {
                Admission::InFlight => {
                    state.unadmit(&proposed);
                    settle_all(admissions);
                    ticket.settle();
                    return Ok(None);
                }
                Admission::Propose => {
                    proposed.push(batch);
                    admissions.push((a, Some(ticket)));
                }
                Admission::Duplicate(_) => {
                    ticket.settle();
                    admissions.push((a, None));
                }
            }
        }
        admissions
    };
    for (batch, (admission, ticket)) in batches.iter().zip(admissions) {
        let (tx, rx) = oneshot::channel();
        if let Admission::Duplicate(offsets) = admission {
            // Already in the log: answer with its offsets, once committed for acks `all`.
            if acks == Acks::All {
                let (end, _) = pending
                    .committed_by
                    .get_or_insert_with(|| (0, group.high_watermark.subscribe()));
                *end = (*end).max(offsets.end);
            }
            let _ = tx.send(offsets);
            pending.acks.push(rx);
            continue;
        }
        let responder = if acks == Acks::All {
            let (r, rx) = openraft::impls::ProgressResponder::complete_only();
            pending.commits.push(rx);
            pending.commit_timer.get_or_insert_with(|| {
                (Instant::now(), replica.metrics().commit_latency().clone())
            });
            Some(r)
        } else {
            None
        };
        let proposal = Proposal {
            batch: batch.clone(),
            ticket,
            ack: Some(tx),
            stored: false,
        };
        if let Err(e) = hand_off(replica, proposal, responder).await {
            group.log.state().lock().leader_reset();
            return Err(ServiceError::shutting_down(e.to_string()));
        }
        // Produced records count once, when first proposed (a duplicate is answered above);
        // control batches are the broker's own (operator marks), not produced records.
        if !batch.header().is_control() {
            replica
                .metrics()
                .produced(batch.as_bytes().len(), batch.header().record_count);
        }
        pending.acks.push(rx);
    }
    drop(order);
    Ok(Some(pending))
}

/// The tickets of admissions that will not be proposed (their request was refused or must wait):
/// nothing to record for them.
fn settle_all(admissions: Vec<(Admission, Option<Ticket>)>) {
    for t in admissions.into_iter().filter_map(|(_, t)| t) {
        t.settle();
    }
}

/// Hands a proposal to raft. Tests can make raft drop the next ones (`Replica::refuse_next`).
async fn hand_off(
    replica: &Replica,
    proposal: Proposal,
    responder: Option<openraft::type_config::alias::WriteResponderOf<TypeConfig>>,
) -> std::result::Result<(), openraft::errors::Fatal<TypeConfig>> {
    #[cfg(test)]
    if replica
        .refuse_next
        .fetch_update(
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
            |n| n.checked_sub(1),
        )
        .is_ok()
    {
        // Expecting the leader of term 0, which no group has: raft answers ForwardToLeader and
        // drops the proposal without storing it, as when a leader loses its lease.
        let write = replica.group.raft.write(proposal).with_leader(0u64);
        return match responder {
            Some(r) => write.responder(r).await,
            None => write.await,
        };
    }
    replica
        .group
        .raft
        .client_write_ff(proposal, responder)
        .await
}
