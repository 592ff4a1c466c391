//! `sluice-bench produce`, and the producer side that `consume` (to fill its backlog) and `e2e` use:
//! `--producers` tasks, each with its own [`Producer`], send unkeyed records, either as fast as
//! `send` accepts them or paced to `--rate` by a token bucket refilled on timer ticks. Values come
//! from [`super::values`]: slices of random bytes made before the clock starts (e2e: a send
//! timestamp first).
//!
//! Each record's produce-ack latency is the time from a clock reading taken before its `send` call
//! to the moment its [`DeliveryFuture`] is seen resolved. Paced runs (`--rate`) read the clock per
//! record. Unpaced runs read it once per up to 16 consecutive sends (and again at once after a
//! `send` that had to wait for buffer space), so a record's send time may be up to those few sends
//! (microseconds) early: latencies are overstated by at most that, never understated; e2e stamps
//! and record timestamps (set by the bench, so the client reads no clock per record) use the same
//! reading. A collector per producer times its records: unpaced, it runs in the producer's own
//! task (a hand-off to another task costs a cross-thread wake-up per hand-off, which capped 100-byte
//! runs); paced, in a task of its own (so completions do not wake the sender between ticks). It
//! takes delivery futures in groups of up to 64 (handed over before the sender could wait, so none
//! sits unwatched), waits on every
//! outstanding group at once (a slot per group, each with its own waker, so a late batch of one
//! partition does not delay the timing of another's), and looks at the woken groups when woken (in
//! the sender: after every group sent and whenever it waits). It reads the clock once per look at a slot (records
//! of one batch resolve together) and records latencies in microseconds into an HDR histogram,
//! merged across producers at the end.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hdrhistogram::Histogram;
use sluice_client::{
    ClientError, DeliveryFuture, Producer, ProducerConfig, ProducerRecord, TrySendError,
};
use tokio::sync::mpsc;

use super::collector::Collector;
use super::report::{self, Report};
use super::values::{Pool, Values, WallClock};
use super::{broker_error, Error, Settings, Stop, Topic};

/// What the producers did.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Records acknowledged.
    pub records: u64,
    /// Value bytes of those records.
    pub value_bytes: u64,
    /// Produce-ack latency per record, microseconds.
    pub latency: Histogram<u64>,
    /// When the first producer began sending.
    pub started: Instant,
    /// From `started` to the last acknowledgement.
    pub elapsed: Duration,
}

/// How the producers run.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub stop: Stop,
    /// Records per second across all producers; `None` = as fast as possible.
    pub rate: Option<u64>,
    /// e2e: values start with the send time in ns since this instant.
    pub stamp_base: Option<Instant>,
    /// Also stop when this is set (the tail benchmark's producer runs until a replay ends).
    pub halt: Option<Arc<AtomicBool>>,
}

/// `sluice-bench produce`.
pub(crate) async fn run(s: &Settings, addr: &str, topic: &Topic) -> Result<Report, Error> {
    let out = produce(
        s,
        addr,
        topic,
        Plan {
            stop: s.stop,
            rate: s.rate,
            stamp_base: None,
            halt: None,
        },
    )
    .await?;
    let mut r = Report::new(format!(
        "produce: {} records x {} B to {} ({} partitions) in {:.2} s",
        out.records,
        s.record_size,
        topic.name,
        topic.partitions,
        out.elapsed.as_secs_f64()
    ));
    r.throughput("produce (acked)", out.records, out.value_bytes, out.elapsed);
    r.latency("produce ack", &out.latency);
    r.primary(out.records, out.value_bytes, out.elapsed, &out.latency);
    r.set("latency", "produce_ack".into());
    Ok(r)
}

/// A new latency histogram: 1 us to 10 minutes, 3 significant digits.
pub(crate) fn histogram() -> Result<Histogram<u64>, Error> {
    Ok(Histogram::new_with_bounds(1, 600_000_000, 3)?)
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Runs the producers per `plan` and waits for every record to be acknowledged.
pub(crate) async fn produce(
    s: &Settings,
    addr: &str,
    topic: &Topic,
    plan: Plan,
) -> Result<Outcome, Error> {
    let config = ProducerConfig {
        linger: s.linger,
        batch_bytes: s.batch_bytes,
        max_in_flight: s.max_in_flight,
        acks: s.acks,
        compression: s.compression,
        idempotence: s.idempotence,
        ..ProducerConfig::default()
    };
    // Connect and learn the topic before the clock starts.
    let mut producers = Vec::with_capacity(s.producers);
    for _ in 0..s.producers {
        let p = Producer::new(addr, config.clone())
            .map_err(|e| format!("cannot create a producer: {e}"))?;
        p.client()
            .partition_count(&topic.name)
            .await
            .map_err(|e| broker_error(addr, &format!("metadata of {}", topic.name), e))?;
        producers.push(p);
    }
    let pool = Pool::new(s.record_size, s.batch_bytes);
    let n = s.producers as u64;
    let started = Instant::now();
    // The first failure (a send refused, a record that finally failed delivery) ends the run at
    // once: waiting for every buffered batch to exhaust its retries against a dead broker takes
    // minutes, and the figures would be void anyway.
    let (fail_tx, mut fail_rx) = mpsc::unbounded_channel::<Failure>();
    let mut senders = Vec::with_capacity(s.producers);
    for (i, producer) in producers.into_iter().enumerate() {
        let i = i as u64;
        let quota = Quota {
            count: match plan.stop {
                Stop::Count(c) => Some(c / n + u64::from(i < c % n)),
                Stop::Duration(_) => None,
            },
            deadline: match plan.stop {
                Stop::Duration(d) => Some(started + d),
                Stop::Count(_) => None,
            },
            halt: plan.halt.clone(),
            // Each producer paces its share; the shares add up to --rate.
            rate: plan.rate.map(|r| (r / n + u64::from(i < r % n)) as f64),
        };
        let values = match plan.stamp_base {
            Some(base) => Values::Stamped {
                pool: pool.clone(),
                arena: BytesMut::new(),
                base,
            },
            None => Values::Plain(pool.clone()),
        };
        // Unpaced, the sender times its own records (see the module docs); paced, a task of its
        // own does, so a completion never wakes the sender between ticks (measured: that put
        // 0.4-0.9 ms on e2e p99 at 50,000 records/s).
        let (mut collector, remote) = match plan.rate {
            Some(_) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let task = Collector::new(fail_tx.clone())?.run(rx);
                (
                    Collector::forwarding(tx, fail_tx.clone())?,
                    Some(tokio::spawn(task)),
                )
            }
            None => (Collector::new(fail_tx.clone())?, None),
        };
        let topic: Arc<str> = Arc::from(topic.name.as_str());
        let fail = fail_tx.clone();
        senders.push(tokio::spawn(async move {
            let result = match send_loop(&producer, &topic, values, quota, &mut collector).await {
                // Sends what was accepted and waits for it (delivery futures resolve either way),
                // timing (and reporting failures of) records as they complete meanwhile.
                Ok(n) => {
                    let mut close = std::pin::pin!(producer.close());
                    std::future::poll_fn(|cx| {
                        collector.collect(Some(cx));
                        close.as_mut().poll(cx)
                    })
                    .await
                    .map(|()| n)
                }
                Err(e) => Err(e),
            };
            // Reported before the drain, which may wait out every retry of what is buffered.
            if let Err(e) = &result {
                let _ = fail.send(Failure::Send(e.clone()));
            }
            collector.drain().await;
            let collected = match remote {
                Some(h) => {
                    // Ends the remote collector's input.
                    drop(collector);
                    h.await.map_err(|e| format!("collector task failed: {e}"))
                }
                None => Ok(collector.out),
            };
            (result, collected)
        }));
    }
    drop(fail_tx);
    let finished = async {
        let mut sent = 0u64;
        let mut latency = histogram()?;
        let mut last = started;
        for h in senders {
            let (result, c) = h.await.map_err(|e| format!("producer task failed: {e}"))?;
            let c = c?;
            // A failure is reported through the failure channel.
            if let Ok(n) = result {
                sent += n;
            }
            latency.add(&c.latency)?;
            if let Some(t) = c.last_done {
                last = last.max(t);
            }
        }
        Ok::<_, Error>((sent, latency, last))
    };
    let (sent, latency, last) = tokio::select! {
        biased;
        Some(f) = fail_rx.recv() => return Err(match f {
            Failure::Send(e) => broker_error(addr, "send", e),
            Failure::Delivery(e) => broker_error(addr, "a record failed delivery", e),
        }),
        r = finished => r?,
    };
    // A failure reported just as the last task ended.
    if let Ok(f) = fail_rx.try_recv() {
        return Err(match f {
            Failure::Send(e) => broker_error(addr, "send", e),
            Failure::Delivery(e) => broker_error(addr, "a record failed delivery", e),
        });
    }
    Ok(Outcome {
        records: sent,
        value_bytes: sent * s.record_size as u64,
        latency,
        started,
        elapsed: last.saturating_duration_since(started),
    })
}

/// What ends a produce run early.
#[derive(Debug)]
pub(super) enum Failure {
    Send(ClientError),
    Delivery(ClientError),
}

/// One producer's share of the work.
#[derive(Debug, Clone)]
struct Quota {
    count: Option<u64>,
    deadline: Option<Instant>,
    halt: Option<Arc<AtomicBool>>,
    /// Records per second for this producer (at least 1: --rate is checked against --producers).
    rate: Option<f64>,
}

impl Quota {
    /// Whether sending ends at `now` (the deadline passed or the halt flag is set).
    fn ends(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d)
            || self
                .halt
                .as_ref()
                .is_some_and(|h| h.load(Ordering::Relaxed))
    }
}

/// Timer tick of the rate limiter: at most this often, at least once per record.
const MIN_TICK: Duration = Duration::from_millis(1);

/// Sends until the quota is used up; returns the number of records accepted.
async fn send_loop(
    producer: &Producer,
    topic: &Arc<str>,
    values: Values,
    quota: Quota,
    out: &mut Collector,
) -> Result<u64, ClientError> {
    let result = send_records(producer, topic, values, quota, out).await;
    out.hand_over();
    result
}

async fn send_records(
    producer: &Producer,
    topic: &Arc<str>,
    mut values: Values,
    quota: Quota,
    out: &mut Collector,
) -> Result<u64, ClientError> {
    let mut sent = 0u64;
    let limit = quota.count.unwrap_or(u64::MAX);
    let clock = WallClock::new();
    let Some(rate) = quota.rate else {
        // As fast as possible: one clock read serves as the send time (and the record timestamp)
        // of up to CLOCK_EVERY records sent right after it (a few microseconds), and is read again
        // at once after a send that had to wait for buffer space.
        while sent < limit {
            // `try_send` never yields: let the runtime's other tasks in now and then (before the
            // clock read, so a yield never ages the send times that follow).
            tokio::task::coop::consume_budget().await;
            let now = Instant::now();
            if quota.ends(now) {
                break;
            }
            let ms = clock.ms(now);
            for _ in 0..CLOCK_EVERY.min(limit - sent) {
                let record = ProducerRecord::new(topic.clone(), values.next(now)).timestamp_ms(ms);
                let waited = send_one(producer, record, now, out).await?;
                sent += 1;
                if waited {
                    break;
                }
            }
        }
        return Ok(sent);
    };
    // Token bucket: by time t since the start, floor(t * rate) + 1 records are due; each tick sends
    // what is due (catching up after a stall) rather than sleeping per record. Paced records read
    // the clock each.
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate).max(MIN_TICK);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // While waiting for the tick, time the records that complete.
        out.hand_over();
        std::future::poll_fn(|cx| {
            out.collect(Some(cx));
            ticks.poll_tick(cx).map(drop)
        })
        .await;
        let due = ((start.elapsed().as_secs_f64() * rate) as u64)
            .saturating_add(1)
            .min(limit);
        while sent < due {
            let now = Instant::now();
            if quota.ends(now) {
                return Ok(sent);
            }
            let record =
                ProducerRecord::new(topic.clone(), values.next(now)).timestamp_ms(clock.ms(now));
            send_one(producer, record, now, out).await?;
            sent += 1;
        }
        if sent >= limit || quota.ends(Instant::now()) {
            return Ok(sent);
        }
    }
}

/// Records sent at most this many per clock read when sending as fast as possible.
const CLOCK_EVERY: u64 = 16;
/// Delivery futures handed to the collector together.
pub(super) const GROUP: usize = 64;

/// A record's delivery future with the time it was sent: a clock reading taken before its `send`
/// call (see `send_records`), so a latency measured from it is never shorter than the real one.
pub(super) type Sent = (Instant, DeliveryFuture);

/// Sends one record; returns whether `send` had to wait for buffer space. While it waits, the
/// collector times the records that complete (their completion is what frees the space).
async fn send_one(
    producer: &Producer,
    record: ProducerRecord,
    now: Instant,
    out: &mut Collector,
) -> Result<bool, ClientError> {
    // Accepted at once in the common case: no future to build and poll.
    let record = match producer.try_send(record) {
        Ok(delivery) => {
            out.push((now, delivery));
            return Ok(false);
        }
        Err(TrySendError::Refused(e)) => return Err(e),
        Err(TrySendError::WouldWait(record)) => *record,
    };
    let mut send = std::pin::pin!(producer.send(record));
    let mut waited = false;
    let delivery = std::future::poll_fn(|cx| {
        let p = send.as_mut().poll(cx);
        if p.is_pending() {
            if !waited {
                waited = true;
                out.hand_over();
            }
            out.collect(Some(cx));
        }
        p
    })
    .await?;
    out.push((now, delivery));
    Ok(waited)
}

/// Adds the produce-side figures of an e2e or consume run to `r` under `prefix` keys.
pub(crate) fn add_produce_json(r: &mut Report, prefix: &str, out: &Outcome) {
    let secs = out.elapsed.as_secs_f64().max(1e-9);
    r.set(
        &format!("{prefix}records_per_s"),
        report::round(out.records as f64 / secs).into(),
    );
    r.set(
        &format!("{prefix}mb_per_s"),
        report::round1(report::mib(out.value_bytes) / secs).into(),
    );
    r.set(&format!("{prefix}records"), out.records.into());
    r.set(&format!("{prefix}seconds"), report::round3(secs).into());
}
