//! Preferred leaders: the first replica of each partition is its preferred leader (the assignment
//! spreads those evenly over the brokers, see [`super::state::assign`]), and leadership goes back
//! to it whenever it is up and in sync.
//!
//! - [`lead_back`]: one partition this broker leads, handed to its preferred replica if that one
//!   is reachable and in sync (what both paths below do, and what they report);
//! - [`balance_here`]: every partition this broker leads, at once (the local part of the admin
//!   service's cluster-wide balance);
//! - [`run`]: the automatic return (like Kafka's `auto.leader.rebalance.enable`): a partition led
//!   here while its preferred replica has been reachable for `auto_leader_rebalance_delay` is handed
//!   back. It cannot flap: leadership only ever moves to the preferred replica, never to one that
//!   is not in sync, and never while a transfer of the partition is under way
//!   (`replica::transfer`).
//!
//! It never changes an assignment (moves do) and never forces an election.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Cluster;
use crate::replica::{Leadership, Replica, Replicas, Transfer, TransferBounds};

/// The bounds of every hand-back: the preferred replica must reach the leader's last entry within
/// `catch_up`, then take over within `settle`.
pub const BOUNDS: TransferBounds = TransferBounds {
    catch_up: Duration::from_secs(2),
    settle: Duration::from_secs(5),
};

/// What happened to one partition's leadership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaderOutcome {
    /// Leadership moved to the preferred replica.
    Moved,
    /// The preferred replica leads already.
    AlreadyPreferred,
    /// Leadership stayed where it was (`reason` says why).
    Skipped,
}

/// One partition's leadership before and after a balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionLeader {
    pub topic: String,
    pub partition: u32,
    /// The first of its replicas, if it has any.
    pub preferred: Option<u32>,
    /// The leader when the balance started, if one was known.
    pub leader_before: Option<u32>,
    /// The leader when the balance ended, if one is known.
    pub leader: Option<u32>,
    pub outcome: LeaderOutcome,
    /// Why it was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl PartitionLeader {
    /// A partition left where it is, for `reason`.
    pub fn skipped(
        topic: &str,
        partition: u32,
        preferred: Option<u32>,
        leader: Option<u32>,
        reason: String,
    ) -> PartitionLeader {
        PartitionLeader {
            topic: topic.to_string(),
            partition,
            preferred,
            leader_before: leader,
            leader,
            outcome: LeaderOutcome::Skipped,
            reason: Some(reason),
        }
    }
}

/// The partition's preferred leader, and whether a replica move of it is under way, per the
/// metadata (`None`: the topic is gone, or is another incarnation than the replica's).
fn preference(cluster: &Cluster, replica: &Replica) -> Option<(Option<u32>, bool)> {
    let p = replica.partition();
    cluster.metadata.with_state(|s| {
        let rec = s
            .topics
            .get(replica.topic())
            .filter(|r| r.id == replica.topic_id())?;
        let preferred = rec
            .replicas
            .get(p as usize)
            .and_then(|r| r.first().copied());
        Some((preferred, rec.moving.contains_key(&p)))
    })
}

fn as_broker(id: Option<u64>) -> Option<u32> {
    id.and_then(|l| u32::try_from(l).ok())
}

/// Hands `replica`'s leadership to its preferred replica when this broker leads it, the preferred
/// replica is another broker that answers pings (within `election_timeout`) and no move is under
/// way; the transfer itself checks that it is in sync.
pub async fn lead_back(
    cluster: &Cluster,
    replica: &Replica,
    election_timeout: Duration,
) -> PartitionLeader {
    let me = cluster.ctx.node_id;
    let (topic, partition) = (replica.topic(), replica.partition());
    let before = as_broker(replica.leader());
    let Some((preferred, moving)) = preference(cluster, replica) else {
        return PartitionLeader::skipped(
            topic,
            partition,
            None,
            before,
            "the topic is gone".into(),
        );
    };
    let skip =
        |reason: String| PartitionLeader::skipped(topic, partition, preferred, before, reason);
    let Some(to) = preferred else {
        return skip("the partition has no replicas".into());
    };
    if !replica.is_leader() {
        return skip("this broker does not lead the partition".into());
    }
    if u64::from(to) == me {
        return PartitionLeader {
            outcome: LeaderOutcome::AlreadyPreferred,
            reason: None,
            ..skip(String::new())
        };
    }
    if moving {
        return skip("a replica move of the partition is under way".into());
    }
    if !cluster.liveness.is_alive(u64::from(to), election_timeout) {
        return skip(format!("preferred leader {to} does not answer"));
    }
    match replica.transfer_leadership(u64::from(to), BOUNDS).await {
        Transfer::Moved => PartitionLeader {
            leader: Some(to),
            outcome: LeaderOutcome::Moved,
            reason: None,
            ..skip(String::new())
        },
        Transfer::NotMoved(why) => PartitionLeader {
            leader: as_broker(replica.leader()),
            ..skip(why)
        },
    }
}

/// [`lead_back`] for every partition this broker leads, all at once.
pub async fn balance_here(
    cluster: &Cluster,
    replicas: &Replicas,
    election_timeout: Duration,
) -> Vec<PartitionLeader> {
    let led: Vec<Arc<Replica>> = replicas
        .list()
        .iter()
        .flat_map(|t| t.partitions.values().cloned().collect::<Vec<_>>())
        .filter(|r| r.is_leader())
        .collect();
    futures_util::future::join_all(led.iter().map(|r| lead_back(cluster, r, election_timeout)))
        .await
}

/// How often the automatic return looks at the partitions led here.
fn check_every(delay: Duration) -> Duration {
    (delay / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Hands partitions led here back to their preferred replica once it has been reachable for
/// `delay` (counted again after each attempt, and from each new term), until `stop` is cancelled.
pub async fn run(
    cluster: Cluster,
    replicas: Arc<Replicas>,
    delay: Duration,
    election_timeout: Duration,
    stop: CancellationToken,
) {
    let me = cluster.ctx.node_id;
    // Per group led here by a broker that is not its preferred leader: (term, since when).
    let mut waiting: HashMap<u64, (u64, Instant)> = HashMap::new();
    loop {
        let now = Instant::now();
        let mut seen = HashSet::new();
        for t in replicas.list() {
            for r in t.partitions.values() {
                let Leadership::Leader { term } = r.leadership_now() else {
                    continue;
                };
                if r.transfer_pending() {
                    continue;
                }
                let wants_back = match preference(&cluster, r) {
                    Some((Some(to), false)) => {
                        u64::from(to) != me
                            && cluster.liveness.is_alive(u64::from(to), election_timeout)
                    }
                    _ => false,
                };
                if !wants_back {
                    continue;
                }
                seen.insert(r.group_id());
                let since = waiting.entry(r.group_id()).or_insert((term, now));
                if since.0 != term {
                    *since = (term, now);
                }
                if now.duration_since(since.1) < delay {
                    continue;
                }
                since.1 = now;
                let (c, r) = (cluster.clone(), r.clone());
                tokio::spawn(async move {
                    let row = lead_back(&c, &r, election_timeout).await;
                    match row.outcome {
                        LeaderOutcome::Moved => tracing::info!(
                            topic = row.topic, partition = row.partition, to = ?row.preferred,
                            "leadership returned to the preferred replica"
                        ),
                        _ => tracing::debug!(
                            topic = row.topic, partition = row.partition, to = ?row.preferred,
                            reason = ?row.reason, "leadership not returned to the preferred replica yet"
                        ),
                    }
                });
            }
        }
        waiting.retain(|g, _| seen.contains(g));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(check_every(delay)) => {}
        }
    }
}
