//! `sluice-bench consume`, and the consumer side that `e2e` uses. First a backlog: a fresh topic (or
//! an empty `--topic`) is filled by the producers with `--count` or `--duration` worth of records as
//! fast as they go (reported, but not the figure measured); an existing non-empty `--topic` is read
//! as it is. Then `--consumers` tasks, each with its own [`Consumer`] assigned every M-th partition
//! and positioned at the start of the log, read up to the end offsets taken before the clock started,
//! as fast as they can. Throughput is records and value bytes over the time from the start to the
//! last record read; the latency reported is that of each `poll` call that returned records (one
//! fetch round trip plus decoding and CRC checks), since a backlog has no meaningful per-record
//! latency. In e2e the same consumer loop reads each value's 8-byte send timestamp instead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use sluice_client::{Admin, Consumer, ConsumerConfig, OffsetSpec, SeekTo};
use tokio::sync::watch;

use super::backlog::{self, Backlog};
use super::produce::{self, histogram, micros, Plan};
use super::report::{self, Report};
use super::tail;
use super::{
    broker_error, offsets, partitions_of, settled_end_offsets, Error, Settings, Topic, STAMP_BYTES,
};

/// How long one `poll` waits for records before the loop looks at the end offsets again.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// How long a consumer may read nothing, once it knows where the end is, before it gives up (the
/// client retries a lost broker inside `poll` and returns no records, so this is what ends a run
/// whose broker died).
const STALL_WAIT: Duration = Duration::from_secs(30);
/// How long acks-none records may take to show up in the log after the producers finished.
pub(crate) const SETTLE_WAIT: Duration = Duration::from_secs(10);

/// End offsets per partition once known; consumers stop when they reach them.
pub(crate) type Ends = watch::Receiver<Option<Arc<Vec<u64>>>>;

/// A consumer with the partitions it reads.
#[derive(Debug)]
pub(crate) struct Reader {
    consumer: Consumer,
    partitions: Vec<u32>,
}

/// What one consumer read.
#[derive(Debug)]
pub(crate) struct Consumed {
    pub records: u64,
    pub value_bytes: u64,
    /// Per-poll latency, or (e2e) per-record end-to-end latency, microseconds.
    pub latency: Histogram<u64>,
    /// When the last poll that returned records returned.
    pub last_record: Option<Instant>,
}

/// Each consumer reads whole partitions, so there can be no more consumers than partitions.
pub(crate) fn check_consumers(s: &Settings, topic: &Topic) -> Result<(), Error> {
    if s.consumers > topic.partitions as usize {
        return Err(format!(
            "--consumers {} exceeds the {} partitions of {} (each consumer reads whole partitions)",
            s.consumers, topic.partitions, topic.name
        )
        .into());
    }
    Ok(())
}

/// `--consumers` consumers, partitions split among them, each partition sought to `seek` (which also
/// opens the connection to its leader before any clock starts).
pub(crate) async fn readers(
    s: &Settings,
    addr: &str,
    topic: &Topic,
    seek: SeekTo,
) -> Result<Vec<Reader>, Error> {
    check_consumers(s, topic)?;
    let mut readers = Vec::with_capacity(s.consumers);
    for i in 0..s.consumers {
        let partitions = partitions_of(i, s.consumers, topic.partitions);
        let mut consumer = Consumer::new(addr, ConsumerConfig::default())
            .map_err(|e| format!("cannot create a consumer: {e}"))?;
        let assignment: Vec<(&str, u32)> = partitions
            .iter()
            .map(|p| (topic.name.as_str(), *p))
            .collect();
        consumer.assign(&assignment);
        for p in &partitions {
            consumer
                .seek(&topic.name, *p, seek)
                .await
                .map_err(|e| broker_error(addr, &format!("seek {}/{p}", topic.name), e))?;
        }
        readers.push(Reader {
            consumer,
            partitions,
        });
    }
    Ok(readers)
}

/// The position of every partition (each is read by exactly one reader).
pub(crate) fn positions(readers: &[Reader], topic: &Topic) -> Vec<u64> {
    let mut out = vec![0; topic.partitions as usize];
    for r in readers {
        for &p in &r.partitions {
            out[p as usize] = r.consumer.position(&topic.name, p).unwrap_or(0);
        }
    }
    out
}

/// Reads until every partition of `reader` reaches its end offset (once `ends` has them). With
/// `stamp_base`, records the end-to-end latency of each record from its value's send timestamp;
/// otherwise the duration of each poll that returned records.
pub(crate) async fn read(
    reader: Reader,
    addr: String,
    topic: String,
    mut ends: Ends,
    stamp_base: Option<Instant>,
    latency: Histogram<u64>,
) -> Result<Consumed, Error> {
    let Reader {
        mut consumer,
        partitions,
    } = reader;
    let mut out = Consumed {
        records: 0,
        value_bytes: 0,
        latency,
        last_record: None,
    };
    // Since when nothing was read (or since the end became known).
    let mut idle_since = Instant::now();
    loop {
        if ends.has_changed().unwrap_or(false) {
            idle_since = Instant::now();
        }
        let target = ends.borrow_and_update().clone();
        if let Some(ends) = target {
            let done = partitions.iter().all(|&p| {
                consumer
                    .position(&topic, p)
                    .is_some_and(|pos| pos >= ends[p as usize])
            });
            if done {
                return Ok(out);
            }
            if idle_since.elapsed() > STALL_WAIT {
                return Err(format!(
                    "a consumer of {topic} read nothing for {STALL_WAIT:?} short of the end of the \
                     log (broker at {addr} gone?)"
                )
                .into());
            }
        }
        let asked = Instant::now();
        let records = consumer
            .poll(POLL_WAIT)
            .await
            .map_err(|e| broker_error(&addr, "poll", e))?;
        if records.is_empty() {
            continue;
        }
        let now = Instant::now();
        idle_since = now;
        out.last_record = Some(now);
        match stamp_base {
            None => out
                .latency
                .saturating_record(micros(now.saturating_duration_since(asked))),
            Some(base) => {
                let now_ns =
                    u64::try_from(now.saturating_duration_since(base).as_nanos()).unwrap_or(0);
                for r in &records {
                    let stamp = r
                        .value
                        .as_ref()
                        .and_then(|v| v.get(..STAMP_BYTES))
                        .and_then(|b| <[u8; STAMP_BYTES]>::try_from(b).ok());
                    if let Some(stamp) = stamp {
                        let us = now_ns.saturating_sub(u64::from_le_bytes(stamp)) / 1000;
                        out.latency.saturating_record(us.max(1));
                    }
                }
            }
        }
        out.records += records.len() as u64;
        out.value_bytes += records
            .iter()
            .map(|r| r.value.as_ref().map_or(0, |v| v.len() as u64))
            .sum::<u64>();
    }
}

/// Joins the reader tasks and adds up what they read.
pub(crate) async fn join(
    tasks: Vec<tokio::task::JoinHandle<Result<Consumed, Error>>>,
) -> Result<Consumed, Error> {
    let mut total = Consumed {
        records: 0,
        value_bytes: 0,
        latency: histogram()?,
        last_record: None,
    };
    for t in tasks {
        let c = t
            .await
            .map_err(|e| format!("consumer task failed: {e}"))??;
        total.records += c.records;
        total.value_bytes += c.value_bytes;
        total.latency.add(&c.latency)?;
        total.last_record = total.last_record.max(c.last_record);
    }
    Ok(total)
}

/// How long after the fill the replay starts: longer than the broker counts producers as active.
const PRODUCERS_QUIET: Duration = Duration::from_millis(1500);

/// `sluice-bench consume`.
pub(crate) async fn run(
    s: &Settings,
    addr: &str,
    topic: &Topic,
    admin: &Admin,
) -> Result<Report, Error> {
    check_consumers(s, topic)?;
    let held = if topic.existed {
        let first = offsets(admin, addr, topic, OffsetSpec::Earliest).await?;
        let end = offsets(admin, addr, topic, OffsetSpec::Latest).await?;
        end.iter()
            .zip(&first)
            .map(|(e, f)| e.saturating_sub(*f))
            .sum()
    } else {
        0u64
    };
    let fill = if held > 0 {
        None
    } else {
        let before = offsets(admin, addr, topic, OffsetSpec::Latest).await?;
        let plan = Plan {
            stop: s.stop,
            rate: None,
            stamp_base: None,
            halt: None,
        };
        let out = produce::produce(s, addr, topic, plan).await?;
        settled_end_offsets(admin, addr, topic, &before, out.records, SETTLE_WAIT).await?;
        // The broker paces readers far behind while producers were active in the last second
        // (its catch-up rate, docs/operations.md): the replay measured here is the one alone.
        tokio::time::sleep(PRODUCERS_QUIET).await;
        Some(out)
    };

    let disk = match &s.broker_data_dir {
        Some(d) => Some(Backlog::find(d, topic)?),
        None => None,
    };
    if s.cold {
        if let Some(b) = &disk {
            b.drop_cache()?;
            tokio::time::sleep(backlog::SETTLE_AFTER_DROP).await;
        }
    }
    let readers = readers(s, addr, topic, SeekTo::Earliest).await?;
    let starts = positions(&readers, topic);
    let ends = offsets(admin, addr, topic, OffsetSpec::Latest).await?;
    let backlog: u64 = ends
        .iter()
        .zip(&starts)
        .map(|(e, s)| e.saturating_sub(*s))
        .sum();
    let (_ends_tx, ends_rx) = watch::channel(Some(Arc::new(ends)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(readers.len());
    for r in readers {
        let h = histogram()?;
        tasks.push(tokio::spawn(read(
            r,
            addr.to_string(),
            topic.name.clone(),
            ends_rx.clone(),
            None,
            h,
        )));
    }
    let total = join(tasks).await?;
    let elapsed = total
        .last_record
        .map_or(Duration::ZERO, |t| t.saturating_duration_since(started));

    let mut r = Report::new(format!(
        "consume: {} records ({:.1} MiB) from {} ({} partitions) by {} consumers in {:.2} s",
        total.records,
        report::mib(total.value_bytes),
        topic.name,
        topic.partitions,
        s.consumers,
        elapsed.as_secs_f64()
    ));
    match &fill {
        Some(f) => r.note(format!(
            "backlog: {} records produced first as fast as possible in {:.2} s (not part of the \
             measurement)",
            f.records,
            f.elapsed.as_secs_f64()
        )),
        None => r.note(format!(
            "backlog: the {backlog} records {} already held{}",
            topic.name,
            if s.stop_given {
                " (--count/--duration ignored)"
            } else {
                ""
            }
        )),
    }
    if total.records != backlog {
        r.note(format!(
            "read {} records for {backlog} offsets (gaps or control batches)",
            total.records
        ));
    }
    r.throughput("consume", total.records, total.value_bytes, elapsed);
    if let Some(f) = &fill {
        r.throughput(
            "backlog fill (produce)",
            f.records,
            f.value_bytes,
            f.elapsed,
        );
    }
    r.latency("poll (with records)", &total.latency);
    r.primary(total.records, total.value_bytes, elapsed, &total.latency);
    r.set("latency", "poll".into());
    r.set("backlog_records", backlog.into());
    if let Some(f) = &fill {
        produce::add_produce_json(&mut r, "fill_", f);
    }
    if let Some(b) = &disk {
        backlog::report(&mut r, s, b, elapsed)?;
    }
    if let Some(rate) = s.tail_rate {
        let cold = disk.as_ref().filter(|_| s.cold);
        tail::report(&mut r, s, addr, topic, admin, rate, elapsed, cold).await?;
    }
    Ok(r)
}
