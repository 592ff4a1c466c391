//! The group coordinator at run time: one [`Run`] per `__consumer_offsets` partition this broker
//! leads, started by the leader-service supervisor with the term and ended with it.
//!
//! A run is one task that owns every change to its groups (heartbeats, commits, resets,
//! deletions, evictions): requests queue to it, and it decides them in rounds (`round.rs`): all
//! requests waiting when a round starts are decided in order on a working copy of the committed
//! groups ([`super::reconcile`] decides), the round's net difference goes through raft as one
//! proposal (acks `all`), and every request of the round is answered once it is committed and
//! applied, so the next round starts from it. Reads (offset fetch, describe, list) use the
//! committed state without queueing. The requests themselves are in `requests.rs`.
//!
//! Liveness is the run's own (`liveness.rs`): when each member was last heard from, its processing deadline and
//! since when it owes a revocation. Nothing of it is replicated; a new coordinator gives every member
//! a fresh session (a member cannot be evicted for a failover it could not see). A tick, decided in
//! the round it falls in, evicts members past their session, their deadline or their revocation
//! time, writes resets whose partitions were released, picks up new partitions of subscribed
//! topics, and expires offsets.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use sluice_protocol::wire::{Acks, ErrorCode};
use tokio::sync::{mpsc, oneshot};

use super::liveness::Live;
use super::reconcile::{self, Env};
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

/// Answers a request once its round's write has ended (with that write's outcome).
type Answer = Box<dyn FnOnce(&Result<()>) + Send>;
/// A request's decision, made inside a round.
type Job = Box<dyn FnOnce(&mut Cx<'_>) -> Answer + Send>;

/// The coordinator of one offsets partition for one term.
#[derive(Debug)]
pub struct Run {
    partition: u32,
    term: u64,
    pub(super) replica: Arc<Replica>,
    /// Requests for the run's task.
    jobs: mpsc::Sender<Job>,
}

/// What a decision inside a round sees: the round's groups, the run's timers and the world.
pub(super) struct Cx<'a> {
    coord: &'a GroupCoordinator,
    pub(super) replica: &'a Replica,
    pub(super) round: &'a mut Round,
    pub(super) live: &'a mut Live,
    topics: &'a BTreeMap<String, u32>,
    now_ms: i64,
}

impl Cx<'_> {
    pub(super) fn env(&self) -> Env<'_> {
        Env {
            now_ms: self.now_ms,
            topics: self.topics,
            config: &self.coord.config,
        }
    }

    /// `group` as committed plus this round's earlier decisions (blank if it does not exist).
    pub(super) fn group(&mut self, group: &str) -> GroupModel {
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

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The group state of an offsets partition's replica (a broken invariant if it keeps another).
pub(super) fn read<R>(replica: &Replica, f: impl FnOnce(&Groups) -> R) -> R {
    replica.with_state(|s| {
        let state = s
            .as_any()
            .and_then(|a| a.downcast_ref::<OffsetsState>())
            .unwrap_or_else(|| panic!("an offsets partition without group state"));
        f(&state.groups)
    })
}

/// Takes a run out of the coordinator's map when its task ends, however it ends (a decision that
/// panics must not leave a dead run answering `NOT_COORDINATOR` for the rest of the term).
struct Deregister<'a> {
    coord: &'a GroupCoordinator,
    partition: u32,
    term: u64,
}

impl Drop for Deregister<'_> {
    fn drop(&mut self) {
        let mut runs = self.coord.runs();
        if runs
            .get(&self.partition)
            .is_some_and(|r| r.term == self.term)
        {
            runs.remove(&self.partition);
        }
    }
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

    pub(super) fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<Run>>> {
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
        let _deregister = Deregister {
            coord: &self,
            partition: ctx.partition,
            term: ctx.term,
        };
        tracing::info!(
            partition = ctx.partition,
            term = ctx.term,
            "group coordinator started"
        );
        let tick = (self.config.heartbeat_interval / 2)
            .clamp(Duration::from_millis(10), Duration::from_millis(500));
        let mut next_tick = tokio::time::Instant::now() + tick;
        let mut live = Live::default();
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
        // Dropping `rx` drops the queued requests' answers: their callers hear NOT_COORDINATOR;
        // `_deregister` takes the run out of the map.
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
                super::liveness::tick(&mut cx);
            }
        }
        let written = self.write(run, &round).await;
        match &written {
            Ok(()) => live.commit(),
            Err(e) => {
                tracing::debug!(partition = run.partition, requests = answers.len(), error = %e, "coordinator round not written");
                live.roll_back();
                // A write that timed out may still commit: the next round must not decide from a
                // state without it (its changes and the next round's would both apply).
                run.replica.settle().await;
            }
        }
        for answer in answers {
            answer(&written);
        }
    }

    /// Queues a decision for `group`'s run and waits for its answer: its own error, or once its
    /// round is written, that write's outcome.
    pub(super) async fn submit<T: Send + 'static>(
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

    pub(super) fn new_member_id(&self) -> String {
        let n = self.next_member.fetch_add(1, Ordering::Relaxed);
        format!(
            "{}-{:x}-{n}",
            self.cluster.ctx.node_id,
            now_ms().rem_euclid(1 << 40)
        )
    }

    /// The run coordinating `group`, or why there is none here.
    pub(super) fn run_for(&self, group: &str) -> Result<Arc<Run>> {
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
}

/// A write that failed because this replica no longer leads tells the client to find the new
/// coordinator.
pub(super) fn not_coordinator(e: ServiceError) -> ServiceError {
    if e.code == ErrorCode::NOT_LEADER {
        ServiceError::new(
            ErrorCode::NOT_COORDINATOR,
            format!("this broker stopped coordinating the group ({})", e.message),
        )
    } else {
        e
    }
}
