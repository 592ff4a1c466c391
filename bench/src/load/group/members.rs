//! Group members of `sluice-bench group`, each a [`GroupConsumer`] polling in its own tokio task with
//! its own [`Client`] (so its own connection, as separate processes would have: one shared client
//! means one connection per broker with `max_in_flight` requests, and a hundred members each keeping
//! a long-poll fetch outstanding would queue their heartbeats behind each other's fetches, measuring
//! the bench rather than the group). A member hands what each poll returned to a [`Sink`] (the drain's
//! per-offset counts, or the receipts timeline of the leave and join measurements) and publishes its
//! assignment after every poll; it polls until told to stop or its sink is done, then `close`s
//! (commit, revoke, leave). This module also waits for a group to settle.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sluice_client::{
    Client, ClientConfig, ConsumerRecord, GroupConsumer, GroupConsumerConfig, OffsetReset,
    Subscription,
};
use tokio::task::JoinHandle;

use crate::load::{broker_error, Error};

/// How long one `poll` of a member waits for records (it reconciles its assignment between polls).
const POLL_WAIT: Duration = Duration::from_millis(100);
/// The processing deadline members promise: far beyond any gap between their polls here, and a
/// member whose loop stopped still loses its partitions within a minute.
const MAX_PROCESSING: Duration = Duration::from_secs(60);

/// Where a member's records go.
pub(super) trait Sink: Send + Sync + 'static {
    /// Records member `member`'s poll returned at `at` (not empty).
    fn note(&self, member: u32, at: Instant, records: &[ConsumerRecord]);
    /// The member may stop polling (the drain read everything).
    fn done(&self) -> bool {
        false
    }
}

/// Per-lock access that survives a panicked holder (the data is plain counters and lists).
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a running member shows the measurement.
#[derive(Debug, Default)]
pub(super) struct View {
    /// Its owned partitions after its latest poll, and when that set last changed.
    assignment: Mutex<(Option<Instant>, BTreeSet<u32>)>,
    /// When its first poll was called.
    pub first_poll: OnceLock<Instant>,
    /// When its first poll with records returned.
    pub first_record: OnceLock<Instant>,
    /// When its latest poll with records returned.
    last_record: Mutex<Option<Instant>>,
}

impl View {
    pub fn assignment(&self) -> BTreeSet<u32> {
        lock(&self.assignment).1.clone()
    }

    /// When the assignment last changed (`None`: never had one).
    pub fn changed_at(&self) -> Option<Instant> {
        lock(&self.assignment).0
    }

    pub fn last_record(&self) -> Option<Instant> {
        *lock(&self.last_record)
    }

    fn publish(&self, now: Instant, owned: BTreeSet<u32>) {
        let mut a = lock(&self.assignment);
        if a.1 != owned {
            *a = (Some(now), owned);
        }
    }
}

/// How a member ended.
#[derive(Debug)]
pub(super) struct Closed {
    /// When `close` was called.
    pub at: Instant,
    /// What it owned then.
    pub owned: BTreeSet<u32>,
    /// How long `close` took (its commit, revocation and leave).
    pub took: Duration,
}

/// A member polling in its task.
#[derive(Debug)]
pub(super) struct Member {
    pub view: Arc<View>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<Result<Closed, Error>>,
}

/// The settings every member of the bench uses: subscribe to `topic`, start at the earliest offset
/// without a commit, auto-commit (the client's default interval), the coordinator's session.
pub(super) fn config(group: &str, topic: &str) -> GroupConsumerConfig {
    GroupConsumerConfig {
        reset: OffsetReset::Earliest,
        max_processing: MAX_PROCESSING,
        client_id: "sluice-bench".to_string(),
        ..GroupConsumerConfig::new(group, Subscription::Topics(vec![topic.to_string()]))
    }
}

impl Member {
    /// Starts member `index` of `group` on `topic`, with a client of its own.
    pub fn start(
        addr: &str,
        group: &str,
        topic: &str,
        index: u32,
        sink: Arc<dyn Sink>,
    ) -> Result<Member, Error> {
        let client = Client::new(ClientConfig::new(addr))
            .map_err(|e| format!("cannot create a client: {e}"))?;
        let consumer = GroupConsumer::new(client, config(group, topic))
            .map_err(|e| format!("cannot create a group consumer: {e}"))?;
        let view = Arc::new(View::default());
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run(
            consumer,
            addr.to_string(),
            index,
            sink,
            view.clone(),
            stop.clone(),
        ));
        Ok(Member { view, stop, task })
    }

    /// Whether its task ended (failed, or its sink is done).
    pub fn finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Tells it to close after its current poll, without waiting.
    pub fn tell_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits for it to end (told to stop, its sink done, or failed).
    pub async fn join(self) -> Result<Closed, Error> {
        self.task
            .await
            .map_err(|e| format!("member task failed: {e}"))?
    }

    /// Closes it and waits.
    pub async fn stop(self) -> Result<Closed, Error> {
        self.tell_stop();
        self.join().await
    }
}

async fn run(
    mut c: GroupConsumer,
    addr: String,
    index: u32,
    sink: Arc<dyn Sink>,
    view: Arc<View>,
    stop: Arc<AtomicBool>,
) -> Result<Closed, Error> {
    let _ = view.first_poll.set(Instant::now());
    let polled = async {
        while !stop.load(Ordering::Relaxed) && !sink.done() {
            let records = c
                .poll(POLL_WAIT)
                .await
                .map_err(|e| broker_error(&addr, "group poll", e))?;
            let now = Instant::now();
            if !records.is_empty() {
                let _ = view.first_record.set(now);
                *lock(&view.last_record) = Some(now);
                sink.note(index, now, &records);
            }
            view.publish(now, c.assignment().into_iter().map(|(_, p)| p).collect());
        }
        Ok::<(), Error>(())
    };
    let polled = polled.await;
    let owned: BTreeSet<u32> = c.assignment().into_iter().map(|(_, p)| p).collect();
    let at = Instant::now();
    let closed = c
        .close()
        .await
        .map_err(|e| broker_error(&addr, "close a group member", e));
    // A poll failure is the one to report; a close failure otherwise.
    polled?;
    closed?;
    Ok(Closed {
        at,
        owned,
        took: at.elapsed(),
    })
}

/// Closes every member at once and waits for all; the first failure, if any.
pub(super) async fn stop_all(members: Vec<Member>) -> Result<Vec<Closed>, Error> {
    for m in &members {
        m.tell_stop();
    }
    let mut out = Vec::with_capacity(members.len());
    let mut first_err = None;
    for m in members {
        match m.join().await {
            Ok(c) => out.push(c),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The first member whose task ended early, as an error (its own failure, or that it stopped).
pub(super) async fn check_running(members: &mut Vec<Member>) -> Result<(), Error> {
    if let Some(i) = members.iter().position(Member::finished) {
        let m = members.swap_remove(i);
        m.join().await?;
        return Err(format!("group member {i} stopped polling on its own").into());
    }
    Ok(())
}

/// Whether the members own every one of `partitions` partitions exactly once, each member owns at
/// least one (when there are enough partitions) and has received records since its last change.
fn covered(members: &[Member], partitions: u32) -> bool {
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for m in members {
        let owned = m.view.assignment();
        if owned.is_empty() && members.len() <= partitions as usize {
            return false;
        }
        let fresh = match (m.view.changed_at(), m.view.last_record()) {
            (Some(changed), Some(last)) => last >= changed,
            (None, _) => owned.is_empty(),
            (Some(_), None) => false,
        };
        if !owned.is_empty() && !fresh {
            return false;
        }
        total += owned.len();
        seen.extend(owned);
    }
    total == partitions as usize && seen.len() == partitions as usize
}

/// Waits until the group is settled: every partition owned exactly once, every member with
/// partitions receiving records, and no assignment changed for `quiet`. Returns when it settled
/// (the last change). Fails after `wait`, or when a member stops.
pub(super) async fn settle(
    members: &mut Vec<Member>,
    partitions: u32,
    quiet: Duration,
    wait: Duration,
) -> Result<Instant, Error> {
    let deadline = Instant::now() + wait;
    loop {
        check_running(members).await?;
        let now = Instant::now();
        let last_change = members
            .iter()
            .filter_map(|m| m.view.changed_at())
            .max()
            .unwrap_or(now);
        if covered(members, partitions) && now.saturating_duration_since(last_change) >= quiet {
            return Ok(last_change);
        }
        if now >= deadline {
            let sizes: Vec<usize> = members.iter().map(|m| m.view.assignment().len()).collect();
            return Err(format!(
                "the group of {} members over {partitions} partitions did not settle within \
                 {wait:?} (partitions per member: {sizes:?})",
                members.len()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
