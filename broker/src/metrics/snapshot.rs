//! The broker's state as read at one scrape ([`Snapshot`]: partitions, raft groups, consumer-group
//! lag, window operators, bounded buffers), and its registration as gauges (and the counters the
//! state itself keeps) into that scrape's registry. Plain data: whoever gathers it (the admin
//! service `render_metrics`) reads the broker; this module only names and encodes.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Labels;

/// One partition replica hosted by this broker.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartitionSample {
    pub topic: String,
    pub partition: u32,
    /// This replica leads its raft group.
    pub leader: bool,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
    pub high_watermark: u64,
    pub size_bytes: u64,
}

/// One raft group on this broker: a partition's, or the metadata group's (`partition: None`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RaftSample {
    pub group: u64,
    /// The partition the group replicates (`None`: the metadata group).
    pub partition: Option<(String, u32)>,
    pub term: u64,
    /// This broker leads the group.
    pub leader: bool,
    /// How often the group's known leader became another broker, as this broker saw it.
    pub leader_changes: u64,
    pub last_log_index: u64,
    pub committed_index: u64,
    pub applied_index: u64,
}

/// A consumer group's position on one partition, from its coordinator (this broker).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LagSample {
    pub group: String,
    pub topic: String,
    pub partition: u32,
    pub committed_offset: u64,
    /// High watermark minus the committed offset (0 when at or past it).
    pub lag_records: u64,
    /// Age of the oldest unconsumed record (0 when nothing waits; `None`: it could not be read).
    pub lag_seconds: Option<f64>,
}

/// One window operator's driver on one source partition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OperatorSample {
    pub operator: String,
    pub partition: u32,
    pub leader: bool,
    /// Event time the watermark has reached, in ms since the epoch (`None`: no record yet).
    pub watermark_ms: Option<i64>,
    /// How far behind the newest record read the clock is while records wait (ms).
    pub lag_ms: i64,
    /// Source records not yet read (high watermark minus position).
    pub lag_records: u64,
    pub state_bytes: u64,
    pub keys: u64,
    pub windows: u64,
    pub late: u64,
    pub bad: u64,
    pub emitted: u64,
    pub failed: bool,
}

/// A bounded buffer: bytes held now and its bound.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BufferSample {
    pub buffer: &'static str,
    pub used_bytes: u64,
    pub limit_bytes: u64,
}

/// Everything read from the broker's state for one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub partitions: Vec<PartitionSample>,
    pub raft: Vec<RaftSample>,
    pub lag: Vec<LagSample>,
    pub operators: Vec<OperatorSample>,
    pub buffers: Vec<BufferSample>,
    /// The bound on produce requests waiting for their acks, when there is one.
    pub produce_pending_limit: Option<u64>,
}

type Gauges = Family<Labels, Gauge>;
type FloatGauges = Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>;
type Counters = Family<Labels, Counter>;

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn topic_partition(topic: &str, partition: u32) -> Labels {
    vec![
        ("topic", topic.to_string()),
        ("partition", partition.to_string()),
    ]
}

/// A new family, registered under `name`.
fn family<M: prometheus_client::registry::Metric + Clone + Default>(
    reg: &mut Registry,
    name: &str,
    help: &str,
) -> M {
    let m = M::default();
    reg.register(name, help, m.clone());
    m
}

impl Snapshot {
    /// Registers this snapshot's metrics into a scrape's registry (prefix `sluice`).
    pub fn register(&self, reg: &mut Registry) {
        self.register_partitions(reg);
        self.register_raft(reg);
        self.register_lag(reg);
        self.register_operators(reg);
        self.register_buffers(reg);
    }

    fn register_partitions(&self, reg: &mut Registry) {
        let start: Gauges = family(
            reg,
            "partition_log_start_offset",
            "First offset still in the partition's log on this replica",
        );
        let end: Gauges = family(
            reg,
            "partition_log_end_offset",
            "Offset the next append gets on this replica (committed or not)",
        );
        let hw: Gauges = family(
            reg,
            "partition_high_watermark",
            "Offset after the last committed record, as this replica knows it",
        );
        let size: Gauges = family(
            reg,
            "partition_size_bytes",
            "Bytes of batches in the partition's segments on this replica",
        );
        let leader: Gauges = family(
            reg,
            "partition_leader",
            "1 if this broker leads the partition, else 0",
        );
        for p in &self.partitions {
            let l = topic_partition(&p.topic, p.partition);
            start.get_or_create(&l).set(int(p.log_start_offset));
            end.get_or_create(&l).set(int(p.log_end_offset));
            hw.get_or_create(&l).set(int(p.high_watermark));
            size.get_or_create(&l).set(int(p.size_bytes));
            leader.get_or_create(&l).set(i64::from(p.leader));
        }
    }

    fn register_raft(&self, reg: &mut Registry) {
        let term: Gauges = family(
            reg,
            "raft_term",
            "Current raft term of the group on this broker",
        );
        let leader: Gauges = family(
            reg,
            "raft_leader",
            "1 if this broker leads the raft group, else 0",
        );
        let changes: Counters = family(
            reg,
            "raft_leader_changes",
            "Times the group's known leader became another broker, as seen from this broker",
        );
        let last: Gauges = family(
            reg,
            "raft_last_log_index",
            "Index of the last entry in this broker's raft log of the group",
        );
        let committed: Gauges = family(
            reg,
            "raft_committed_index",
            "Index of the last entry known committed",
        );
        let applied: Gauges = family(
            reg,
            "raft_applied_index",
            "Index of the last entry applied to the group's state",
        );
        for r in &self.raft {
            let mut l: Labels = vec![("group", r.group.to_string())];
            if let Some((t, p)) = &r.partition {
                l.extend(topic_partition(t, *p));
            }
            term.get_or_create(&l).set(int(r.term));
            leader.get_or_create(&l).set(i64::from(r.leader));
            changes.get_or_create(&l).inc_by(r.leader_changes);
            last.get_or_create(&l).set(int(r.last_log_index));
            committed.get_or_create(&l).set(int(r.committed_index));
            applied.get_or_create(&l).set(int(r.applied_index));
        }
    }

    fn register_lag(&self, reg: &mut Registry) {
        let committed: Gauges = family(
            reg,
            "consumer_group_committed_offset",
            "The group's committed offset on the partition",
        );
        let records: Gauges = family(reg, "consumer_group_lag_records", "Records the group has yet to consume on the partition: high watermark minus committed offset");
        let seconds: FloatGauges = family(reg, "consumer_group_lag_seconds", "Age of the oldest record the group has yet to consume on the partition (0 when none waits)");
        for g in &self.lag {
            let mut l: Labels = vec![("group", g.group.clone())];
            l.extend(topic_partition(&g.topic, g.partition));
            committed.get_or_create(&l).set(int(g.committed_offset));
            records.get_or_create(&l).set(int(g.lag_records));
            if let Some(s) = g.lag_seconds {
                seconds.get_or_create(&l).set(s);
            }
        }
    }

    fn register_operators(&self, reg: &mut Registry) {
        let watermark: FloatGauges = family(reg, "operator_watermark_timestamp_seconds", "Event time the operator's watermark has reached on the source partition (absent before the first record)");
        let lag: FloatGauges = family(
            reg,
            "operator_lag_seconds",
            "How far behind the newest record read the clock is while records wait",
        );
        let lag_records: Gauges = family(
            reg,
            "operator_lag_records",
            "Source records the operator has not read yet",
        );
        let state: Gauges = family(
            reg,
            "operator_state_bytes",
            "Estimated bytes of the operator's window state on the source partition",
        );
        let keys: Gauges = family(reg, "operator_keys", "Keys with open windows");
        let windows: Gauges = family(reg, "operator_windows", "Open windows");
        let late: Counters = family(
            reg,
            "operator_late_records",
            "Records that arrived after their window was dropped",
        );
        let bad: Counters = family(
            reg,
            "operator_bad_records",
            "Records the operator could not read (no key, no time, no number)",
        );
        let emitted: Counters = family(
            reg,
            "operator_emitted_records",
            "Results and tombstones written to the operator's sink",
        );
        let failed: Gauges = family(
            reg,
            "operator_failed",
            "1 if the operator stopped on the source partition (see describe for why)",
        );
        let leader: Gauges = family(
            reg,
            "operator_leader",
            "1 if this broker's driver writes the operator's output for the partition",
        );
        for o in &self.operators {
            let l: Labels = vec![
                ("operator", o.operator.clone()),
                ("partition", o.partition.to_string()),
            ];
            if let Some(ms) = o.watermark_ms {
                watermark.get_or_create(&l).set(ms as f64 / 1000.0);
            }
            lag.get_or_create(&l).set(o.lag_ms.max(0) as f64 / 1000.0);
            lag_records.get_or_create(&l).set(int(o.lag_records));
            state.get_or_create(&l).set(int(o.state_bytes));
            keys.get_or_create(&l).set(int(o.keys));
            windows.get_or_create(&l).set(int(o.windows));
            late.get_or_create(&l).inc_by(o.late);
            bad.get_or_create(&l).inc_by(o.bad);
            emitted.get_or_create(&l).inc_by(o.emitted);
            failed.get_or_create(&l).set(i64::from(o.failed));
            leader.get_or_create(&l).set(i64::from(o.leader));
        }
    }

    fn register_buffers(&self, reg: &mut Registry) {
        let used: Gauges = family(
            reg,
            "buffer_used_bytes",
            "Bytes held now by a bounded buffer",
        );
        let limit: Gauges = family(
            reg,
            "buffer_limit_bytes",
            "The bound of a bounded buffer (connection_inflight: per connection)",
        );
        for b in &self.buffers {
            let l: Labels = vec![("buffer", b.buffer.to_string())];
            used.get_or_create(&l).set(int(b.used_bytes));
            limit.get_or_create(&l).set(int(b.limit_bytes));
        }
        if let Some(bound) = self.produce_pending_limit {
            let b: Gauge = family(
                reg,
                "produce_pending_limit",
                "The bound on produce requests waiting for their acks (max_pending_produces)",
            );
            b.set(int(bound));
        }
    }
}
