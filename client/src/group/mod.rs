//! [`GroupConsumer`]: a consumer that joins a consumer group and reads the partitions the group's
//! coordinator assigns it (the broker side is KIP-848-style: one heartbeat call, the coordinator
//! assigns, a member gives up revoked partitions before anyone receives them).
//!
//! The member joins at its first [`poll`](GroupConsumer::poll) (creating one does no I/O and needs
//! no runtime); from then a background task heartbeats at the coordinator's interval, so the
//! session survives a slow handler, as long as the processing deadline (the last `poll` plus
//! `max_processing`, or a later [`extend_deadline`](GroupConsumer::extend_deadline)) holds. Every
//! `poll` first reconciles the owned partitions with the latest assignment (`rebalance`), then
//! fetches in slices no longer than the heartbeat interval (at most 1 s) so that a revocation is
//! handled within one slice even under a long poll timeout. A revocation never waits on the network
//! there: the revoked partitions' final commit runs in the background while the partitions the
//! member keeps go on delivering (`rebalance` says how the coordinator is kept from handing them on
//! before it finished). Records come only from partitions the member owns: the records of a round
//! during which the membership was lost are dropped.
//!
//! Dropping a `GroupConsumer` without [`close`](GroupConsumer::close) is a crash: no commit, no
//! leave; the heartbeat task stops and the coordinator evicts the member after its session.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sluice_client::ClientError> {
//! use sluice_client::{Client, ClientConfig, GroupConsumer, GroupConsumerConfig, Subscription};
//! use std::time::Duration;
//!
//! let client = Client::new(ClientConfig::new("127.0.0.1:9092"))?;
//! let mut config = GroupConsumerConfig::new("billing", Subscription::Topics(vec!["orders".into()]));
//! config.auto_commit = None; // commit after processing, below
//! let mut consumer = GroupConsumer::new(client, config)?;
//! loop {
//!     let records = consumer.poll(Duration::from_secs(1)).await?;
//!     if records.is_empty() {
//!         break;
//!     }
//!     for r in &records {
//!         // process r ...
//!     }
//!     consumer.commit_sync().await?;
//! }
//! consumer.close().await?;
//! # Ok(()) }
//! ```
//!
//! The parts: `config` (settings and their checks), `coordinator` (FindCoordinator, the cached
//! coordinator address, requests to it; shared with the admin client), `membership` (state shared
//! with the heartbeat task), `heartbeat` (the task), `rebalance` (the listener, revoking and
//! starting partitions), `commit` (commits and committed offsets). This module holds the handle and
//! its `poll` loop; it never decodes records (the inner [`Consumer`] does).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::warn;

use crate::client::Client;
use crate::consumer::{Consumer, ConsumerRecord, SeekTo};
use crate::error::{ClientError, Result};

mod commit;
mod config;
pub(crate) mod coordinator;
mod heartbeat;
mod membership;
mod rebalance;

pub use config::{GroupConsumerConfig, Subscription};
pub use rebalance::{Commits, RebalanceListener};

use commit::AsyncCommits;
use coordinator::CoordinatorLink;
use heartbeat::Spec;
use membership::{Shared, Tp};

/// Longest fetch slice of a `poll`: a revocation waits at most this long for the next reconcile.
const MAX_SLICE: Duration = Duration::from_secs(1);
/// Shortest fetch slice (a very short heartbeat interval must not make `poll` spin).
const MIN_SLICE: Duration = Duration::from_millis(20);

/// Where an owned partition that is not read yet stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Its committed offset is being looked up.
    Lookup,
    /// Nothing committed and reset is `None`: it waits for a [`GroupConsumer::seek`].
    Seek,
}

/// A member of a consumer group reading the partitions its coordinator assigns. Not shared
/// between tasks: every method that changes it takes `&mut self`.
pub struct GroupConsumer {
    config: GroupConsumerConfig,
    consumer: Consumer,
    link: Arc<CoordinatorLink>,
    spec: Arc<Spec>,
    shared: Arc<Shared>,
    heartbeat: Option<JoinHandle<()>>,
    listener: Option<Box<dyn RebalanceListener>>,
    /// Owned partitions being read: the inner consumer's assignment.
    reading: BTreeSet<Tp>,
    /// Owned partitions not read yet.
    starting: BTreeMap<Tp, Start>,
    /// When the next committed-offset lookup may go out, and failures in a row.
    lookup_at: Instant,
    lookup_failures: u32,
    /// Losses handled so far.
    seen_lost: u64,
    committed: Arc<Mutex<BTreeMap<Tp, u64>>>,
    async_commits: AsyncCommits,
    last_auto_commit: Instant,
    closed: bool,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("group", &self.config.group)
            .field("reading", &self.reading)
            .field("starting", &self.starting)
            .field("listener", &self.listener.is_some())
            .finish_non_exhaustive()
    }
}

impl GroupConsumer {
    /// A member of `config.group` over `client`. Checks the configuration; does no I/O: the member
    /// joins at the first [`poll`](Self::poll).
    pub fn new(client: Client, config: GroupConsumerConfig) -> Result<GroupConsumer> {
        config.validate()?;
        let consumer = Consumer::with_client(client.clone(), config.inner_consumer())?;
        let now = Instant::now();
        Ok(GroupConsumer {
            link: Arc::new(CoordinatorLink::new(client, config.group.clone())),
            spec: Arc::new(Spec::new(&config)),
            shared: Arc::new(Shared::new(now + config.max_processing)),
            consumer,
            heartbeat: None,
            listener: None,
            reading: BTreeSet::new(),
            starting: BTreeMap::new(),
            lookup_at: now,
            lookup_failures: 0,
            seen_lost: 0,
            committed: Arc::default(),
            async_commits: AsyncCommits::default(),
            last_auto_commit: now,
            closed: false,
            config,
        })
    }

    /// The client this consumer talks through.
    pub fn client(&self) -> &Client {
        self.link.client()
    }

    /// Replaces the listener told of assigned, revoked and lost partitions.
    pub fn set_listener(&mut self, listener: Box<dyn RebalanceListener>) {
        self.listener = Some(listener);
    }

    /// The partitions this member owns now: those it reads and those whose start it is still
    /// looking up (not revoked ones whose final commit is still in flight: they are no longer
    /// read). Changes only inside `poll`.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.owned().into_iter().collect()
    }

    /// The member id the coordinator gave, once joined.
    pub fn member_id(&self) -> Option<String> {
        let m = self.shared.lock();
        (!m.member_id.is_empty()).then(|| m.member_id.clone())
    }

    /// The member epoch (0 until joined, and while rejoining).
    pub fn member_epoch(&self) -> i32 {
        self.shared.lock().epoch
    }

    /// The offset of the next record `poll` returns for a partition being read, if known yet.
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.consumer.position(topic, partition)
    }

    /// Promises progress for `by` from now, beyond `max_processing` if longer: the coordinator
    /// keeps the member (and its partitions) until then even without a `poll`. Heartbeats at once
    /// so the coordinator knows before the old deadline passes.
    pub fn extend_deadline(&self, by: Duration) {
        self.shared.extend_deadline(Instant::now() + by);
        self.shared.wake.notify_one();
    }

    /// Moves the position of an owned partition: one being read, or one waiting to start (which
    /// then starts there, without its committed offset; the listener hears `on_assigned`).
    pub async fn seek(&mut self, topic: &str, partition: u32, to: SeekTo) -> Result<()> {
        let tp = (topic.to_string(), partition);
        if self.reading.contains(&tp) {
            return self.consumer.seek(topic, partition, to).await;
        }
        let Some(state) = self.starting.remove(&tp) else {
            return Err(ClientError::InvalidArgument(format!(
                "{topic}/{partition} is not owned by this member"
            )));
        };
        self.reading.insert(tp.clone());
        self.assign_inner();
        if let Err(e) = self.consumer.seek(topic, partition, to).await {
            self.reading.remove(&tp);
            self.starting.insert(tp, state);
            self.assign_inner();
            return Err(e);
        }
        // Moved to reading by hand: `begin` would seek again; only the listener is left.
        if let Some(l) = self.listener.as_mut() {
            l.on_assigned(&[tp]);
        }
        Ok(())
    }

    /// Waits up to `timeout` for records of the partitions this member owns and returns those
    /// available (possibly none). Joins the group on the first call; reconciles the assignment
    /// (revocations, new partitions, losses; the listener is called from here); auto-commits.
    ///
    /// Fails on a heartbeat error that is not about membership or the coordinator (an unknown
    /// assignor, a bad pattern, a full group: the next `poll` tries to join again), a partition
    /// without committed offset under [`OffsetReset::None`](crate::OffsetReset::None) (once; it
    /// waits for a `seek`), and what the inner [`Consumer::poll`] fails on.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        if self.closed {
            return Err(ClientError::Closed);
        }
        let now = Instant::now();
        let end = now + timeout;
        self.touch_deadline(now);
        self.ensure_heartbeat()?;
        self.reap_async_commit();
        self.auto_commit();
        loop {
            self.reconcile().await?;
            self.take_failure()?;
            let now = Instant::now();
            if self.reading.is_empty() {
                if now >= end {
                    return Ok(Vec::new());
                }
                let mut wait = end - now;
                if self.starting.values().any(|s| *s == Start::Lookup) {
                    wait = wait.min(self.lookup_at.saturating_duration_since(now));
                }
                tokio::select! {
                    _ = self.shared.changed.notified() => {}
                    _ = tokio::time::sleep(wait.max(Duration::from_millis(1))) => {}
                }
                continue;
            }
            let slice = end.saturating_duration_since(now).min(self.slice());
            let lost = self.shared.lock().lost;
            let records = self.consumer.poll(slice).await?;
            if self.shared.lock().lost != lost {
                // Fetched while the membership was lost: maybe someone else's by now.
                warn!(
                    records = records.len(),
                    "membership lost during a fetch; its records dropped"
                );
                continue;
            }
            if !records.is_empty() || Instant::now() >= end {
                return Ok(records);
            }
        }
    }

    /// Waits for the background commits in flight (the final commits of revoked partitions
    /// among them), commits (auto-commit), tells the listener the partitions are revoked and
    /// commits what it added, stops the heartbeat task and leaves the group (epoch -1; a static
    /// member -2: it keeps its assignment for its session). Waits at most about 10 s, or longer if
    /// a background commit in flight takes longer (each is bounded by its own time). Later calls
    /// of `poll` fail with [`ClientError::Closed`]; a second `close` does nothing. Returns the
    /// first failure (the leave is attempted regardless).
    pub async fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let until = Instant::now() + CLOSE_TIME;
        let mut result = Ok(());
        self.settle_async_commits().await;
        // A loss not handled yet: those partitions are not ours to commit.
        let lost = self.shared.lock().lost;
        if lost != self.seen_lost {
            self.seen_lost = lost;
            self.drop_lost();
        }
        let told: Vec<Tp> = self.reading.iter().cloned().collect();
        if self.config.auto_commit.is_some() {
            let mut offsets = self.async_commits.take_queued();
            offsets.extend(self.positions_of(&told));
            result = self.commit_map(offsets, until).await;
        }
        if !told.is_empty() {
            if let Some(l) = self.listener.as_mut() {
                let mut commits = Commits::default();
                l.on_revoked(&told, &mut commits);
                let r = self.commit_map(commits.into_map(), until).await;
                result = result.and(r);
            }
        }
        if let Some(h) = self.heartbeat.take() {
            h.abort();
            let _ = h.await;
        }
        let member_id = self.shared.lock().member_id.clone();
        if !member_id.is_empty() {
            let left = self
                .link
                .send_until(&self.spec.leave(&member_id), until)
                .await;
            let left = left.and_then(|r| match coordinator::answer_error(&r) {
                // Already gone (evicted): nothing to leave.
                Some((code, _)) if code == sluice_protocol::wire::ErrorCode::UNKNOWN_MEMBER_ID => {
                    Ok(())
                }
                Some((code, message)) => Err(ClientError::broker(
                    code,
                    format!("leaving group {}: {message}", self.config.group),
                )),
                None => Ok(()),
            });
            result = result.and(left);
        }
        self.reading.clear();
        self.starting.clear();
        self.consumer.assign::<String>(&[]);
        {
            let mut m = self.shared.lock();
            m.owned.clear();
            // Empty already: the releases finished before the settle above returned.
            m.releasing.clear();
        }
        result
    }

    /// A `poll` moves the processing deadline to `now + max_processing` (unless extended
    /// further); one that had passed wakes the heartbeat task (it may be waiting to rejoin).
    fn touch_deadline(&self, now: Instant) {
        let overdue = self.shared.lock().deadline <= now;
        self.shared
            .extend_deadline(now + self.config.max_processing);
        if overdue {
            self.shared.wake.notify_one();
        }
    }

    /// Starts the heartbeat task if it is not running; the failure it stopped on, if any.
    fn ensure_heartbeat(&mut self) -> Result<()> {
        self.take_failure()?;
        if self.heartbeat.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(());
        }
        let task = heartbeat::run(self.shared.clone(), self.link.clone(), self.spec.clone());
        self.heartbeat = Some(tokio::spawn(task));
        Ok(())
    }

    /// The failure the heartbeat task stopped on (the next `poll` starts it again).
    fn take_failure(&mut self) -> Result<()> {
        match self.shared.lock().failure.take() {
            Some(e) => {
                self.heartbeat = None;
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// The fetch slice: the heartbeat interval within [`MIN_SLICE`, `MAX_SLICE`].
    fn slice(&self) -> Duration {
        self.shared.lock().interval.clamp(MIN_SLICE, MAX_SLICE)
    }
}

/// How long `close` waits for its final commit and leave.
const CLOSE_TIME: Duration = Duration::from_secs(10);

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        // A crash, as far as the group can tell: no commit, no leave; the session runs out.
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

#[cfg(test)]
mod heartbeat_tests;
#[cfg(test)]
mod release_tests;
#[cfg(test)]
mod tests;
