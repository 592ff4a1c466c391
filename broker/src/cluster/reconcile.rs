//! Local replicas follow the metadata: whenever the cluster state changes (and every few seconds,
//! to retry what failed), open the partitions assigned here that are not open, give open ones
//! their topic's changed settings, and remove the topics that are gone (or were re-created under a
//! new id).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use tokio_util::sync::CancellationToken;

use super::state::Command;
use super::Cluster;
use crate::replica::registry::ReplicaSpec;
use crate::replica::{Replica, Replicas};

/// How often reconciliation runs without a metadata change (retries of failed opens).
const RETRY_EVERY: Duration = Duration::from_secs(2);

/// Reconciles on every metadata change and every [`RETRY_EVERY`] until `stop` is cancelled.
pub async fn run(cluster: Cluster, replicas: Arc<Replicas>, stop: CancellationToken) {
    let mut changes = cluster.metadata.shared.subscribe();
    loop {
        reconcile_once(&cluster, &replicas).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = changes.changed() => {}
            _ = tokio::time::sleep(RETRY_EVERY) => {}
        }
    }
}

pub async fn reconcile_once(cluster: &Cluster, hosted: &Replicas) {
    let state = cluster.metadata.state();
    let brokers = cluster.metadata.brokers();
    let me = cluster.ctx.node_id;
    // Gone or re-created topics first, so a new incarnation starts from empty directories.
    for t in hosted.list() {
        if state.topics.get(&t.name).map(|r| r.id) != Some(t.id) {
            hosted.remove(&cluster.ctx, &t.name).await;
        }
    }
    for (name, id) in hosted.on_disk() {
        if state.deleted_topic_ids.contains(&id)
            && state.topics.get(&name).map(|r| r.id) != Some(id)
        {
            hosted.remove_leftover(&name);
        }
    }
    for (name, record) in &state.topics {
        let local = hosted.get(name);
        if local.as_ref().is_some_and(|t| t.id == record.id) {
            if let Err(e) = hosted
                .update_settings(name, record.id, &record.configs)
                .await
            {
                tracing::error!(topic = %name, error = %e, "cannot apply the topic's changed settings; retrying");
            }
        }
        for (p, replicas) in record.replicas.iter().enumerate() {
            let p = p as u32;
            let target = record.moving.get(&p);
            let mine = |set: &[u32]| set.iter().any(|r| u64::from(*r) == me);
            let here = local.as_ref().and_then(|t| t.partitions.get(&p).cloned());
            if !mine(replicas) && !target.is_some_and(|t| mine(t)) {
                // Not (or no longer) a replica here: a finished move took it away.
                if here.is_some() {
                    hosted.remove_partition(&cluster.ctx, name, p).await;
                }
                continue;
            }
            if let Some(part) = here {
                // The leader carries out a move.
                if let Some(target) = target {
                    if part.is_leader() {
                        start_move(cluster, part, target.clone());
                    }
                }
                continue;
            }
            // Only the replicas a partition was created with form its group, and only before it ever
            // had a leader; any other replica (added later, or an original one moved away and back
            // with an empty log) waits for the leader to bring it in.
            let initial = record
                .initial_replicas
                .get(p as usize)
                .filter(|i| mine(i) && !record.leaders.contains_key(&p))
                .cloned();
            let members: Option<Option<BTreeMap<u64, BasicNode>>> = match initial {
                None => Some(None),
                Some(initial) => initial
                    .iter()
                    .map(|r| {
                        brokers
                            .get(r)
                            .map(|a| (u64::from(*r), BasicNode::new(a.clone())))
                    })
                    .collect::<Option<BTreeMap<_, _>>>()
                    .map(Some),
            };
            let Some(members) = members else {
                tracing::warn!(topic = %name, partition = p, "a replica's broker address is unknown; retrying");
                continue;
            };
            if let Err(e) = hosted
                .open_partition(
                    &cluster.ctx,
                    ReplicaSpec {
                        topic: name,
                        topic_id: record.id,
                        configs: &record.configs,
                        partition: p,
                        group_id: record.group_id(p),
                        members,
                        preferred: replicas.first().is_some_and(|r| u64::from(*r) == me),
                    },
                )
                .await
            {
                tracing::error!(topic = %name, partition = p, error = %e, "cannot open partition replica");
            }
        }
    }
}

/// Moves a partition's group to `target` voters, once at a time per group: new replicas join as
/// learners and catch up, the voters change, and the metadata records the move as complete.
fn start_move(cluster: &Cluster, replica: Arc<Replica>, target: Vec<u32>) {
    {
        let mut moving = match cluster.moves.lock() {
            Ok(m) => m,
            Err(_) => panic!("replica moves lock poisoned"),
        };
        if !moving.insert(replica.group_id()) {
            return;
        }
    }
    let cluster = cluster.clone();
    tokio::spawn(async move {
        let result = drive_move(&cluster, &replica, &target).await;
        if let Err(e) = &result {
            tracing::warn!(topic = replica.topic(), partition = replica.partition(), error = %e, "moving partition replicas failed; will retry");
        }
        match cluster.moves.lock() {
            Ok(mut m) => m.remove(&replica.group_id()),
            Err(_) => panic!("replica moves lock poisoned"),
        };
    });
}

async fn drive_move(cluster: &Cluster, replica: &Replica, target: &[u32]) -> Result<(), String> {
    let (topic, partition) = (replica.topic(), replica.partition());
    let brokers = cluster.metadata.brokers();
    let voters = replica.voters();
    replica.touch();
    for id in target {
        if voters.contains(&u64::from(*id)) {
            continue;
        }
        let addr = brokers
            .get(id)
            .ok_or_else(|| format!("broker {id} has no address"))?;
        tracing::info!(topic, partition, broker = id, "adding replica");
        replica.add_learner(u64::from(*id), addr.clone()).await?;
    }
    let set: std::collections::BTreeSet<u64> = target.iter().map(|r| u64::from(*r)).collect();
    replica.replace_voters(set).await?;
    tracing::info!(topic, partition, ?target, "partition voters changed");
    // The metadata leader checks that this matches the move under way before it applies it.
    cluster
        .propose_anywhere(&Command::CompleteReassignment {
            topic: topic.to_string(),
            partition,
            replicas: target.to_vec(),
        })
        .await
        .map_err(|e| e.to_string())
}
