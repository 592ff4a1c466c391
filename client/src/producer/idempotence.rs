//! Idempotent produce, the client's side: the producer's id and epoch (`InitProducerId`, asked
//! lazily by the sender), the next sequence per partition, the bound on a partition's incomplete
//! batches, and whether a newer epoch fenced this producer.
//!
//! A batch gets its producer id, epoch and base sequence when the sender first encodes it, in the
//! order the partition's batches leave the accumulator; a retry resends the same bytes, so the
//! partition leader recognises it (and answers with the first copy's offset) however often it is
//! sent.
//!
//! Recovery (after Kafka's KIP-360): a stamped batch that finally fails leaves a hole in its
//! partition's sequences (or the broker forgot the producer: `UNKNOWN_PRODUCER_ID`), and every later
//! batch there would be refused. So such a failure starts a new *generation*: the next batch asks
//! for a new identity (a fresh id, or for a named producer its next epoch) and every partition's
//! sequences start again at 0. Batches of the old generation still in flight finish as they may;
//! their failures (including `PRODUCER_FENCED` by our own new epoch) concern only them. Only a
//! fence of the current generation stops the producer. This module never sends a batch and never
//! decides about retries (`sender` does).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use sluice_protocol::wire::{ErrorCode, InitProducerIdRequest, Request, Response};
use sluice_protocol::BatchBuilder;

use crate::client::{unexpected, Client};
use crate::connection::lock;
use crate::error::{ClientError, Result};

/// How many batches back a partition's oldest incomplete batch may be: the broker's window (its
/// `replica::producers::WINDOW`, eight batches per producer and partition).
pub(super) const MAX_IN_FLIGHT_PER_PARTITION: u64 = 8;

/// Where a stamped batch stands: its generation and its number among its partition's batches.
pub(super) type Stamp = (u64, u64);

/// One partition's stamped batches of the current generation, numbered in stamping order.
#[derive(Debug, Default)]
struct Flight {
    /// The next base sequence.
    sequence: i32,
    /// The number the next stamped batch gets.
    next: u64,
    /// Stamped batches not complete yet (sent, awaiting an answer or a retry). The broker
    /// remembers a producer's last [`MAX_IN_FLIGHT_PER_PARTITION`] batches per partition, so a
    /// batch may be stamped only while the oldest of these is fewer than that many batches back:
    /// a retry of it is then always recognised.
    incomplete: BTreeSet<u64>,
}

/// The state of one generation (one producer id and epoch).
#[derive(Debug, Default)]
struct Generation {
    number: u64,
    identity: Option<(i64, i16)>,
    flights: HashMap<(Arc<str>, u32), Flight>,
}

/// One producer's idempotence state.
#[derive(Debug)]
pub(super) struct Idempotence {
    /// The stable producer name, if any.
    name: Option<String>,
    current: Mutex<Generation>,
    /// Serialises `InitProducerId` calls (one per generation).
    init: tokio::sync::Mutex<()>,
    /// Set once a partition answered `PRODUCER_FENCED` to the current generation: this producer may
    /// not write any more.
    fenced: Mutex<Option<ClientError>>,
    /// Whether `fenced` is set: every send checks it, so it is one relaxed load, not a lock.
    is_fenced: std::sync::atomic::AtomicBool,
}

impl Idempotence {
    pub(super) fn new(name: Option<String>) -> Idempotence {
        Idempotence {
            name,
            current: Mutex::new(Generation::default()),
            init: tokio::sync::Mutex::new(()),
            fenced: Mutex::new(None),
            is_fenced: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The current generation's producer id and epoch, asked for on its first use (retrying
    /// retriable errors).
    pub(super) async fn identity(&self, client: &Client) -> Result<(i64, i16)> {
        if let Some(id) = lock(&self.current).identity {
            return Ok(id);
        }
        let _init = self.init.lock().await;
        let generation = {
            let g = lock(&self.current);
            if let Some(id) = g.identity {
                return Ok(id);
            }
            g.number
        };
        let request = Request::InitProducerId(InitProducerIdRequest {
            name: self.name.clone().unwrap_or_default(),
        });
        let id = client
            .retrying("init producer id", || async {
                let Response::InitProducerId(r) = client.request(&request).await? else {
                    return Err(unexpected("init producer id"));
                };
                if !r.error.is_ok() {
                    return Err(ClientError::broker(r.error, r.message));
                }
                Ok((r.producer_id, r.epoch))
            })
            .await?;
        tracing::debug!(
            producer_id = id.0,
            epoch = id.1,
            generation,
            "idempotent producer initialised"
        );
        let mut g = lock(&self.current);
        // Only the init task changes a generation's identity; a reset meanwhile made a newer one.
        if g.number == generation {
            g.identity = Some(id);
        }
        Ok(id)
    }

    /// Whether a new batch of `topic`/`partition` may be stamped now: its oldest incomplete batch
    /// (if any) would still be in the broker's window after it.
    pub(super) fn has_room(&self, topic: &Arc<str>, partition: u32) -> bool {
        let g = lock(&self.current);
        match g.flights.get(&(topic.clone(), partition)) {
            Some(f) => f
                .incomplete
                .first()
                .is_none_or(|oldest| f.next - oldest < MAX_IN_FLIGHT_PER_PARTITION),
            None => true,
        }
    }

    /// Stamps a batch of `topic`/`partition` with `identity` (asked for the current generation)
    /// and the partition's next sequence, which moves past the batch's records (wrapping from
    /// `i32::MAX` to 0). `None` if the generation changed since `identity` was asked for.
    pub(super) fn stamp(
        &self,
        identity: (i64, i16),
        topic: &Arc<str>,
        partition: u32,
        builder: BatchBuilder,
    ) -> std::result::Result<(BatchBuilder, Stamp), BatchBuilder> {
        let mut g = lock(&self.current);
        if g.identity != Some(identity) {
            return Err(builder);
        }
        let generation = g.number;
        let f = g.flights.entry((topic.clone(), partition)).or_default();
        let number = f.next;
        f.next += 1;
        f.incomplete.insert(number);
        let base = f.sequence;
        let count = builder.record_count();
        f.sequence = ((i64::from(base) + i64::from(count)) % (i64::from(i32::MAX) + 1)) as i32;
        Ok((
            builder.producer(identity.0, identity.1, base),
            (generation, number),
        ))
    }

    /// A stamped batch completed: acknowledged (`error` none) or finally failed.
    pub(super) fn completed(
        &self,
        topic: &Arc<str>,
        partition: u32,
        stamp: Stamp,
        error: Option<&ClientError>,
    ) {
        let mut g = lock(&self.current);
        if stamp.0 != g.number {
            // An older generation's batch: its outcome changes nothing now.
            return;
        }
        if let Some(f) = g.flights.get_mut(&(topic.clone(), partition)) {
            f.incomplete.remove(&stamp.1);
        }
        let Some(error) = error else {
            return;
        };
        if let ClientError::Broker { code, .. } = error {
            if *code == ErrorCode::PRODUCER_FENCED {
                lock(&self.fenced).get_or_insert_with(|| error.clone());
                self.is_fenced
                    .store(true, std::sync::atomic::Ordering::Release);
                return;
            }
        }
        // A hole in this partition's sequences: start a new generation.
        tracing::warn!(%topic, partition, %error, "idempotent batch failed: new producer epoch");
        *g = Generation {
            number: g.number + 1,
            ..Generation::default()
        };
    }

    /// The error every send gets once a newer epoch of this producer fenced it.
    pub(super) fn fenced(&self) -> Option<ClientError> {
        // Per record: the lock only once fenced.
        if !self.is_fenced.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        lock(&self.fenced).clone()
    }
}
