//! Every metric of the broker, in Prometheus form through `prometheus-client` (never
//! hand-formatted): [`Metrics`] owns the counters, gauges and histograms that hot paths update, and
//! renders them with a [`Snapshot`] of the broker's state read at scrape time (offsets, raft terms,
//! lag, operator figures, buffer use) as the Prometheus text exposition format 0.0.4
//! ([`CONTENT_TYPE`]).
//!
//! Hot paths never look a label up: each takes a handle once (a request's API, a replica's
//! [`PartitionMetrics`], made when the replica opens) and then only adds to atomics. State is
//! never pushed here on a hot path; it is read when scraped. This module reads nothing of the
//! broker itself: the admin service `render_metrics` gathers the snapshot.

mod latency;
pub mod snapshot;
#[cfg(test)]
mod tests;

use std::sync::OnceLock;

use bytes::Bytes;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sluice_protocol::batch::BatchHeader;
use sluice_protocol::wire::ApiKey;

pub use latency::{Fixed, Latency};
pub use snapshot::Snapshot;

/// The `Content-Type` of what [`Metrics::render`] produces.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// A series' labels, in order.
pub(crate) type Labels = Vec<(&'static str, String)>;

/// Why a request was refused outright (`sluice_requests_rejected_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A frame longer than `max_frame_bytes` (or shorter than a header): the connection closes.
    FrameTooLarge,
    /// A frame whose header does not decode: the connection closes.
    MalformedFrame,
    /// A request whose body does not decode: answered with an error.
    MalformedRequest,
    /// A produced record set over `max_message_bytes`.
    MessageTooLarge,
}

impl Rejection {
    const ALL: [Rejection; 4] = [
        Rejection::FrameTooLarge,
        Rejection::MalformedFrame,
        Rejection::MalformedRequest,
        Rejection::MessageTooLarge,
    ];

    fn label(self) -> &'static str {
        match self {
            Rejection::FrameTooLarge => "frame_too_large",
            Rejection::MalformedFrame => "malformed_frame",
            Rejection::MalformedRequest => "malformed_request",
            Rejection::MessageTooLarge => "message_too_large",
        }
    }
}

/// A bounded buffer a request can wait for (`sluice_backpressure_waits_total{buffer}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Produce request bytes of all connections (`max_produce_bytes`).
    Produce,
    /// Request bytes read and not yet answered on one connection.
    ConnectionInflight,
}

impl Bound {
    const ALL: [Bound; 2] = [Bound::Produce, Bound::ConnectionInflight];

    pub fn label(self) -> &'static str {
        match self {
            Bound::Produce => "produce",
            Bound::ConnectionInflight => "connection_inflight",
        }
    }
}

/// The metrics of one broker.
#[derive(Debug)]
pub struct Metrics {
    requests: Family<Labels, Latency>,
    /// Each API's series, by key number, made on its first request.
    by_api: Vec<OnceLock<Latency>>,
    throttled: Family<Labels, Counter>,
    throttled_produce: Counter,
    rejected: Family<Labels, Counter>,
    rejected_by: Vec<Counter>,
    waits: Family<Labels, Counter>,
    waits_by: Vec<Counter>,
    catch_up_paced: Counter,
    catch_up_paced_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    connections_open: Gauge,
    connections_total: Counter,
    inflight_bytes: Gauge,
    produce_pending: Gauge,
    bytes_in: Family<Labels, Counter>,
    records_in: Family<Labels, Counter>,
    bytes_out: Family<Labels, Counter>,
    records_out: Family<Labels, Counter>,
    commit_latency: Family<Labels, Latency>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// A gauge raised by `n` while this lives.
#[derive(Debug)]
pub struct Held {
    gauge: Gauge,
    n: i64,
}

impl Held {
    fn new(gauge: &Gauge, n: i64) -> Held {
        gauge.inc_by(n);
        Held {
            gauge: gauge.clone(),
            n,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.dec_by(self.n);
    }
}

/// What one partition replica counts on its hot paths; clones count into the same series. The
/// default counts into series of its own that no registry exports (replicas built in tests).
#[derive(Debug, Clone, Default)]
pub struct PartitionMetrics {
    bytes_in: Counter,
    records_in: Counter,
    bytes_out: Counter,
    records_out: Counter,
    commit_latency: Latency,
}

impl PartitionMetrics {
    /// A batch of `records` records and `bytes` bytes was proposed as new (not a duplicate).
    pub fn produced(&self, bytes: usize, records: u32) {
        self.bytes_in.inc_by(bytes as u64);
        self.records_in.inc_by(u64::from(records));
    }

    /// `records` (whole batches, as a fetch answers them) went to a consumer. Counts the records of
    /// data batches from their headers only; control batches carry none a consumer sees.
    pub fn fetched(&self, records: &Bytes) {
        if records.is_empty() {
            return;
        }
        self.bytes_out.inc_by(records.len() as u64);
        self.records_out.inc_by(data_records(records));
    }

    /// The partition group's commit latency: from a produced batch (acks `all`) handed to raft
    /// to its commit.
    pub fn commit_latency(&self) -> &Latency {
        &self.commit_latency
    }
}

/// Records of the data batches in `bytes` (whole batches back to back, as a storage read returns
/// them), read from the batch headers; stops at the first header that does not decode.
pub fn data_records(bytes: &[u8]) -> u64 {
    let mut rest = bytes;
    let mut n = 0u64;
    while let Ok(h) = BatchHeader::decode(rest) {
        if !h.is_control() {
            n += u64::from(h.record_count);
        }
        let Some(next) = rest.get(h.length as usize..) else {
            break;
        };
        rest = next;
    }
    n
}

fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The `api` label of a request's series: the API's name in snake case (`list_offsets`).
pub fn api_label(api: ApiKey) -> String {
    snake_case(&format!("{api:?}"))
}

impl Metrics {
    pub fn new() -> Metrics {
        let throttled = Family::<Labels, Counter>::default();
        let throttled_produce = throttled
            .get_or_create(&vec![("api", api_label(ApiKey::Produce))])
            .clone();
        let rejected = Family::<Labels, Counter>::default();
        let rejected_by = Rejection::ALL
            .iter()
            .map(|r| {
                rejected
                    .get_or_create(&vec![("reason", r.label().to_string())])
                    .clone()
            })
            .collect();
        let waits = Family::<Labels, Counter>::default();
        let waits_by = Bound::ALL
            .iter()
            .map(|b| {
                waits
                    .get_or_create(&vec![("buffer", b.label().to_string())])
                    .clone()
            })
            .collect();
        let slots = ApiKey::ALL
            .iter()
            .map(|a| *a as usize + 1)
            .max()
            .unwrap_or(0);
        Metrics {
            requests: Family::default(),
            by_api: (0..slots).map(|_| OnceLock::new()).collect(),
            throttled,
            throttled_produce,
            rejected,
            rejected_by,
            waits,
            waits_by,
            catch_up_paced: Counter::default(),
            catch_up_paced_seconds: Counter::default(),
            connections_open: Gauge::default(),
            connections_total: Counter::default(),
            inflight_bytes: Gauge::default(),
            produce_pending: Gauge::default(),
            bytes_in: Family::default(),
            records_in: Family::default(),
            bytes_out: Family::default(),
            records_out: Family::default(),
            commit_latency: Family::default(),
        }
    }

    /// The latency histogram of `api`'s requests.
    pub fn request_latency(&self, api: ApiKey) -> &Latency {
        // Every key has a slot (sized from `ApiKey::ALL`); a slot's series is made once.
        let slot = &self.by_api[api as usize];
        slot.get_or_init(|| {
            self.requests
                .get_or_create(&vec![("api", api_label(api))])
                .clone()
        })
    }

    /// A produce was answered `THROTTLED` (too many pending).
    pub fn throttled_produce(&self) {
        self.throttled_produce.inc();
    }

    pub fn rejected(&self, why: Rejection) {
        self.rejected_by[why as usize].inc();
    }

    /// A catching-up fetch was held back `hold` so live traffic goes first.
    pub fn catch_up_paced(&self, hold: std::time::Duration) {
        self.catch_up_paced.inc();
        self.catch_up_paced_seconds.inc_by(hold.as_secs_f64());
    }

    /// A request had to wait for room in `bound`.
    pub fn waited(&self, bound: Bound) {
        self.waits_by[bound as usize].inc();
    }

    /// A connection was accepted; it counts as open until the returned guard drops.
    pub fn connection(&self) -> Held {
        self.connections_total.inc();
        Held::new(&self.connections_open, 1)
    }

    /// `n` request bytes of a connection are held until the returned guard drops.
    pub fn inflight(&self, n: usize) -> Held {
        Held::new(&self.inflight_bytes, i64::try_from(n).unwrap_or(i64::MAX))
    }

    /// Request bytes read and not yet answered, over all connections.
    pub fn inflight_bytes(&self) -> u64 {
        u64::try_from(self.inflight_bytes.get()).unwrap_or(0)
    }

    /// Connections open now.
    pub fn connections_open(&self) -> u64 {
        u64::try_from(self.connections_open.get()).unwrap_or(0)
    }

    /// A produce request is pending (proposed, its acks not yet answered) until the guard drops.
    pub fn produce_pending(&self) -> Held {
        Held::new(&self.produce_pending, 1)
    }

    fn partition_labels(group: u64, topic: &str, partition: u32) -> Labels {
        vec![
            ("group", group.to_string()),
            ("topic", topic.to_string()),
            ("partition", partition.to_string()),
        ]
    }

    /// The hot-path handle of a partition replica (raft group `group`).
    pub fn partition(&self, group: u64, topic: &str, partition: u32) -> PartitionMetrics {
        let t: Labels = vec![("topic", topic.to_string())];
        PartitionMetrics {
            bytes_in: self.bytes_in.get_or_create(&t).clone(),
            records_in: self.records_in.get_or_create(&t).clone(),
            bytes_out: self.bytes_out.get_or_create(&t).clone(),
            records_out: self.records_out.get_or_create(&t).clone(),
            commit_latency: self
                .commit_latency
                .get_or_create(&Self::partition_labels(group, topic, partition))
                .clone(),
        }
    }

    /// Drops a partition's own series (its replica left this broker).
    pub fn forget_partition(&self, group: u64, topic: &str, partition: u32) {
        self.commit_latency
            .remove(&Self::partition_labels(group, topic, partition));
    }

    /// Drops a topic's traffic series (the topic was deleted).
    pub fn forget_topic(&self, topic: &str) {
        let t: Labels = vec![("topic", topic.to_string())];
        for f in [
            &self.bytes_in,
            &self.records_in,
            &self.bytes_out,
            &self.records_out,
        ] {
            f.remove(&t);
        }
    }

    /// Registers the hot-path metrics (clones share their values) into a scrape's registry.
    fn register(&self, reg: &mut Registry) {
        reg.register("request_duration_seconds", "Time from a request decoded to its answer queued for the socket, by API (fetch includes its long-poll wait); the rate of _count is the request rate", self.requests.clone());
        reg.register(
            "requests_throttled",
            "Requests answered THROTTLED at once, by API",
            self.throttled.clone(),
        );
        reg.register(
            "requests_rejected",
            "Requests refused outright, by reason",
            self.rejected.clone(),
        );
        reg.register(
            "backpressure_waits",
            "Requests that waited for room in a bounded buffer before being read or proposed",
            self.waits.clone(),
        );
        reg.register(
            "fetch_catch_up_paced",
            "Fetches of consumers catching up (far behind a partition's end) held back while producers were active",
            self.catch_up_paced.clone(),
        );
        reg.register(
            "fetch_catch_up_paced_seconds",
            "Time catching-up fetches were held back while producers were active",
            self.catch_up_paced_seconds.clone(),
        );
        reg.register(
            "connections_open",
            "Client and peer connections open now",
            self.connections_open.clone(),
        );
        reg.register(
            "connections",
            "Client and peer connections accepted",
            self.connections_total.clone(),
        );
        reg.register(
            "produce_pending_requests",
            "Produce requests proposed and waiting for their acks",
            self.produce_pending.clone(),
        );
        reg.register("topic_bytes_in", "Bytes of record batches produced to the topic's partitions this broker leads (retried duplicates excluded)", self.bytes_in.clone());
        reg.register("topic_records_in", "Records produced to the topic's partitions this broker leads (retried duplicates excluded)", self.records_in.clone());
        reg.register(
            "topic_bytes_out",
            "Bytes of record batches sent to consumers",
            self.bytes_out.clone(),
        );
        reg.register(
            "topic_records_out",
            "Records in the data batches sent to consumers",
            self.records_out.clone(),
        );
        reg.register("raft_commit_latency_seconds", "Time from a produced batch (acks all) handed to raft to its commit, by partition group", self.commit_latency.clone());
        reg.register("fsync_duration_seconds", "Duration of every fsync of this process (segments, indexes, directories, durable files)", Fixed(sluice_storage::stats::fsync_latency()));
    }

    /// The Prometheus text exposition (format 0.0.4, [`CONTENT_TYPE`]) of every metric: the
    /// hot-path ones and those of `state`, read at this scrape.
    pub fn render(&self, state: &Snapshot) -> Result<String, std::fmt::Error> {
        let mut reg = Registry::with_prefix("sluice");
        self.register(&mut reg);
        state.register(&mut reg);
        let mut out = String::with_capacity(16 << 10);
        prometheus_text::encode(&mut out, &reg)?;
        Ok(out)
    }
}
