//! The partition seam: a [`Replica`] is the only way above this module to reach a partition's
//! log, raft group and replicated state.
//!
//! - [`Replica`]: propose (leader), read and offset-for-timestamp below the high watermark only,
//!   wait on the high watermark, retention/compaction for the maintenance schedule, a leadership
//!   watch, and the raft housekeeping the cluster needs (moves, quiescing);
//! - `lag`: the timestamp of the first unconsumed record, for a group's lag in time;
//! - [`leadership`]: the leadership watch, fed by openraft's server-metrics watch;
//! - [`services`]: leader services, started with the term on election and cancelled on loss;
//! - [`transfer`]: handing leadership to an in-sync voter (one transfer at a time);
//! - [`groups`]: the replicated state of `__consumer_offsets` partitions (groups, members, offsets);
//! - [`state`]: the [`PartitionState`] hooks (replicated state in log order) and the state each
//!   topic kind keeps;
//! - [`registry`]: the replicas this broker hosts, opened and closed as the metadata says;
//! - [`settings`]: per-topic settings and names.
//!
//! Nothing here knows the wire protocol's requests or responses, or the cluster metadata: callers
//! pass plain values and get [`ServiceError`]s back.

pub mod groups;
mod lag;
pub mod leadership;
pub mod marks;
pub mod producers;
mod propose;
pub mod registry;
pub mod report;
pub mod services;
pub mod settings;
pub mod state;
#[cfg(test)]
mod tests;
pub mod topic_state;
pub mod transfer;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, ServerState};
use sluice_protocol::wire::Acks;
use sluice_storage::{ReadOrWait, ReadResult};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::{Result, ServiceError};
use crate::metrics::PartitionMetrics;
use crate::raft::group::Group;
use crate::raft::network::RaftRegistry;

pub use leadership::Leadership;
pub use propose::PendingAppend;
pub use registry::Replicas;
pub use services::{LeaderContext, LeaderService};
pub use state::PartitionState;
pub use transfer::{Transfer, TransferBounds};

/// One partition replica hosted by this broker: a raft group over the partition's segment log.
#[derive(Debug)]
pub struct Replica {
    topic: Arc<str>,
    topic_id: u32,
    partition: u32,
    group: Group,
    /// Held from admission to the hand-off to raft, so batches are admitted in proposal order; holds
    /// the term of the last admission (a new term resets what the state admitted in the old one).
    propose_order: tokio::sync::Mutex<u64>,
    leadership: watch::Receiver<Leadership>,
    /// Bumped on every high-watermark move of any partition, for fetches that span several.
    any_tx: Arc<watch::Sender<u64>>,
    /// Cancelled when the replica closes: ends its leader services and watch tasks.
    closed: CancellationToken,
    /// What its hot paths count (traffic, commit latency).
    metrics: PartitionMetrics,
    /// Leadership transfers of this partition (one at a time).
    transfer: Arc<transfer::TransferState>,
    /// Tests: how many of the next proposals raft is made to drop (see `propose::hand_off`).
    #[cfg(test)]
    refuse_next: std::sync::atomic::AtomicUsize,
}

impl Replica {
    /// Wraps a started group: starts the leadership watch, the leader services supervisor and the
    /// task that forwards high-watermark moves to `any_tx`.
    pub(crate) fn new(
        topic: Arc<str>,
        topic_id: u32,
        partition: u32,
        group: Group,
        services: Vec<Arc<dyn LeaderService>>,
        any_tx: Arc<watch::Sender<u64>>,
        metrics: PartitionMetrics,
    ) -> Replica {
        let closed = CancellationToken::new();
        let leadership = leadership::watch(&group.raft);
        services::supervise(
            services,
            leadership.clone(),
            LeaderContext {
                topic: topic.clone(),
                topic_id,
                partition,
                term: 0,
                cancel: closed.clone(),
            },
            closed.clone(),
        );
        // Fetches spanning partitions wake on any high-watermark move.
        let mut rx = group.high_watermark.subscribe();
        let any = any_tx.clone();
        let stop = closed.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    changed = rx.changed() => if changed.is_err() { return },
                }
                any.send_modify(|g| *g = g.wrapping_add(1));
            }
        });
        Replica {
            topic,
            topic_id,
            partition,
            group,
            propose_order: tokio::sync::Mutex::new(0),
            leadership,
            any_tx,
            closed,
            metrics,
            transfer: Arc::default(),
            #[cfg(test)]
            refuse_next: Default::default(),
        }
    }

    /// The partition's hot-path metrics (fetch counts what it sends through this).
    pub fn metrics(&self) -> &PartitionMetrics {
        &self.metrics
    }

    /// How often this partition's known leader became another broker, as this broker saw it.
    pub fn leader_changes(&self) -> u64 {
        self.group.leader_changes()
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn topic_id(&self) -> u32 {
        self.topic_id
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The raft group id.
    pub fn group_id(&self) -> u64 {
        self.group.id
    }

    /// Proposes every batch in `records` (whole batches back to back) to the group, in order, after
    /// the partition state admits them. Only the leader accepts; others answer `NOT_LEADER`.
    pub async fn propose(&self, records: &Bytes, acks: Acks) -> Result<PendingAppend> {
        propose::propose(self, records, acks).await
    }

    /// Proposes the broker's own control batches (window operator marks), acks `all`.
    pub async fn propose_control(&self, records: &Bytes) -> Result<PendingAppend> {
        propose::propose_control(self, records).await
    }

    /// Reads committed batches (below the high watermark) from `offset` on this replica, leader or
    /// not: for the broker's own readers of the local log (window operators), never for clients.
    pub fn read_local(&self, offset: u64, max_bytes: usize) -> Result<ReadResult> {
        Ok(self
            .group
            .log
            .log
            .read_below(offset, max_bytes, self.high_watermark())?)
    }

    /// Waits until everything in the replica's log is committed and applied (what a leader's
    /// service starts from: its state then holds every entry of earlier terms), or until it no
    /// longer leads.
    pub async fn settle(&self) {
        loop {
            let end = self.log_end_offset();
            if self.high_watermark() >= end || !self.is_leader() {
                return;
            }
            self.wait_beyond(
                end.saturating_sub(1),
                Instant::now() + Duration::from_millis(100),
            )
            .await;
        }
    }

    /// Reads committed batches (below the high watermark) from `offset`. Only the leader serves
    /// reads, so consumers see one replica's view.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<ReadResult> {
        if !self.is_leader() {
            return Err(ServiceError::not_leader(self.leader_addr()));
        }
        Ok(self
            .group
            .log
            .log
            .read_below(offset, max_bytes, self.high_watermark())?)
    }

    /// [`Replica::read`] without blocking on the disk: when the bytes are behind the page-cache
    /// window and not read yet, starts reading them and returns what to await before asking again.
    pub fn read_or_wait(&self, offset: u64, max_bytes: usize) -> Result<ReadOrWait> {
        if !self.is_leader() {
            return Err(ServiceError::not_leader(self.leader_addr()));
        }
        Ok(self
            .group
            .log
            .log
            .read_below_or_wait(offset, max_bytes, self.high_watermark())?)
    }

    /// [`Replica::read_local`] for async callers: awaits cold bytes instead of blocking a worker.
    pub async fn read_local_async(&self, offset: u64, max_bytes: usize) -> Result<ReadResult> {
        Ok(self
            .group
            .log
            .log
            .read_below_async(offset, max_bytes, self.high_watermark())
            .await?)
    }

    /// The first committed offset whose record timestamp is at or after `timestamp_ms`, or `None`
    /// when no committed record has one. Never an offset at or above the high watermark: an
    /// uncommitted record may still be cut, so it cannot be named.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<u64>> {
        let hw = self.high_watermark();
        let found = self.group.log.log.offset_for_timestamp(timestamp_ms)?;
        Ok(found.filter(|&o| o < hw))
    }

    /// Runs `f` on the partition's replicated state, under its lock (keep `f` short: appends and
    /// commits of this partition wait for it).
    pub fn with_state<R>(&self, f: impl FnOnce(&dyn PartitionState) -> R) -> R {
        let guard = self.group.log.state().lock();
        f(&**guard)
    }

    /// The offset after the last committed entry.
    pub fn high_watermark(&self) -> u64 {
        *self.group.high_watermark.borrow()
    }

    pub fn log_start_offset(&self) -> u64 {
        self.group.log.log.log_start_offset()
    }

    pub fn log_end_offset(&self) -> u64 {
        self.group.log.log.log_end_offset()
    }

    /// About how many bytes a reader at `offset` has left to read to the log's end.
    pub fn bytes_from(&self, offset: u64) -> u64 {
        self.group.log.log.bytes_from(offset)
    }

    /// Bytes of this replica's segments on disk.
    pub fn size_bytes(&self) -> u64 {
        self.group.log.log.size_bytes()
    }

    /// The raft group's own view of itself (term, role, log positions, followers' progress).
    pub fn raft_status(&self) -> crate::raft::RaftStatus {
        self.group.status()
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

    /// Signals fetches waiting on any partition (after the replica is removed).
    pub fn poke(&self) {
        self.any_tx.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Retention (and compaction, when the topic is compacted) at `now_ms` by the topic's current
    /// `settings`, never below what raft or a snapshot transfer may still need. Blocking: run it
    /// off the async workers.
    pub fn maintain(&self, now_ms: i64, settings: &settings::TopicSettings) {
        let log = &self.group.log;
        let (retention, compact) = (settings.retention(), settings.compact);
        log.with_retention_limit(|limit| {
            if let Err(e) = log.log.apply_retention_with(now_ms, limit, retention) {
                tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "retention failed");
            }
            if compact {
                if let Err(e) = log.log.compact_below(now_ms, limit) {
                    tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "compaction failed");
                }
            }
        });
    }

    /// The leadership watch (what leader services follow).
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    /// The leadership as raft sees it at this instant (what requests are checked against).
    pub fn leadership_now(&self) -> Leadership {
        leadership::current(&self.group.raft)
    }

    /// The current leader's node id, if one is known.
    pub fn leader(&self) -> Option<u64> {
        self.leadership_now().leader(self.group.node_id)
    }

    pub fn is_leader(&self) -> bool {
        self.leadership_now().is_leader()
    }

    /// The leader's `host:port`, as the leadership watch knows it (never this replica unless it
    /// leads, so a `NOT_LEADER` answer never sends a client back here).
    pub fn leader_addr(&self) -> Option<String> {
        match self.leadership_now() {
            Leadership::Leader { .. } => self.group.leader_addr(),
            Leadership::Follower { addr, .. } => addr,
            Leadership::Unknown { .. } => None,
        }
    }

    /// Voter ids of the group's current membership.
    pub fn voters(&self) -> Vec<u64> {
        self.group.voters()
    }

    /// Records work on the group, waking it if it was quiesced.
    pub fn touch(&self) {
        self.group.touch();
    }

    /// Adds `id` as a learner and waits until it has caught up (a move's first step; leader only).
    pub async fn add_learner(&self, id: u64, addr: String) -> Result<(), String> {
        self.group.touch();
        self.group
            .raft
            .add_learner(id, BasicNode::new(addr), true)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Replaces the voters with `voters` (a joint change; leavers are removed, not kept as learners).
    pub async fn replace_voters(&self, voters: BTreeSet<u64>) -> Result<(), String> {
        self.group
            .raft
            .change_membership(openraft::ChangeMembers::ReplaceAllVoters(voters), false)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Wakes the group if this replica leads it and one of `peers` is a voter (see
    /// `cluster::quiesce`: a restarted peer's replicas must hear their leader).
    pub fn wake_for_peers(&self, peers: &[u64]) {
        if self.is_leader() && self.voters().iter().any(|v| peers.contains(v)) {
            self.group.touch();
        }
    }

    /// Parks or wakes the group's raft ticker (see `cluster::quiesce`): parks after `quiet` without
    /// work (a leader after twice that, once every follower has its last entry), wakes a parked
    /// follower whose leader `alive` says is gone.
    pub fn review_idle(&self, quiet: Duration, alive: impl Fn(u64) -> bool) {
        let g = &self.group;
        let a = &g.activity;
        let me = g.node_id;
        // Read what is needed under the borrow (no clone: this runs for every group).
        let (state, term, leader, caught_up, leader_votes) = {
            let m = g.raft.metrics();
            let m = m.borrow_watched();
            let caught_up = m.replication.as_ref().is_some_and(|r| {
                r.iter()
                    .all(|(id, l)| *id == me || l.as_ref().map(|l| l.index) == m.last_log_index)
            });
            // A leader that a membership change removed no longer heartbeats this group.
            let leader_votes = m
                .current_leader
                .is_some_and(|l| m.membership_config.membership().voter_ids().any(|v| v == l));
            (
                m.state,
                m.current_term,
                m.current_leader,
                caught_up,
                leader_votes,
            )
        };
        // A new term (an election happened) counts as work.
        if a.last_term.swap(term, std::sync::atomic::Ordering::Relaxed) != term {
            g.touch();
            return;
        }
        let idle = Duration::from_millis(a.idle_ms());
        match state {
            ServerState::Leader => {
                if !a.is_quiesced()
                    && idle > quiet * 2
                    && caught_up
                    && a.quiesce(&g.raft, (quiet * 2).as_millis() as u64)
                {
                    tracing::debug!(group = g.id, "group parked (leader)");
                }
            }
            ServerState::Follower => {
                let leader_alive = leader_votes && leader.is_some_and(&alive);
                if a.is_quiesced() && !leader_alive {
                    // Its leader is gone (or unknown): run the election timer again.
                    tracing::info!(
                        group = g.id,
                        ?leader,
                        "leader unreachable; waking parked group"
                    );
                    g.touch();
                } else if !a.is_quiesced()
                    && leader_alive
                    && idle > quiet
                    && a.quiesce(&g.raft, quiet.as_millis() as u64)
                {
                    tracing::debug!(group = g.id, "group parked (follower)");
                }
            }
            // Candidates and learners keep their timers.
            _ => {
                if a.is_quiesced() {
                    g.touch();
                }
            }
        }
    }

    /// Stops the leader services and the raft group (the log stays open; see [`Replica::close_log`]).
    pub(crate) async fn stop(&self, registry: &RaftRegistry) {
        self.closed.cancel();
        self.group.shutdown(registry).await;
        self.poke();
    }

    /// Closes the log cleanly (after [`Replica::stop`]). Blocking: run it off the async workers.
    pub(crate) fn close_log(&self) -> Result<(), sluice_storage::StorageError> {
        self.group.log.log.close()
    }

    /// The partition log's directory.
    pub fn dir(&self) -> std::path::PathBuf {
        self.group.log.dir()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}
