//! Helpers of `group_consumer.rs`: a broker with quick group settings, producing, members polling
//! in their own tasks with a listener that records what it hears, and what they saw; `proxy`: an
//! admin commit and a proxy that makes offset lookups fail or holds commits back.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_client::{
    Acks, Admin, Client, ClientConfig, Commits, ConsumerRecord, GroupConsumer, GroupConsumerConfig,
    Producer, ProducerConfig, ProducerRecord, RebalanceListener, Subscription,
};
use sluice_tests::Broker;

mod proxy;
pub use proxy::{admin_commit, FaultProxy};

/// Group settings that make a test quick: 2 s sessions, heartbeats every 100 ms. Also sends the
/// client's log to the test's output (shown when it fails; `SLUICE_CLIENT_LOG` sets the filter).
pub fn group_broker() -> (tempfile::TempDir, Broker) {
    let filter = std::env::var("SLUICE_CLIENT_LOG").unwrap_or_else(|_| "sluice_client=info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.toml");
    std::fs::write(
        &path,
        "group_session_timeout_ms = 2000\ngroup_min_session_timeout_ms = 500\ngroup_heartbeat_interval_ms = 100\noffsets_topic_partitions = 4\n",
    )
    .unwrap();
    let broker = Broker::start(&["--config", path.to_str().unwrap()]);
    (dir, broker)
}

pub const SESSION: Duration = Duration::from_secs(2);

pub async fn create(addr: &str, topic: &str, partitions: u32) {
    Admin::new(addr)
        .unwrap()
        .create_topic(topic, partitions, 1, &[])
        .await
        .unwrap();
}

/// A producer whose acknowledged records are committed (readable, and below `Latest`).
pub fn producer(addr: &str) -> Producer {
    let config = ProducerConfig {
        acks: Acks::All,
        ..ProducerConfig::default()
    };
    Producer::new(addr, config).unwrap()
}

/// Produces `per_partition` records to each partition; returns how many.
pub async fn produce(addr: &str, topic: &str, partitions: u32, per_partition: u32) -> usize {
    let producer = producer(addr);
    let mut deliveries = Vec::new();
    for i in 0..per_partition {
        for p in 0..partitions {
            let r = ProducerRecord::new(topic.to_string(), format!("{p}-{i}")).partition(p);
            deliveries.push(producer.send(r).await.unwrap());
        }
    }
    producer.flush().await.unwrap();
    for d in &mut deliveries {
        d.await.unwrap();
    }
    deliveries.len()
}

pub fn config(group: &str, topic: &str) -> GroupConsumerConfig {
    GroupConsumerConfig::new(group, Subscription::Topics(vec![topic.into()]))
}

/// A member with its own client (as if in its own process).
pub fn member(addr: &str, config: GroupConsumerConfig) -> GroupConsumer {
    let mut cc = ClientConfig::new(addr);
    cc.request_timeout = Duration::from_secs(10);
    GroupConsumer::new(Client::new(cc).unwrap(), config).unwrap()
}

/// What a listener heard, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Assigned(Vec<(String, u32)>),
    Revoked(Vec<(String, u32)>),
    Lost(Vec<(String, u32)>),
}

pub type Events = Arc<Mutex<Vec<(Instant, Event)>>>;

pub struct Recorder(pub Events);

impl RebalanceListener for Recorder {
    fn on_assigned(&mut self, partitions: &[(String, u32)]) {
        let e = Event::Assigned(partitions.to_vec());
        self.0.lock().unwrap().push((Instant::now(), e));
    }
    fn on_revoked(&mut self, partitions: &[(String, u32)], _: &mut Commits) {
        let e = Event::Revoked(partitions.to_vec());
        self.0.lock().unwrap().push((Instant::now(), e));
    }
    fn on_lost(&mut self, partitions: &[(String, u32)]) {
        let e = Event::Lost(partitions.to_vec());
        self.0.lock().unwrap().push((Instant::now(), e));
    }
}

/// One record as a test saw it: when its poll returned, which member, partition, offset.
pub type Seen = Arc<Mutex<Vec<(Instant, usize, u32, u64)>>>;

/// A member polling in its own task until told to stop (then it closes).
pub struct Running {
    pub assignment: Arc<Mutex<BTreeSet<u32>>>,
    pub events: Events,
    /// Polls returned (and noted) so far.
    polls: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

pub fn note(seen: &Seen, who: usize, records: &[ConsumerRecord]) {
    let now = Instant::now();
    let mut s = seen.lock().unwrap();
    s.extend(records.iter().map(|r| (now, who, r.partition, r.offset)));
}

/// Runs `c` as member `who`: poll, note, and (`commit_each`) commit after each non-empty poll.
pub fn run(mut c: GroupConsumer, who: usize, seen: Seen, commit_each: bool) -> Running {
    let events: Events = Arc::default();
    c.set_listener(Box::new(Recorder(events.clone())));
    let assignment: Arc<Mutex<BTreeSet<u32>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let polls = Arc::new(AtomicU64::new(0));
    let (a, s, n) = (assignment.clone(), stop.clone(), polls.clone());
    let task = tokio::spawn(async move {
        while !s.load(Ordering::Relaxed) {
            let records = c.poll(Duration::from_millis(100)).await.unwrap();
            note(&seen, who, &records);
            if commit_each && !records.is_empty() {
                c.commit_sync().await.unwrap();
            }
            *a.lock().unwrap() = c.assignment().into_iter().map(|(_, p)| p).collect();
            n.fetch_add(1, Ordering::SeqCst);
        }
        c.close().await.unwrap();
    });
    Running {
        assignment,
        events,
        polls,
        stop,
        task,
    }
}

impl Running {
    pub fn owned(&self) -> BTreeSet<u32> {
        self.assignment.lock().unwrap().clone()
    }

    pub async fn stop(self) -> Vec<(Instant, Event)> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        self.events.lock().unwrap().clone()
    }
}

/// Waits until each of `members` has returned from two more polls, so at least one whole poll of
/// each began after this call: whatever they would return now (a record read twice, say) has been
/// noted. Replaces a fixed pause before checking that something did not happen.
pub async fn polled_again(members: &[&Running]) {
    let from: Vec<u64> = members
        .iter()
        .map(|m| m.polls.load(Ordering::SeqCst))
        .collect();
    until("two more polls of every member", || {
        members
            .iter()
            .zip(&from)
            .all(|(m, f)| m.polls.load(Ordering::SeqCst) >= f + 2)
    })
    .await;
}

/// Waits (up to 60 s) until `f` holds.
pub async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the members' assignments split `n` partitions evenly and disjointly.
pub fn balanced(members: &[&Running], n: u32) -> bool {
    let sets: Vec<BTreeSet<u32>> = members.iter().map(|m| m.owned()).collect();
    let total: usize = sets.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<u32> = sets.iter().flatten().copied().collect();
    let share = n as usize / members.len();
    total == n as usize && union.len() == n as usize && sets.iter().all(|s| s.len() == share)
}

/// Times each (partition, offset) was returned.
pub fn counts(seen: &Seen) -> HashMap<(u32, u64), usize> {
    let mut c = HashMap::new();
    for (_, _, p, o) in seen.lock().unwrap().iter() {
        *c.entry((*p, *o)).or_default() += 1;
    }
    c
}

/// Records valued by partition, round robin, every 5 ms until `stop`; how many were acknowledged.
pub fn stream(
    addr: &str,
    topic: &str,
    partitions: u32,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    let (addr, topic) = (addr.to_string(), topic.to_string());
    tokio::spawn(async move {
        let producer = producer(&addr);
        let mut deliveries = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            for p in 0..partitions {
                let r = ProducerRecord::new(topic.clone(), "v").partition(p);
                deliveries.push(producer.send(r).await.unwrap());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        producer.flush().await.unwrap();
        for d in &mut deliveries {
            d.await.unwrap();
        }
        deliveries.len()
    })
}
