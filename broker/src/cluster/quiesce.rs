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

use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use sluice_protocol::wire::Request;
use tokio::sync::watch;

use crate::handlers::Broker;

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
        let last = self
            .last_ok
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            .copied()
            .unwrap_or(self.started);
        last.elapsed() < timeout
    }

    fn answered(&self, peer: u64) {
        self.last_ok
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer, Instant::now());
    }
}

/// Pings every peer broker until `stop`.
pub async fn ping_peers(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let me = broker.cluster.ctx.node_id;
    loop {
        for (id, addr) in broker.cluster.metadata.brokers() {
            let id = u64::from(id);
            if id == me {
                continue;
            }
            let b = broker.clone();
            tokio::spawn(async move {
                let ok = b
                    .cluster
                    .ctx
                    .peers
                    .client()
                    .request_to_with_timeout(&addr, &Request::ApiVersions, PING_EVERY * 2)
                    .await
                    .is_ok();
                if ok {
                    b.cluster.liveness.answered(id);
                }
            });
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(PING_EVERY) => {}
        }
    }
}

/// Parks idle partition groups and wakes those whose leader died, until `stop`.
pub async fn run(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let quiet = quiet_after(broker.config.raft_heartbeat);
    let timeout = broker.config.raft_election_timeout;
    let me = broker.cluster.ctx.node_id;
    loop {
        for t in broker.topics.list() {
            for p in t.partitions.values() {
                let g = &p.group;
                let a = &g.activity;
                // Read what is needed under the borrow (no clone: this runs for every group).
                let (state, term, leader, caught_up, leader_votes) = {
                    let m = g.raft.metrics();
                    let m = m.borrow_watched();
                    let caught_up = m.replication.as_ref().is_some_and(|r| {
                        r.iter().all(|(id, l)| {
                            *id == me || l.as_ref().map(|l| l.index) == m.last_log_index
                        })
                    });
                    // A leader that a membership change removed no longer heartbeats this group.
                    let leader_votes = m.current_leader.is_some_and(|l| {
                        m.membership_config.membership().voter_ids().any(|v| v == l)
                    });
                    (
                        m.state,
                        m.current_term,
                        m.current_leader,
                        caught_up,
                        leader_votes,
                    )
                };
                // A leader reports itself to the metadata once per term, so brokers without a
                // replica can name it.
                if state == ServerState::Leader
                    && a.reported_term.load(std::sync::atomic::Ordering::Relaxed) != term
                {
                    report_leadership(&broker, &t.name, t.id, p.id, term, g.activity.clone());
                }
                // A new term (an election happened) counts as work.
                if a.last_term.swap(term, std::sync::atomic::Ordering::Relaxed) != term {
                    g.touch();
                    continue;
                }
                let idle = Duration::from_millis(a.idle_ms());
                match state {
                    ServerState::Leader => {
                        if !a.is_quiesced() && idle > quiet * 2 && caught_up {
                            a.quiesce(&g.raft, (quiet * 2).as_millis() as u64);
                        }
                    }
                    ServerState::Follower => {
                        let leader_alive = leader_votes
                            && leader.is_some_and(|l| broker.cluster.liveness.is_alive(l, timeout));
                        if a.is_quiesced() && !leader_alive {
                            // Its leader is gone (or unknown): run the election timer again.
                            tracing::info!(
                                group = g.id,
                                ?leader,
                                "leader unreachable; waking parked group"
                            );
                            g.touch();
                        } else if !a.is_quiesced() && leader_alive && idle > quiet {
                            a.quiesce(&g.raft, quiet.as_millis() as u64);
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
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(PING_EVERY) => {}
        }
    }
}

/// Proposes `LeaderChanged` for a partition this broker leads (in the background; marked reported
/// only once the metadata took it, so a failure is retried on the next round).
fn report_leadership(
    broker: &Arc<Broker>,
    topic: &str,
    topic_id: u32,
    partition: u32,
    term: u64,
    activity: Arc<crate::raft::activity::Activity>,
) {
    use std::sync::atomic::Ordering;
    // Claim the report for this term; put it back if it fails.
    let prev = activity.reported_term.swap(term, Ordering::Relaxed);
    if prev == term {
        return;
    }
    let broker = broker.clone();
    let cmd = crate::cluster::state::Command::LeaderChanged {
        topic: topic.to_string(),
        topic_id,
        partition,
        leader: broker.cluster.ctx.node_id as u32,
        term,
    };
    tokio::spawn(async move {
        if let Err((code, msg)) = broker.propose_anywhere(&cmd).await {
            tracing::debug!(%code, msg, "leadership report failed; retrying");
            let _ = activity.reported_term.compare_exchange(
                term,
                prev,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    });
}
