//! `sluice-bench e2e`: producers and consumers at the same time. The consumers are positioned at the
//! end of the log and polling before the producers start; every value begins with its send time (ns
//! since an `Instant` taken once in this process, u64 little-endian), so each consumer computes the
//! produce-to-consume latency of every record it reads, at the moment its `poll` returned. Producers
//! also time their acknowledgements as in `produce`. When the producers have finished (every record
//! acknowledged), the end offsets of the log are handed to the consumers, which stop on reaching
//! them. Throughput is what the consumers read over the time from the producers' start to the last
//! record read; the produce side's own rate is reported alongside (`produce_records_per_s`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_client::{Admin, SeekTo};
use tokio::sync::watch;

use super::consume::{self, SETTLE_WAIT};
use super::produce::{self, histogram, Plan};
use super::report::Report;
use super::{settled_end_offsets, Error, Settings, Topic};

/// How long the consumers may take to reach the end after the producers finished.
const DRAIN_WAIT: Duration = Duration::from_secs(60);

/// `sluice-bench e2e`.
pub(crate) async fn run(
    s: &Settings,
    addr: &str,
    topic: &Topic,
    admin: &Admin,
) -> Result<Report, Error> {
    consume::check_consumers(s, topic)?;
    let base = Instant::now();
    let readers = consume::readers(s, addr, topic, SeekTo::Latest).await?;
    let starts = consume::positions(&readers, topic);
    let (ends_tx, ends_rx) = watch::channel(None);
    let mut tasks = Vec::with_capacity(readers.len());
    for r in readers {
        let h = histogram()?;
        tasks.push(tokio::spawn(consume::read(
            r,
            addr.to_string(),
            topic.name.clone(),
            ends_rx.clone(),
            Some(base),
            h,
        )));
    }
    let plan = Plan {
        stop: s.stop,
        rate: s.rate,
        stamp_base: Some(base),
        halt: None,
    };
    let produced = produce::produce(s, addr, topic, plan).await?;
    let ends =
        settled_end_offsets(admin, addr, topic, &starts, produced.records, SETTLE_WAIT).await?;
    // The receivers live in the tasks; a send error only means they already ended (on an error,
    // which joining reports).
    let _ = ends_tx.send(Some(Arc::new(ends)));
    let total = tokio::time::timeout(DRAIN_WAIT, consume::join(tasks))
        .await
        .map_err(|_| {
            format!(
                "the consumers did not reach the end of the log within {DRAIN_WAIT:?} after the \
                 producers finished"
            )
        })??;
    if total.records < produced.records {
        return Err(format!(
            "the consumers read {} records of the {} produced",
            total.records, produced.records
        )
        .into());
    }
    let elapsed = total.last_record.map_or(Duration::ZERO, |t| {
        t.saturating_duration_since(produced.started)
    });

    let mut r = Report::new(format!(
        "e2e: {} records x {} B through {} ({} partitions) in {:.2} s",
        total.records,
        s.record_size,
        topic.name,
        topic.partitions,
        elapsed.as_secs_f64()
    ));
    r.throughput(
        "end to end (consumed)",
        total.records,
        total.value_bytes,
        elapsed,
    );
    r.throughput(
        "produce (acked)",
        produced.records,
        produced.value_bytes,
        produced.elapsed,
    );
    r.latency("end to end", &total.latency);
    r.latency("produce ack", &produced.latency);
    r.primary(total.records, total.value_bytes, elapsed, &total.latency);
    r.set("latency", "end_to_end".into());
    r.latency_json("produce_", &produced.latency);
    produce::add_produce_json(&mut r, "produce_", &produced);
    Ok(r)
}
