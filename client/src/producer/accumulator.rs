//! The accumulator: the batches being filled, per topic and partition, and the producer's memory
//! bound.
//!
//! `send` appends a record to its partition's open [`BatchBuilder`] ([`Accumulator::append`]),
//! choosing the partition (explicit, key hash, else the topic's sticky partition). A batch is
//! sealed when adding a record would pass `batch_bytes`, when it is `linger` old
//! ([`Accumulator::seal_expired`]), or on flush and close. Sealing is one function, [`seal`]: it is
//! the single moment a batch stops taking records and takes its place in its partition's order (the
//! ready queue the sender drains), and it moves the topic's sticky partition on, so unkeyed records
//! fill whole batches one partition at a time. Batches back from a failed attempt re-enter the
//! ready queue at its front ([`Accumulator::requeue`]). [`Buffer`] bounds the bytes of records
//! accepted and not yet completed, so a full producer makes `send` wait rather than grow.
//!
//! The accumulator never does I/O and never waits: it lives under one mutex held only for short,
//! non-blocking work, and compressing a batch ([`Data::into_bytes`]) is left to the sender, outside
//! that lock. It never resolves a delivery future either; the sender does, when a batch completes.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::{BatchBuilder, BatchError, Compression};
use tokio::sync::{Semaphore, TryAcquireError};
use tokio::time::Instant;

use super::config::ProducerConfig;
use super::delivery::{Completion, DeliveryFuture};
use super::record::{choose_partition, ProducerRecord};
use crate::error::{ClientError, Result};

/// Initial capacity of a batch buffer, at least (it starts at the size of the topic's last batch if
/// larger, and grows up to `batch_bytes`).
const INITIAL_BATCH_CAPACITY: usize = 64 << 10;

/// What every state of a batch carries.
pub(super) struct BatchMeta {
    pub(super) id: u64,
    pub(super) topic: Arc<str>,
    pub(super) partition: u32,
    pub(super) completion: Arc<Completion>,
    /// Buffer bytes held until the batch completes.
    pub(super) permits: usize,
    /// Its generation and number among its partition's batches once it carries an idempotent
    /// producer's sequence (incomplete until it completes).
    pub(super) stamped: Option<super::idempotence::Stamp>,
}

/// A batch still taking records.
pub(super) struct OpenBatch {
    pub(super) builder: BatchBuilder,
    pub(super) meta: BatchMeta,
    created: Instant,
}

pub(super) enum Data {
    Open(BatchBuilder),
    Sealed(Bytes),
}

impl Data {
    /// The batch's bytes: encoded (and compressed) now for a batch never sent, or the bytes of the
    /// earlier attempt for one back from a failure, so a retry resends exactly what was sent.
    pub(super) fn into_bytes(self) -> std::result::Result<Bytes, BatchError> {
        match self {
            Data::Sealed(bytes) => Ok(bytes),
            Data::Open(builder) => builder.seal(),
        }
    }
}

/// A batch waiting for the sender: sealed by size, linger or flush, or back from a failed attempt.
pub(super) struct ReadyBatch {
    pub(super) data: Data,
    pub(super) meta: BatchMeta,
    pub(super) attempts: u32,
}

/// A sealed batch on its way.
pub(super) struct SealedBatch {
    pub(super) bytes: Bytes,
    pub(super) meta: BatchMeta,
    pub(super) attempts: u32,
}

pub(super) struct TopicAcc {
    name: Arc<str>,
    pub(super) sticky: u32,
    /// Open batch per partition.
    pub(super) open: Vec<Option<OpenBatch>>,
    /// Partition count last used for the topic, and the client's metadata generation it was read
    /// at: while the generation has not moved, `send` uses it without looking the topic up.
    partitions: u32,
    pub(super) generation: Option<u64>,
    /// Size of the topic's last sealed batch: a new batch starts with room for that much, so a
    /// steady stream does not regrow (and copy) every batch from the initial capacity.
    last_batch_bytes: usize,
}

/// The accumulator, guarded by one mutex held only for short, non-blocking work. Besides the
/// batches it keeps the producer's progress: the batches not yet completed, flushes in progress,
/// and whether the producer is closed.
pub(super) struct Accumulator {
    /// Per topic, in order of first use; `topic_index` maps names to positions.
    pub(super) topics: Vec<TopicAcc>,
    topic_index: HashMap<Arc<str>, usize>,
    /// Position of the topic used last (most sends go to the same topic as the one before).
    pub(super) last_topic: usize,
    pub(super) ready: VecDeque<ReadyBatch>,
    /// Ids of batches created and not yet completed.
    pub(super) outstanding: BTreeSet<u64>,
    pub(super) next_batch_id: u64,
    /// Flushes in progress; while non-zero every open batch is ready at once.
    pub(super) flushing: usize,
    pub(super) closed: bool,
    /// From the config: the size at which a batch is sealed, and the codec of new batches.
    batch_bytes: usize,
    compression: Compression,
}

impl Accumulator {
    pub(super) fn new(config: &ProducerConfig) -> Accumulator {
        Accumulator {
            topics: Vec::new(),
            topic_index: HashMap::new(),
            last_topic: 0,
            ready: VecDeque::new(),
            outstanding: BTreeSet::new(),
            next_batch_id: 0,
            flushing: 0,
            closed: false,
            batch_bytes: config.batch_bytes,
            compression: config.compression,
        }
    }

    /// Moves to the ready queue every open batch that is at least `linger` old at `now`, or all of
    /// them if `all`; returns the earliest creation time among those left open.
    pub(super) fn seal_expired(
        &mut self,
        all: bool,
        now: Instant,
        linger: Duration,
    ) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        for acc in &mut self.topics {
            for p in 0..acc.open.len() {
                let Some(created) = acc.open[p].as_ref().map(|b| b.created) else {
                    continue;
                };
                if all || now.saturating_duration_since(created) >= linger {
                    seal(acc, p as u32, &mut self.ready);
                } else {
                    earliest = Some(earliest.map_or(created, |e| e.min(created)));
                }
            }
        }
        earliest
    }

    pub(super) fn has_open(&self) -> bool {
        self.topics
            .iter()
            .any(|acc| acc.open.iter().any(Option::is_some))
    }

    /// Puts batches back from a failed attempt at the front of the ready queue, in their order,
    /// counting that attempt.
    pub(super) fn requeue(&mut self, retry: Vec<SealedBatch>) {
        // Retries go first: they are older than anything queued.
        for b in retry.into_iter().rev() {
            self.ready.push_front(ReadyBatch {
                data: Data::Sealed(b.bytes),
                meta: b.meta,
                attempts: b.attempts + 1,
            });
        }
    }

    /// Puts batches the sender could not send yet (their partition is at its in-flight bound) back
    /// at the front of the ready queue, in their order: they stay ahead of newer batches.
    pub(super) fn hold(&mut self, held: Vec<ReadyBatch>) {
        for b in held.into_iter().rev() {
            self.ready.push_front(b);
        }
    }

    /// Position of `name` in `topics`, if it was used before.
    pub(super) fn find_topic(&mut self, name: &str) -> Option<usize> {
        if self
            .topics
            .get(self.last_topic)
            .is_some_and(|t| *t.name == *name)
        {
            return Some(self.last_topic);
        }
        let i = *self.topic_index.get(name)?;
        self.last_topic = i;
        Some(i)
    }

    /// The accumulator of `name`.
    #[cfg(test)]
    pub(super) fn topic(&self, name: &str) -> Option<&TopicAcc> {
        self.topic_index.get(name).map(|&i| &self.topics[i])
    }

    /// The partition count of `name` if it was read at metadata generation `generation` (so the
    /// client's cache still says the same).
    pub(super) fn known_partitions(&mut self, name: &str, generation: u64) -> Option<u32> {
        let i = self.find_topic(name)?;
        let t = &self.topics[i];
        (t.generation == Some(generation) && t.partitions > 0).then_some(t.partitions)
    }

    /// Appends a record (whose buffer bytes, `size`, are already taken) to the open batch of its
    /// partition. Returns its delivery future and whether the sender needs waking.
    pub(super) fn append(
        &mut self,
        record: ProducerRecord,
        size: usize,
        partitions: u32,
        timestamp_ms: i64,
    ) -> (DeliveryFuture, bool) {
        let ProducerRecord {
            topic,
            partition,
            key,
            value,
            headers,
            ..
        } = record;
        let t = match self.find_topic(&topic) {
            Some(i) => i,
            None => {
                let i = self.topics.len();
                self.topics.push(TopicAcc {
                    name: topic.clone(),
                    sticky: random_start(partitions),
                    open: Vec::new(),
                    partitions,
                    generation: None,
                    last_batch_bytes: 0,
                });
                self.topic_index.insert(topic, i);
                self.last_topic = i;
                i
            }
        };
        let Accumulator {
            topics,
            ready,
            outstanding,
            next_batch_id,
            batch_bytes,
            compression,
            ..
        } = self;
        let (batch_bytes, compression) = (*batch_bytes, *compression);
        let acc = &mut topics[t];
        if acc.partitions != partitions {
            acc.partitions = partitions;
            acc.generation = None;
        }
        if acc.open.len() < partitions as usize {
            acc.open.resize_with(partitions as usize, || None);
        }
        let explicit = partition;
        let mut wake = false;
        // Seal the open batch first if this record would push it past batch_bytes. That moves an
        // unkeyed record on to the next sticky partition, whose batch may be full too, hence the loop
        // (each turn seals a batch, so it ends).
        let partition = loop {
            let partition = choose_partition(explicit, key.as_deref(), acc.sticky, partitions);
            let full = acc.open[partition as usize].as_ref().is_some_and(|b| {
                !b.builder.is_empty() && b.builder.size_bytes() + size > batch_bytes
            });
            if !full {
                break partition;
            }
            seal(acc, partition, ready);
            wake = true;
        };
        let p = partition as usize;
        let TopicAcc {
            name,
            open,
            last_batch_bytes,
            ..
        } = &mut *acc;
        let batch = open[p].get_or_insert_with(|| {
            let id = *next_batch_id;
            *next_batch_id += 1;
            outstanding.insert(id);
            // The sender must learn the new linger deadline.
            wake = true;
            let capacity = batch_bytes
                .min(INITIAL_BATCH_CAPACITY.max(*last_batch_bytes))
                .max(size);
            OpenBatch {
                builder: BatchBuilder::with_capacity(compression, capacity),
                meta: BatchMeta {
                    id,
                    topic: name.clone(),
                    partition,
                    completion: Completion::new(name.clone(), partition),
                    permits: 0,
                    stamped: None,
                },
                created: Instant::now(),
            }
        });
        let index = batch.builder.record_count();
        batch
            .builder
            .append(timestamp_ms, key.as_deref(), value.as_deref(), &headers);
        batch.meta.permits += size;
        let future = DeliveryFuture::new(batch.meta.completion.clone(), index);
        if batch.builder.size_bytes() >= batch_bytes {
            seal(acc, partition, ready);
            wake = true;
        }
        (future, wake)
    }
}

/// Seals the open batch of `partition` (if any): it takes no more records and joins the back of
/// the ready queue, and the topic's sticky partition moves on if it was this one.
///
/// Every batch passes here exactly once, and the batches of one partition pass in the order the
/// sender will write them (retries re-enter through [`Accumulator::requeue`], not here), so this
/// is the place for anything that numbers a partition's batches.
fn seal(acc: &mut TopicAcc, partition: u32, ready: &mut VecDeque<ReadyBatch>) {
    let Some(batch) = acc.open.get_mut(partition as usize).and_then(Option::take) else {
        return;
    };
    advance_sticky(acc, partition);
    acc.last_batch_bytes = batch.builder.size_bytes();
    ready.push_back(ReadyBatch {
        data: Data::Open(batch.builder),
        meta: batch.meta,
        attempts: 0,
    });
}

/// Moves the sticky partition of a topic past `sealed` if it was the sticky one.
fn advance_sticky(acc: &mut TopicAcc, sealed: u32) {
    let n = acc.open.len() as u32;
    if acc.sticky == sealed && n > 0 {
        acc.sticky = (sealed + 1) % n;
    }
}

/// A random starting partition, so producers do not all start on partition 0.
fn random_start(n: u32) -> u32 {
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (r % u64::from(n.max(1))) as u32
}

/// The producer's memory bound: one permit per byte of records accepted and not yet completed
/// (a record takes its size estimate before it enters a batch; a batch gives its bytes back when
/// it completes). Closing it fails every `send` waiting for room, and every later one.
pub(super) struct Buffer {
    bytes: Semaphore,
    /// `reserve` calls waiting for room now (see [`Buffer::waiting`]).
    waiting: AtomicUsize,
}

/// Counts one `reserve` as waiting while it lives (dropped when it gets room, fails, or is
/// cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Waiting<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Buffer {
    pub(super) fn new(bytes: usize) -> Buffer {
        Buffer {
            bytes: Semaphore::new(bytes),
            waiting: AtomicUsize::new(0),
        }
    }

    /// How many `reserve` calls are waiting for room now: each counted from its first poll that
    /// found no room until it gets room, fails or is dropped (one that finds room at once is never
    /// counted).
    pub(super) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Takes `bytes`, waiting for room; [`ClientError::Closed`] once the buffer is closed.
    pub(super) async fn reserve(&self, bytes: u32) -> Result<()> {
        let mut acquire = std::pin::pin!(self.bytes.acquire_many(bytes));
        let mut waiting = None;
        let acquired = std::future::poll_fn(|cx| {
            let p = acquire.as_mut().poll(cx);
            if p.is_pending() && waiting.is_none() {
                waiting = Some(Waiting::new(&self.waiting));
            }
            p
        })
        .await;
        drop(waiting);
        match acquired {
            Ok(p) => {
                p.forget();
                Ok(())
            }
            Err(_) => Err(ClientError::Closed),
        }
    }

    /// Takes `bytes` if there is room now: `Ok(true)` when taken, `Ok(false)` when taking them
    /// needs a wait, [`ClientError::Closed`] once the buffer is closed.
    pub(super) fn try_reserve(&self, bytes: u32) -> Result<bool> {
        match self.bytes.try_acquire_many(bytes) {
            Ok(p) => {
                p.forget();
                Ok(true)
            }
            Err(TryAcquireError::Closed) => Err(ClientError::Closed),
            Err(TryAcquireError::NoPermits) => Ok(false),
        }
    }

    /// Gives `bytes` back.
    pub(super) fn release(&self, bytes: usize) {
        self.bytes.add_permits(bytes);
    }

    pub(super) fn close(&self) {
        self.bytes.close();
    }

    pub(super) fn is_closed(&self) -> bool {
        self.bytes.is_closed()
    }
}
