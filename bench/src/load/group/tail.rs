//! The live stream of the leave and join measurements: a producer task that writes one small record
//! to every partition of a topic each `--produce-interval-ms`, and the [`Timeline`] the members
//! report to: per partition, when each poll returned records of it and to which member. Duplicates
//! (an offset returned again) and skips (offsets passed over between two records returned; raft's
//! control batches take offsets too, but on one broker only before a partition's first record) are
//! counted on the way. The timeline's questions (first receipt after an instant, longest gap in a window)
//! are pure functions over those lists.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_client::{
    Acks, ConsumerRecord, DeliveryFuture, Producer, ProducerConfig, ProducerRecord,
};
use tokio::task::JoinHandle;

use super::members::{check_running, lock, Member, Sink};
use crate::load::{broker_error, Error};

/// Bytes of value of each streamed record: the measurements are about who reads, not how much.
pub(super) const TAIL_RECORD_BYTES: usize = 100;

/// One poll's records of one partition: when the poll returned, and to which member.
pub(super) type Receipt = (Instant, u32);

#[derive(Debug, Default)]
struct Inner {
    /// Per partition, receipts in the order they were noted.
    receipts: Vec<Vec<Receipt>>,
    /// Per partition, the next offset expected, once a record of it was returned (a partition's
    /// first offsets are raft control batches, which consumers skip).
    next: Vec<Option<u64>>,
    duplicates: u64,
    skipped: u64,
}

/// What the members of a live group received.
#[derive(Debug)]
pub(super) struct Timeline {
    inner: Mutex<Inner>,
}

impl Timeline {
    pub fn new(partitions: u32) -> Timeline {
        let n = partitions as usize;
        Timeline {
            inner: Mutex::new(Inner {
                receipts: vec![Vec::new(); n],
                next: vec![None; n],
                duplicates: 0,
                skipped: 0,
            }),
        }
    }

    /// Runs `f` on every partition's receipts as they are, without copying them (the wait loops
    /// look often; the lists grow long).
    pub fn with<R>(&self, f: impl FnOnce(&[Vec<Receipt>]) -> R) -> R {
        f(&lock(&self.inner).receipts)
    }

    /// Every partition's receipts so far, each in time order (a copy, for the analysis at the end).
    pub fn receipts(&self) -> Vec<Vec<Receipt>> {
        let mut r = lock(&self.inner).receipts.clone();
        // Noted in order already, unless a member's note raced its successor's by a hair.
        for p in &mut r {
            p.sort_by_key(|(t, _)| *t);
        }
        r
    }

    /// Records returned again, and offsets passed over, so far.
    pub fn duplicates_and_skips(&self) -> (u64, u64) {
        let i = lock(&self.inner);
        (i.duplicates, i.skipped)
    }
}

impl Sink for Timeline {
    fn note(&self, member: u32, at: Instant, records: &[ConsumerRecord]) {
        let mut i = lock(&self.inner);
        let mut last_partition = None;
        for r in records {
            let p = r.partition as usize;
            if p >= i.next.len() {
                continue;
            }
            if last_partition != Some(p) {
                i.receipts[p].push((at, member));
                last_partition = Some(p);
            }
            match i.next[p] {
                Some(next) if r.offset < next => i.duplicates += 1,
                Some(next) => {
                    i.skipped += r.offset - next;
                    i.next[p] = Some(r.offset + 1);
                }
                None => i.next[p] = Some(r.offset + 1),
            }
        }
    }
}

/// The first receipt of `receipts` after `after` by a member other than `not`.
pub(super) fn first_after(
    receipts: &[Receipt],
    after: Instant,
    not: Option<u32>,
) -> Option<Instant> {
    receipts
        .iter()
        .find(|(t, m)| *t > after && Some(*m) != not)
        .map(|(t, _)| *t)
}

/// The last receipt of `receipts` by `by` at or before `until`.
pub(super) fn last_by(receipts: &[Receipt], by: u32, until: Instant) -> Option<Instant> {
    receipts
        .iter()
        .rev()
        .find(|(t, m)| *t <= until && *m == by)
        .map(|(t, _)| *t)
}

/// The longest time between two consecutive receipts whose interval overlaps `[from, to]`
/// (counted whole, not cut at the window's edges); a partition with no receipt after one that
/// falls before `to` counts from it to `observed_until`; one with no receipt at all, the window.
pub(super) fn longest_gap(
    receipts: &[Receipt],
    from: Instant,
    to: Instant,
    observed_until: Instant,
) -> Duration {
    let mut longest = Duration::ZERO;
    let mut prev: Option<Instant> = None;
    for &(t, _) in receipts {
        if let Some(p) = prev {
            if t > from && p < to {
                longest = longest.max(t - p);
            }
        }
        prev = Some(t);
    }
    match prev {
        Some(p) if p < to => longest.max(observed_until.saturating_duration_since(p)),
        Some(_) => longest,
        None => to - from,
    }
}

/// The producer task of a measurement.
#[derive(Debug)]
pub(super) struct Stream {
    stop: Arc<AtomicBool>,
    /// Taken once it has failed.
    task: Option<JoinHandle<Result<u64, Error>>>,
}

impl Stream {
    /// A producer writing one record to each of `partitions` partitions of `topic` every `every`.
    pub fn start(
        addr: &str,
        topic: &str,
        partitions: u32,
        every: Duration,
    ) -> Result<Stream, Error> {
        let config = ProducerConfig {
            linger: Duration::ZERO,
            acks: Acks::Leader,
            ..ProducerConfig::default()
        };
        let producer =
            Producer::new(addr, config).map_err(|e| format!("cannot create a producer: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(produce(
            producer,
            addr.to_string(),
            Arc::from(topic),
            partitions,
            every,
            stop.clone(),
        ));
        Ok(Stream {
            stop,
            task: Some(task),
        })
    }

    /// Fails with the producer's error if it stopped on its own.
    pub async fn check(&mut self) -> Result<(), Error> {
        match self.task.take_if(|t| t.is_finished()) {
            None => Ok(()),
            Some(t) => {
                t.await
                    .map_err(|e| format!("producer task failed: {e}"))??;
                Err("the producer stopped".into())
            }
        }
    }

    /// Stops it; how many records were acknowledged.
    pub async fn stop(mut self) -> Result<u64, Error> {
        self.stop.store(true, Ordering::Relaxed);
        match self.task.take() {
            Some(t) => t.await.map_err(|e| format!("producer task failed: {e}"))?,
            None => Err("the producer had stopped".into()),
        }
    }
}

/// Waits `d`, failing early if a member or the producer stopped.
pub(super) async fn pause(
    members: &mut Vec<Member>,
    stream: &mut Stream,
    d: Duration,
) -> Result<(), Error> {
    let until = Instant::now() + d;
    while Instant::now() < until {
        healthy(members, stream).await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Fails if a member or the producer stopped.
pub(super) async fn healthy(members: &mut Vec<Member>, stream: &mut Stream) -> Result<(), Error> {
    stream.check().await?;
    check_running(members).await
}

async fn produce(
    producer: Producer,
    addr: String,
    topic: Arc<str>,
    partitions: u32,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> Result<u64, Error> {
    let value = Bytes::from(vec![b'x'; TAIL_RECORD_BYTES]);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous: Vec<DeliveryFuture> = Vec::new();
    let mut acked = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let mut round = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let r = ProducerRecord::new(topic.clone(), value.clone()).partition(p);
            let d = producer
                .send(r)
                .await
                .map_err(|e| broker_error(&addr, "send", e))?;
            round.push(d);
        }
        // The previous round's acknowledgements are in by now, unless the broker is behind.
        for d in &mut previous {
            d.await
                .map_err(|e| broker_error(&addr, "a record failed delivery", e))?;
            acked += 1;
        }
        previous = round;
    }
    producer
        .close()
        .await
        .map_err(|e| broker_error(&addr, "close the producer", e))?;
    for d in &mut previous {
        d.await
            .map_err(|e| broker_error(&addr, "a record failed delivery", e))?;
        acked += 1;
    }
    Ok(acked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn gaps_count_whole_intervals_that_overlap_the_window() {
        let b = Instant::now();
        let r: Vec<Receipt> = [0, 10, 20, 100, 110, 300]
            .iter()
            .map(|ms| (at(b, *ms), 0))
            .collect();
        // [50, 105]: the 20..100 gap overlaps it.
        assert_eq!(
            longest_gap(&r, at(b, 50), at(b, 105), at(b, 400)),
            Duration::from_millis(80)
        );
        // [0, 15]: only 0..10 and 10..20.
        assert_eq!(
            longest_gap(&r, at(b, 0), at(b, 15), at(b, 400)),
            Duration::from_millis(10)
        );
        // [250, 350]: 110..300 overlaps; after 300 nothing until 400 observed.
        assert_eq!(
            longest_gap(&r, at(b, 250), at(b, 350), at(b, 400)),
            Duration::from_millis(190)
        );
        assert_eq!(
            longest_gap(&r, at(b, 320), at(b, 350), at(b, 400)),
            Duration::from_millis(100)
        );
        assert_eq!(
            longest_gap(&[], at(b, 0), at(b, 50), at(b, 400)),
            Duration::from_millis(50)
        );
    }

    #[test]
    fn first_and_last_receipts_by_member() {
        let b = Instant::now();
        let r: Vec<Receipt> = vec![
            (at(b, 0), 1),
            (at(b, 10), 1),
            (at(b, 50), 2),
            (at(b, 60), 2),
        ];
        assert_eq!(first_after(&r, at(b, 5), Some(1)), Some(at(b, 50)));
        assert_eq!(first_after(&r, at(b, 5), None), Some(at(b, 10)));
        assert_eq!(first_after(&r, at(b, 60), None), None);
        assert_eq!(last_by(&r, 1, at(b, 100)), Some(at(b, 10)));
        assert_eq!(last_by(&r, 2, at(b, 55)), Some(at(b, 50)));
        assert_eq!(last_by(&r, 3, at(b, 100)), None);
    }

    #[test]
    fn duplicates_and_skips_are_counted() {
        let t = Timeline::new(2);
        let rec = |p: u32, o: u64| ConsumerRecord {
            topic: Arc::from("t"),
            partition: p,
            offset: o,
            timestamp_ms: 0,
            key: None,
            value: None,
            headers: Vec::new(),
        };
        let now = Instant::now();
        // Partition 1 starts at 2 (control batches before it): not a skip.
        t.note(0, now, &[rec(0, 0), rec(0, 1), rec(1, 2)]);
        t.note(1, now, &[rec(0, 1), rec(0, 2), rec(1, 5)]);
        assert_eq!(t.duplicates_and_skips(), (1, 2));
        // One receipt per poll and partition.
        let r = t.receipts();
        assert_eq!(r[0].iter().map(|(_, m)| *m).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(r[1].iter().map(|(_, m)| *m).collect::<Vec<_>>(), vec![0, 1]);
    }
}
