//! Running window operators inside the broker: one driver per (operator, local replica of a source
//! partition), on every replica, leader and followers alike (docs/operators.md, "How it runs").
//!
//! - [`fold`]: the pure part, log entries in, deterministic target batches out;
//! - [`send`]: writing target batches to their partitions' leaders, idempotently;
//! - [`driver`]: the loop of one driver (follow to the latest mark), and `lead`: the leader's
//!   part (read, write, mark; ticks; checkpoints);
//! - [`stats`]: what drivers report for describe.
//!
//! This module's [`run`] keeps the set of drivers equal to what the metadata and the local
//! replicas say: a driver per partition of each operator's source hosted here, unless the operator
//! is paused; drivers of deleted or paused operators and of closed replicas are cancelled. It never
//! changes an operator's definition.

pub mod driver;
pub mod fold;
#[cfg(test)]
mod fold_tests;
mod lead;
pub mod send;
pub mod stats;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_client::{Client, ClientConfig};
use tokio_util::sync::CancellationToken;

use crate::cluster::operators::OperatorRecord;
use crate::cluster::Cluster;
use crate::replica::{Replica, Replicas};
use driver::Driver;
use fold::Targets;
use send::Sender;
use stats::Registry;

/// How often the set of drivers is compared with the metadata (also on every metadata change).
const REVIEW_INTERVAL: Duration = Duration::from_millis(500);

/// A running driver: what it was started for, and how to stop it.
struct Running {
    created_ms: i64,
    replica: Arc<Replica>,
    cancel: CancellationToken,
}

/// Keeps this broker's drivers in line with the metadata until `stop`.
pub async fn run(
    cluster: Cluster,
    replicas: Arc<Replicas>,
    stats: Arc<Registry>,
    advertised: String,
    timeout: Duration,
    stop: CancellationToken,
) {
    let client = match Client::new(ClientConfig::new(advertised)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "window operators cannot run: no client");
            return;
        }
    };
    let sender = Sender { client, timeout };
    let mut running: HashMap<(String, u32), Running> = HashMap::new();
    let mut changes = cluster.metadata.shared.subscribe();
    loop {
        let operators = cluster.metadata.with_state(|s| s.operators.clone());
        let wanted = wanted(&cluster, &replicas, &operators);
        running.retain(|key, r| {
            let keep = wanted.get(key).is_some_and(|(rec, _, replica)| {
                rec.created_ms == r.created_ms && Arc::ptr_eq(replica, &r.replica)
            });
            if !keep {
                r.cancel.cancel();
            }
            keep
        });
        for ((name, partition), (rec, targets, replica)) in wanted {
            if running.contains_key(&(name.clone(), partition)) {
                continue;
            }
            let Ok(spec) = rec.def.spec() else {
                tracing::error!(operator = %name, "stored definition does not parse; not running it");
                continue;
            };
            let Some(&producer_id) = rec.producer_ids.get(partition as usize) else {
                continue;
            };
            let cancel = stop.child_token();
            let driver = Driver {
                name: name.clone(),
                spec,
                producer_id,
                targets,
                replica: replica.clone(),
                sender: sender.clone(),
                stats: stats.clone(),
                cancel: cancel.clone(),
            };
            tokio::spawn(driver.run());
            running.insert(
                (name, partition),
                Running {
                    created_ms: rec.created_ms,
                    replica,
                    cancel,
                },
            );
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = changes.changed() => {}
            _ = tokio::time::sleep(REVIEW_INTERVAL) => {}
        }
    }
    for r in running.values() {
        r.cancel.cancel();
    }
}

/// The drivers this broker should run: (operator, source partition) -> (record, targets, replica).
fn wanted(
    cluster: &Cluster,
    replicas: &Replicas,
    operators: &std::collections::BTreeMap<String, OperatorRecord>,
) -> HashMap<(String, u32), (OperatorRecord, Targets, Arc<Replica>)> {
    let mut out = HashMap::new();
    for (name, rec) in operators {
        if rec.paused {
            continue;
        }
        let Some(hosted) = replicas.get(&rec.def.source) else {
            continue;
        };
        if hosted.id != rec.source_id {
            continue;
        }
        let partitions_of = |topic: &Option<String>| -> Option<Option<(String, u32)>> {
            match topic {
                None => Some(None),
                Some(t) => cluster
                    .metadata
                    .with_state(|s| s.topics.get(t).map(|r| r.replicas.len() as u32))
                    .map(|n| Some((t.clone(), n))),
            }
        };
        // A target topic that does not exist (yet, or any more): nothing to write to.
        let (Some(Some(sink)), Some(late), Some(dead_letter)) = (
            partitions_of(&Some(rec.def.sink.clone())),
            partitions_of(&rec.def.late_topic),
            partitions_of(&rec.def.dead_letter_topic),
        ) else {
            continue;
        };
        for (&partition, replica) in &hosted.partitions {
            let targets = Targets {
                source_partition: partition,
                sink: sink.clone(),
                late: late.clone(),
                dead_letter: dead_letter.clone(),
            };
            out.insert(
                (name.clone(), partition),
                (rec.clone(), targets, replica.clone()),
            );
        }
    }
    out
}
