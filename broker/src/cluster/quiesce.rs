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
//! The metadata group never parks: it is one group, and it keeps the cluster's view of leaders fresh.

use std::collections::HashMap;
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

/// When each peer last answered.
#[derive(Debug)]
pub struct Liveness {
    started: Instant,
    last_ok: Mutex<HashMap<u64, Instant>>,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            started: Instant::now(),
            last_ok: Mutex::new(HashMap::new()),
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
        lock(&self.last_ok).insert(peer, Instant::now());
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
        for t in replicas.list() {
            for p in t.partitions.values() {
                p.review_idle(quiet, alive);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PING_EVERY) => {}
        }
    }
}
