//! Idempotent produce, the client's side: the producer's id and epoch (`InitProducerId`, asked once,
//! lazily, by the sender), the next sequence per partition, and whether a newer epoch fenced this
//! producer.
//!
//! A batch gets its producer id, epoch and base sequence when the sender first encodes it, in the
//! order the partition's batches leave the accumulator; a retry resends the same bytes, so the
//! partition leader recognises it (and answers with the first copy's offset) however often it is
//! sent. This module never sends a batch and never decides about retries (`sender` does).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sluice_protocol::wire::{ErrorCode, InitProducerIdRequest, Request, Response};
use sluice_protocol::BatchBuilder;

use crate::client::{unexpected, Client};
use crate::connection::lock;
use crate::error::{ClientError, Result};

/// One producer's idempotence state.
#[derive(Debug)]
pub(super) struct Idempotence {
    /// The stable producer name, if any.
    name: Option<String>,
    identity: tokio::sync::Mutex<Option<(i64, i16)>>,
    /// Next base sequence per (topic, partition).
    sequences: Mutex<HashMap<(Arc<str>, u32), i32>>,
    /// Set once a partition answered `PRODUCER_FENCED`: this producer may not write any more.
    fenced: Mutex<Option<ClientError>>,
    /// Per (topic, partition): the stamped batches not complete yet (sent, awaiting an answer or
    /// a retry). The broker remembers a producer's last [`MAX_IN_FLIGHT_PER_PARTITION`] batches
    /// per partition, so a batch may take a sequence only while the oldest incomplete batch is
    /// fewer than that many batches back: a retry of it is then always recognised.
    flights: Mutex<HashMap<(Arc<str>, u32), Flight>>,
}

/// How many batches back a partition's oldest incomplete batch may be: the broker's window (its
/// `replica::producers::WINDOW`, eight batches per producer and partition).
pub(super) const MAX_IN_FLIGHT_PER_PARTITION: u64 = 8;

/// One partition's stamped batches, numbered in stamping order.
#[derive(Debug, Default)]
struct Flight {
    /// The number the next stamped batch gets.
    next: u64,
    incomplete: std::collections::BTreeSet<u64>,
}

impl Idempotence {
    pub(super) fn new(name: Option<String>) -> Idempotence {
        Idempotence {
            name,
            identity: tokio::sync::Mutex::new(None),
            sequences: Mutex::new(HashMap::new()),
            fenced: Mutex::new(None),
            flights: Mutex::new(HashMap::new()),
        }
    }

    /// The producer id and epoch, asked for on first use (retrying retriable errors).
    pub(super) async fn identity(&self, client: &Client) -> Result<(i64, i16)> {
        let mut identity = self.identity.lock().await;
        if let Some(id) = *identity {
            return Ok(id);
        }
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
            "idempotent producer initialised"
        );
        *identity = Some(id);
        Ok(id)
    }

    /// Whether a new batch of `topic`/`partition` may take a sequence now: its oldest incomplete
    /// batch (if any) would still be in the broker's window after it.
    pub(super) fn has_room(&self, topic: &Arc<str>, partition: u32) -> bool {
        let flights = lock(&self.flights);
        match flights.get(&(topic.clone(), partition)) {
            Some(f) => f
                .incomplete
                .first()
                .is_none_or(|oldest| f.next - oldest < MAX_IN_FLIGHT_PER_PARTITION),
            None => true,
        }
    }

    /// Batch `number` of `topic`/`partition` completed (acknowledged or finally failed).
    pub(super) fn completed(&self, topic: &Arc<str>, partition: u32, number: u64) {
        if let Some(f) = lock(&self.flights).get_mut(&(topic.clone(), partition)) {
            f.incomplete.remove(&number);
        }
    }

    /// Stamps a batch of `topic`/`partition` with the producer's id, epoch and the partition's next
    /// sequence, which moves past the batch's records (wrapping from `i32::MAX` to 0). Returns the
    /// batch's number, incomplete until [`Idempotence::completed`].
    pub(super) fn stamp(
        &self,
        identity: (i64, i16),
        topic: &Arc<str>,
        partition: u32,
        builder: BatchBuilder,
    ) -> (BatchBuilder, u64) {
        let number = {
            let mut flights = lock(&self.flights);
            let f = flights.entry((topic.clone(), partition)).or_default();
            let n = f.next;
            f.next += 1;
            f.incomplete.insert(n);
            n
        };
        let count = builder.record_count();
        let mut sequences = lock(&self.sequences);
        let next = sequences.entry((topic.clone(), partition)).or_insert(0);
        let base = *next;
        *next = ((i64::from(base) + i64::from(count)) % (i64::from(i32::MAX) + 1)) as i32;
        (builder.producer(identity.0, identity.1, base), number)
    }

    /// Notes a batch's final error: `PRODUCER_FENCED` stops the producer for good.
    pub(super) fn on_failure(&self, error: &ClientError) {
        if let ClientError::Broker { code, .. } = error {
            if *code == ErrorCode::PRODUCER_FENCED {
                lock(&self.fenced).get_or_insert_with(|| error.clone());
            }
        }
    }

    /// The error every send gets once a newer epoch of this producer fenced it.
    pub(super) fn fenced(&self) -> Option<ClientError> {
        lock(&self.fenced).clone()
    }
}
