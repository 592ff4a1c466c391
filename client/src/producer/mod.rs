//! [`Producer`]: batches records per partition and sends them to partition leaders.
//!
//! `send` picks a partition (explicit, else [`partition_for_key`] of the key, else the topic's sticky
//! partition), waits for room in the producer's byte buffer (a semaphore over bytes, so a full buffer
//! makes `send` wait rather than grow), and appends the record to that partition's open batch. A
//! batch is sealed when adding a record would pass `batch_bytes`, or when it is `linger` old, or on
//! [`Producer::flush`]. One background task, the *sender*, drains sealed batches to the partition
//! leaders, with up to `max_in_flight` produce requests outstanding and retries with backoff.
//!
//! The parts, each in its own module:
//! - `config`: [`ProducerConfig`], its defaults and validation.
//! - `record`: [`ProducerRecord`], its size estimate, and the partitioner ([`partition_for_key`]);
//!   [`TrySendError`].
//! - `delivery`: [`DeliveryFuture`] and [`RecordMetadata`]; one completion per batch, shared by
//!   the futures of its records.
//! - `accumulator`: the open batches per topic and partition, the sticky partition, sealing (one
//!   function), the ready queue, and the buffer that bounds memory.
//! - `sender`: the background task that encodes, groups and submits sealed batches, the in-flight
//!   bookkeeping, retries, and completing batches.
//!
//! This module holds the [`Producer`] handle itself: accepting records (`send`, `try_send`),
//! `flush` and `close`. It never talks to a broker but through the sender.
//!
//! Ordering: with `max_in_flight > 1` a retried batch may land after a later batch of the same
//! partition; set `max_in_flight = 1` for strict per-partition order under failures.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_protocol::wire::ErrorCode;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::client::{Client, ClientConfig};
use crate::connection::lock;
use crate::error::{ClientError, Result};

mod accumulator;
mod config;
mod delivery;
mod idempotence;
mod record;
mod sender;

use accumulator::{Accumulator, Buffer};
use record::check_partition;
use sender::{run_sender, InFlight};

pub use config::ProducerConfig;
pub use delivery::{DeliveryFuture, RecordMetadata};
pub use record::{partition_for_key, ProducerRecord, TrySendError};

struct Inner {
    client: Client,
    config: ProducerConfig,
    /// Bytes of records accepted and not yet completed.
    buffer: Buffer,
    /// Produce requests outstanding.
    in_flight: InFlight,
    /// The accumulator, locked only for short, non-blocking work.
    state: Mutex<Accumulator>,
    /// Wakes the sender: a batch was created, became ready, came back for a retry, or a flush or
    /// close began.
    wake: Notify,
    /// Signalled whenever a batch completes.
    done: Notify,
    /// Wakes a sender that held every ready batch back (idempotent partitions at their in-flight
    /// bound): a stamped batch completed, or a retry was queued.
    room: Notify,
    sender: Mutex<Option<JoinHandle<()>>>,
    /// Idempotence state, when the producer writes idempotently.
    idempotence: Option<idempotence::Idempotence>,
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
        // `try_send` refuses a fenced producer's record first.
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
        inner.buffer.reserve(permits).await?;
        // "Now" is when the record is accepted, after any wait for room.
        let timestamp_ms = record.timestamp_ms.unwrap_or_else(now_ms);

        let (future, wake) = {
            let mut st = lock(&inner.state);
            if st.closed {
                drop(st);
                inner.buffer.release(size);
                return Err(ClientError::Closed);
            }
            let r = st.append(record, size, partitions, timestamp_ms);
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
        if let Some(e) = inner.idempotence.as_ref().and_then(|i| i.fenced()) {
            return Err(TrySendError::Refused(e));
        }
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
        match inner.buffer.try_reserve(permits) {
            Ok(true) => {}
            Ok(false) => return Err(TrySendError::WouldWait(Box::new(record))),
            Err(e) => return Err(TrySendError::Refused(e)),
        }
        let timestamp_ms = record.timestamp_ms.unwrap_or_else(now_ms);
        let (future, wake) = st.append(record, size, partitions, timestamp_ms);
        drop(st);
        if wake {
            inner.wake.notify_one();
        }
        Ok(future)
    }

    /// How many [`Producer::send`] calls are waiting for room in the buffer now (a full buffer makes
    /// `send` wait). For tests and monitoring: a send that finds room at once is never counted.
    pub fn sends_waiting_for_room(&self) -> usize {
        self.inner.buffer.waiting()
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
            buffer: Buffer::new(config.buffer_bytes),
            in_flight: InFlight::new(config.max_in_flight),
            state: Mutex::new(Accumulator::new(&config)),
            wake: Notify::new(),
            done: Notify::new(),
            room: Notify::new(),
            sender: Mutex::new(None),
            idempotence: (config.idempotence && config.acks != sluice_protocol::wire::Acks::None)
                .then(|| idempotence::Idempotence::new(config.producer_name.clone())),
            config,
        }
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
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
