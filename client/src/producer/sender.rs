//! The sender: the one background task that drains sealed batches to partition leaders, and what
//! happens to a batch after it leaves the accumulator.
//!
//! [`run_sender`] takes ready batches (sealing those whose linger expired, or all of them during a
//! flush or close), encodes and compresses them, groups them by leader into produce requests (at
//! most one batch per partition per request, so batches of one partition are written to the
//! connection in order, see [`split_requests`]), and submits them. Answers are handled in small
//! spawned tasks, so up to `max_in_flight` requests are outstanding at once; [`InFlight`] is the one
//! place that bookkeeping lives. A batch that fails with a retriable error goes back to the
//! accumulator's ready queue after a backoff (the leader is resolved again, metadata refreshed if
//! the error said it is stale), up to `retries` times; then every record of the batch fails with
//! that error. Completing a batch resolves its records' futures and gives its buffer bytes back.
//!
//! The sender never appends records or opens batches, and never holds the accumulator's lock
//! across an await.

use std::collections::HashMap;
use std::sync::Arc;

use sluice_protocol::wire::{
    Acks, ProducePartition, ProducePartitionResult, ProduceRequest, ProduceResponse, ProduceTopic,
    ProtocolError, Request, Response,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::{debug, trace, warn};

use super::accumulator::{BatchMeta, Data, ReadyBatch, SealedBatch};
use super::config::ProducerConfig;
use super::Inner;
use crate::client::backoff;
use crate::connection::lock;
use crate::error::{ClientError, Result};

/// Largest produce request the sender builds (more batches go in the next request); a single batch
/// larger than this still goes alone.
const MAX_REQUEST_BYTES: usize = 16 << 20;

/// The producer's in-flight bookkeeping: produce requests submitted and not yet answered (with
/// acks none, not yet written), at most `max_in_flight` across all partitions. Every request takes
/// a slot here before it is built and holds it until its answer (or write) completes, so this is
/// the one place that knows what is in flight. Order within a partition does not rest on it: each
/// request carries at most one batch of a partition, and a connection writes requests in the order
/// they were submitted.
pub(super) struct InFlight {
    requests: Arc<Semaphore>,
}

impl InFlight {
    pub(super) fn new(max_requests: usize) -> InFlight {
        InFlight {
            requests: Arc::new(Semaphore::new(max_requests)),
        }
    }

    /// Waits for a slot for one more request; the slot is given back when the permit drops. `None`
    /// if the slots were closed.
    async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.requests.clone().acquire_owned().await.ok()
    }
}

impl Inner {
    /// Resolves every record of a batch and gives its buffer bytes back.
    fn complete(&self, meta: &BatchMeta, result: Result<Option<u64>>) {
        if let Err(e) = &result {
            warn!(topic = %meta.topic, partition = meta.partition, error = %e, "batch failed");
        }
        if let (Some(idem), Some(stamp)) = (&self.idempotence, meta.stamped) {
            idem.completed(&meta.topic, meta.partition, stamp, result.as_ref().err());
            // A partition held at its in-flight bound may send again.
            self.room.notify_one();
        }
        meta.completion.complete(result);
        self.buffer.release(meta.permits);
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
        // Idempotent batches of a partition must land in sequence order: one that overtook an
        // earlier batch being retried is refused out of order, and is retried after it.
        let retriable = error.is_retriable()
            || (self.idempotence.is_some()
                && matches!(error, ClientError::Broker { code, .. }
                    if *code == sluice_protocol::wire::ErrorCode::OUT_OF_ORDER_SEQUENCE));
        for b in batches {
            if retriable && b.attempts < self.config.retries {
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
            lock(&inner.state).requeue(retry);
            inner.wake.notify_one();
            inner.room.notify_one();
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

fn index_response(r: &ProduceResponse) -> HashMap<(&str, u32), &ProducePartitionResult> {
    r.topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| ((t.name.as_str(), p.partition), p))
        })
        .collect()
}

/// The sender task: seals ready and lingered batches, resolves leaders, and submits produce
/// requests, until the producer is closed and nothing is left.
pub(super) async fn run_sender(inner: Arc<Inner>) {
    let linger = inner.config.linger;
    // Every ready batch was held back last round: wait for room (a completion or a retry) before
    // sealing more, or each new record would seal a batch of its own while the partition waits.
    let mut blocked = false;
    loop {
        if std::mem::take(&mut blocked) {
            inner.room.notified().await;
        }
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
        // A round that only held batches back (their partitions at the in-flight bound) waits
        // for a completion to wake it, not spin.
        if !ready.is_empty() {
            blocked = !send_ready(&inner, ready).await;
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

/// Encodes, routes and submits a round of ready batches. False if every batch was held back.
async fn send_ready(inner: &Arc<Inner>, ready: Vec<ReadyBatch>) -> bool {
    let total = ready.len();
    // Encode (compress) and resolve each batch's leader; group by leader, keeping order.
    let mut groups: Vec<(String, Vec<SealedBatch>)> = Vec::new();
    let identity = match &inner.idempotence {
        Some(idem) => match idem.identity(&inner.client).await {
            Ok(id) => Some((idem, id)),
            Err(e) => {
                for b in ready {
                    inner.complete(&b.meta, Err(e.clone()));
                }
                return true;
            }
        },
        None => None,
    };
    // Batches of partitions at their in-flight bound wait, in order, for the next round.
    let mut held: Vec<ReadyBatch> = Vec::new();
    for mut b in ready {
        let data = match (b.data, identity) {
            // First encoding: the batch takes its partition's next sequence now, in the order the
            // partition's batches left the accumulator. A retry keeps its bytes (and sequence).
            (Data::Open(builder), Some((idem, id))) => {
                let waiting = held
                    .iter()
                    .any(|h| h.meta.partition == b.meta.partition && h.meta.topic == b.meta.topic);
                if waiting || !idem.has_room(&b.meta.topic, b.meta.partition) {
                    b.data = Data::Open(builder);
                    held.push(b);
                    continue;
                }
                match idem.stamp(id, &b.meta.topic, b.meta.partition, builder) {
                    Ok((builder, stamp)) => {
                        b.meta.stamped = Some(stamp);
                        Data::Open(builder)
                    }
                    // A failure started a new generation during this round: next round.
                    Err(builder) => {
                        b.data = Data::Open(builder);
                        held.push(b);
                        continue;
                    }
                }
            }
            (data, _) => data,
        };
        let bytes = match data.into_bytes() {
            Ok(bytes) => bytes,
            Err(e) => {
                inner.complete(&b.meta, Err(ClientError::Batch(e)));
                continue;
            }
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
    let progressed = held.len() < total;
    if !held.is_empty() {
        lock(&inner.state).hold(held);
    }
    for (addr, batches) in groups {
        for request_batches in split_requests(batches) {
            submit(inner, &addr, request_batches).await;
        }
    }
    progressed
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
/// answer. Holds an in-flight slot until the answer (or, with acks none, the write) completes.
async fn submit(inner: &Arc<Inner>, addr: &str, batches: Vec<SealedBatch>) {
    let Some(permit) = inner.in_flight.acquire().await else {
        for b in &batches {
            inner.complete(&b.meta, Err(ClientError::Closed));
        }
        return;
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
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::producer::delivery::Completion;

    fn sealed(topic: &str, partition: u32, len: usize) -> SealedBatch {
        let topic: Arc<str> = Arc::from(topic);
        SealedBatch {
            bytes: Bytes::from(vec![0u8; len]),
            meta: BatchMeta {
                id: 0,
                completion: Completion::new(topic.clone(), partition),
                topic,
                partition,
                permits: 0,
                stamped: None,
            },
            attempts: 0,
        }
    }

    #[test]
    fn requests_carry_one_batch_per_partition_in_order() {
        let batches = vec![
            sealed("a", 0, 10),
            sealed("a", 1, 10),
            sealed("a", 0, 20),
            sealed("b", 0, 10),
            sealed("a", 0, 30),
        ];
        let requests = split_requests(batches);
        let shape: Vec<Vec<(String, u32, usize)>> = requests
            .iter()
            .map(|r| {
                r.iter()
                    .map(|b| (b.meta.topic.to_string(), b.meta.partition, b.bytes.len()))
                    .collect()
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                vec![
                    ("a".into(), 0, 10),
                    ("a".into(), 1, 10),
                    ("b".into(), 0, 10)
                ],
                vec![("a".into(), 0, 20)],
                vec![("a".into(), 0, 30)],
            ]
        );
    }

    #[test]
    fn requests_are_bounded_in_size() {
        let big = MAX_REQUEST_BYTES / 2 + 1;
        let requests = split_requests(vec![sealed("a", 0, big), sealed("a", 1, big)]);
        assert_eq!(requests.len(), 2);
    }
}
