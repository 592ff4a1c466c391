//! What each running operator driver on this broker reports for describe: per (operator, source
//! partition) its role, how far it has read, its window state and counters, and its emit latency.
//! Written by the drivers, read by the admin services (describe, the metrics scrape); nothing here
//! decides anything.

use std::collections::HashMap;
use std::sync::Mutex;

use hdrhistogram::Histogram;

/// One source partition's driver, as describe shows it.
#[derive(Debug, Clone, Default)]
pub struct PartitionStats {
    /// Whether this broker's driver leads (writes the output) or follows (keeps the state).
    pub leader: bool,
    /// The next source offset the operator reads.
    pub position: u64,
    /// The source partition's high watermark when last reported.
    pub high_watermark: u64,
    /// How far behind the newest record read the clock is, while records are waiting (ms; 0 when
    /// caught up).
    pub lag_ms: i64,
    pub window: sluice_window::Stats,
    /// 99th percentile, since this driver started leading, from reading the record that closed or
    /// updated a window to the target acknowledging its result (ms).
    pub emit_p99_ms: Option<f64>,
    /// Why this partition's operator stopped, if it did.
    pub failed: Option<String>,
}

/// Every driver's report on this broker, by (operator name, source partition).
#[derive(Debug, Default)]
pub struct Registry {
    by: Mutex<HashMap<(String, u32), PartitionStats>>,
}

impl Registry {
    pub fn set(&self, name: &str, partition: u32, stats: PartitionStats) {
        self.lock().insert((name.to_string(), partition), stats);
    }

    pub fn remove(&self, name: &str, partition: u32) {
        self.lock().remove(&(name.to_string(), partition));
    }

    pub fn get(&self, name: &str, partition: u32) -> Option<PartitionStats> {
        self.lock().get(&(name.to_string(), partition)).cloned()
    }

    /// Every driver's report, by (operator name, source partition), in no particular order.
    pub fn all(&self) -> Vec<((String, u32), PartitionStats)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u32), PartitionStats>> {
        // Plain data: a panic elsewhere while holding it leaves nothing half-updated that matters.
        self.by.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Emit latencies of one driver, in microseconds.
#[derive(Debug)]
pub struct EmitLatency(Option<Histogram<u64>>);

impl Default for EmitLatency {
    fn default() -> EmitLatency {
        EmitLatency::new()
    }
}

impl EmitLatency {
    pub fn new() -> EmitLatency {
        // 1 µs to 1 hour at 3 significant digits: a valid range, so `new` cannot fail here.
        EmitLatency(Histogram::new_with_bounds(1, 3_600_000_000, 3).ok())
    }

    /// `count` results that waited `micros`.
    pub fn record(&mut self, micros: u64, count: u64) {
        if let Some(h) = &mut self.0 {
            h.saturating_record_n(micros.max(1), count);
        }
    }

    pub fn p99_ms(&self) -> Option<f64> {
        self.0
            .as_ref()
            .filter(|h| !h.is_empty())
            .map(|h| h.value_at_quantile(0.99) as f64 / 1000.0)
    }
}
