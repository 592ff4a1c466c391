//! Idle partition groups stop ticking, and a dead leader still gets replaced.
//!
//! A group with no work parks its raft ticker: followers once they have seen no new entries for
//! [`quiet_after`], the leader after twice that and only once every follower has everything (so
//! followers park before the leader's heartbeats stop). Work wakes a group (see `raft::activity`).
//!
//! Without heartbeats, followers cannot notice a dead leader by themselves, so brokers watch each
//! other instead: every broker pings every peer (one tiny request per peer per
//! [`PING_EVERY`], however many groups they share). When a peer has not answered for an election
//! timeout, every parked group here that it leads wakes up, and its election timer does the rest.
//! When a peer answers again after a missed ping (it restarted), the groups led here that it is a
//! voter of stay awake for a few election timeouts, so its replicas hear their leader before their
//! own election timers run out.
//! The metadata group never parks: it is one group, and it keeps the cluster's view of leaders fresh.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Cluster;
use crate::replica::Replicas;

/// How often each peer is pinged and parked groups are reviewed.
pub const PING_EVERY: Duration = Duration::from_millis(200);

/// How long a follower sees no new entries before it parks (the leader waits twice this).
pub fn quiet_after(heartbeat: Duration) -> Duration {
    (heartbeat * 8).max(Duration::from_secs(1))
}

/// When each peer last answered, and when it last came back (answered after a missed ping).
#[derive(Debug)]
pub struct Liveness {
    started: Instant,
    last_ok: Mutex<HashMap<u64, Instant>>,
    /// Peers whose last ping went unanswered.
    missed: Mutex<HashSet<u64>>,
    /// When each peer last answered after missing a ping: it restarted, or its link came back.
    returned: Mutex<HashMap<u64, Instant>>,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            started: Instant::now(),
            last_ok: Mutex::new(HashMap::new()),
            missed: Mutex::new(HashSet::new()),
            returned: Mutex::new(HashMap::new()),
        }
    }
}

impl Liveness {
    /// Whether `peer` answered within `timeout` (a peer not heard from yet gets `timeout` from our
    /// start).
    pub fn is_alive(&self, peer: u64, timeout: Duration) -> bool {
        let last = lock(&self.last_ok)
            .get(&peer)
            .copied()
            .unwrap_or(self.started);
        last.elapsed() < timeout
    }

    fn answered(&self, peer: u64) {
        let now = Instant::now();
        lock(&self.last_ok).insert(peer, now);
        if lock(&self.missed).remove(&peer) {
            lock(&self.returned).insert(peer, now);
        }
    }

    fn missed(&self, peer: u64) {
        lock(&self.missed).insert(peer);
    }

    /// Peers that came back (answered after a missed ping) within `window`.
    pub fn returned_within(&self, window: Duration) -> Vec<u64> {
        lock(&self.returned)
            .iter()
            .filter(|(_, at)| at.elapsed() < window)
            .map(|(id, _)| *id)
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(_) => panic!("liveness lock poisoned: a panic happened mid-update"),
    }
}

/// Pings every peer broker until `stop` is cancelled.
pub async fn ping_peers(cluster: Cluster, stop: CancellationToken) {
    let me = cluster.ctx.node_id;
    loop {
        for (id, addr) in cluster.metadata.brokers() {
            let id = u64::from(id);
            if id == me {
                continue;
            }
            let c = cluster.clone();
            tokio::spawn(async move {
                if c.ctx.peers.ping(&addr, PING_EVERY * 2).await {
                    c.liveness.answered(id);
                } else {
                    c.liveness.missed(id);
                }
            });
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PING_EVERY) => {}
        }
    }
}

/// Parks idle partition groups and wakes those whose leader died, until `stop` is cancelled.
pub async fn run(
    cluster: Cluster,
    replicas: Arc<Replicas>,
    heartbeat: Duration,
    election_timeout: Duration,
    stop: CancellationToken,
) {
    let quiet = quiet_after(heartbeat);
    let liveness = cluster.liveness.clone();
    let alive = |leader: u64| liveness.is_alive(leader, election_timeout);
    loop {
        // A peer that restarted has followers that do not know their leader yet: if the leader
        // stayed parked, their election timers would run out and they would take leadership from
        // it (one needless election per parked group, and leadership away from its preferred
        // replica). Leaders here keep such groups awake for a while instead, so their heartbeats
        // reach the peer's replicas as they open.
        let back = liveness.returned_within(election_timeout * 4);
        for t in replicas.list() {
            for p in t.partitions.values() {
                if !back.is_empty() {
                    p.wake_for_peers(&back);
                }
                p.review_idle(quiet, alive);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PING_EVERY) => {}
        }
    }
}
