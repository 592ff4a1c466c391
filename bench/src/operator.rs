//! `sluice-bench operator`: a window operator running inside one broker (spawned for the run, or
//! `--broker`), over a backlog, against a plain consumer reading the same backlog in the same run.
//!
//! 1. A fresh source topic (`--partitions`) is filled with `--events` keyed JSON events of ~100
//!    bytes, the stream of `sluice-bench window` ([`crate::window::Events`]: `{"ts":…,"user":…,
//!    "amount":…,"pad":…}` over `--keys` keys, `--event-rate` events per second of event time, up to
//!    2 s out of order), each record's timestamp its `ts`. Not measured.
//! 2. Per run (`--runs`, medians reported): a plain [`Consumer`] reads the whole source from its start
//!    (the baseline: what reading the log costs, no JSON, no windows); then an operator is created
//!    through [`Admin::create_operator`] (`--window`, `--time`, `--value`, `--aggregate`, a fresh
//!    compacted sink) and [`Admin::describe_operator`] is polled every 20 ms until, on every source
//!    partition, the driver reports `position >= high_watermark` with the high watermark at or past
//!    the end of the fill. `events_per_s` is the events over the time from the create call to that
//!    describe answer (so it includes starting the driver, writing every result to the sink with
//!    acks all, and the final mark; it may overstate the time by one poll interval). The operator is
//!    deleted afterwards, so runs do not share a broker with a previous operator.
//!
//! From the last describe: `state_bytes` (the sum over partitions of the window state when the
//! backlog was done: the windows still open then), `emit_p99_ms` (the largest of the partitions'
//! emit p99: from reading the source records that closed or updated windows to the sink
//! acknowledging the results), records emitted, late and bad. With a spawned broker, also the
//! broker's CPU use during the operator run, in cores.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_client::{
    Admin, Consumer, ConsumerConfig, DeliveryFuture, ErrorCode, OffsetSpec, OperatorDefinition,
    OperatorDescription, Producer, ProducerConfig, ProducerRecord, SeekTo,
};
use tokio::sync::mpsc;

use crate::idle::cpu_seconds;
use crate::load::spawn::{self, SpawnedBroker};
use crate::load::{broker_error, median, offsets, random_u64, reach, settled_end_offsets};
use crate::load::{until_interrupted, Error, Topic};
use crate::window::Events;

/// Padding of each event's value: ~100-byte values.
const PAD: usize = 37;
/// How often the operator is described while it runs.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// How long the operator (or the baseline consumer) may make no progress before the run fails.
const STALL_WAIT: Duration = Duration::from_secs(60);
/// How long the fill's records may take to show in the log after their acknowledgements.
const SETTLE_WAIT: Duration = Duration::from_secs(10);
/// Delivery futures handed to the fill's collector at a time.
const FUTURES_PER_CHUNK: usize = 4096;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Events in the source topic (at the default a tumbling run takes ~10 s in all).
    #[arg(long, default_value_t = 4_000_000)]
    events: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Events per second of event time (at the default, a 1 s tumbling window holds ~10 events per
    /// key).
    #[arg(long, default_value_t = 100_000)]
    event_rate: u64,
    /// Partitions of the source topic (the sink gets as many).
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// The operator's window: tumbling:SIZE, sliding:SIZE:SLIDE or session:GAP.
    #[arg(long, default_value = "tumbling:1s")]
    window: String,
    /// Event time: record, processing or field:NAME.
    #[arg(long, default_value = "field:ts")]
    time: String,
    /// Value: number or field:NAME.
    #[arg(long, default_value = "field:amount")]
    value: String,
    /// Aggregates, comma-separated.
    #[arg(long, default_value = "count,sum")]
    aggregate: String,
    /// The operator's out-of-orderness in ms (the events are up to 2 s out of order).
    #[arg(long, default_value_t = 5_000)]
    out_of_orderness_ms: u64,
    /// Runs (a baseline read and an operator each) over the same source; medians are reported.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// A running broker, HOST:PORT, instead of spawning one.
    #[arg(long, conflicts_with = "spawn_broker")]
    broker: Option<String>,
    /// Start the real `sluice` binary for the run (the default without --broker).
    #[arg(long)]
    spawn_broker: bool,
    /// The `sluice` binary to spawn [default: `sluice` next to this executable].
    #[arg(long)]
    sluice_bin: Option<PathBuf>,
}

impl Args {
    fn check(&self) -> Result<(), Error> {
        if self.events == 0 || self.keys == 0 || self.event_rate == 0 {
            return Err("--events, --keys and --event-rate must be at least 1".into());
        }
        if self.partitions == 0 || self.runs == 0 {
            return Err("--partitions and --runs must be at least 1".into());
        }
        if self.window.is_empty() {
            return Err("--window must not be empty".into());
        }
        Ok(())
    }
}

/// The filled source topic.
#[derive(Debug)]
struct Fill {
    topic: Topic,
    records: u64,
    value_bytes: u64,
    elapsed: Duration,
}

/// What one operator run measured.
#[derive(Debug, Clone)]
struct OperatorRun {
    elapsed: Duration,
    /// Broker CPU seconds over `elapsed` (spawned broker only).
    cpu_seconds: Option<f64>,
    state_bytes: u64,
    /// The largest sum of state bytes seen while it ran.
    peak_state_bytes: u64,
    keys: u64,
    windows: u64,
    emitted: u64,
    late: u64,
    bad: u64,
    emit_p99_ms: Option<f64>,
}

/// One run: the baseline read and the operator.
#[derive(Debug, Clone)]
struct Run {
    consume_records: u64,
    consume_elapsed: Duration,
    op: OperatorRun,
}

pub fn run(a: Args) -> Result<(), Box<dyn std::error::Error>> {
    run_checked(a).map_err(|e| e as Box<dyn std::error::Error>)
}

fn run_checked(a: Args) -> Result<(), Error> {
    a.check()?;
    let (addr, broker) =
        spawn::given_or_spawned(a.broker.as_deref(), a.sluice_bin.as_deref(), &[])?;
    let pid = broker.as_ref().and_then(SpawnedBroker::pid);
    let result = until_interrupted(bench(&a, &addr, pid));
    if let Some(b) = broker {
        if let Err(e) = b.stop() {
            eprintln!("sluice-bench: warning: {e}");
        }
    }
    let (fill, runs) = result?;
    print(&a, &addr, &fill, &runs);
    Ok(())
}

async fn bench(a: &Args, addr: &str, pid: Option<u32>) -> Result<(Fill, Vec<Run>), Error> {
    reach(addr).await?;
    let admin = Admin::new(addr).map_err(|e| format!("bad --broker {addr:?}: {e}"))?;
    let id = random_u64();
    let topic = create_topic(&admin, addr, &format!("opbench-{id:016x}"), a.partitions).await?;
    eprintln!(
        "sluice-bench: operator: filling {} with {} events",
        topic.name, a.events
    );
    let fill = fill(a, addr, &admin, topic).await?;
    let mut runs = Vec::with_capacity(a.runs);
    for i in 0..a.runs {
        // The log grows by the previous operators' marks: the end is taken again.
        let ends = offsets(&admin, addr, &fill.topic, OffsetSpec::Latest).await?;
        let (consume_records, consume_elapsed) = consume(addr, &fill.topic, &ends).await?;
        let name = format!("opbench-{id:016x}-{i}");
        let op = operator(a, addr, &admin, &fill.topic, &ends, &name, pid).await?;
        eprintln!(
            "sluice-bench: operator: run {}/{}: consumer {:.0} events/s, operator {:.0} events/s",
            i + 1,
            a.runs,
            rate(consume_records, consume_elapsed),
            rate(fill.records, op.elapsed)
        );
        runs.push(Run {
            consume_records,
            consume_elapsed,
            op,
        });
    }
    Ok((fill, runs))
}

/// Creates `name` (a broker that just started may not have its metadata leader yet).
async fn create_topic(
    admin: &Admin,
    addr: &str,
    name: &str,
    partitions: u32,
) -> Result<Topic, Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match admin.create_topic(name, partitions, 1, &[]).await {
            Ok(()) => break,
            Err(e) if e.code() == Some(ErrorCode::NOT_LEADER) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(broker_error(addr, &format!("create topic {name}"), e)),
        }
    }
    Ok(Topic {
        name: name.to_string(),
        partitions,
        existed: false,
    })
}

/// Fills `topic` with the event stream through one idempotent producer (acks leader, 1 MiB
/// batches), keyed by user, each record's timestamp its event time.
async fn fill(a: &Args, addr: &str, admin: &Admin, topic: Topic) -> Result<Fill, Error> {
    let before = offsets(admin, addr, &topic, OffsetSpec::Latest).await?;
    let config = ProducerConfig {
        batch_bytes: 1 << 20,
        linger: Duration::ZERO,
        ..ProducerConfig::default()
    };
    let producer =
        Producer::new(addr, config).map_err(|e| format!("cannot create a producer: {e}"))?;
    let name: Arc<str> = Arc::from(topic.name.as_str());
    producer
        .client()
        .partition_count(&name)
        .await
        .map_err(|e| broker_error(addr, &format!("metadata of {name}"), e))?;
    // Waits for the delivery futures in order, off the sending task.
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<DeliveryFuture>>();
    let collector = tokio::spawn(async move {
        let mut acked = 0u64;
        while let Some(chunk) = rx.recv().await {
            for f in chunk {
                f.await?;
                acked += 1;
            }
        }
        Ok::<u64, sluice_client::ClientError>(acked)
    });
    let started = Instant::now();
    let mut value_bytes = 0u64;
    let mut chunk = Vec::with_capacity(FUTURES_PER_CHUNK);
    for e in Events::new(a.events, a.keys, a.event_rate, PAD) {
        value_bytes += e.value.len() as u64;
        let record = ProducerRecord::new(name.clone(), Bytes::from(e.value))
            .key(Bytes::from(e.key))
            .timestamp_ms(e.ts);
        let f = producer
            .send(record)
            .await
            .map_err(|e| broker_error(addr, &format!("produce to {name}"), e))?;
        chunk.push(f);
        if chunk.len() == FUTURES_PER_CHUNK {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(FUTURES_PER_CHUNK));
            tx.send(full).map_err(|_| "the fill's collector stopped")?;
        }
    }
    tx.send(chunk).map_err(|_| "the fill's collector stopped")?;
    drop(tx);
    producer
        .close()
        .await
        .map_err(|e| broker_error(addr, "close the producer", e))?;
    let acked = collector
        .await
        .map_err(|e| format!("the fill's collector failed: {e}"))?
        .map_err(|e| broker_error(addr, &format!("produce to {name}"), e))?;
    let elapsed = started.elapsed();
    settled_end_offsets(admin, addr, &topic, &before, acked, SETTLE_WAIT).await?;
    Ok(Fill {
        topic,
        records: acked,
        value_bytes,
        elapsed,
    })
}

/// One plain consumer assigned every partition reads from the start to `ends`: records read and
/// the time to the last of them.
async fn consume(addr: &str, topic: &Topic, ends: &[u64]) -> Result<(u64, Duration), Error> {
    let mut consumer = Consumer::new(addr, ConsumerConfig::default())
        .map_err(|e| format!("cannot create a consumer: {e}"))?;
    let assignment: Vec<(&str, u32)> = (0..topic.partitions)
        .map(|p| (topic.name.as_str(), p))
        .collect();
    consumer.assign(&assignment);
    for p in 0..topic.partitions {
        consumer
            .seek(&topic.name, p, SeekTo::Earliest)
            .await
            .map_err(|e| broker_error(addr, &format!("seek {}/{p}", topic.name), e))?;
    }
    let started = Instant::now();
    let (mut records, mut last) = (0u64, started);
    loop {
        let done = (0..topic.partitions).all(|p| {
            consumer
                .position(&topic.name, p)
                .is_some_and(|pos| pos >= ends[p as usize])
        });
        if done {
            return Ok((records, last.saturating_duration_since(started)));
        }
        if last.elapsed() > STALL_WAIT {
            return Err(format!(
                "the baseline consumer of {} read nothing for {STALL_WAIT:?} short of the end",
                topic.name
            )
            .into());
        }
        let batch = consumer
            .poll(Duration::from_millis(100))
            .await
            .map_err(|e| broker_error(addr, "poll", e))?;
        if !batch.is_empty() {
            records += batch.len() as u64;
            last = Instant::now();
        }
    }
}

/// Creates the operator over `topic`, waits until it has read everything up to `ends` on every
/// partition, and deletes it.
async fn operator(
    a: &Args,
    addr: &str,
    admin: &Admin,
    topic: &Topic,
    ends: &[u64],
    name: &str,
    pid: Option<u32>,
) -> Result<OperatorRun, Error> {
    let definition = OperatorDefinition {
        name: name.to_string(),
        source: topic.name.clone(),
        sink: format!("{name}-sink"),
        window: a.window.clone(),
        time: a.time.clone(),
        value: a.value.clone(),
        aggregates: a
            .aggregate
            .split(',')
            .map(|s| s.trim().to_string())
            .collect(),
        out_of_orderness: Duration::from_millis(a.out_of_orderness_ms),
        ..OperatorDefinition::default()
    };
    let cpu_before = pid.map(cpu_seconds).transpose()?;
    let started = Instant::now();
    admin
        .create_operator(&definition)
        .await
        .map_err(|e| broker_error(addr, &format!("create operator {name}"), e))?;
    let (mut peak, mut progress, mut progressed) = (0u64, 0u64, Instant::now());
    let (d, elapsed) = loop {
        let d = admin
            .describe_operator(name)
            .await
            .map_err(|e| broker_error(addr, &format!("describe operator {name}"), e))?;
        let elapsed = started.elapsed();
        let mut done = d.partitions.len() == ends.len();
        let mut position = 0u64;
        for p in &d.partitions {
            let Some(r) = &p.run else {
                done = false;
                continue;
            };
            if let Some(why) = &r.failed {
                return Err(
                    format!("operator {name} failed on partition {}: {why}", p.partition).into(),
                );
            }
            let end = ends.get(p.partition as usize).copied().unwrap_or(u64::MAX);
            done &= r.high_watermark >= end && r.position >= r.high_watermark;
            position += r.position;
        }
        peak = peak.max(sum(&d, |r| r.state_bytes));
        if done {
            break (d, elapsed);
        }
        if position > progress {
            (progress, progressed) = (position, Instant::now());
        } else if progressed.elapsed() > STALL_WAIT {
            return Err(format!(
                "operator {name} made no progress for {STALL_WAIT:?} (read up to offset {position} \
                 of {})",
                ends.iter().sum::<u64>()
            )
            .into());
        }
        tokio::time::sleep(POLL_EVERY).await;
    };
    let cpu = match (pid, cpu_before) {
        (Some(pid), Some(before)) => Some(cpu_seconds(pid)? - before),
        _ => None,
    };
    admin
        .delete_operator(name)
        .await
        .map_err(|e| broker_error(addr, &format!("delete operator {name}"), e))?;
    let emit_p99_ms = d
        .partitions
        .iter()
        .filter_map(|p| p.run.as_ref()?.emit_p99)
        .map(|d| d.as_secs_f64() * 1000.0)
        .reduce(f64::max);
    Ok(OperatorRun {
        elapsed,
        cpu_seconds: cpu,
        state_bytes: sum(&d, |r| r.state_bytes),
        peak_state_bytes: peak,
        keys: sum(&d, |r| r.keys),
        windows: sum(&d, |r| r.windows),
        emitted: sum(&d, |r| r.emitted),
        late: sum(&d, |r| r.late),
        bad: sum(&d, |r| r.bad),
        emit_p99_ms,
    })
}

/// A counter summed over the described partitions.
fn sum(d: &OperatorDescription, f: impl Fn(&sluice_client::OperatorRun) -> u64) -> u64 {
    d.partitions
        .iter()
        .filter_map(|p| p.run.as_ref())
        .map(f)
        .sum()
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn print(a: &Args, addr: &str, fill: &Fill, runs: &[Run]) {
    let events = fill.records;
    let op_rates: Vec<f64> = runs.iter().map(|r| rate(events, r.op.elapsed)).collect();
    let consume_rates: Vec<f64> = runs
        .iter()
        .map(|r| rate(r.consume_records, r.consume_elapsed))
        .collect();
    let ratios: Vec<f64> = runs
        .iter()
        .map(|r| rate(events, r.op.elapsed) / rate(r.consume_records, r.consume_elapsed))
        .collect();
    let (op_rate, consume_rate, ratio) =
        (median(&op_rates), median(&consume_rates), median(&ratios));
    // Per-run figures of the run whose operator rate is the median (the upper middle one).
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|&x, &y| op_rates[x].total_cmp(&op_rates[y]));
    let mid = &runs[order[runs.len() / 2]].op;
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    println!(
        "operator: {}, time {}, value {}, {} over {} keys, {} events/s of event time, {} ms \
         out-of-orderness; {} source partition(s) on {} ({}); {} run(s), medians",
        a.window,
        a.time,
        a.value,
        a.aggregate,
        a.keys,
        a.event_rate,
        a.out_of_orderness_ms,
        fill.topic.partitions,
        addr,
        if a.broker.is_some() {
            "given"
        } else {
            "spawned"
        },
        runs.len()
    );
    println!(
        "source: {events} events of {:.0} B average value, filled in {:.2} s ({:.0} events/s, not \
         measured)",
        fill.value_bytes as f64 / events.max(1) as f64,
        fill.elapsed.as_secs_f64(),
        rate(events, fill.elapsed)
    );
    println!("{:<40} {:>14} {:>10}", "", "events/s", "seconds");
    println!(
        "{:<40} {consume_rate:>14.0} {:>10.2}",
        "plain consumer (baseline)",
        events as f64 / consume_rate
    );
    println!(
        "{:<40} {op_rate:>14.0} {:>10.2}",
        format!("operator {}", a.window),
        events as f64 / op_rate
    );
    println!("operator / consumer: {ratio:.3}");
    let cores = mid.cpu_seconds.map(|c| c / mid.elapsed.as_secs_f64());
    println!(
        "state at the end: {:.1} MiB ({} keys, {} windows), peak {:.1} MiB; emitted {}, late {}, \
         bad {}; emit p99 {}; broker CPU {}",
        mib(mid.state_bytes),
        mid.keys,
        mid.windows,
        mib(mid.peak_state_bytes),
        mid.emitted,
        mid.late,
        mid.bad,
        mid.emit_p99_ms
            .map_or("n/a".into(), |ms| format!("{ms:.1} ms")),
        cores.map_or("n/a".into(), |c| format!("{c:.2} cores")),
    );
    let round = |x: f64, places: i32| (x * 10f64.powi(places)).round() / 10f64.powi(places);
    let json = serde_json::json!({
        "mode": "operator",
        "window": a.window,
        "time": a.time,
        "value": a.value,
        "aggregates": a.aggregate,
        "events": events,
        "keys": a.keys,
        "event_rate": a.event_rate,
        "partitions": fill.topic.partitions,
        "runs": runs.len(),
        "events_per_s": op_rate.round() as u64,
        "consume_events_per_s": consume_rate.round() as u64,
        "ratio": round(ratio, 3),
        "operator_events_per_s_runs": op_rates.iter().map(|r| r.round() as u64).collect::<Vec<_>>(),
        "consume_events_per_s_runs": consume_rates.iter().map(|r| r.round() as u64).collect::<Vec<_>>(),
        "state_bytes": mid.state_bytes,
        "peak_state_bytes": mid.peak_state_bytes,
        "emit_p99_ms": mid.emit_p99_ms.map(|ms| round(ms, 3)),
        "emitted": mid.emitted,
        "late": mid.late,
        "bad": mid.bad,
        "broker_cpu_cores": cores.map(|c| round(c, 2)),
        "fill_events_per_s": rate(events, fill.elapsed).round() as u64,
    });
    println!("{json}");
}
