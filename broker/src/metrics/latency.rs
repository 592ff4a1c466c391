//! Latency histograms as Prometheus histograms: [`Latency`] wraps the storage crate's atomic
//! [`LatencyHistogram`] (recorded on hot paths without a lock) so that `prometheus-client`
//! families and registries can hold and encode it, and [`Fixed`] encodes a snapshot taken
//! elsewhere (the fsync histogram). Buckets are in seconds; `le="+Inf"` equals `_count`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use sluice_storage::stats::{LatencyHistogram, LatencySnapshot, LATENCY_BOUNDS_SECONDS};

/// A shared latency histogram; clones record into the same buckets.
#[derive(Debug, Clone, Default)]
pub struct Latency(Arc<LatencyHistogram>);

impl Latency {
    pub fn record(&self, d: Duration) {
        self.0.record(d);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        self.0.snapshot()
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encode(&self.snapshot(), encoder)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A histogram read once, for a scrape.
#[derive(Debug, Clone, Copy)]
pub struct Fixed(pub LatencySnapshot);

impl TypedMetric for Fixed {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Fixed {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encode(&self.0, encoder)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Per-bucket (not cumulative) counts with their upper bounds, the overflow bucket last as `+Inf`,
/// and the count as their sum: the encoder accumulates them, so `le="+Inf"` is `_count` exactly
/// even while other threads record.
fn encode(s: &LatencySnapshot, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
    let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_SECONDS
        .iter()
        .copied()
        .chain(std::iter::once(f64::INFINITY))
        .zip(s.buckets)
        .collect();
    encoder.encode_histogram::<NoLabelSet>(s.sum_seconds(), s.count(), &buckets, None)
}
