//! The fetch path of the [`Consumer`]: building fetch requests (one per leader, long-polling up to
//! the poll's deadline), pipelining the next fetch (the prefetch), and decoding answers into
//! [`ConsumerRecord`]s, checking every batch on the way ([`decode_partition`]).
//!
//! A round's answers are decoded against scratch positions and moved into `Positions` only once
//! every answer of the round decoded, so a corrupt batch anywhere fails the poll with no position
//! moved. This module never chooses a position: it reads them from the consumer's `Positions`,
//! hands an `OFFSET_OUT_OF_RANGE` answer to it, and asks it to resolve missing positions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::wire::{
    ErrorCode, FetchPartition, FetchRequest, FetchResponse, FetchTopic, Request, Response,
};
use sluice_protocol::{BatchHeader, RecordBatch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::debug;

use super::positions::Target;
use super::{Consumer, ConsumerConfig, ConsumerRecord};
use crate::client::{unexpected, Client};
use crate::error::{ClientError, Result};

/// The fetches of one round, one per leader: the indices (into the round's targets, which are the
/// assigned partitions when the round is applied) of the partitions asked, and the answer.
type Fetches = JoinSet<(Vec<usize>, Result<Response>)>;

/// A fetch round started in the background for `targets`. Dropping it abandons the round.
pub(super) struct Prefetch {
    targets: Vec<Target>,
    /// Resolves once every fetch of the round is sent; the fetches run on in the set it returns.
    task: JoinHandle<Result<Fetches>>,
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Aborting a finished task is a no-op; its output (the set of fetches, which aborts them in
        // turn) is dropped with the handle.
        self.task.abort();
    }
}

impl std::fmt::Debug for Prefetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefetch")
            .field("targets", &self.targets)
            .field("finished", &self.task.is_finished())
            .finish()
    }
}

impl Consumer {
    /// Drops the prefetch unless it was issued for exactly the current assignment and positions.
    pub(super) fn discard_stale_prefetch(&mut self) {
        if self
            .prefetch
            .as_ref()
            .is_some_and(|p| p.targets != self.positions.targets())
        {
            debug!("discarding prefetch for stale positions");
            self.prefetch = None;
        }
    }

    /// Starts fetching `targets` (when every partition has a position) in the background and
    /// without long-poll, replacing any prefetch, then yields once so that the request goes out
    /// before the caller goes on decoding (a task spawned from a worker thread otherwise waits for
    /// the spawner to yield).
    async fn start_prefetch(&mut self, targets: Vec<Target>) {
        self.prefetch = None;
        if targets.iter().any(|t| t.position.is_none()) {
            return;
        }
        let client = self.client.clone();
        let config = self.config.clone();
        let asked = targets.clone();
        let round = async move { start_round(&client, &config, &asked, Duration::ZERO).await };
        let task = tokio::spawn(round);
        self.prefetch = Some(Prefetch { targets, task });
        tokio::task::yield_now().await;
    }

    /// Starts the prefetch for the positions that the last answer of a round (for `members`) will
    /// leave once applied, before it is decoded, so the broker prepares the next answer meanwhile.
    /// The positions come from the batch headers; applying the answer checks everything, and a
    /// prefetch whose positions turn out different is discarded. Nothing is started when the answer
    /// moves no position or carries a partition error.
    async fn prefetch_past(
        &mut self,
        members: &[usize],
        response: &FetchResponse,
        updates: &[(usize, u64, Option<u64>)],
    ) {
        let mut targets = self.positions.targets();
        let mut advanced = false;
        for &(i, position, _) in updates {
            advanced |= targets[i].position != Some(position);
            targets[i].position = Some(position);
        }
        for t in &response.topics {
            for p in &t.partitions {
                let Some(&i) = members
                    .iter()
                    .find(|&&i| targets[i].partition == p.partition && *targets[i].topic == t.name)
                else {
                    continue;
                };
                let Some(from) = targets[i].position else {
                    return;
                };
                if p.error != ErrorCode::NONE {
                    return;
                }
                let next = next_position(from, &p.records);
                advanced |= next != from;
                targets[i].position = Some(next);
            }
        }
        if advanced {
            self.start_prefetch(targets).await;
        }
    }

    /// The fetches of the prefetch, if there is one for the current positions (a stale one is
    /// dropped).
    async fn take_prefetch(&mut self) -> Option<Result<Fetches>> {
        let mut p = self.prefetch.take()?;
        if p.targets != self.positions.targets() {
            debug!("discarding prefetch for stale positions");
            return None;
        }
        Some(match (&mut p.task).await {
            Ok(r) => r,
            Err(e) => Err(ClientError::Connection {
                addr: String::new(),
                reason: format!("prefetch task failed: {e}"),
            }),
        })
    }

    /// One round: the prefetch's answers applied if they have records; otherwise positions
    /// resolved, one fetch per leader, answers applied. Starts the next prefetch when it returns
    /// records.
    pub(super) async fn poll_once(&mut self, deadline: Instant) -> Result<Vec<ConsumerRecord>> {
        // A prefetch answer without records may have moved positions (control batches) and started
        // the next prefetch; follow them.
        while let Some(fetches) = self.take_prefetch().await {
            let result = match fetches {
                Ok(fetches) => self.finish_round(fetches).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(records) if !records.is_empty() => return Ok(records),
                // Nothing was there when the prefetch asked: ask again, now with long-poll.
                Ok(_) => {}
                // The failure is older than this poll: try again at once, as a poll without
                // prefetch would have.
                Err(e) if e.is_retriable() => debug!(error = %e, "prefetch failed"),
                Err(e) => return Err(e),
            }
        }

        self.positions
            .resolve_missing(&self.client, self.config.auto_offset_reset)
            .await?;
        let max_wait = deadline.saturating_duration_since(Instant::now());
        let fetches = start_round(
            &self.client,
            &self.config,
            &self.positions.targets(),
            max_wait,
        )
        .await?;
        self.finish_round(fetches).await
    }

    /// Waits for the fetches of a round for the current assignment and positions and applies their
    /// answers. Leaves a prefetch running for the new positions when it returns records.
    async fn finish_round(&mut self, mut fetches: Fetches) -> Result<Vec<ConsumerRecord>> {
        let result = self.apply_round(&mut fetches).await;
        match &result {
            Ok(records) => {
                // Started before decoding for predicted positions: keep it only if they came true.
                self.discard_stale_prefetch();
                if self.prefetch.is_none() && !records.is_empty() {
                    self.start_prefetch(self.positions.targets()).await;
                }
            }
            Err(_) => self.prefetch = None,
        }
        result
    }

    /// Waits for the fetches of a round and applies their answers, starting the prefetch past the
    /// last answer before decoding it.
    async fn apply_round(&mut self, fetches: &mut Fetches) -> Result<Vec<ConsumerRecord>> {
        // Apply every answer to scratch positions first: a corrupt batch anywhere returns an error
        // with no position moved, so nothing is skipped.
        let mut records = Vec::new();
        let mut updates: Vec<(usize, u64, Option<u64>)> = Vec::new();
        let mut first_error: Option<ClientError> = None;
        while let Some(joined) = fetches.join_next().await {
            let (members, result) = match joined {
                Ok(x) => x,
                Err(e) => {
                    first_error.get_or_insert(ClientError::Connection {
                        addr: String::new(),
                        reason: format!("fetch task failed: {e}"),
                    });
                    continue;
                }
            };
            let response = match result {
                Ok(Response::Fetch(f)) => f,
                Ok(_) => return Err(unexpected("answer to fetch")),
                Err(e) => {
                    if e.invalidates_metadata() {
                        for &i in &members {
                            self.client.invalidate_topic(&self.positions.get(i).topic);
                        }
                    }
                    if !e.is_retriable() {
                        return Err(e);
                    }
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            if fetches.is_empty() {
                self.prefetch_past(&members, &response, &updates).await;
            }
            self.apply(&members, response, &mut records, &mut updates)?;
        }
        self.positions.advance(updates);
        match first_error {
            Some(e) if records.is_empty() => Err(e),
            _ => Ok(records),
        }
    }

    /// Decodes one fetch answer for the partitions `members` into `records`, noting new positions
    /// in `updates`.
    fn apply(
        &mut self,
        members: &[usize],
        response: FetchResponse,
        records: &mut Vec<ConsumerRecord>,
        updates: &mut Vec<(usize, u64, Option<u64>)>,
    ) -> Result<()> {
        let index: HashMap<(&str, u32), usize> = members
            .iter()
            .map(|&i| {
                let a = self.positions.get(i);
                ((&*a.topic, a.partition), i)
            })
            .collect();
        let mut reset: Vec<usize> = Vec::new();
        let mut stale: Vec<Arc<str>> = Vec::new();
        for t in response.topics {
            for p in t.partitions {
                let Some(&i) = index.get(&(t.name.as_str(), p.partition)) else {
                    debug!(topic = %t.name, partition = p.partition, "fetch answer for a partition not asked for");
                    continue;
                };
                let a = self.positions.get(i);
                match p.error {
                    ErrorCode::NONE => {
                        let from = a.position.unwrap_or(0);
                        let next =
                            decode_partition(&a.topic, a.partition, from, p.records, records)?;
                        updates.push((i, next, Some(p.high_watermark)));
                    }
                    ErrorCode::OFFSET_OUT_OF_RANGE => {
                        self.positions
                            .out_of_range(i, p.error, self.config.auto_offset_reset)?;
                        reset.push(i);
                    }
                    code if code.is_retriable() => {
                        debug!(topic = %a.topic, partition = a.partition, %code, "fetch partition error");
                        if code == ErrorCode::NOT_LEADER
                            || code == ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
                        {
                            stale.push(a.topic.clone());
                        }
                    }
                    code => {
                        return Err(ClientError::broker(
                            code,
                            format!("fetch of {}/{}", a.topic, a.partition),
                        ))
                    }
                }
            }
        }
        for i in reset {
            self.positions.reset(i);
        }
        for t in stale {
            self.client.invalidate_topic(&t);
        }
        Ok(())
    }
}

/// Sends one fetch per leader for `targets`, each waiting up to `max_wait` for at least one byte,
/// and returns them running.
async fn start_round(
    client: &Client,
    config: &ConsumerConfig,
    targets: &[Target],
    max_wait: Duration,
) -> Result<Fetches> {
    // Group the partitions by leader.
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let addr = match client.leader_for(&t.topic, t.partition).await {
            Ok(addr) => addr,
            Err(e) => {
                if e.invalidates_metadata() {
                    client.invalidate_topic(&t.topic);
                }
                return Err(e);
            }
        };
        match groups.iter_mut().find(|(g, _)| *g == addr) {
            Some((_, v)) => v.push(i),
            None => groups.push((addr, vec![i])),
        }
    }

    let max_wait_ms = u32::try_from(max_wait.as_millis()).unwrap_or(u32::MAX);
    let wait = max_wait + config.request_timeout;
    let mut fetches = JoinSet::new();
    for (addr, members) in groups {
        let request = fetch_request(config, targets, &members, max_wait_ms);
        let client = client.clone();
        fetches.spawn(async move {
            let r = client.request_to_with_timeout(&addr, &request, wait).await;
            (members, r)
        });
    }
    Ok(fetches)
}

/// The fetch of the partitions `members` of `targets`.
fn fetch_request(
    config: &ConsumerConfig,
    targets: &[Target],
    members: &[usize],
    max_wait_ms: u32,
) -> Request {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for &i in members {
        let t = &targets[i];
        let part = FetchPartition {
            partition: t.partition,
            offset: t.position.unwrap_or(0),
            max_bytes: config.max_partition_bytes,
        };
        match topics.iter_mut().find(|f| *f.name == *t.topic) {
            Some(f) => f.partitions.push(part),
            None => topics.push(FetchTopic {
                name: t.topic.to_string(),
                partitions: vec![part],
            }),
        }
    }
    Request::Fetch(FetchRequest {
        max_wait_ms,
        min_bytes: 1,
        max_bytes: config.max_bytes,
        topics,
    })
}

/// The position that [`decode_partition`] returns for `bytes` fetched at `from` if every batch in
/// them is sound: after the last whole batch. Reads only the batch headers (checking nothing but
/// their own CRC) and stops at the first it cannot read.
pub(super) fn next_position(from: u64, bytes: &[u8]) -> u64 {
    let mut position = from;
    let mut rest = bytes;
    while let Ok(header) = BatchHeader::decode(rest) {
        let Some(tail) = rest.get(header.length as usize..) else {
            break;
        };
        position = position.max(header.next_offset());
        rest = tail;
    }
    position
}

/// Checks and decodes the batches of one partition fetched at position `from`, appending the records
/// at or after it to `out`. Control batches are skipped. Returns the position after the last batch.
pub(super) fn decode_partition(
    topic: &Arc<str>,
    partition: u32,
    from: u64,
    bytes: Bytes,
    out: &mut Vec<ConsumerRecord>,
) -> Result<u64> {
    let mut position = from;
    let corrupt = |offset, source| ClientError::Corrupt {
        topic: topic.to_string(),
        partition,
        offset,
        source,
    };
    for batch in RecordBatch::iter_all(bytes) {
        let batch = batch.map_err(|e| corrupt(position, e))?;
        let header = *batch.header();
        if header.next_offset() <= position {
            continue;
        }
        if !header.is_control() {
            for record in batch.records().map_err(|e| corrupt(position, e))? {
                let record = record.map_err(|e| corrupt(position, e))?;
                if record.offset < position {
                    continue;
                }
                position = record.offset.saturating_add(1);
                out.push(ConsumerRecord {
                    topic: topic.clone(),
                    partition,
                    offset: record.offset,
                    timestamp_ms: record.timestamp_ms,
                    key: record.key,
                    value: record.value,
                    headers: record.headers,
                });
            }
        }
        position = position.max(header.next_offset());
    }
    Ok(position)
}
