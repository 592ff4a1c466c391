//! The metrics scrape as an admin service: [`Broker::render_metrics`] reads the broker's state —
//! its hosted replicas and their raft groups, the metadata group, the lag of the consumer groups
//! it coordinates, its window operator drivers and its bounded buffers — into a
//! [`Snapshot`](crate::metrics::Snapshot) and renders it with the hot-path metrics. It only reads.

use crate::broker::Broker;
use crate::error::{Result, ServiceError};
use crate::metrics::snapshot::{
    BufferSample, LagSample, OperatorSample, PartitionSample, RaftSample,
};
use crate::metrics::Snapshot;

impl Broker {
    /// Every metric of this broker in the Prometheus text exposition format 0.0.4
    /// (`crate::metrics::CONTENT_TYPE`). Blocking: it reads partition logs (a lagging group's
    /// oldest unconsumed record), so call it off the async workers.
    pub fn render_metrics(&self) -> Result<String> {
        self.metrics
            .render(&self.metrics_snapshot())
            .map_err(|e| ServiceError::unknown(format!("encoding the metrics failed: {e}")))
    }

    /// The state `render_metrics` reports, read now.
    pub fn metrics_snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        let meta = &self.cluster.metadata.group;
        s.raft.push(raft_sample(
            meta.id,
            None,
            meta.status(),
            meta.leader_changes(),
        ));
        for t in self.replicas.list() {
            for (p, r) in &t.partitions {
                s.partitions.push(PartitionSample {
                    topic: t.name.clone(),
                    partition: *p,
                    leader: r.is_leader(),
                    log_start_offset: r.log_start_offset(),
                    log_end_offset: r.log_end_offset(),
                    high_watermark: r.high_watermark(),
                    size_bytes: r.size_bytes(),
                });
                s.raft.push(raft_sample(
                    r.group_id(),
                    Some((t.name.clone(), *p)),
                    r.raft_status(),
                    r.leader_changes(),
                ));
            }
        }
        s.lag = self.group_lag();
        s.operators = self
            .operator_stats
            .all()
            .into_iter()
            .map(|((operator, partition), o)| OperatorSample {
                operator,
                partition,
                leader: o.leader,
                watermark_ms: o.window.watermark_ms,
                lag_ms: o.lag_ms,
                lag_records: o.high_watermark.saturating_sub(o.position),
                state_bytes: o.window.state_bytes,
                keys: o.window.keys,
                windows: o.window.windows,
                late: o.window.late,
                bad: o.window.bad,
                emitted: o.window.emitted,
                failed: o.failed.is_some() || o.window.failed.is_some(),
            })
            .collect();
        let produce_limit = self.config.max_produce_bytes as u64;
        s.buffers = vec![
            BufferSample {
                buffer: "produce",
                used_bytes: produce_limit
                    .saturating_sub(self.produce_budget.available_permits() as u64),
                limit_bytes: produce_limit,
            },
            BufferSample {
                buffer: "connection_inflight",
                used_bytes: self.metrics.inflight_bytes(),
                limit_bytes: (self.config.max_inflight_bytes_per_connection as u64)
                    .saturating_mul(self.metrics.connections_open()),
            },
        ];
        s.produce_pending_limit = self.config.max_pending_produces.map(|n| n as u64);
        s
    }

    /// Lag of the groups this broker coordinates, on the partitions it hosts a replica of (a
    /// follower's high watermark may trail its leader's by a moment). Lag in time is the age of
    /// the oldest unconsumed record, as `sluice group describe` gives it.
    fn group_lag(&self) -> Vec<LagSample> {
        let now_ms = crate::cluster::metadata::now_ms();
        let mut out = Vec::new();
        for (group, topic, partition, committed) in self.groups.committed_offsets() {
            let Ok(r) = self.replicas.replica(&topic, partition) else {
                continue;
            };
            let lag_records = r.high_watermark().saturating_sub(committed);
            let lag_seconds = if lag_records == 0 {
                Some(0.0)
            } else {
                match r.timestamp_at(committed) {
                    Ok(ts) => {
                        Some(ts.map_or(0.0, |ts| now_ms.saturating_sub(ts).max(0) as f64 / 1000.0))
                    }
                    Err(e) => {
                        tracing::debug!(%group, %topic, partition, error = %e, "no lag in time");
                        None
                    }
                }
            };
            out.push(LagSample {
                group,
                topic,
                partition,
                committed_offset: committed,
                lag_records,
                lag_seconds,
            });
        }
        out
    }
}

fn raft_sample(
    group: u64,
    partition: Option<(String, u32)>,
    s: crate::raft::RaftStatus,
    leader_changes: u64,
) -> RaftSample {
    RaftSample {
        group,
        partition,
        term: s.term,
        // openraft's leader state is this broker leading.
        leader: s.role == crate::raft::Role::Leader,
        leader_changes,
        last_log_index: s.last_log_index.unwrap_or(0),
        committed_index: s.committed_index.unwrap_or(0),
        applied_index: s.applied_index.unwrap_or(0),
    }
}
