//! Reconciling what the consumer owns with what the coordinator assigns, from inside `poll`: a
//! loss drops every partition without committing ([`RebalanceListener::on_lost`]); a partition
//! owned but no longer assigned is revoked; a newly assigned partition starts once its committed
//! offset is known (OffsetFetch, retried with backoff, never replaced by the reset policy because
//! of an error), then [`RebalanceListener::on_assigned`].
//!
//! A revocation never waits on the network inside `poll`, so the partitions the member keeps go on
//! delivering records while the coordinator stores the revoked ones' offsets (a round trip through
//! raft, up to a second on a busy broker). Inside `poll` it only takes the revoked partitions'
//! positions (auto-commit on), calls [`RebalanceListener::on_revoked`] (on the caller's task,
//! before the partitions are let go), merges what it adds over the positions, and stops reading
//! them. The merged offsets are committed by a background task chained after any background
//! commit in flight (which may hold older offsets of them and must not land last). Until that
//! commit has finished, successfully or not, the partitions are releasing: still reported as owned
//! in heartbeats, so the coordinator does not hand them on before their final offsets are stored
//! (their next owner starts exactly there); then the task releases them and wakes the heartbeat
//! task, so the coordinator hears it at once. A partition assigned back while still releasing
//! starts only once released, from a lookup that sees that commit. A loss ends every release (the
//! commit would be refused; nothing is owned after a loss). Partitions never read (their start
//! was still being looked up) have nothing to commit and are released at once, as are all when
//! there is nothing to commit and nothing in flight.
//!
//! The listener hears about a partition only between its `on_assigned` and its `on_revoked` or
//! `on_lost`. Nothing here runs outside `poll` (and `close`), so the application's own code and the
//! callbacks never run concurrently (the background commit calls nothing of the application).

use std::collections::{BTreeMap, BTreeSet};

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::commit::fetch_committed;
use super::membership::Tp;
use super::{GroupConsumer, Start};
use crate::client::backoff;
use crate::consumer::{OffsetReset, SeekTo};
use crate::error::{ClientError, Result};

/// Hears of the partitions a [`GroupConsumer`] gains and loses. Every method runs inside `poll`
/// (or `close`), on the caller's task. The default methods do nothing.
pub trait RebalanceListener: Send {
    /// These partitions are owned from now on, each at its committed offset (or per the reset
    /// policy); their records come from the next `poll`s.
    fn on_assigned(&mut self, partitions: &[(String, u32)]) {
        let _ = partitions;
    }

    /// These partitions are being given up (a rebalance, or `close`); no record of them is returned
    /// after this. Offsets added to `commits` are committed, and so are their positions when
    /// auto-commit is on, before the coordinator hears the partitions are released (so their next
    /// owner starts there). On a rebalance that commit runs in the background after this returns
    /// (an offset added here replaces the position); on `close`, the positions are already
    /// committed and these offsets are committed before leaving.
    fn on_revoked(&mut self, partitions: &[(String, u32)], commits: &mut Commits) {
        let _ = (partitions, commits);
    }

    /// These partitions were lost: the membership was fenced or evicted, and they may already be
    /// someone else's. Nothing was committed (a commit would be refused).
    fn on_lost(&mut self, partitions: &[(String, u32)]) {
        let _ = partitions;
    }
}

/// Offsets a [`RebalanceListener::on_revoked`] asks to commit: per partition, the next offset to
/// read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commits {
    offsets: BTreeMap<Tp, u64>,
}

impl Commits {
    /// Commits `next_offset` (the next offset to read) for `topic`/`partition`; a later call for the
    /// same partition replaces it.
    pub fn add(&mut self, topic: &str, partition: u32, next_offset: u64) {
        self.offsets
            .insert((topic.to_string(), partition), next_offset);
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The offsets added so far.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32, u64)> {
        self.offsets.iter().map(|((t, p), o)| (t.as_str(), *p, *o))
    }

    pub(super) fn into_map(self) -> BTreeMap<Tp, u64> {
        self.offsets
    }
}

/// How the owned partitions must change to become the assigned ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Diff {
    /// Owned, no longer assigned: give them up.
    pub(super) revoked: Vec<Tp>,
    /// Assigned, not owned yet: start them.
    pub(super) added: Vec<Tp>,
}

/// The difference between what is owned and what the coordinator assigns now. A partition still
/// `releasing` (its final commit not finished) is neither: it is not added back until released,
/// so that it starts from that commit.
pub(super) fn diff(
    owned: &BTreeSet<Tp>,
    assigned: &BTreeSet<Tp>,
    releasing: &BTreeSet<Tp>,
) -> Diff {
    Diff {
        revoked: owned.difference(assigned).cloned().collect(),
        added: assigned
            .difference(owned)
            .filter(|tp| !releasing.contains(tp))
            .cloned()
            .collect(),
    }
}

impl GroupConsumer {
    /// Every owned partition: read, or waiting to start.
    pub(super) fn owned(&self) -> BTreeSet<Tp> {
        self.reading
            .iter()
            .chain(self.starting.keys())
            .cloned()
            .collect()
    }

    /// Tells the heartbeat task what is owned now (releases are kept apart: this cannot end one),
    /// unless a loss this consumer has not handled yet cleared it (handling the loss publishes
    /// again).
    fn publish_owned(&self) {
        self.shared.publish(self.seen_lost, self.owned());
    }

    /// One reconciliation step: a loss, revocations, new partitions, and starting those whose
    /// offsets are due for a lookup. Fails only when a partition cannot start (no committed
    /// offset under [`OffsetReset::None`]) or the offset lookup failed with an error that is not
    /// retriable; either way it is retried (looked up again, or waits for a seek).
    pub(super) async fn reconcile(&mut self) -> Result<()> {
        let (lost, assigned, releasing) = {
            let m = self.shared.lock();
            (m.lost, m.assigned.clone(), m.releasing.clone())
        };
        if lost != self.seen_lost {
            self.seen_lost = lost;
            self.drop_lost();
        }
        let Some(assigned) = assigned else {
            return Ok(());
        };
        let d = diff(&self.owned(), &assigned, &releasing);
        if !d.revoked.is_empty() {
            self.revoke(&d.revoked);
        }
        if !d.added.is_empty() {
            debug!(partitions = ?d.added, "assigned");
            for tp in d.added {
                self.starting.insert(tp, Start::Lookup);
            }
            self.publish_owned();
            // New partitions are looked up at once, whatever an earlier lookup's backoff said.
            self.lookup_at = Instant::now();
            self.lookup_failures = 0;
        }
        self.start_due().await
    }

    /// The membership was lost: every partition goes, nothing is committed.
    pub(super) fn drop_lost(&mut self) {
        let told: Vec<Tp> = self.reading.iter().cloned().collect();
        info!(partitions = ?told, "partitions lost");
        self.forget_commits(&told);
        self.reading.clear();
        self.starting.clear();
        self.consumer.assign::<String>(&[]);
        // The loss cleared the releases already (`Shared::lose`), and none starts before this
        // consumer has handled it; cleared here too so that nothing released under the lost
        // membership is ever reported by the next one.
        self.shared.lock().releasing.clear();
        self.publish_owned();
        if !told.is_empty() {
            if let Some(l) = self.listener.as_mut() {
                l.on_lost(&told);
            }
        }
    }

    /// Gives up `revoked` without waiting on the network (see the module docs): positions and the
    /// listener's commits merged, the partitions no longer read, their commit started in the
    /// background with them releasing meanwhile.
    fn revoke(&mut self, revoked: &[Tp]) {
        let (told, silent): (Vec<Tp>, Vec<Tp>) = revoked
            .iter()
            .cloned()
            .partition(|tp| self.reading.contains(tp));
        info!(partitions = ?revoked, "revoking");
        // Oldest first, each replaced by the next: what a background commit left queued, the
        // positions, what the listener adds.
        let mut offsets = self.async_commits.take_queued_of(revoked);
        if self.config.auto_commit.is_some() {
            offsets.extend(self.positions_of(&told));
        }
        if !told.is_empty() {
            if let Some(l) = self.listener.as_mut() {
                let mut commits = Commits::default();
                l.on_revoked(&told, &mut commits);
                offsets.extend(commits.into_map());
            }
        }
        for tp in revoked {
            self.reading.remove(tp);
            self.starting.remove(tp);
        }
        self.assign_inner();
        // Those whose final offsets are still to be stored: read ones (a commit in flight may hold
        // theirs) and any the commit names.
        let releasing: BTreeSet<Tp> = revoked
            .iter()
            .filter(|tp| told.contains(tp) || offsets.contains_key(*tp))
            .cloned()
            .collect();
        let wait = !releasing.is_empty() && (!offsets.is_empty() || self.async_commits.in_flight());
        let budget = self.revoke_commit_time();
        if wait
            && self
                .shared
                .start_release(self.seen_lost, &releasing, self.owned())
        {
            let now: Vec<Tp> = silent
                .into_iter()
                .filter(|tp| !releasing.contains(tp))
                .collect();
            self.forget_commits(&now);
            self.commit_release(releasing, offsets, budget);
            if !now.is_empty() {
                self.shared.wake.notify_one();
            }
            return;
        }
        // Nothing to wait for (or a loss since: nothing is ours to commit, and the next
        // reconcile drops the rest): released at once.
        self.forget_commits(revoked);
        self.publish_owned();
        self.shared.wake.notify_one();
    }

    /// How long a revocation may spend committing: half the session (the coordinator evicts a
    /// member that does not release within it), at most the request timeout.
    fn revoke_commit_time(&self) -> std::time::Duration {
        let request = self.link.client().config().request_timeout;
        self.shared
            .lock()
            .session
            .map_or(request, |s| (s / 2).min(request))
    }

    /// The inner consumer reads exactly `reading` (positions of partitions that stay are kept).
    pub(super) fn assign_inner(&mut self) {
        let all: Vec<(&str, u32)> = self.reading.iter().map(|(t, p)| (t.as_str(), *p)).collect();
        self.consumer.assign(&all);
    }

    /// Looks up the committed offsets of the partitions waiting for one, if the backoff allows, and
    /// starts those it learns.
    async fn start_due(&mut self) -> Result<()> {
        let due: Vec<Tp> = self
            .starting
            .iter()
            .filter(|(_, s)| **s == Start::Lookup)
            .map(|(tp, _)| tp.clone())
            .collect();
        if due.is_empty() || Instant::now() < self.lookup_at {
            return Ok(());
        }
        let link = self.link.clone();
        let found = match fetch_committed(&link, &due).await {
            Ok(found) => found,
            Err(e) => {
                // Never a reason to start anywhere else: the partitions wait, unread.
                self.lookup_failures += 1;
                let cfg = self.link.client().config();
                let wait = backoff(
                    cfg.retry_backoff,
                    cfg.retry_backoff_max,
                    self.lookup_failures,
                );
                self.lookup_at = Instant::now() + wait;
                warn!(error = %e, partitions = ?due, ?wait, "looking up committed offsets failed; retrying");
                return if e.is_retriable() { Ok(()) } else { Err(e) };
            }
        };
        self.lookup_failures = 0;
        let mut started = Vec::new();
        let mut unseekable = Vec::new();
        let mut seeks = Vec::new();
        for tp in due {
            match found.get(&tp) {
                Some(&o) if o >= 0 => {
                    seeks.push((tp.clone(), o as u64));
                    started.push(tp);
                }
                Some(_) if self.config.reset == OffsetReset::None => {
                    self.starting.insert(tp.clone(), Start::Seek);
                    unseekable.push(tp);
                }
                // Nothing committed: the inner consumer places it per `reset` on its first fetch.
                Some(_) => started.push(tp),
                // Not in the answer: ask again later.
                None => {
                    self.lookup_at = Instant::now() + self.link.client().config().retry_backoff;
                }
            }
        }
        self.begin(&started, seeks).await?;
        if !unseekable.is_empty() {
            return Err(ClientError::InvalidArgument(format!(
                "no committed offset for {unseekable:?} and reset is None: seek them"
            )));
        }
        Ok(())
    }

    /// Moves `started` from waiting to read, seeking those with a known offset, and tells the
    /// listener.
    pub(super) async fn begin(&mut self, started: &[Tp], seeks: Vec<(Tp, u64)>) -> Result<()> {
        if started.is_empty() {
            return Ok(());
        }
        for tp in started {
            self.starting.remove(tp);
            self.reading.insert(tp.clone());
        }
        self.assign_inner();
        for ((t, p), o) in seeks {
            // An explicit offset needs no request: it cannot fail for an assigned partition.
            self.consumer.seek(&t, p, SeekTo::Offset(o)).await?;
            self.note_committed(&t, p, o);
        }
        info!(partitions = ?started, "started reading");
        if let Some(l) = self.listener.as_mut() {
            l.on_assigned(started);
        }
        Ok(())
    }
}
