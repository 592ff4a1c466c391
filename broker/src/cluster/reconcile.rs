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
            if !replicas.iter().any(|r| u64::from(*r) == me) {
                continue;
            }
            if local
                .as_ref()
                .is_some_and(|t| t.partitions.contains_key(&p))
            {
                continue;
            }
            let members: Option<BTreeMap<u64, BasicNode>> = replicas
                .iter()
                .map(|r| {
                    brokers
                        .get(r)
                        .map(|a| (u64::from(*r), BasicNode::new(a.clone())))
                })
                .collect();
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
