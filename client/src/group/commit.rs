//! Offsets of a group consumer: committing (synchronously, in the background, automatically from
//! `poll`) and looking up committed offsets (OffsetFetch) for partitions about to start.
//!
//! A commit goes to the coordinator with the member's id and epoch, retried on coordinator errors
//! (finding it again) until its time is up. The coordinator stores each partition's offset only
//! from its current owner: a partition refused (`STALE_MEMBER_EPOCH`: not owned, or owned since a
//! later epoch) is an error for the caller, never retried blindly. `UNKNOWN_MEMBER_ID` or
//! `FENCED_MEMBER_EPOCH` means the membership is gone: it is marked lost (the next `poll` drops
//! every partition) and the commit fails.
//!
//! At most one background commit is in flight; later ones merge into one queued commit sent when
//! it finishes (from the next `poll` or commit call). A synchronous commit and `close` first wait
//! for the one in flight, so an older commit never lands after a newer one. A revocation's final
//! commit does not wait inside `poll`: it is chained after the one in flight (its task awaits that
//! one first) and becomes the one in flight itself, then releases its partitions
//! ([`Shared::finish_release`]) whatever its outcome. What was committed is remembered per
//! partition, so an unchanged position is not sent again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use sluice_protocol::wire::{
    ErrorCode, OffsetCommitPartition, OffsetCommitRequest, OffsetCommitResponse, OffsetCommitTopic,
    OffsetFetchRequest, Request, Response,
};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::coordinator::CoordinatorLink;
use super::membership::{by_topic, Shared, Tp};
use super::GroupConsumer;
use crate::client::unexpected;
use crate::connection::lock;
use crate::error::{ClientError, Result};

/// What a commit needs, cloneable into a background task.
#[derive(Debug, Clone)]
pub(super) struct CommitCtx {
    pub(super) link: Arc<CoordinatorLink>,
    pub(super) shared: Arc<Shared>,
    /// The last offset known committed per partition.
    pub(super) committed: Arc<Mutex<BTreeMap<Tp, u64>>>,
}

/// The background commits.
#[derive(Debug, Default)]
pub(super) struct AsyncCommits {
    /// The answer of the commit in flight, and whether the application asked for it (not
    /// auto-commit).
    in_flight: Option<(oneshot::Receiver<Result<()>>, bool)>,
    /// Offsets to send once it finishes, and whether the application asked for any of them.
    queued: BTreeMap<Tp, u64>,
    queued_by_user: bool,
    /// The failure of an earlier commit the application asked for, for its next commit call.
    error: Option<ClientError>,
}

impl AsyncCommits {
    /// The queued offsets, taken (a synchronous commit sends them).
    pub(super) fn take_queued(&mut self) -> BTreeMap<Tp, u64> {
        self.queued_by_user = false;
        std::mem::take(&mut self.queued)
    }

    /// The queued offsets of `partitions`, taken (a revocation commits them with its own).
    pub(super) fn take_queued_of(&mut self, partitions: &[Tp]) -> BTreeMap<Tp, u64> {
        partitions
            .iter()
            .filter_map(|tp| self.queued.remove_entry(tp))
            .collect()
    }

    /// Whether a background commit (or release) is in flight.
    pub(super) fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }
}

/// The partitions an answer refused, with why.
pub(super) fn refused(resp: &OffsetCommitResponse) -> Vec<(Tp, ErrorCode, String)> {
    resp.topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| !p.error.is_ok())
                .map(|p| ((t.topic.clone(), p.partition), p.error, p.message.clone()))
        })
        .collect()
}

/// One error naming every refused partition, with the first one's code.
pub(super) fn refusal_error(group: &str, refused: &[(Tp, ErrorCode, String)]) -> ClientError {
    debug_assert!(!refused.is_empty());
    let code = refused.first().map_or(ErrorCode::UNKNOWN, |r| r.1);
    let list: Vec<String> = refused
        .iter()
        .map(|((t, p), c, m)| format!("{t}/{p}: {c} {m}"))
        .collect();
    ClientError::broker(
        code,
        format!("group {group} refused the commit of {}", list.join("; ")),
    )
}

impl CommitCtx {
    /// Commits `offsets` as the current member, retrying coordinator errors until `until`.
    pub(super) async fn commit(&self, offsets: BTreeMap<Tp, u64>, until: Instant) -> Result<()> {
        self.commit_as(offsets, until, None).await
    }

    /// [`commit`](Self::commit), but (`as_of`) only as the membership after that many losses: a
    /// revocation's final commit must not go out under a later membership, which may own the
    /// partitions again and be reading them from an older commit.
    async fn commit_as(
        &self,
        offsets: BTreeMap<Tp, u64>,
        until: Instant,
        as_of: Option<u64>,
    ) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let (member_id, epoch, lost) = {
            let m = self.shared.lock();
            (m.member_id.clone(), m.epoch, m.lost)
        };
        let group = self.link.group().to_string();
        if as_of.is_some_and(|l| l != lost) {
            return Err(ClientError::InvalidArgument(format!(
                "the membership of group {group} was lost since: nothing committed"
            )));
        }
        if member_id.is_empty() {
            return Err(ClientError::InvalidArgument(format!(
                "not a member of group {group} (yet): nothing may be committed"
            )));
        }
        let mut topics: Vec<OffsetCommitTopic> = Vec::new();
        for ((t, p), o) in &offsets {
            let part = OffsetCommitPartition {
                partition: *p,
                offset: *o,
                metadata: String::new(),
            };
            match topics.last_mut() {
                Some(last) if &last.topic == t => last.partitions.push(part),
                _ => topics.push(OffsetCommitTopic {
                    topic: t.clone(),
                    partitions: vec![part],
                }),
            }
        }
        let request = Request::OffsetCommit(OffsetCommitRequest {
            group: group.clone(),
            member_id,
            member_epoch: epoch,
            topics,
        });
        let Response::OffsetCommit(resp) = self.link.send_until(&request, until).await? else {
            return Err(unexpected("answer to offset commit"));
        };
        if !resp.error.is_ok() {
            if matches!(
                resp.error,
                ErrorCode::UNKNOWN_MEMBER_ID | ErrorCode::FENCED_MEMBER_EPOCH
            ) {
                self.shared
                    .lose(lost, &format!("commit answered {}", resp.error));
            }
            return Err(ClientError::broker(
                resp.error,
                format!("offset commit of group {group}: {}", resp.message),
            ));
        }
        let refused = refused(&resp);
        {
            let mut done = lock(&self.committed);
            for (tp, o) in offsets {
                if !refused.iter().any(|r| r.0 == tp) {
                    done.insert(tp, o);
                }
            }
        }
        if refused.is_empty() {
            Ok(())
        } else {
            Err(refusal_error(&group, &refused))
        }
    }

    /// `offsets` without those known committed already.
    fn unsent(&self, mut offsets: BTreeMap<Tp, u64>) -> BTreeMap<Tp, u64> {
        let done = lock(&self.committed);
        offsets.retain(|tp, o| done.get(tp) != Some(o));
        offsets
    }
}

impl GroupConsumer {
    pub(super) fn commit_ctx(&self) -> CommitCtx {
        CommitCtx {
            link: self.link.clone(),
            shared: self.shared.clone(),
            committed: self.committed.clone(),
        }
    }

    /// Commits the positions of every partition being read (those that moved since their last
    /// commit), after any background commit in flight, and waits for the answer (retrying
    /// coordinator errors up to the request timeout). Offsets an earlier
    /// [`commit_async`](Self::commit_async) could not send yet go with it; the failure of one that
    /// finished is kept for the next `commit_async`.
    pub async fn commit_sync(&mut self) -> Result<()> {
        self.settle_async_commits().await;
        let mut offsets = self.async_commits.take_queued();
        offsets.extend(self.positions_of(&self.reading.iter().cloned().collect::<Vec<_>>()));
        let until = Instant::now() + self.link.client().config().request_timeout;
        self.commit_map(offsets, until).await
    }

    /// Starts committing the positions of every partition being read, in the background, and
    /// returns at once. Returns the failure of an earlier `commit_async` (each is returned once);
    /// failures are also logged. A commit in flight delays this one until it finishes (the next
    /// `poll` or commit call sends it).
    pub fn commit_async(&mut self) -> Result<()> {
        self.reap_async_commit();
        let earlier = self.async_commits.error.take();
        let offsets = self.positions_of(&self.reading.iter().cloned().collect::<Vec<_>>());
        self.queue_async(offsets, true);
        match earlier {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Commits these offsets (per partition, the next offset to read) and waits, after any
    /// background commit in flight. A partition this member does not own is refused by the
    /// coordinator (`STALE_MEMBER_EPOCH`): the error names it; the others are stored.
    pub async fn commit_offsets<T: AsRef<str>>(&mut self, offsets: &[(T, u32, u64)]) -> Result<()> {
        self.settle_async_commits().await;
        let map: BTreeMap<Tp, u64> = offsets
            .iter()
            .map(|(t, p, o)| ((t.as_ref().to_string(), *p), *o))
            .collect();
        let until = Instant::now() + self.link.client().config().request_timeout;
        // Explicit offsets are sent even if unchanged: the caller asked for exactly these.
        self.commit_ctx().commit(map, until).await
    }

    /// Sends `offsets`, skipping those already committed.
    pub(super) async fn commit_map(
        &mut self,
        offsets: BTreeMap<Tp, u64>,
        until: Instant,
    ) -> Result<()> {
        let ctx = self.commit_ctx();
        ctx.commit(ctx.unsent(offsets), until).await
    }

    /// The positions of `partitions` that are known.
    pub(super) fn positions_of(&self, partitions: &[Tp]) -> BTreeMap<Tp, u64> {
        partitions
            .iter()
            .filter_map(|(t, p)| self.consumer.position(t, *p).map(|o| ((t.clone(), *p), o)))
            .collect()
    }

    /// The auto-commit, from `poll`: in the background, when its interval has passed.
    pub(super) fn auto_commit(&mut self) {
        let Some(every) = self.config.auto_commit else {
            return;
        };
        if self.last_auto_commit.elapsed() < every {
            return;
        }
        self.last_auto_commit = Instant::now();
        let offsets = self.positions_of(&self.reading.iter().cloned().collect::<Vec<_>>());
        self.queue_async(offsets, false);
    }

    /// Queues `offsets` (unchanged ones dropped) and sends them if nothing is in flight.
    fn queue_async(&mut self, mut offsets: BTreeMap<Tp, u64>, by_user: bool) {
        {
            let done = lock(&self.committed);
            offsets.retain(|tp, o| done.get(tp) != Some(o));
        }
        if offsets.is_empty() && self.async_commits.queued.is_empty() {
            return;
        }
        self.async_commits.queued.extend(offsets);
        self.async_commits.queued_by_user |= by_user;
        self.reap_async_commit();
    }

    /// Collects a finished background commit (its failure kept for the next `commit_async` if the
    /// application asked for it) and sends the queued one.
    pub(super) fn reap_async_commit(&mut self) {
        if let Some((rx, by_user)) = self.async_commits.in_flight.as_mut() {
            let result = match rx.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => return,
                Ok(r) => r,
                Err(oneshot::error::TryRecvError::Closed) => Err(task_gone()),
            };
            let by_user = *by_user;
            self.async_commits.in_flight = None;
            if let Err(e) = result {
                warn!(error = %e, "background commit failed");
                if by_user {
                    self.async_commits.error = Some(e);
                }
            }
        }
        if !self.async_commits.queued.is_empty() {
            let offsets = std::mem::take(&mut self.async_commits.queued);
            let by_user = std::mem::take(&mut self.async_commits.queued_by_user);
            let ctx = self.commit_ctx();
            let until = Instant::now() + self.link.client().config().request_timeout;
            debug!(partitions = offsets.len(), "committing in the background");
            let (tx, rx) = oneshot::channel();
            tokio::spawn(async move {
                let _ = tx.send(ctx.commit(offsets, until).await);
            });
            self.async_commits.in_flight = Some((rx, by_user));
        }
    }

    /// Commits the final `offsets` of revoked `releasing` partitions (already in
    /// [`Membership::releasing`](super::membership::Membership::releasing)) in a background task,
    /// without waiting, then releases them whether it succeeded or not (a failure is logged: their
    /// next owner starts at the last commit). The task first waits for the commit in flight, which
    /// may carry older offsets of the same partitions, and takes its place: later background
    /// commits wait for it, and `settle_async_commits` (commit calls, `close`) waits for both. Its
    /// answer is the earlier commit's, so that one's failure still reaches the application.
    /// `budget` is the final commit's own time, counted from when the earlier one finished (counted
    /// from the revocation, a slow earlier commit could leave it nothing, and the partitions would
    /// be handed on at their last commit).
    pub(super) fn commit_release(
        &mut self,
        releasing: BTreeSet<Tp>,
        offsets: BTreeMap<Tp, u64>,
        budget: std::time::Duration,
    ) {
        let earlier = self.async_commits.in_flight.take();
        let by_user = earlier.as_ref().is_some_and(|e| e.1);
        let ctx = self.commit_ctx();
        let lost = self.seen_lost;
        debug!(partitions = ?releasing, offsets = offsets.len(), "committing revoked partitions in the background");
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let earlier = match earlier {
                Some((rx, _)) => rx.await.unwrap_or_else(|_| Err(task_gone())),
                None => Ok(()),
            };
            let offsets = ctx.unsent(offsets);
            let until = Instant::now() + budget;
            if let Err(e) = ctx.commit_as(offsets, until, Some(lost)).await {
                warn!(error = %e, partitions = ?releasing, "committing the final offsets of revoked partitions failed; their next owner starts at the last commit");
            }
            {
                // No longer ours: a later ownership learns its start afresh.
                let mut done = lock(&ctx.committed);
                done.retain(|tp, _| !releasing.contains(tp));
            }
            ctx.shared.finish_release(lost, &releasing);
            let _ = tx.send(earlier);
        });
        self.async_commits.in_flight = Some((rx, by_user));
    }

    /// Waits for the background commit in flight, and with it any release chained before it (its
    /// failure logged, or kept for the next `commit_async` if the application asked for it).
    pub(super) async fn settle_async_commits(&mut self) {
        if let Some((rx, by_user)) = self.async_commits.in_flight.take() {
            let result = rx.await.unwrap_or_else(|_| Err(task_gone()));
            if let Err(e) = result {
                warn!(error = %e, "background commit failed");
                if by_user {
                    self.async_commits.error = Some(e);
                }
            }
        }
    }

    /// Forgets what is known or queued of `partitions`' commits (they are no longer owned).
    pub(super) fn forget_commits(&mut self, partitions: &[Tp]) {
        for tp in partitions {
            self.async_commits.queued.remove(tp);
        }
        let mut done = lock(&self.committed);
        for tp in partitions {
            done.remove(tp);
        }
    }

    /// `offset` is committed for `topic`/`partition` (read from the coordinator).
    pub(super) fn note_committed(&self, topic: &str, partition: u32, offset: u64) {
        lock(&self.committed).insert((topic.to_string(), partition), offset);
    }
}

/// A background commit that ended without an answer (its runtime is shutting down).
fn task_gone() -> ClientError {
    ClientError::Connection {
        addr: String::new(),
        reason: "the background commit task ended without an answer".into(),
    }
}

/// The committed offsets of `partitions` (-1: none), one OffsetFetch to the coordinator. Any
/// failure is an error: the caller retries, it never guesses.
pub(super) async fn fetch_committed(
    link: &CoordinatorLink,
    partitions: &[Tp],
) -> Result<BTreeMap<Tp, i64>> {
    assert!(
        !partitions.is_empty(),
        "an empty lookup asks for every offset"
    );
    let request = Request::OffsetFetch(OffsetFetchRequest {
        group: link.group().to_string(),
        partitions: by_topic(partitions),
    });
    let timeout = link.client().config().request_timeout;
    let Response::OffsetFetch(r) = link.send_once(&request, timeout).await? else {
        return Err(unexpected("answer to offset fetch"));
    };
    if !r.error.is_ok() {
        return Err(ClientError::broker(
            r.error,
            format!("offset fetch of group {}: {}", link.group(), r.message),
        ));
    }
    Ok(r.offsets
        .into_iter()
        .map(|o| ((o.topic, o.partition), o.offset))
        .collect())
}
