//! What the join measurement watches besides the members: a coordinator probe and CPU use.
//!
//! The probe is an empty group placed on the same `__consumer_offsets` partition as the measured
//! group (`crc32(group id) % partitions`, the documented rule), so it waits behind the same
//! coordinator lock and raft log. Every [`PROBE_EVERY`] it resets its committed offset of the
//! topic's partition 0 to the latest offset through the admin client (one coordinator write each:
//! the offset moves as the producer writes, so no reset is a no-op) and records the round trip. The
//! round trips before and during the rebalance show how long coordinator writes wait. It adds
//! one write per [`PROBE_EVERY`] to the coordinator's load; it deletes its group at the end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_client::{Admin, ResetSpec};
use tokio::task::JoinHandle;

use crate::load::{broker_error, Error};

/// The internal topic groups live in.
const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// How often the probe writes.
pub(super) const PROBE_EVERY: Duration = Duration::from_millis(200);

/// One probe write: when it started, how long it took.
pub(super) type Sample = (Instant, Duration);

/// The running probe.
#[derive(Debug)]
pub(super) struct Probe {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Result<Vec<Sample>, Error>>,
}

impl Probe {
    /// Starts probing the coordinator partition of `group` (the offsets topic must exist: a member
    /// has found its coordinator) with resets of `topic`'s partition 0.
    pub async fn start(addr: &str, group: &str, topic: &str) -> Result<Probe, Error> {
        let admin = Admin::new(addr).map_err(|e| format!("cannot create an admin client: {e}"))?;
        let n = admin
            .describe_topic(OFFSETS_TOPIC)
            .await
            .map_err(|e| broker_error(addr, "describe the offsets topic", e))?
            .partitions
            .len() as u32;
        let want = crc32fast::hash(group.as_bytes()) % n.max(1);
        let probe = (0u32..)
            .map(|i| format!("{group}-probe-{i}"))
            .find(|g| crc32fast::hash(g.as_bytes()) % n.max(1) == want)
            .ok_or("no probe group id")?;
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run(
            admin,
            addr.to_string(),
            probe,
            topic.to_string(),
            stop.clone(),
        ));
        Ok(Probe { stop, task })
    }

    /// Stops it; its samples.
    pub async fn stop(self) -> Result<Vec<Sample>, Error> {
        self.stop.store(true, Ordering::Relaxed);
        self.task
            .await
            .map_err(|e| format!("probe task failed: {e}"))?
    }
}

async fn run(
    admin: Admin,
    addr: String,
    probe: String,
    topic: String,
    stop: Arc<AtomicBool>,
) -> Result<Vec<Sample>, Error> {
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        admin
            .reset_offsets(&probe, &topic, Some(0), ResetSpec::Latest)
            .await
            .map_err(|e| broker_error(&addr, "probe: reset offsets", e))?;
        out.push((t, t.elapsed()));
        tokio::time::sleep(PROBE_EVERY).await;
    }
    if let Err(e) = admin.delete_group(&probe).await {
        eprintln!("sluice-bench: warning: could not delete the probe group {probe}: {e}");
    }
    Ok(out)
}

/// The median and the longest of the samples that started in `[from, to)`, and how many.
pub(super) fn summary(
    samples: &[Sample],
    from: Instant,
    to: Instant,
) -> (Duration, Duration, usize) {
    let mut d: Vec<Duration> = samples
        .iter()
        .filter(|(t, _)| *t >= from && *t < to)
        .map(|(_, d)| *d)
        .collect();
    d.sort();
    let median = d.get(d.len() / 2).copied().unwrap_or_default();
    (median, d.last().copied().unwrap_or_default(), d.len())
}

/// CPU use of the broker (when spawned) and of this process, as percent of one core between two
/// readings.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cpu {
    at: Instant,
    broker: Option<f64>,
    bench: Option<f64>,
}

impl Cpu {
    pub fn now(broker_pid: Option<u32>) -> Cpu {
        Cpu {
            at: Instant::now(),
            broker: broker_pid.and_then(|p| crate::idle::cpu_seconds(p).ok()),
            bench: crate::idle::cpu_seconds(std::process::id()).ok(),
        }
    }

    /// (broker, bench) percent of a core from `self` to `later`.
    pub fn percent(&self, later: &Cpu) -> (Option<f64>, Option<f64>) {
        let secs = later
            .at
            .saturating_duration_since(self.at)
            .as_secs_f64()
            .max(1e-9);
        let rate = |a: Option<f64>, b: Option<f64>| Some((b? - a?) / secs * 100.0);
        (
            rate(self.broker, later.broker),
            rate(self.bench, later.bench),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_takes_the_window() {
        let b = Instant::now();
        let ms = Duration::from_millis;
        let s: Vec<Sample> = vec![
            (b, ms(5)),
            (b + ms(10), ms(9)),
            (b + ms(20), ms(1)),
            (b + ms(30), ms(50)),
        ];
        assert_eq!(summary(&s, b, b + ms(25)), (ms(5), ms(9), 3));
        assert_eq!(summary(&s, b + ms(40), b + ms(50)), (ms(0), ms(0), 0));
    }
}
