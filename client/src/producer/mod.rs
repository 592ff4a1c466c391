//! [`Producer`]: batches records per partition and sends them to partition leaders.
//!
//! `send` picks a partition (explicit, else [`partition_for_key`] of the key, else the topic's sticky
//! partition), waits for room in the producer's byte buffer (a semaphore over bytes, so a full buffer
//! makes `send` wait rather than grow), and appends the record to that partition's open
//! [`BatchBuilder`]. A batch is sealed when adding a record would pass `batch_bytes`, or when it is
//! `linger` old, or on [`Producer::flush`]. The sticky partition of a topic moves to the next
//! partition each time a batch of the sticky partition is sealed, so unkeyed records fill whole
//! batches one partition at a time.
//!
//! One background task, the *sender*, seals ready batches (compressing them), groups them by leader
//! into produce requests (at most one batch per partition per request, so batches of one partition
//! are written to the connection in order), and submits them. Answers are handled in small spawned
//! tasks, so up to `max_in_flight` requests are outstanding at once. A batch that fails with a
//! retriable error goes back to the sender after a backoff (the leader is resolved again, metadata
//! refreshed if the error said it is stale), up to `retries` times; then every record of the batch
//! fails with that error.
//!
//! Each batch has one completion shared by the [`DeliveryFuture`]s of its records (each knows its
//! index in the batch), so a record costs its bytes in the batch and one reference count, nothing
//! more. Ordering: with `max_in_flight > 1` a retried batch may land after a later batch of the same
//! partition; set `max_in_flight = 1` for strict per-partition order under failures.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sluice_protocol::wire::{
    Acks, ErrorCode, ProducePartition, ProduceRequest, ProduceResponse, ProduceTopic,
    ProtocolError, Request, Response,
};
use sluice_protocol::{batch::HEADER_LEN, batch::MAX_BATCH_LEN, BatchBuilder, Compression, Header};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, trace, warn};

use crate::client::{backoff, Client, ClientConfig};
use crate::connection::lock;
use crate::error::{ClientError, Result};

/// Largest produce request the sender builds (more batches go in the next request); a single batch
/// larger than this still goes alone.
const MAX_REQUEST_BYTES: usize = 16 << 20;
/// Initial capacity of a batch buffer, at least (it starts at the size of the topic's last batch if
/// larger, and grows up to `batch_bytes`).
const INITIAL_BATCH_CAPACITY: usize = 64 << 10;

/// Settings of a [`Producer`].
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How long a batch waits for more records before it is sent. Default 5 ms.
    pub linger: Duration,
    /// A batch is sent once adding a record would make it larger than this. Default 1 MiB.
    pub batch_bytes: usize,
    /// Bytes of records buffered (not yet acknowledged) before `send` waits. Default 64 MiB.
    pub buffer_bytes: usize,
    /// What an acknowledgement waits for. Default [`Acks::Leader`].
    pub acks: Acks,
    /// Codec of the records section of each batch. Default none.
    pub compression: Compression,
    /// Produce requests outstanding at once. Default 5.
    pub max_in_flight: usize,
    /// Times a batch is retried after a retriable error. Default 5.
    pub retries: u32,
    /// First backoff before a retry; doubles per attempt up to `retry_backoff_max`. Default 100 ms.
    pub retry_backoff: Duration,
    /// Cap on the retry backoff. Default 1 s.
    pub retry_backoff_max: Duration,
    /// Longest to wait for a produce answer (also sent as the request's broker-side timeout).
    /// Default 30 s.
    pub request_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger: Duration::from_millis(5),
            batch_bytes: 1 << 20,
            buffer_bytes: 64 << 20,
            acks: Acks::Leader,
            compression: Compression::None,
            max_in_flight: 5,
            retries: 5,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl ProducerConfig {
    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(ClientError::InvalidConfig(m.to_string()));
        if self.batch_bytes <= HEADER_LEN || self.batch_bytes > MAX_BATCH_LEN {
            return bad("batch_bytes must be in (80 B, 64 MiB]");
        }
        if self.buffer_bytes < self.batch_bytes {
            return bad("buffer_bytes must be at least batch_bytes");
        }
        if self.buffer_bytes > Semaphore::MAX_PERMITS {
            return bad("buffer_bytes is too large");
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight must be at least 1");
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout must be positive");
        }
        Ok(())
    }

    /// The largest record `send` accepts: it must fit a batch on its own and the buffer.
    fn max_record_bytes(&self) -> usize {
        (MAX_BATCH_LEN - HEADER_LEN).min(self.buffer_bytes)
    }
}

/// A record to send.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    /// The topic; an `Arc` so a caller sending many records to one topic clones a reference
    /// count per record rather than allocating a string.
    pub topic: Arc<str>,
    /// Explicit partition; `None` lets the partitioner choose (key hash, or sticky when unkeyed).
    pub partition: Option<u32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
    /// Create time in ms since the Unix epoch; `None` means now.
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    /// An unkeyed record with a value.
    pub fn new(topic: impl Into<Arc<str>>, value: impl Into<Bytes>) -> Self {
        // Every field spelled out: `..Default::default()` would build (and drop) an empty
        // `Arc<str>`, two atomic operations on a process-wide count per record.
        ProducerRecord {
            topic: topic.into(),
            partition: None,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    /// Sets the key (which then chooses the partition, unless one is given).
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets an explicit partition.
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<Bytes>, value: Option<Bytes>) -> Self {
        self.headers.push(Header {
            key: key.into(),
            value,
        });
        self
    }

    /// Sets the create timestamp (ms since the Unix epoch).
    pub fn timestamp_ms(mut self, ts: i64) -> Self {
        self.timestamp_ms = Some(ts);
        self
    }

    /// An upper bound of the bytes the record takes in a batch: its fields plus the widest varints.
    fn size_estimate(&self) -> usize {
        const VARINT: usize = 10;
        let opt = |b: &Option<Bytes>| b.as_ref().map_or(0, Bytes::len) + VARINT;
        let headers: usize = self
            .headers
            .iter()
            .map(|h| h.key.len() + VARINT + opt(&h.value))
            .sum();
        // length, attributes, timestamp delta, offset delta, header count.
        VARINT + 1 + VARINT + VARINT + VARINT + opt(&self.key) + opt(&self.value) + headers
    }
}

/// Why [`Producer::try_send`] did not accept a record.
#[derive(Debug)]
pub enum TrySendError {
    /// Accepting it needs a wait (for buffer space or the topic's metadata): the record, untouched
    /// (boxed: this path is the rare one, and it keeps the `Result` small).
    WouldWait(Box<ProducerRecord>),
    /// Refused, as [`Producer::send`] would refuse it.
    Refused(ClientError),
}

impl std::fmt::Display for TrySendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrySendError::WouldWait(_) => {
                f.write_str("the producer cannot accept the record without waiting")
            }
            TrySendError::Refused(e) => write!(f, "record refused: {e}"),
        }
    }
}

impl std::error::Error for TrySendError {}

/// Where an acknowledged record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    pub topic: Arc<str>,
    pub partition: u32,
    /// The record's offset; `None` with [`Acks::None`], where the broker does not answer.
    pub offset: Option<u64>,
}

/// The partition of a keyed record: `crc32fast::hash(key) % partitions` (CRC-32, IEEE polynomial, of
/// the key bytes). Stable across processes and versions, so equal keys always go to the same
/// partition while the partition count stays the same. `partitions` must not be 0 (0 yields 0).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    crc32fast::hash(key).checked_rem(partitions).unwrap_or(0)
}

/// The outcome of one batch, shared by the delivery futures of its records.
struct Completion {
    topic: Arc<str>,
    partition: u32,
    /// Base offset (None for acks none), or the error of the whole batch. Set once; a resolved
    /// future is polled without taking the lock.
    result: OnceLock<Result<Option<u64>>>,
    /// Wakers of the futures waiting, each with the number of futures sharing it: consecutive
    /// futures polled with the same waker share one entry, so a task waiting on many records of a
    /// batch registers its waker once, not once per record.
    wakers: Mutex<Vec<(Waker, u32)>>,
}

impl Completion {
    fn new(topic: Arc<str>, partition: u32) -> Arc<Completion> {
        Arc::new(Completion {
            topic,
            partition,
            result: OnceLock::new(),
            wakers: Mutex::new(Vec::new()),
        })
    }

    fn complete(&self, result: Result<Option<u64>>) {
        if self.result.set(result).is_err() {
            return;
        }
        // A poll that saw no result under the lock registered its waker before this takes them.
        let wakers = std::mem::take(&mut *lock(&self.wakers));
        for (w, _) in wakers {
            w.wake();
        }
    }
}

/// Registers `waker` in `wakers`, sharing the last entry if it wakes the same task; returns the
/// entry's index.
fn register_waker(wakers: &mut Vec<(Waker, u32)>, waker: &Waker) -> usize {
    if let Some((last, shared)) = wakers.last_mut() {
        if last.will_wake(waker) {
            *shared += 1;
            return wakers.len() - 1;
        }
    }
    wakers.push((waker.clone(), 1));
    wakers.len() - 1
}

/// Resolves when the record is acknowledged (or finally fails). Dropping it does not cancel the
/// record.
pub struct DeliveryFuture {
    completion: Arc<Completion>,
    index: u32,
    /// Our slot in the completion's waker list, once registered.
    slot: Option<usize>,
}

impl std::fmt::Debug for DeliveryFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryFuture")
            .field("topic", &self.completion.topic)
            .field("partition", &self.completion.partition)
            .field("index", &self.index)
            .finish()
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(r) = this.completion.result.get() {
            return Poll::Ready(this.output(r));
        }
        let mut wakers = lock(&this.completion.wakers);
        // Checked again under the lock: `complete` sets the result before taking the wakers.
        if let Some(r) = this.completion.result.get() {
            drop(wakers);
            return Poll::Ready(this.output(r));
        }
        match this.slot {
            Some(i) if i < wakers.len() => {
                let (w, shared) = &mut wakers[i];
                if !w.will_wake(cx.waker()) {
                    if *shared == 1 {
                        *w = cx.waker().clone();
                    } else {
                        // Other futures still wait on that waker: leave it, take a new entry.
                        *shared -= 1;
                        this.slot = Some(register_waker(&mut wakers, cx.waker()));
                    }
                }
            }
            _ => this.slot = Some(register_waker(&mut wakers, cx.waker())),
        }
        Poll::Pending
    }
}

impl DeliveryFuture {
    /// Whether `self` and `other` belong to the same batch, and so resolve at the same moment with
    /// the same outcome. A caller waiting on many futures may poll one of each run of same-batch
    /// futures to register its waker, rather than every one.
    pub fn same_batch(&self, other: &DeliveryFuture) -> bool {
        Arc::ptr_eq(&self.completion, &other.completion)
    }

    /// The record's outcome if it is already known, without waiting or registering a waker: its
    /// offset (`None` with [`Acks::None`]) or its error; `None` while it is pending. Cheaper than a
    /// poll for a caller that only needs the offset (no [`RecordMetadata`] is built).
    pub fn result_now(&self) -> Option<Result<Option<u64>>> {
        let r = self.completion.result.get()?;
        Some(match r {
            Ok(base) => Ok(base.map(|b| b + u64::from(self.index))),
            Err(e) => Err(e.clone()),
        })
    }

    fn output(&self, result: &Result<Option<u64>>) -> Result<RecordMetadata> {
        match result {
            Ok(base) => Ok(RecordMetadata {
                topic: self.completion.topic.clone(),
                partition: self.completion.partition,
                offset: base.map(|b| b + u64::from(self.index)),
            }),
            Err(e) => Err(e.clone()),
        }
    }
}

/// What every state of a batch carries.
struct BatchMeta {
    id: u64,
    topic: Arc<str>,
    partition: u32,
    completion: Arc<Completion>,
    /// Buffer bytes held until the batch completes.
    permits: usize,
}

/// A batch still taking records.
struct OpenBatch {
    builder: BatchBuilder,
    meta: BatchMeta,
    created: Instant,
}

enum Data {
    Open(BatchBuilder),
    Sealed(Bytes),
}

/// A batch waiting for the sender: sealed by size, linger or flush, or back from a failed attempt.
struct ReadyBatch {
    data: Data,
    meta: BatchMeta,
    attempts: u32,
}

/// A sealed batch on its way.
struct SealedBatch {
    bytes: Bytes,
    meta: BatchMeta,
    attempts: u32,
}

struct TopicAcc {
    name: Arc<str>,
    sticky: u32,
    /// Open batch per partition.
    open: Vec<Option<OpenBatch>>,
    /// Partition count last used for the topic, and the client's metadata generation it was read
    /// at: while the generation has not moved, `send` uses it without looking the topic up.
    partitions: u32,
    generation: Option<u64>,
    /// Size of the topic's last sealed batch: a new batch starts with room for that much, so a
    /// steady stream does not regrow (and copy) every batch from the initial capacity.
    last_batch_bytes: usize,
}

/// The accumulator, guarded by one mutex held only for short, non-blocking work.
struct State {
    /// Per topic, in order of first use; `topic_index` maps names to positions.
    topics: Vec<TopicAcc>,
    topic_index: HashMap<Arc<str>, usize>,
    /// Position of the topic used last (most sends go to the same topic as the one before).
    last_topic: usize,
    ready: VecDeque<ReadyBatch>,
    /// Ids of batches created and not yet completed.
    outstanding: BTreeSet<u64>,
    next_batch_id: u64,
    /// Flushes in progress; while non-zero every open batch is ready at once.
    flushing: usize,
    closed: bool,
}

impl State {
    /// Moves to the ready queue every open batch that is at least `linger` old at `now`, or all of
    /// them if `all`; returns the earliest creation time among those left open.
    fn seal_expired(&mut self, all: bool, now: Instant, linger: Duration) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        for acc in &mut self.topics {
            for p in 0..acc.open.len() {
                let Some(created) = acc.open[p].as_ref().map(|b| b.created) else {
                    continue;
                };
                if all || now.saturating_duration_since(created) >= linger {
                    seal_open(acc, p as u32, &mut self.ready);
                } else {
                    earliest = Some(earliest.map_or(created, |e| e.min(created)));
                }
            }
        }
        earliest
    }

    fn has_open(&self) -> bool {
        self.topics
            .iter()
            .any(|acc| acc.open.iter().any(Option::is_some))
    }

    /// Position of `name` in `topics`, if it was used before.
    fn find_topic(&mut self, name: &str) -> Option<usize> {
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
    fn topic(&self, name: &str) -> Option<&TopicAcc> {
        self.topic_index.get(name).map(|&i| &self.topics[i])
    }

    /// The partition count of `name` if it was read at metadata generation `generation` (so the
    /// client's cache still says the same).
    fn known_partitions(&mut self, name: &str, generation: u64) -> Option<u32> {
        let i = self.find_topic(name)?;
        let t = &self.topics[i];
        (t.generation == Some(generation) && t.partitions > 0).then_some(t.partitions)
    }
}

/// Moves the open batch of `partition` (if any) to the ready queue, and moves the topic's sticky
/// partition on if it was this one.
fn seal_open(acc: &mut TopicAcc, partition: u32, ready: &mut VecDeque<ReadyBatch>) {
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

/// Refuses an explicit partition the topic does not have.
fn check_partition(record: &ProducerRecord, partitions: u32) -> Result<()> {
    match record.partition {
        Some(p) if p >= partitions => Err(ClientError::InvalidArgument(format!(
            "partition {p} of topic {:?}, which has {partitions}",
            record.topic
        ))),
        _ => Ok(()),
    }
}

/// The partition of a record: explicit, else key hash, else the topic's sticky partition.
fn choose_partition(
    explicit: Option<u32>,
    key: Option<&[u8]>,
    sticky: u32,
    partitions: u32,
) -> u32 {
    match (explicit, key) {
        (Some(p), _) => p,
        (None, Some(key)) => partition_for_key(key, partitions),
        (None, None) => sticky % partitions.max(1),
    }
}

struct Inner {
    client: Client,
    config: ProducerConfig,
    /// One permit per buffered byte.
    buffer: Arc<Semaphore>,
    /// One permit per outstanding produce request.
    in_flight: Arc<Semaphore>,
    state: Mutex<State>,
    /// Wakes the sender: a batch was created, became ready, came back for a retry, or a flush or
    /// close began.
    wake: Notify,
    /// Signalled whenever a batch completes.
    done: Notify,
    sender: Mutex<Option<JoinHandle<()>>>,
}

/// Closes the producer when the last clone of it is dropped; pending records are still sent.
struct CloseOnDrop(Arc<Inner>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.begin_close();
    }
}

/// An asynchronous, batching producer. Cheap to clone; clones share the buffer and the sender task.
/// Dropping the last clone stops accepting records but still sends what was accepted (while the
/// runtime lives); [`Producer::close`] does the same and waits for it.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
    _close: Arc<CloseOnDrop>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// A producer with its own [`Client`] for the cluster at `bootstrap`: connections allow
    /// `max_in_flight` produce requests plus one for metadata. Must be called inside a tokio runtime.
    pub fn new(bootstrap: impl Into<String>, config: ProducerConfig) -> Result<Producer> {
        let mut cc = ClientConfig::new(bootstrap);
        cc.max_in_flight = config.max_in_flight.saturating_add(1);
        cc.request_timeout = config.request_timeout;
        Producer::with_client(Client::new(cc)?, config)
    }

    /// A producer over an existing client. Must be called inside a tokio runtime.
    pub fn with_client(client: Client, config: ProducerConfig) -> Result<Producer> {
        config.validate()?;
        let inner = Arc::new(Inner::new(client, config));
        let handle = tokio::spawn(run_sender(inner.clone()));
        *lock(&inner.sender) = Some(handle);
        Ok(Producer {
            _close: Arc::new(CloseOnDrop(inner.clone())),
            inner,
        })
    }

    /// The client this producer sends through.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Accepts a record for sending, waiting while the buffer is full. The returned future resolves
    /// once the record is acknowledged (with its offset) or finally fails. Errors returned here
    /// (closed producer, unknown topic, bad partition, record too large) mean the record was not
    /// accepted.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        // A send that never waits is still a yield point once the task's budget is spent (as the
        // semaphore wait it replaces was), so a task sending in a loop does not starve the others.
        tokio::task::coop::consume_budget().await;
        // Metadata read at this generation or later is current while it stays there.
        let generation = self.inner.client.metadata_generation();
        let record = match self.try_send(record) {
            Ok(future) => return Ok(future),
            Err(TrySendError::Refused(e)) => return Err(e),
            Err(TrySendError::WouldWait(record)) => *record,
        };
        let inner = &*self.inner;
        let (size, permits) = inner.check_size(&record)?;
        let partitions = inner.client.partition_count(&record.topic).await?;
        if partitions == 0 {
            return Err(ClientError::broker(
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                format!("topic {:?} has no partitions", record.topic),
            ));
        }
        check_partition(&record, partitions)?;
        match inner.buffer.acquire_many(permits).await {
            Ok(p) => p.forget(),
            Err(_) => return Err(ClientError::Closed),
        }
        // "Now" is when the record is accepted, after any wait for room.
        let timestamp_ms = record.timestamp_ms.unwrap_or_else(now_ms);

        let (future, wake) = {
            let mut st = lock(&inner.state);
            if st.closed {
                drop(st);
                inner.buffer.add_permits(size);
                return Err(ClientError::Closed);
            }
            let r = inner.append(&mut st, record, size, partitions, timestamp_ms);
            // `append` made the record's topic the last one; its count was read at `generation`
            // or later, so it is current as long as the generation stays there.
            let last = st.last_topic;
            st.topics[last].generation = Some(generation);
            r
        };
        if wake {
            inner.wake.notify_one();
        }
        Ok(future)
    }

    /// Accepts a record without waiting, when that is possible now: the topic's partition count is
    /// cached and current, and the buffer has room. Otherwise the record comes back in
    /// [`TrySendError::WouldWait`] (call [`Producer::send`], which waits). The future and the
    /// refusals are those of `send`. A loop of `try_send` calls never yields to the runtime: yield
    /// now and then (`send` does so itself when the task's budget is spent).
    pub fn try_send(
        &self,
        record: ProducerRecord,
    ) -> std::result::Result<DeliveryFuture, TrySendError> {
        let inner = &*self.inner;
        let (size, permits) = inner.check_size(&record).map_err(TrySendError::Refused)?;
        let generation = inner.client.metadata_generation();
        let mut st = lock(&inner.state);
        if st.closed {
            return Err(TrySendError::Refused(ClientError::Closed));
        }
        let Some(partitions) = st.known_partitions(&record.topic, generation) else {
            return Err(TrySendError::WouldWait(Box::new(record)));
        };
        check_partition(&record, partitions).map_err(TrySendError::Refused)?;
        match inner.buffer.try_acquire_many(permits) {
            Ok(p) => p.forget(),
            Err(TryAcquireError::Closed) => return Err(TrySendError::Refused(ClientError::Closed)),
            Err(TryAcquireError::NoPermits) => {
                return Err(TrySendError::WouldWait(Box::new(record)))
            }
        }
        let timestamp_ms = record.timestamp_ms.unwrap_or_else(now_ms);
        let (future, wake) = inner.append(&mut st, record, size, partitions, timestamp_ms);
        drop(st);
        if wake {
            inner.wake.notify_one();
        }
        Ok(future)
    }

    /// Sends every accepted record now and waits until each has completed (acknowledged or failed;
    /// failures are reported through the delivery futures).
    pub async fn flush(&self) -> Result<()> {
        let inner = &*self.inner;
        let target = {
            let mut st = lock(&inner.state);
            st.flushing += 1;
            st.seal_expired(true, Instant::now(), Duration::ZERO);
            st.next_batch_id
        };
        // Undo the flushing count even if this future is dropped.
        struct Unflush<'a>(&'a Inner);
        impl Drop for Unflush<'_> {
            fn drop(&mut self) {
                lock(&self.0.state).flushing -= 1;
            }
        }
        let _unflush = Unflush(inner);
        inner.wake.notify_one();
        inner.wait_completed_below(target).await;
        Ok(())
    }

    /// Stops accepting records, sends everything accepted, waits for it to complete, and stops the
    /// sender task. Later sends fail with [`ClientError::Closed`].
    pub async fn close(&self) -> Result<()> {
        let inner = &*self.inner;
        inner.begin_close();
        let target = lock(&inner.state).next_batch_id;
        inner.wait_completed_below(target).await;
        let handle = lock(&inner.sender).take();
        if let Some(h) = handle {
            if let Err(e) = h.await {
                warn!(error = %e, "producer sender task failed");
            }
        }
        Ok(())
    }
}

impl Inner {
    /// The record's size estimate and the buffer permits it takes; refuses a closed producer and a
    /// record too large for a batch or the buffer.
    fn check_size(&self, record: &ProducerRecord) -> Result<(usize, u32)> {
        if self.buffer.is_closed() {
            return Err(ClientError::Closed);
        }
        let size = record.size_estimate();
        let max = self.config.max_record_bytes();
        if size > max {
            return Err(ClientError::RecordTooLarge { size, max });
        }
        // `size` fits u32: it is at most MAX_BATCH_LEN.
        Ok((size, u32::try_from(size).unwrap_or(u32::MAX)))
    }

    fn new(client: Client, config: ProducerConfig) -> Inner {
        Inner {
            client,
            buffer: Arc::new(Semaphore::new(config.buffer_bytes)),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            state: Mutex::new(State {
                topics: Vec::new(),
                topic_index: HashMap::new(),
                last_topic: 0,
                ready: VecDeque::new(),
                outstanding: BTreeSet::new(),
                next_batch_id: 0,
                flushing: 0,
                closed: false,
            }),
            wake: Notify::new(),
            done: Notify::new(),
            sender: Mutex::new(None),
            config,
        }
    }

    /// Appends a record under the state lock. Returns its delivery future and whether the sender
    /// needs waking.
    fn append(
        &self,
        st: &mut State,
        record: ProducerRecord,
        size: usize,
        partitions: u32,
        timestamp_ms: i64,
    ) -> (DeliveryFuture, bool) {
        let batch_bytes = self.config.batch_bytes;
        let ProducerRecord {
            topic,
            partition,
            key,
            value,
            headers,
            ..
        } = record;
        let t = match st.find_topic(&topic) {
            Some(i) => i,
            None => {
                let i = st.topics.len();
                st.topics.push(TopicAcc {
                    name: topic.clone(),
                    sticky: random_start(partitions),
                    open: Vec::new(),
                    partitions,
                    generation: None,
                    last_batch_bytes: 0,
                });
                st.topic_index.insert(topic, i);
                st.last_topic = i;
                i
            }
        };
        let State {
            topics,
            ready,
            outstanding,
            next_batch_id,
            ..
        } = st;
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
            seal_open(acc, partition, ready);
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
                builder: BatchBuilder::with_capacity(self.config.compression, capacity),
                meta: BatchMeta {
                    id,
                    topic: name.clone(),
                    partition,
                    completion: Completion::new(name.clone(), partition),
                    permits: 0,
                },
                created: Instant::now(),
            }
        });
        let index = batch.builder.record_count();
        batch
            .builder
            .append(timestamp_ms, key.as_deref(), value.as_deref(), &headers);
        batch.meta.permits += size;
        let future = DeliveryFuture {
            completion: batch.meta.completion.clone(),
            index,
            slot: None,
        };
        if batch.builder.size_bytes() >= batch_bytes {
            seal_open(acc, partition, ready);
            wake = true;
        }
        (future, wake)
    }

    fn begin_close(&self) {
        {
            let mut st = lock(&self.state);
            if st.closed {
                return;
            }
            st.closed = true;
            st.seal_expired(true, Instant::now(), Duration::ZERO);
        }
        debug!("producer closing");
        // Wake senders blocked on a full buffer; they fail with Closed.
        self.buffer.close();
        self.wake.notify_one();
    }

    /// Waits until every batch with an id below `target` has completed.
    async fn wait_completed_below(&self, target: u64) {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let pending = lock(&self.state)
                .outstanding
                .first()
                .is_some_and(|&id| id < target);
            if !pending {
                return;
            }
            notified.await;
        }
    }

    /// Resolves every record of a batch and gives its buffer bytes back.
    fn complete(&self, meta: &BatchMeta, result: Result<Option<u64>>) {
        if let Err(e) = &result {
            warn!(topic = %meta.topic, partition = meta.partition, error = %e, "batch failed");
        }
        meta.completion.complete(result);
        self.buffer.add_permits(meta.permits);
        let closing = {
            let mut st = lock(&self.state);
            st.outstanding.remove(&meta.id);
            st.closed
        };
        self.done.notify_waiters();
        if closing {
            // The sender may be idle, waiting for the last batch before it stops.
            self.wake.notify_one();
        }
    }

    /// Retries `batches` after a backoff if `error` allows and attempts remain; fails them otherwise.
    fn retry_or_fail(self: &Arc<Self>, batches: Vec<SealedBatch>, error: &ClientError) {
        if error.invalidates_metadata() {
            for b in &batches {
                self.client.invalidate_topic(&b.meta.topic);
            }
        }
        let mut retry = Vec::new();
        for b in batches {
            if error.is_retriable() && b.attempts < self.config.retries {
                retry.push(b);
            } else {
                self.complete(&b.meta, Err(error.clone()));
            }
        }
        let Some(attempt) = retry.iter().map(|b| b.attempts + 1).max() else {
            return;
        };
        let wait = backoff(
            self.config.retry_backoff,
            self.config.retry_backoff_max,
            attempt,
        );
        warn!(batches = retry.len(), attempt, error = %error, ?wait, "retrying produce");
        let inner = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            {
                let mut st = lock(&inner.state);
                // Retries go first: they are older than anything queued.
                for b in retry.into_iter().rev() {
                    st.ready.push_front(ReadyBatch {
                        data: Data::Sealed(b.bytes),
                        meta: b.meta,
                        attempts: b.attempts + 1,
                    });
                }
            }
            inner.wake.notify_one();
        });
    }

    /// Applies a produce answer (or the error of the whole request) to the batches it carried.
    fn handle_response(self: &Arc<Self>, batches: Vec<SealedBatch>, result: Result<Response>) {
        let response = match result {
            Ok(Response::Produce(r)) => r,
            Ok(_) => {
                let e = ClientError::Protocol(ProtocolError::Invalid("answer to produce"));
                return self.retry_or_fail(batches, &e);
            }
            Err(e) => return self.retry_or_fail(batches, &e),
        };
        let results = index_response(&response);
        // Group failures by error so each group backs off once.
        let mut failed: Vec<(ClientError, Vec<SealedBatch>)> = Vec::new();
        for b in batches {
            let outcome = match results.get(&(&*b.meta.topic, b.meta.partition)) {
                Some(p) if p.error.is_ok() => Ok(p.base_offset),
                Some(p) => Err(ClientError::broker(p.error, p.message.clone())),
                None => Err(ClientError::Protocol(ProtocolError::Invalid(
                    "produce answer lacks a partition",
                ))),
            };
            match outcome {
                Ok(base) => {
                    trace!(topic = %b.meta.topic, partition = b.meta.partition, base, "batch acknowledged");
                    self.complete(&b.meta, Ok(Some(base)));
                }
                Err(e) => match failed.iter_mut().find(|(fe, _)| same_error(fe, &e)) {
                    Some((_, v)) => v.push(b),
                    None => failed.push((e, vec![b])),
                },
            }
        }
        for (e, batches) in failed {
            self.retry_or_fail(batches, &e);
        }
    }
}

fn same_error(a: &ClientError, b: &ClientError) -> bool {
    match (a, b) {
        (ClientError::Broker { code: x, .. }, ClientError::Broker { code: y, .. }) => x == y,
        (ClientError::Protocol(x), ClientError::Protocol(y)) => x == y,
        _ => false,
    }
}

fn index_response(
    r: &ProduceResponse,
) -> HashMap<(&str, u32), &sluice_protocol::wire::ProducePartitionResult> {
    r.topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| ((t.name.as_str(), p.partition), p))
        })
        .collect()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The sender task: seals ready and lingered batches, resolves leaders, and submits produce
/// requests, until the producer is closed and nothing is left.
async fn run_sender(inner: Arc<Inner>) {
    let linger = inner.config.linger;
    loop {
        let (ready, next_deadline, finished) = {
            let mut st = lock(&inner.state);
            let all = st.flushing > 0 || st.closed;
            let earliest = st.seal_expired(all, Instant::now(), linger);
            let ready: Vec<ReadyBatch> = st.ready.drain(..).collect();
            let finished =
                st.closed && ready.is_empty() && st.outstanding.is_empty() && !st.has_open();
            (
                ready,
                earliest.and_then(|c| c.checked_add(linger)),
                finished,
            )
        };
        if finished {
            debug!("producer sender stopped");
            return;
        }
        if !ready.is_empty() {
            send_ready(&inner, ready).await;
            continue;
        }
        match next_deadline {
            Some(d) => {
                tokio::select! {
                    _ = inner.wake.notified() => {}
                    _ = tokio::time::sleep_until(d) => {}
                }
            }
            None => inner.wake.notified().await,
        }
    }
}

/// Seals, routes and submits a round of ready batches.
async fn send_ready(inner: &Arc<Inner>, ready: Vec<ReadyBatch>) {
    // Seal (compress) and resolve each batch's leader; group by leader, keeping order.
    let mut groups: Vec<(String, Vec<SealedBatch>)> = Vec::new();
    for b in ready {
        let bytes = match b.data {
            Data::Sealed(bytes) => bytes,
            Data::Open(builder) => match builder.seal() {
                Ok(bytes) => bytes,
                Err(e) => {
                    inner.complete(&b.meta, Err(ClientError::Batch(e)));
                    continue;
                }
            },
        };
        let sealed = SealedBatch {
            bytes,
            meta: b.meta,
            attempts: b.attempts,
        };
        let addr = match inner
            .client
            .leader_for(&sealed.meta.topic, sealed.meta.partition)
            .await
        {
            Ok(a) => a,
            Err(e) => {
                inner.retry_or_fail(vec![sealed], &e);
                continue;
            }
        };
        match groups.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, v)) => v.push(sealed),
            None => groups.push((addr, vec![sealed])),
        }
    }
    for (addr, batches) in groups {
        for request_batches in split_requests(batches) {
            submit(inner, &addr, request_batches).await;
        }
    }
}

/// Splits batches into requests: at most one batch per partition per request (so two batches of a
/// partition are never reordered within a request) and about [`MAX_REQUEST_BYTES`] each.
fn split_requests(batches: Vec<SealedBatch>) -> Vec<Vec<SealedBatch>> {
    let mut requests: Vec<(usize, Vec<SealedBatch>)> = Vec::new();
    for b in batches {
        // The first request after the last one holding this partition, with room.
        let after = requests
            .iter()
            .rposition(|(_, r)| {
                r.iter()
                    .any(|x| x.meta.partition == b.meta.partition && x.meta.topic == b.meta.topic)
            })
            .map_or(0, |i| i + 1);
        let len = b.bytes.len();
        match requests
            .iter_mut()
            .skip(after)
            .find(|(size, _)| size + len <= MAX_REQUEST_BYTES)
        {
            Some((size, r)) => {
                *size += len;
                r.push(b);
            }
            None => requests.push((len, vec![b])),
        }
    }
    requests.into_iter().map(|(_, r)| r).collect()
}

fn produce_request(config: &ProducerConfig, batches: &[SealedBatch]) -> Request {
    let mut topics: Vec<ProduceTopic> = Vec::new();
    for b in batches {
        let part = ProducePartition {
            partition: b.meta.partition,
            records: b.bytes.clone(),
        };
        match topics.iter_mut().find(|t| *t.name == *b.meta.topic) {
            Some(t) => t.partitions.push(part),
            None => topics.push(ProduceTopic {
                name: b.meta.topic.to_string(),
                partitions: vec![part],
            }),
        }
    }
    Request::Produce(ProduceRequest {
        acks: config.acks,
        timeout_ms: u32::try_from(config.request_timeout.as_millis()).unwrap_or(u32::MAX),
        topics,
    })
}

/// Submits one produce request in order on the leader's connection and spawns the wait for its
/// answer. Holds an in-flight permit until the answer (or, with acks none, the write) completes.
async fn submit(inner: &Arc<Inner>, addr: &str, batches: Vec<SealedBatch>) {
    let permit: OwnedSemaphorePermit = match inner.in_flight.clone().acquire_owned().await {
        Ok(p) => p,
        Err(_) => {
            for b in &batches {
                inner.complete(&b.meta, Err(ClientError::Closed));
            }
            return;
        }
    };
    let request = produce_request(&inner.config, &batches);
    let conn = match inner.client.connection(addr).await {
        Ok(c) => c,
        Err(e) => return inner.retry_or_fail(batches, &e),
    };
    trace!(addr, batches = batches.len(), "produce");
    let timeout = inner.config.request_timeout;
    if inner.config.acks == Acks::None {
        match conn.submit_oneway(&request).await {
            Ok(written) => {
                let inner = inner.clone();
                tokio::spawn(async move {
                    let result = written.await;
                    drop(permit);
                    match result {
                        Ok(()) => {
                            for b in &batches {
                                inner.complete(&b.meta, Ok(None));
                            }
                        }
                        Err(e) => {
                            if e.is_connection_error() {
                                inner.client.drop_connection(&conn);
                            }
                            inner.retry_or_fail(batches, &e);
                        }
                    }
                });
            }
            Err(e) => {
                if e.is_connection_error() {
                    inner.client.drop_connection(&conn);
                }
                inner.retry_or_fail(batches, &e);
            }
        }
        return;
    }
    match conn.submit(&request).await {
        Ok(answer) => {
            let inner = inner.clone();
            tokio::spawn(async move {
                let result = match tokio::time::timeout(timeout, answer).await {
                    Ok(r) => r,
                    Err(_) => Err(ClientError::Timeout(timeout)),
                };
                drop(permit);
                if let Err(e) = &result {
                    if e.is_connection_error() {
                        inner.client.drop_connection(&conn);
                    }
                }
                inner.handle_response(batches, result);
            });
        }
        Err(e) => {
            if e.is_connection_error() {
                inner.client.drop_connection(&conn);
            }
            inner.retry_or_fail(batches, &e);
        }
    }
}

#[cfg(test)]
mod tests;
