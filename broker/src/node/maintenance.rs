//! Retention and compaction, every `maintenance_interval`, off the async workers: the metadata
//! log's, then every hosted replica's (each below what its raft group may still need), by its
//! topic's settings as they are now (they may change while the replica is open).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::broker::Broker;

pub async fn run(broker: Arc<Broker>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(broker.config.maintenance_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let now = crate::cluster::metadata::now_ms();
            if let Err(e) = b.cluster.apply_metadata_retention() {
                tracing::warn!(error = %e, "metadata log retention failed");
            }
            for t in b.replicas.list() {
                for p in t.partitions.values() {
                    p.maintain(now, &t.settings);
                }
            }
        })
        .await;
        // Tests wait for rounds by this line instead of for a time.
        tracing::debug!("maintenance round done");
    }
}
