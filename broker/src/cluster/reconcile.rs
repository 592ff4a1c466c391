//! Local replicas follow the metadata: whenever the cluster state changes (and every few seconds,
//! to retry what failed), open the partitions assigned here that are not open, and remove the
//! topics that are gone (or were re-created under a new id).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use tokio::sync::watch;

use crate::handlers::Broker;

/// How often reconciliation runs without a metadata change (retries of failed opens).
const RETRY_EVERY: Duration = Duration::from_secs(2);

pub async fn run(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let mut changes = broker.cluster.metadata.shared.subscribe();
    loop {
        reconcile_once(&broker).await;
        tokio::select! {
            _ = stop.changed() => return,
            _ = changes.changed() => {}
            _ = tokio::time::sleep(RETRY_EVERY) => {}
        }
    }
}

pub async fn reconcile_once(broker: &Broker) {
    let cluster = &broker.cluster;
    let state = cluster.metadata.state();
    let brokers = cluster.metadata.brokers();
    let me = cluster.ctx.node_id;
    // Gone or re-created topics first, so a new incarnation starts from empty directories.
    for t in broker.topics.list() {
        if state.topics.get(&t.name).map(|r| r.id) != Some(t.id) {
            broker.topics.remove(&cluster.ctx, &t.name).await;
        }
    }
    for (name, id) in broker.topics.on_disk() {
        if state.deleted_topic_ids.contains(&id)
            && state.topics.get(&name).map(|r| r.id) != Some(id)
        {
            broker.topics.remove_leftover(&name);
        }
    }
    for (name, record) in &state.topics {
        let local = broker.topics.get(name);
        for (p, replicas) in record.replicas.iter().enumerate() {
            let p = p as u32;
            let target = record.moving.get(&p);
            let mine = |set: &[u32]| set.iter().any(|r| u64::from(*r) == me);
            let hosted = local.as_ref().and_then(|t| t.partitions.get(&p).cloned());
            if !mine(replicas) && !target.is_some_and(|t| mine(t)) {
                // Not (or no longer) a replica here: a finished move took it away.
                if hosted.is_some() {
                    broker.topics.remove_partition(&cluster.ctx, name, p).await;
                }
                continue;
            }
            if let Some(part) = hosted {
                // The leader carries out a move.
                if let Some(target) = target {
                    if part.group.is_leader() {
                        start_move(broker, name, p, target.clone(), part.group.clone());
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
            if let Err((code, msg)) = broker
                .topics
                .open_partition(&cluster.ctx, name, record, p, members)
                .await
            {
                tracing::error!(topic = %name, partition = p, %code, msg, "cannot open partition replica");
            }
        }
    }
}

/// Moves a partition's group to `target` voters, once at a time per group: new replicas join as
/// learners and catch up, the voters change, and the metadata records the move as complete.
fn start_move(
    broker: &Broker,
    topic: &str,
    partition: u32,
    target: Vec<u32>,
    group: crate::cluster::group::Group,
) {
    let Some(broker) = broker.me.upgrade() else {
        return;
    };
    {
        let mut moving = broker
            .cluster
            .moves
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !moving.insert(group.id) {
            return;
        }
    }
    let topic = topic.to_string();
    tokio::spawn(async move {
        let result = drive_move(&broker, &topic, partition, &target, &group).await;
        if let Err(e) = &result {
            tracing::warn!(topic, partition, error = %e, "moving partition replicas failed; will retry");
        }
        broker
            .cluster
            .moves
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&group.id);
    });
}

async fn drive_move(
    broker: &Broker,
    topic: &str,
    partition: u32,
    target: &[u32],
    group: &crate::cluster::group::Group,
) -> Result<(), String> {
    let brokers = broker.cluster.metadata.brokers();
    let voters = group.voters();
    group.touch();
    for id in target {
        if voters.contains(&u64::from(*id)) {
            continue;
        }
        let addr = brokers
            .get(id)
            .ok_or_else(|| format!("broker {id} has no address"))?;
        tracing::info!(topic, partition, broker = id, "adding replica");
        group
            .raft
            .add_learner(u64::from(*id), BasicNode::new(addr.clone()), true)
            .await
            .map_err(|e| e.to_string())?;
    }
    let set: std::collections::BTreeSet<u64> = target.iter().map(|r| u64::from(*r)).collect();
    group
        .raft
        .change_membership(openraft::ChangeMembers::ReplaceAllVoters(set), false)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(topic, partition, ?target, "partition voters changed");
    let done = broker
        .alter_replicas(sluice_protocol::wire::AlterReplicasRequest {
            topic: topic.to_string(),
            partition,
            replicas: target.to_vec(),
            complete: true,
        })
        .await;
    match done {
        sluice_protocol::wire::Response::AlterReplicas(r) if r.error.is_ok() => Ok(()),
        sluice_protocol::wire::Response::AlterReplicas(r) => {
            Err(format!("{}: {}", r.error, r.message))
        }
        _ => Err("unexpected answer".into()),
    }
}
