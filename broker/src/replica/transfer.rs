//! Handing a partition's leadership to another replica: the leader's side of openraft's leader
//! transfer, with the checks that keep a transfer from hurting the partition. It owns: only a
//! voter that is in sync (it has every entry the leader had when asked, within a bound) is asked to
//! take over; one transfer at a time per partition; no proposal is admitted once raft was asked
//! (such a leader takes no writes for the rest of its term, so an admitted batch would be dropped);
//! and a watchdog that asks again until the term ends, because a leader that has started a transfer
//! also stops heartbeating: a lost transfer message must still end in an election, never in a
//! group whose leader neither writes nor steps down. It never decides *whether* leadership should
//! move (`cluster::rebalance` and the admin service do).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;

use super::leadership::{self, Leadership};
use super::Replica;
use crate::raft::group::Group;

/// How a transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transfer {
    /// The target leads the partition now.
    Moved,
    /// Leadership did not move (or had not yet when the wait ended); the sentence says why.
    NotMoved(String),
}

/// Bounds of one transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferBounds {
    /// How long the target may take to reach the leader's last entry as of the request; past it,
    /// the target is not in sync and nothing is asked of raft.
    pub catch_up: Duration,
    /// How long to wait for the target to take over once raft was asked.
    pub settle: Duration,
}

/// A replica's transfer bookkeeping.
#[derive(Debug, Default)]
pub(super) struct TransferState {
    /// A transfer is being prepared or is under way.
    busy: AtomicBool,
    /// The term in which raft was asked to hand over (0: none; leaders' terms start at 1).
    handing_over: AtomicU64,
}

impl TransferState {
    /// Whether raft was asked to hand over leadership in `term` (no proposal may be admitted).
    pub(super) fn handing_over(&self, term: u64) -> bool {
        term != 0 && self.handing_over.load(Ordering::Acquire) == term
    }

    fn finish(&self) {
        self.handing_over.store(0, Ordering::Release);
        self.busy.store(false, Ordering::Release);
    }
}

/// Clears the transfer state on drop unless [`Busy::keep`] passed it on (to the watchdog).
struct Busy {
    state: Arc<TransferState>,
    kept: bool,
}

impl Busy {
    fn keep(mut self) -> Arc<TransferState> {
        self.kept = true;
        self.state.clone()
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if !self.kept {
            self.state.finish();
        }
    }
}

impl Replica {
    /// Whether a leadership transfer of this partition is being prepared or is under way.
    pub fn transfer_pending(&self) -> bool {
        self.transfer.busy.load(Ordering::Acquire)
    }

    /// Hands leadership to voter `to` if this replica leads, `to` is in sync and no other transfer
    /// is under way; waits (within `bounds.settle`) until `to` leads. Leader only.
    pub async fn transfer_leadership(&self, to: u64, bounds: TransferBounds) -> Transfer {
        let not = |why: String| Transfer::NotMoved(why);
        if self
            .transfer
            .busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return not("a leadership transfer of this partition is already under way".into());
        }
        let busy = Busy {
            state: self.transfer.clone(),
            kept: false,
        };
        let Leadership::Leader { term } = self.leadership_now() else {
            return not("this broker does not lead the partition".into());
        };
        if to == self.group.node_id {
            return not(format!("broker {to} leads already"));
        }
        if !self.voters().contains(&to) {
            return not(format!("broker {to} is not a voter of the partition"));
        }
        // A parked group replicates nothing until woken.
        self.group.touch();
        if let Err(why) = in_sync(&self.group, to, bounds.catch_up).await {
            return not(why);
        }
        {
            // Under the proposal lock: proposals already admitted reach raft before the transfer
            // (one channel, in order), and none is admitted after it (`handing_over`).
            let _order = self.propose_order.lock().await;
            if self.leadership_now() != (Leadership::Leader { term }) {
                return not("this broker lost leadership meanwhile".into());
            }
            self.transfer.handing_over.store(term, Ordering::Release);
            if let Err(e) = self.group.raft.trigger().transfer_leader(to).await {
                return not(format!("raft stopped: {e}"));
            }
        }
        tracing::info!(topic = %self.topic, partition = self.partition, term, to, "leadership transfer started");
        watchdog(
            self.group.clone(),
            busy.keep(),
            to,
            term,
            self.closed.clone(),
        );
        self.handed_over(term, to, bounds.settle).await
    }

    /// Waits until leadership left `term`: `Moved` once `to` leads.
    async fn handed_over(&self, term: u64, to: u64, settle: Duration) -> Transfer {
        let deadline = tokio::time::Instant::now() + settle;
        let mut watch = self.leadership.clone();
        loop {
            match self.leadership_now() {
                Leadership::Follower { leader, .. } if leader == to => return Transfer::Moved,
                Leadership::Follower { leader, .. } => {
                    return Transfer::NotMoved(format!("broker {leader} took over instead of {to}"))
                }
                Leadership::Leader { term: t } if t != term => {
                    return Transfer::NotMoved(format!(
                        "broker {to} did not take over; this broker leads again"
                    ))
                }
                // Still handing over, or an election is under way.
                Leadership::Leader { .. } | Leadership::Unknown { .. } => {}
            }
            match tokio::time::timeout_at(deadline, watch.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Transfer::NotMoved("the replica closed".into()),
                Err(_) => {
                    return Transfer::NotMoved(format!(
                        "broker {to} had not taken over after {settle:?} (the transfer goes on)"
                    ))
                }
            }
        }
    }
}

/// Waits until follower `to` holds everything the leader held when called, for at most `within`.
/// This is what "in sync" means here: a follower that keeps up with a busy leader passes, one
/// that lags by more than `within` of the leader's writes does not.
async fn in_sync(group: &Group, to: u64, within: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + within;
    let mut metrics = group.raft.metrics();
    let goal = metrics.borrow_watched().last_log_index;
    loop {
        let matched = {
            let m = metrics.borrow_watched();
            m.replication
                .as_ref()
                .and_then(|r| r.get(&to).cloned())
                .flatten()
                .map(|l| l.index)
        };
        if matched >= goal {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, metrics.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err("raft stopped".into()),
            Err(_) => {
                return Err(format!(
                    "broker {to} is not in sync: it has entries up to {}, the leader up to {}",
                    index(matched),
                    index(goal)
                ))
            }
        }
    }
}

fn index(i: Option<u64>) -> String {
    i.map_or_else(|| "none".into(), |i| i.to_string())
}

/// Asks raft to hand over again every election timeout while this replica still leads `term`
/// (each request also wakes every voter's election timer), then clears the transfer state.
fn watchdog(
    group: Group,
    state: Arc<TransferState>,
    to: u64,
    term: u64,
    closed: tokio_util::sync::CancellationToken,
) {
    let every = Duration::from_millis(group.raft.config().election_timeout_min);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = closed.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
            if leadership::current(&group.raft) != (Leadership::Leader { term }) {
                break;
            }
            tracing::warn!(
                group = group.id,
                to,
                term,
                "leadership transfer not finished; asking again"
            );
            group.touch();
            if group.raft.trigger().transfer_leader(to).await.is_err() {
                break;
            }
        }
        state.finish();
    });
}
