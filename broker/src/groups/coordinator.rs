//! The group coordinator at run time: one [`Run`] per `__consumer_offsets` partition this broker
//! leads, started by the leader-service supervisor with the term and ended with it.
//!
//! A run is one task that owns every change to its groups (heartbeats, commits, resets,
//! deletions, evictions): requests queue to it, and it decides them in rounds (`round.rs`): all
//! requests waiting when a round starts are decided in order on a working copy of the committed
//! groups ([`super::reconcile`] decides), the round's net difference goes through raft as one
//! proposal (acks `all`), and every request of the round is answered once it is committed and
//! applied, so the next round starts from it. Reads (offset fetch, describe, list) use the
//! committed state without queueing.
//!
//! Liveness is the run's own: when each member was last heard from, its processing deadline and
//! since when it owes a revocation. Nothing of it is replicated; a new coordinator gives every member
//! a fresh session (a member cannot be evicted for a failover it could not see). A tick, decided in
//! the round it falls in, evicts members past their session, their deadline or their revocation
//! time, writes resets whose partitions were released, picks up new partitions of subscribed
//! topics, and expires offsets.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use sluice_protocol::wire::{Acks, ErrorCode};
use tokio::sync::{mpsc, oneshot};

use super::reconcile::{self, Env, Heartbeat, HeartbeatAnswer};
use super::round::{self, Round, MAX_ROUND_JOBS};
use super::OFFSETS_TOPIC;
use crate::cluster::Cluster;
use crate::config::GroupConfig;
use crate::error::{Result, ServiceError};
use crate::replica::groups::{GroupModel, Groups, OffsetsState};
use crate::replica::{LeaderContext, LeaderService, Replica, Replicas};

/// Requests waiting for a run at most; a request past it waits for room (back pressure on the
/// connections) rather than growing the queue.
const JOB_QUEUE: usize = 4096;

/// A member's timers on this coordinator.
#[derive(Debug, Clone, Copy)]
struct Timers {
    last_seen: Instant,
    /// The member promised progress until then (`extend_deadline`); `None`: no promise.
    deadline: Option<Instant>,
    /// Since when the member owes a revocation.
    revoking_since: Option<Instant>,
}

impl Timers {
    fn fresh(now: Instant) -> Timers {
        Timers {
            last_seen: now,
            deadline: None,
            revoking_since: None,
        }
    }
}

type Live = HashMap<(String, String), Timers>;

/// Answers a request once its round's write has ended (with that write's outcome).
type Answer = Box<dyn FnOnce(&Result<()>) + Send>;
/// A request's decision, made inside a round.
type Job = Box<dyn FnOnce(&mut Cx<'_>) -> Answer + Send>;

/// The coordinator of one offsets partition for one term.
#[derive(Debug)]
pub struct Run {
    partition: u32,
    term: u64,
    replica: Arc<Replica>,
    /// Requests for the run's task.
    jobs: mpsc::Sender<Job>,
}

/// What a decision inside a round sees: the round's groups, the run's timers and the world.
struct Cx<'a> {
    coord: &'a GroupCoordinator,
    replica: &'a Replica,
    round: &'a mut Round,
    live: &'a mut Live,
    topics: &'a BTreeMap<String, u32>,
    now_ms: i64,
}

impl Cx<'_> {
    fn env(&self) -> Env<'_> {
        Env {
            now_ms: self.now_ms,
            topics: self.topics,
            config: &self.coord.config,
        }
    }

    /// `group` as committed plus this round's earlier decisions (blank if it does not exist).
    fn group(&mut self, group: &str) -> GroupModel {
        let replica = self.replica;
        self.round
            .group(group, || {
                read(replica, |g| g.get(group).cloned().unwrap_or_default())
            })
            .clone()
    }
}

/// Every run on this broker, and what they share.
#[derive(Debug)]
pub struct GroupCoordinator {
    pub config: GroupConfig,
    cluster: Cluster,
    replicas: OnceLock<Weak<Replicas>>,
    runs: Mutex<HashMap<u32, Arc<Run>>>,
    /// How long a write waits for its commit.
    write_timeout: Duration,
    next_member: AtomicU64,
}

/// The leader service that starts a coordinator run on every offsets partition this broker leads.
#[derive(Debug)]
pub struct CoordinatorService(pub Arc<GroupCoordinator>);

impl LeaderService for CoordinatorService {
    fn name(&self) -> &'static str {
        "group-coordinator"
    }

    fn start(&self, ctx: LeaderContext) -> crate::replica::services::ServiceRun {
        let coord = self.0.clone();
        Box::pin(async move {
            if &*ctx.topic == OFFSETS_TOPIC {
                coord.serve(ctx).await;
            }
        })
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The group state of an offsets partition's replica (a broken invariant if it keeps another).
fn read<R>(replica: &Replica, f: impl FnOnce(&Groups) -> R) -> R {
    replica.with_state(|s| {
        let state = s
            .as_any()
            .and_then(|a| a.downcast_ref::<OffsetsState>())
            .unwrap_or_else(|| panic!("an offsets partition without group state"));
        f(&state.groups)
    })
}

/// A request whose run ended before answering: the client finds the new coordinator.
fn run_ended(partition: u32) -> ServiceError {
    ServiceError::new(
        ErrorCode::NOT_COORDINATOR,
        format!("this broker stopped coordinating partition {partition} of {OFFSETS_TOPIC}"),
    )
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig, cluster: Cluster, write_timeout: Duration) -> GroupCoordinator {
        GroupCoordinator {
            config,
            cluster,
            replicas: OnceLock::new(),
            runs: Mutex::new(HashMap::new()),
            write_timeout,
            next_member: AtomicU64::new(0),
        }
    }

    /// The replicas runs look their partition up in (set once, when the broker is built).
    pub fn attach(&self, replicas: &Arc<Replicas>) {
        let _ = self.replicas.set(Arc::downgrade(replicas));
    }

    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<Run>>> {
        self.runs
            .lock()
            .unwrap_or_else(|_| panic!("coordinator runs lock poisoned"))
    }

    /// Every topic's partition count, from the cluster metadata (read in place, not copied:
    /// every round asks).
    pub fn topic_counts(&self) -> BTreeMap<String, u32> {
        self.cluster.metadata.with_state(|s| {
            s.topics
                .iter()
                .map(|(n, r)| (n.clone(), r.replicas.len() as u32))
                .collect()
        })
    }

    /// The offsets partition holding `group`, if the offsets topic exists.
    pub fn partition_of(&self, group: &str) -> Option<u32> {
        let n = self
            .cluster
            .metadata
            .with_state(|s| s.topics.get(OFFSETS_TOPIC).map(|r| r.replicas.len() as u32))?;
        Some(super::partition_for(group, n))
    }

    /// One run for as long as this replica leads in `ctx.term`.
    async fn serve(self: Arc<Self>, ctx: LeaderContext) {
        // The supervisor may start this before the registry lists the replica (it is opened,
        // then registered): wait for it rather than leave the partition without a coordinator
        // for the whole term.
        let replica = loop {
            let found = self
                .replicas
                .get()
                .and_then(Weak::upgrade)
                .and_then(|r| r.replica(OFFSETS_TOPIC, ctx.partition).ok());
            if let Some(r) = found {
                break r;
            }
            tokio::select! {
                _ = ctx.cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        };
        // Serve only once everything appended before this term is applied: decisions start from
        // the committed groups, which must include every earlier coordinator's writes.
        loop {
            let end = replica.log_end_offset();
            if replica.high_watermark() >= end {
                break;
            }
            tokio::select! {
                _ = ctx.cancel.cancelled() => return,
                _ = replica.wait_beyond(end.saturating_sub(1), Instant::now() + Duration::from_millis(100)) => {}
            }
        }
        let (tx, mut rx) = mpsc::channel::<Job>(JOB_QUEUE);
        let run = Arc::new(Run {
            partition: ctx.partition,
            term: ctx.term,
            replica,
            jobs: tx,
        });
        self.runs().insert(ctx.partition, run.clone());
        tracing::info!(
            partition = ctx.partition,
            term = ctx.term,
            "group coordinator started"
        );
        let tick = (self.config.heartbeat_interval / 2)
            .clamp(Duration::from_millis(10), Duration::from_millis(500));
        let mut next_tick = tokio::time::Instant::now() + tick;
        let mut live = Live::new();
        loop {
            let mut jobs = Vec::new();
            tokio::select! {
                _ = ctx.cancel.cancelled() => break,
                job = rx.recv() => match job {
                    Some(job) => jobs.push(job),
                    None => break,
                },
                _ = tokio::time::sleep_until(next_tick) => {}
            }
            while jobs.len() < MAX_ROUND_JOBS {
                let Ok(job) = rx.try_recv() else { break };
                jobs.push(job);
            }
            let ticks = tokio::time::Instant::now() >= next_tick;
            if ticks {
                next_tick = tokio::time::Instant::now() + tick;
            }
            self.round(&run, &mut live, jobs, ticks).await;
        }
        let mut runs = self.runs();
        if runs.get(&ctx.partition).is_some_and(|r| r.term == ctx.term) {
            runs.remove(&ctx.partition);
        }
        // Dropping `rx` drops the queued requests' answers: their callers hear NOT_COORDINATOR.
        tracing::info!(
            partition = ctx.partition,
            term = ctx.term,
            "group coordinator stopped"
        );
    }

    /// Decides `jobs` in order (then the tick, when due), writes the round and answers each job.
    async fn round(&self, run: &Run, live: &mut Live, jobs: Vec<Job>, ticks: bool) {
        debug_assert!(jobs.len() <= MAX_ROUND_JOBS);
        let topics = self.topic_counts();
        let mut round = Round::default();
        let mut answers = Vec::with_capacity(jobs.len());
        {
            let mut cx = Cx {
                coord: self,
                replica: &run.replica,
                round: &mut round,
                live,
                topics: &topics,
                now_ms: now_ms(),
            };
            for job in jobs {
                answers.push(job(&mut cx));
            }
            if ticks {
                Self::tick(&mut cx);
            }
        }
        let written = self.write(run, &round).await;
        if let Err(e) = &written {
            tracing::debug!(partition = run.partition, requests = answers.len(), error = %e, "coordinator round not written");
        }
        for answer in answers {
            answer(&written);
        }
    }

    /// Queues a decision for `group`'s run and waits for its answer: its own error, or once its
    /// round is written, that write's outcome.
    async fn submit<T: Send + 'static>(
        &self,
        group: &str,
        decide: impl FnOnce(&mut Cx<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let run = self.run_for(group)?;
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |cx| {
            let decided = decide(cx);
            Box::new(move |written: &Result<()>| {
                let _ = tx.send(decided.and_then(|v| written.clone().map(|()| v)));
            })
        });
        if run.jobs.send(job).await.is_err() {
            return Err(run_ended(run.partition));
        }
        rx.await.unwrap_or_else(|_| Err(run_ended(run.partition)))
    }

    /// The run coordinating `group`, or why there is none here.
    fn run_for(&self, group: &str) -> Result<Arc<Run>> {
        reconcile::check_group_id(group)?;
        let Some(partition) = self.partition_of(group) else {
            return Err(ServiceError::new(
                ErrorCode::COORDINATOR_NOT_AVAILABLE,
                "the offsets topic does not exist yet (FindCoordinator creates it)",
            ));
        };
        let run = self.runs().get(&partition).cloned();
        match run {
            Some(run) if run.replica.is_leader() => Ok(run),
            _ => Err(ServiceError::new(
                ErrorCode::NOT_COORDINATOR,
                format!(
                    "this broker does not coordinate group {group} (partition {partition} of {OFFSETS_TOPIC})"
                ),
            )),
        }
    }

    /// Writes what `round` decided as one proposal and waits until it is committed and applied.
    async fn write(&self, run: &Run, round: &Round) -> Result<()> {
        if round.is_empty() {
            return Ok(());
        }
        let batches = round::encode(&round.writes(), now_ms())?;
        let pending = run
            .replica
            .propose(&batches, Acks::All)
            .await
            .map_err(not_coordinator)?;
        pending
            .wait(self.write_timeout)
            .await
            .map_err(not_coordinator)?;
        Ok(())
    }

    fn model(run: &Run, group: &str) -> GroupModel {
        read(&run.replica, |g| g.get(group).cloned().unwrap_or_default())
    }

    fn new_member_id(&self) -> String {
        let n = self.next_member.fetch_add(1, Ordering::Relaxed);
        format!(
            "{}-{:x}-{n}",
            self.cluster.ctx.node_id,
            now_ms().rem_euclid(1 << 40)
        )
    }

    /// A member's heartbeat (join, leave, owned partitions). `deadline_ms`: the processing deadline
    /// it promises from now (0: none).
    pub async fn heartbeat(
        &self,
        group: &str,
        hb: Heartbeat,
        deadline_ms: u32,
    ) -> Result<HeartbeatAnswer> {
        let group = group.to_string();
        let new_id = self.new_member_id();
        self.submit(&group.clone(), move |cx| {
            let before = cx.group(&group);
            let (after, answer) = reconcile::heartbeat(&before, &group, &hb, &new_id, &cx.env())?;
            let now = Instant::now();
            // Timers of members that are gone (left, or replaced by their static successor).
            cx.live
                .retain(|(g, m), _| g != &group || after.members.contains_key(m));
            let leaving_static = hb.member_epoch == sluice_protocol::wire::STATIC_LEAVE_EPOCH;
            // A static member gone for now keeps only its session timer (from its last heartbeat).
            if let Some(m) = after
                .members
                .get(&answer.member_id)
                .filter(|_| !leaving_static)
            {
                let t = cx
                    .live
                    .entry((group.clone(), answer.member_id.clone()))
                    .or_insert_with(|| Timers::fresh(now));
                t.last_seen = now;
                t.deadline =
                    (deadline_ms > 0).then(|| now + Duration::from_millis(deadline_ms.into()));
                t.revoking_since = match (m.revoking.is_empty(), t.revoking_since) {
                    (true, _) => None,
                    (false, Some(since)) => Some(since),
                    (false, None) => Some(now),
                };
            }
            cx.round.decide(&group, after);
            Ok(answer)
        })
        .await
    }

    /// An offset commit; per-partition outcomes, or a whole-request error.
    pub async fn commit(
        &self,
        group: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: &[(String, u32, u64, String)],
    ) -> Result<Vec<reconcile::CommitOutcome>> {
        let (group, member_id, offsets) =
            (group.to_string(), member_id.to_string(), offsets.to_vec());
        self.submit(&group.clone(), move |cx| {
            let before = cx.group(&group);
            let (after, outcomes) = reconcile::commit(
                &before,
                &group,
                &member_id,
                member_epoch,
                &offsets,
                &cx.env(),
            )?;
            cx.round.decide(&group, after);
            Ok(outcomes)
        })
        .await
    }

    /// The committed groups of `group`'s partition, as they are (for fetch and describe).
    pub fn group(&self, group: &str) -> Result<Option<GroupModel>> {
        let run = self.run_for(group)?;
        Ok(read(&run.replica, |g| g.get(group).cloned()))
    }

    /// Every group on the offsets partitions this broker leads.
    pub fn list(&self) -> Vec<(String, GroupModel)> {
        let runs: Vec<Arc<Run>> = self.runs().values().cloned().collect();
        let mut out = Vec::new();
        for run in runs.iter().filter(|r| r.replica.is_leader()) {
            read(&run.replica, |g| {
                out.extend(g.groups.iter().map(|(n, m)| (n.clone(), m.clone())))
            });
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Moves the group's offsets; on a live group the partitions are revoked, moved and handed
    /// back. Answers once every offset is written, or `REQUEST_TIMED_OUT` if their owners did not
    /// release them in time (the reset then still completes when they do, or are evicted).
    pub async fn reset(&self, group: &str, offsets: &[(String, u32, u64)]) -> Result<()> {
        let run = self.run_for(group)?;
        let (name, wanted) = (group.to_string(), offsets.to_vec());
        self.submit(group, move |cx| {
            let before = cx.group(&name);
            let after = reconcile::reset(&before, &name, &wanted, &cx.env())?;
            cx.round.decide(&name, after);
            Ok(())
        })
        .await?;
        // Owners release the partitions on their next heartbeats; the tick writes each offset
        // once its partition is free (or its owner was evicted).
        let wait = self.config.session_timeout + self.config.heartbeat_interval * 2;
        let deadline = Instant::now() + wait;
        while reconcile::reset_pending(&Self::model(&run, group), offsets) {
            if Instant::now() >= deadline {
                return Err(ServiceError::new(
                    ErrorCode::REQUEST_TIMED_OUT,
                    format!("members of group {group} did not release the partitions within {wait:?}; the reset completes when they do"),
                ));
            }
            if !run.replica.is_leader() {
                return Err(not_coordinator(ServiceError::not_leader(None)));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Sets the group's own session timeout and heartbeat interval (`reconcile::alter_config`).
    /// Members get the new interval with their next heartbeat; a new session applies to members
    /// that join after it and ask for none.
    pub async fn alter_config(&self, group: &str, configs: &[(String, String)]) -> Result<()> {
        let (name, configs) = (group.to_string(), configs.to_vec());
        self.submit(group, move |cx| {
            let before = cx.group(&name);
            let after = reconcile::alter_config(&before, &name, &configs, &cx.env())?;
            cx.round.decide(&name, after);
            Ok(())
        })
        .await
    }

    /// Deletes a group without members.
    pub async fn delete(&self, group: &str) -> Result<()> {
        let name = group.to_string();
        self.submit(group, move |cx| {
            let before = cx.group(&name);
            let exists = before != GroupModel::default();
            let after = reconcile::delete(exists.then_some(&before), &name)?;
            cx.round.decide(&name, after);
            Ok(())
        })
        .await
    }

    /// Evictions, finished resets, new partitions and offset expiry, for every group of the run
    /// (as this round's earlier decisions left them).
    fn tick(cx: &mut Cx<'_>) {
        let now = Instant::now();
        let mut names: Vec<String> = read(cx.replica, |g| g.groups.keys().cloned().collect());
        names.extend(cx.round.touched().map(str::to_string));
        names.sort();
        names.dedup();
        let mut present = HashSet::new();
        for name in &names {
            let before = cx.group(name);
            let mut evict = Vec::new();
            for (id, m) in &before.members {
                present.insert((name.clone(), id.clone()));
                let t = cx
                    .live
                    .entry((name.clone(), id.clone()))
                    .or_insert_with(|| Timers::fresh(now));
                let session = Duration::from_millis(m.session_timeout_ms.into());
                let why = if now.duration_since(t.last_seen) > session {
                    Some("session timed out")
                } else if t.deadline.is_some_and(|d| now > d) {
                    Some("processing deadline passed")
                } else if t
                    .revoking_since
                    .is_some_and(|s| now.duration_since(s) > session)
                {
                    Some("revocation not acknowledged within the session timeout")
                } else {
                    None
                };
                if let Some(why) = why {
                    tracing::info!(group = %name, member = %id, why, "evicting group member");
                    evict.push(id.clone());
                }
            }
            let env = cx.env();
            let after = if evict.is_empty() {
                let mut g = before.clone();
                // Members: new partitions of their topics; resets: released partitions; no group
                // record yet (offsets committed by an admin): start its retention clock.
                if !g.members.is_empty() || g.meta.as_ref().is_none_or(|m| !m.resetting.is_empty())
                {
                    reconcile::refresh(&mut g, name, &env, false);
                }
                reconcile::expire(&g, &env).unwrap_or(g)
            } else {
                reconcile::remove_members(&before, name, &evict, &env)
            };
            if after != before {
                cx.round.decide(name, after);
            }
        }
        cx.live.retain(|k, _| present.contains(k));
    }
}

/// A write that failed because this replica no longer leads tells the client to find the new
/// coordinator.
fn not_coordinator(e: ServiceError) -> ServiceError {
    if e.code == ErrorCode::NOT_LEADER {
        ServiceError::new(
            ErrorCode::NOT_COORDINATOR,
            format!("this broker stopped coordinating the group ({})", e.message),
        )
    } else {
        e
    }
}
