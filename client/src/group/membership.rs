//! What the consumer and its heartbeat task share about the membership: the member id and epoch,
//! the coordinator's latest assignment, the partitions the consumer owns now and those it is
//! releasing (both reported as owned in every heartbeat), the processing deadline, losses, and a
//! heartbeat failure for `poll` to return. It holds the pure rules the three sides (the consumer,
//! the heartbeat task, a revocation's background commit) apply to it: a heartbeat answer, a loss,
//! publishing what is owned, starting and finishing a release, the deadline in ms. It never sends
//! anything and never touches the fetching consumer.
//!
//! Releasing: a revoked partition is no longer read, but the coordinator must not hand it to a new
//! owner before its final offset is committed, or that owner would start from an older commit. So
//! from its revocation until its commit has finished (either way) it sits in
//! [`Membership::releasing`] and is still reported as owned; the consumer's own list
//! ([`Membership::owned`], rewritten by every publish) is kept apart so that a publish cannot end a
//! release early. Finishing one wakes the heartbeat task, so the coordinator hears it at once.
//!
//! A loss (fenced, evicted, or no answer within the session) bumps [`Membership::lost`]: the
//! consumer compares it with the count it last handled to drop its partitions without committing.
//! It clears what is owned and releasing (nothing is owned any more; a release's commit would be
//! refused). An answer to a request made before a loss is ignored, and so is a publish, the start or
//! the end of a release under the count from before it, so none can revive the old membership.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use sluice_protocol::wire::{GroupHeartbeatResponse, TopicPartitions};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::connection::lock;
use crate::error::ClientError;

/// A topic partition.
pub(crate) type Tp = (String, u32);

/// The membership as both sides see it.
#[derive(Debug)]
pub(super) struct Membership {
    /// Empty until the coordinator names the member.
    pub(super) member_id: String,
    /// 0 while (re)joining.
    pub(super) epoch: i32,
    /// Losses so far.
    pub(super) lost: u64,
    /// The coordinator's latest answer: what the member may own now. `None` before the first
    /// answer of this membership.
    pub(super) assigned: Option<BTreeSet<Tp>>,
    /// What the consumer owns now (reading, or looking up where to start); written by the
    /// consumer, cleared by a loss.
    pub(super) owned: BTreeSet<Tp>,
    /// Revoked partitions whose final commit has not finished: still reported as owned. Added by a
    /// revocation, removed by its commit's end, cleared by a loss.
    pub(super) releasing: BTreeSet<Tp>,
    /// The processing deadline the member promises.
    pub(super) deadline: Instant,
    /// How often to heartbeat, as the coordinator said.
    pub(super) interval: Duration,
    /// The session the coordinator granted (`None` until it said).
    pub(super) session: Option<Duration>,
    /// A heartbeat failure `poll` has to return (the heartbeat task has stopped).
    pub(super) failure: Option<ClientError>,
}

/// The membership and the two signals between the consumer and its heartbeat task.
#[derive(Debug)]
pub(super) struct Shared {
    state: Mutex<Membership>,
    /// Heartbeat now: partitions were released, the deadline moved, or a join is wanted.
    pub(super) wake: Notify,
    /// The assignment changed, the membership was lost, the heartbeat task failed, or a release
    /// finished (a partition assigned back meanwhile may start now).
    pub(super) changed: Notify,
}

/// Until the coordinator says otherwise.
pub(super) const DEFAULT_INTERVAL: Duration = Duration::from_secs(3);

impl Shared {
    pub(super) fn new(deadline: Instant) -> Shared {
        Shared {
            state: Mutex::new(Membership {
                member_id: String::new(),
                epoch: 0,
                lost: 0,
                assigned: None,
                owned: BTreeSet::new(),
                releasing: BTreeSet::new(),
                deadline,
                interval: DEFAULT_INTERVAL,
                session: None,
                failure: None,
            }),
            wake: Notify::new(),
            changed: Notify::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Membership> {
        lock(&self.state)
    }

    /// Applies a successful heartbeat answer to a request made while `lost` losses had happened;
    /// ignored (false) if the membership was lost since.
    pub(super) fn answered(&self, lost: u64, r: &GroupHeartbeatResponse) -> bool {
        let mut m = self.lock();
        if m.lost != lost {
            return false;
        }
        debug_assert!(r.error.is_ok());
        let assigned = flatten(&r.assignment);
        if m.member_id != r.member_id {
            info!(member = %r.member_id, epoch = r.member_epoch, "joined the group");
        }
        m.member_id.clone_from(&r.member_id);
        m.epoch = r.member_epoch;
        if r.heartbeat_interval_ms > 0 {
            m.interval = Duration::from_millis(r.heartbeat_interval_ms.into());
        }
        if r.session_timeout_ms > 0 {
            m.session = Some(Duration::from_millis(r.session_timeout_ms.into()));
        }
        let changed = m.assigned.as_ref() != Some(&assigned);
        m.assigned = Some(assigned);
        drop(m);
        if changed {
            self.changed.notify_one();
        }
        true
    }

    /// The membership is gone (`why`): the consumer must drop its partitions without committing,
    /// and the next heartbeat joins again. Ignored if a loss happened since `lost` was read (one
    /// loss, one drop).
    pub(super) fn lose(&self, lost: u64, why: &str) {
        let mut m = self.lock();
        if m.lost != lost {
            return;
        }
        warn!(member = %m.member_id, epoch = m.epoch, why, "group membership lost; partitions dropped without commit");
        m.lost += 1;
        m.member_id.clear();
        m.epoch = 0;
        m.assigned = None;
        m.owned.clear();
        m.releasing.clear();
        drop(m);
        self.changed.notify_one();
        self.wake.notify_one();
    }

    /// The consumer owns `owned` now (releases apart), as it knew the membership after `seen_lost`
    /// losses; ignored if a loss happened since (handling it publishes again).
    pub(super) fn publish(&self, seen_lost: u64, owned: BTreeSet<Tp>) {
        let mut m = self.lock();
        if m.lost == seen_lost {
            m.owned = owned;
        }
    }

    /// Revoked `partitions` are released only once their final commit has finished; meanwhile the
    /// consumer owns `owned`. One step, so no heartbeat sees them in neither set. Ignored (false)
    /// if a loss happened since `seen_lost`: nothing is owned then, and the commit will be refused.
    pub(super) fn start_release(
        &self,
        seen_lost: u64,
        partitions: &BTreeSet<Tp>,
        owned: BTreeSet<Tp>,
    ) -> bool {
        let mut m = self.lock();
        if m.lost != seen_lost {
            return false;
        }
        m.releasing.extend(partitions.iter().cloned());
        m.owned = owned;
        true
    }

    /// The final commit of `partitions`, started after `lost` losses, has finished: they are
    /// released, and the heartbeat task is woken so the coordinator hears it now (and `poll`, which
    /// may start one assigned back meanwhile). After a loss there is nothing left to release: a
    /// later release of the same partitions (a new membership's) is not cut short.
    pub(super) fn finish_release(&self, lost: u64, partitions: &BTreeSet<Tp>) {
        let mut m = self.lock();
        if m.lost != lost {
            return;
        }
        m.releasing.retain(|tp| !partitions.contains(tp));
        drop(m);
        self.wake.notify_one();
        self.changed.notify_one();
    }

    /// The heartbeat task stopped on `e`; `poll` returns it.
    pub(super) fn fail(&self, e: ClientError) {
        self.lock().failure = Some(e);
        self.changed.notify_one();
    }

    /// Moves the processing deadline to `at` if that is later.
    pub(super) fn extend_deadline(&self, at: Instant) {
        let mut m = self.lock();
        if at > m.deadline {
            m.deadline = at;
        }
    }
}

impl Membership {
    /// What a heartbeat reports as owned: what the consumer owns and what it is still releasing.
    pub(super) fn reported(&self) -> BTreeSet<Tp> {
        self.owned.union(&self.releasing).cloned().collect()
    }
}

/// The processing deadline as a heartbeat carries it: ms from `now`, at least 1 (0 would mean no
/// deadline; one already passed gets the member evicted, as it should), at most `u32::MAX`.
pub(super) fn deadline_ms(deadline: Instant, now: Instant) -> u32 {
    let left = deadline.saturating_duration_since(now).as_millis();
    left.clamp(1, u32::MAX as u128) as u32
}

/// Wire topic partitions as a set.
pub(super) fn flatten(v: &[TopicPartitions]) -> BTreeSet<Tp> {
    TopicPartitions::flatten(v)
}

/// A set of topic partitions for the wire, grouped by topic (in order).
pub(super) fn by_topic<'a>(tps: impl IntoIterator<Item = &'a Tp>) -> Vec<TopicPartitions> {
    TopicPartitions::group(tps)
}
