//! [`Consumer`]: reads assigned partitions from a position, with long-poll fetches.
//!
//! The consumer is manually assigned its partitions ([`Consumer::assign`]); each has a position, the
//! offset of the next record to return, set by [`Consumer::seek`] or, on first use, by the
//! `auto_offset_reset` policy. [`Consumer::poll`] sends one fetch per leader (waiting up to the poll
//! timeout for at least one byte), checks every batch it receives with [`RecordBatch::iter_all`] (both
//! CRCs, header and length), skips control batches and records below the position, and advances the
//! position past what it returns. A batch that fails its checks makes `poll` return
//! [`ClientError::Corrupt`] without moving any position. Retriable failures (a broker restart, a
//! changed leader) are retried inside `poll` until its timeout, reconnecting as needed.
//!
//! Fetches are pipelined: when `poll` returns records, it has already started (in a background task)
//! the fetch for the positions after them, without long-poll, so the broker prepares the next answer
//! while the application handles this one. The next `poll` uses that answer only if every assigned
//! partition is still at the position the prefetch asked for (a `seek` or `assign` in between
//! discards it); an answer with no records, or one that failed with a retriable error, is followed at
//! once by an ordinary fetch. At most one prefetch is outstanding, so it holds at most one fetch
//! answer (`max_bytes`) beyond what `poll` returned.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::wire::{
    ErrorCode, FetchPartition, FetchRequest, FetchResponse, FetchTopic, Request, Response,
    EARLIEST, LATEST,
};
use sluice_protocol::{BatchHeader, Header, RecordBatch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::client::{unexpected, Client, ClientConfig};
use crate::error::{ClientError, Result};

/// Pause after a fetch round that returned nothing early, so `poll` never spins.
const EMPTY_ROUND_PAUSE: Duration = Duration::from_millis(10);

/// Where a partition without a position starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// At the first retained record.
    #[default]
    Earliest,
    /// At the end: only records produced from now on.
    Latest,
    /// Nowhere: `poll` fails until the partition is [`Consumer::seek`]ed.
    None,
}

/// Where [`Consumer::seek`] moves a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// An explicit offset.
    Offset(u64),
    /// The first retained record.
    Earliest,
    /// The end of the log (the next offset to be written).
    Latest,
    /// The first record with a timestamp at or after this one (ms), or the end if there is none.
    Timestamp(i64),
}

/// Settings of a [`Consumer`].
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Cap on the record bytes of one fetch answer. Default 16 MiB.
    pub max_bytes: u32,
    /// Cap on the record bytes per partition in one fetch answer (the broker still sends at least
    /// one whole batch). Default 4 MiB.
    pub max_partition_bytes: u32,
    /// Where a partition without a position starts, and where one whose position fell out of the
    /// log (`OFFSET_OUT_OF_RANGE`) restarts. Default [`OffsetReset::Earliest`].
    pub auto_offset_reset: OffsetReset,
    /// Added to the long-poll time to bound how long a fetch answer may take. Default 30 s.
    pub request_timeout: Duration,
    /// Pause after a retriable failure inside `poll`. Default 100 ms.
    pub retry_backoff: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_bytes: 16 << 20,
            max_partition_bytes: 4 << 20,
            auto_offset_reset: OffsetReset::Earliest,
            request_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(100),
        }
    }
}

/// One record returned by [`Consumer::poll`]. Key, value and header bytes share the fetched buffer
/// (uncompressed batches) or the batch's decompressed buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: Arc<str>,
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

#[derive(Debug)]
struct Assigned {
    topic: Arc<str>,
    partition: u32,
    position: Option<u64>,
    high_watermark: Option<u64>,
}

/// An assigned partition at the position a fetch round asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    topic: Arc<str>,
    partition: u32,
    position: Option<u64>,
}

/// The fetches of one round, one per leader: the indices (into the round's targets, which are the
/// assigned partitions when the round is applied) of the partitions asked, and the answer.
type Fetches = JoinSet<(Vec<usize>, Result<Response>)>;

/// A fetch round started in the background for `targets`. Dropping it abandons the round.
struct Prefetch {
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

/// Reads records from manually assigned partitions. Not shared between tasks: every method takes
/// `&mut self` except the read-only ones.
#[derive(Debug)]
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    assigned: Vec<Assigned>,
    /// The fetch for the positions after the records the last `poll` returned, if one is running.
    prefetch: Option<Prefetch>,
}

impl Consumer {
    /// A consumer with its own [`Client`] for the cluster at `bootstrap`.
    pub fn new(bootstrap: impl Into<String>, config: ConsumerConfig) -> Result<Consumer> {
        let mut cc = ClientConfig::new(bootstrap);
        cc.request_timeout = config.request_timeout;
        Consumer::with_client(Client::new(cc)?, config)
    }

    /// A consumer over an existing client.
    pub fn with_client(client: Client, config: ConsumerConfig) -> Result<Consumer> {
        if config.max_bytes == 0 || config.max_partition_bytes == 0 {
            return Err(ClientError::InvalidConfig(
                "max_bytes and max_partition_bytes must be positive".into(),
            ));
        }
        Ok(Consumer {
            client,
            config,
            assigned: Vec::new(),
            prefetch: None,
        })
    }

    /// The client this consumer fetches through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Replaces the assignment with `partitions`. Partitions that stay assigned keep their position;
    /// new ones start per `auto_offset_reset` unless [`Consumer::seek`]ed first.
    pub fn assign<T: AsRef<str>>(&mut self, partitions: &[(T, u32)]) {
        let mut next: Vec<Assigned> = Vec::with_capacity(partitions.len());
        for (topic, partition) in partitions {
            let topic = topic.as_ref();
            if next
                .iter()
                .any(|a| &*a.topic == topic && a.partition == *partition)
            {
                continue;
            }
            let kept = self
                .assigned
                .iter()
                .position(|a| &*a.topic == topic && a.partition == *partition)
                .map(|i| self.assigned.swap_remove(i));
            next.push(kept.unwrap_or_else(|| Assigned {
                topic: Arc::from(topic),
                partition: *partition,
                position: None,
                high_watermark: None,
            }));
        }
        self.assigned = next;
        self.discard_stale_prefetch();
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.assigned
            .iter()
            .map(|a| (a.topic.to_string(), a.partition))
            .collect()
    }

    /// The offset of the next record `poll` returns for an assigned partition, if known yet.
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.find(topic, partition).and_then(|a| a.position)
    }

    /// The high watermark the last fetch reported for an assigned partition.
    pub fn high_watermark(&self, topic: &str, partition: u32) -> Option<u64> {
        self.find(topic, partition).and_then(|a| a.high_watermark)
    }

    fn find(&self, topic: &str, partition: u32) -> Option<&Assigned> {
        self.assigned
            .iter()
            .find(|a| &*a.topic == topic && a.partition == partition)
    }

    /// Moves the position of an assigned partition. Earliest, latest and timestamps are resolved on
    /// the partition's leader (ListOffsets); a timestamp after every record resolves to the end.
    pub async fn seek(&mut self, topic: &str, partition: u32, to: SeekTo) -> Result<()> {
        let Some(i) = self
            .assigned
            .iter()
            .position(|a| &*a.topic == topic && a.partition == partition)
        else {
            return Err(ClientError::InvalidArgument(format!(
                "{topic}/{partition} is not assigned"
            )));
        };
        let offset = match to {
            SeekTo::Offset(o) => o,
            SeekTo::Earliest => self.resolve(topic, partition, EARLIEST).await?,
            SeekTo::Latest => self.resolve(topic, partition, LATEST).await?,
            SeekTo::Timestamp(ts) => self.resolve(topic, partition, ts).await?,
        };
        debug!(topic, partition, offset, "seek");
        self.assigned[i].position = Some(offset);
        self.discard_stale_prefetch();
        Ok(())
    }

    /// Every assigned partition at its current position, in assignment order.
    fn targets(&self) -> Vec<Target> {
        self.assigned
            .iter()
            .map(|a| Target {
                topic: a.topic.clone(),
                partition: a.partition,
                position: a.position,
            })
            .collect()
    }

    /// Drops the prefetch unless it was issued for exactly the current assignment and positions.
    fn discard_stale_prefetch(&mut self) {
        if self
            .prefetch
            .as_ref()
            .is_some_and(|p| p.targets != self.targets())
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
        let mut targets = self.targets();
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
        if p.targets != self.targets() {
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

    /// An offset spec resolved on the leader; a timestamp without records at or after it resolves to
    /// the end of the log.
    async fn resolve(&self, topic: &str, partition: u32, spec: i64) -> Result<u64> {
        let o = self.client.list_offset(topic, partition, spec).await?;
        if let Ok(o) = u64::try_from(o) {
            return Ok(o);
        }
        if spec != LATEST {
            let end = self.client.list_offset(topic, partition, LATEST).await?;
            if let Ok(end) = u64::try_from(end) {
                return Ok(end);
            }
        }
        Err(ClientError::broker(
            ErrorCode::OFFSET_OUT_OF_RANGE,
            format!("no offset for {topic}/{partition} at spec {spec}"),
        ))
    }

    /// Waits up to `timeout` for records from the assigned partitions and returns those available
    /// (possibly none). Fails on a corrupt batch, a non-retriable broker error, or a partition without
    /// position under [`OffsetReset::None`]; retriable failures are retried until the timeout.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        if self.assigned.is_empty() {
            return Err(ClientError::InvalidArgument(
                "no partitions assigned".into(),
            ));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let round = Instant::now();
            let e = match self.poll_once(deadline).await {
                Ok(records) if !records.is_empty() => return Ok(records),
                Ok(_) => None,
                Err(e) if e.is_retriable() => Some(e),
                Err(e) => return Err(e),
            };
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let pause = match e {
                Some(e) => {
                    warn!(error = %e, "fetch failed; retrying");
                    self.config.retry_backoff
                }
                // An empty answer well before the deadline (a partition error, or a broker that
                // does not hold the fetch): pause briefly rather than spin.
                None if now - round < EMPTY_ROUND_PAUSE => EMPTY_ROUND_PAUSE,
                None => Duration::ZERO,
            };
            if !pause.is_zero() {
                tokio::time::sleep(pause.min(deadline - now)).await;
            }
        }
    }

    /// One round: the prefetch's answers applied if they have records; otherwise positions
    /// resolved, one fetch per leader, answers applied. Starts the next prefetch when it returns
    /// records.
    async fn poll_once(&mut self, deadline: Instant) -> Result<Vec<ConsumerRecord>> {
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

        self.resolve_positions().await?;
        let max_wait = deadline.saturating_duration_since(Instant::now());
        let fetches = start_round(&self.client, &self.config, &self.targets(), max_wait).await?;
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
                    self.start_prefetch(self.targets()).await;
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
                            self.client.invalidate_topic(&self.assigned[i].topic);
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
        for (i, position, hw) in updates {
            let a = &mut self.assigned[i];
            a.position = Some(position);
            if hw.is_some() {
                a.high_watermark = hw;
            }
        }
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
            .map(|&i| ((&*self.assigned[i].topic, self.assigned[i].partition), i))
            .collect();
        let mut reset: Vec<usize> = Vec::new();
        let mut stale: Vec<Arc<str>> = Vec::new();
        for t in response.topics {
            for p in t.partitions {
                let Some(&i) = index.get(&(t.name.as_str(), p.partition)) else {
                    debug!(topic = %t.name, partition = p.partition, "fetch answer for a partition not asked for");
                    continue;
                };
                let a = &self.assigned[i];
                match p.error {
                    ErrorCode::NONE => {
                        let from = a.position.unwrap_or(0);
                        let next =
                            decode_partition(&a.topic, a.partition, from, p.records, records)?;
                        updates.push((i, next, Some(p.high_watermark)));
                    }
                    ErrorCode::OFFSET_OUT_OF_RANGE => {
                        if self.config.auto_offset_reset == OffsetReset::None {
                            return Err(ClientError::broker(
                                p.error,
                                format!(
                                    "position {:?} of {}/{} is out of range",
                                    a.position, a.topic, a.partition
                                ),
                            ));
                        }
                        warn!(topic = %a.topic, partition = a.partition, position = ?a.position,
                            "position out of range; resetting");
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
            self.assigned[i].position = None;
        }
        for t in stale {
            self.client.invalidate_topic(&t);
        }
        Ok(())
    }

    /// Gives every partition without a position one, per `auto_offset_reset`.
    async fn resolve_positions(&mut self) -> Result<()> {
        for i in 0..self.assigned.len() {
            if self.assigned[i].position.is_some() {
                continue;
            }
            let (topic, partition) = (self.assigned[i].topic.clone(), self.assigned[i].partition);
            let spec = match self.config.auto_offset_reset {
                OffsetReset::Earliest => EARLIEST,
                OffsetReset::Latest => LATEST,
                OffsetReset::None => {
                    return Err(ClientError::InvalidArgument(format!(
                        "{topic}/{partition} has no position; seek first"
                    )))
                }
            };
            let offset = self.resolve(&topic, partition, spec).await?;
            debug!(topic = %topic, partition, offset, "position reset");
            self.assigned[i].position = Some(offset);
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
fn next_position(from: u64, bytes: &[u8]) -> u64 {
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
pub(crate) fn decode_partition(
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

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::batch::patch_position;
    use sluice_protocol::{BatchBuilder, Compression};

    fn batch(base: u64, values: &[&str], control: bool, compression: Compression) -> Vec<u8> {
        let mut b = BatchBuilder::new(compression);
        if control {
            b = b.control();
        }
        for (i, v) in values.iter().enumerate() {
            b.append(1000 + i as i64, Some(b"k"), Some(v.as_bytes()), &[]);
        }
        let mut bytes = b.seal().expect("seal").to_vec();
        patch_position(&mut bytes, base, 1, 1).expect("patch");
        bytes
    }

    fn decode(from: u64, bytes: Vec<u8>) -> Result<(u64, Vec<ConsumerRecord>)> {
        let mut out = Vec::new();
        let next = decode_partition(&Arc::from("t"), 0, from, Bytes::from(bytes), &mut out)?;
        Ok((next, out))
    }

    #[test]
    fn skips_records_below_position_and_control_batches() {
        let mut all = batch(10, &["a", "b", "c"], false, Compression::None);
        all.extend(batch(13, &["ctl"], true, Compression::None));
        all.extend(batch(14, &["d", "e"], false, Compression::Lz4));
        let (next, records) = decode(11, all).expect("decode");
        assert_eq!(next, 16);
        let got: Vec<(u64, &[u8])> = records
            .iter()
            .map(|r| (r.offset, r.value.as_deref().unwrap_or_default()))
            .collect();
        assert_eq!(
            got,
            vec![(11, &b"b"[..]), (12, b"c"), (14, b"d"), (15, b"e")]
        );
        assert_eq!(records[0].timestamp_ms, 1001);
        assert_eq!(&*records[0].topic, "t");
    }

    #[test]
    fn predicted_position_matches_decoded_one() {
        let mut all = batch(10, &["a", "b", "c"], false, Compression::None);
        all.extend(batch(13, &["ctl"], true, Compression::None));
        all.extend(batch(14, &["d", "e"], false, Compression::Lz4));
        for from in [0, 10, 12, 14, 15, 16, 20] {
            let (next, _) = decode(from, all.clone()).expect("decode");
            assert_eq!(next_position(from, &all), next, "from {from}");
        }
        assert_eq!(next_position(7, &[]), 7);
        // A cut last batch is not counted (decoding it fails, and the prediction is discarded).
        assert_eq!(next_position(10, &all[..all.len() - 1]), 14);
    }

    #[test]
    fn batches_entirely_below_position_are_skipped() {
        let mut all = batch(0, &["a", "b"], false, Compression::None);
        all.extend(batch(2, &["c"], false, Compression::None));
        let (next, records) = decode(2, all).expect("decode");
        assert_eq!(next, 3);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].offset, 2);
    }

    #[test]
    fn empty_answer_keeps_position() {
        let (next, records) = decode(7, Vec::new()).expect("decode");
        assert_eq!(next, 7);
        assert!(records.is_empty());
    }

    #[test]
    fn flipped_bit_is_corrupt() {
        let mut all = batch(0, &["a", "b"], false, Compression::None);
        let good_len = all.len();
        all.extend(batch(2, &["hello world"], false, Compression::None));
        let last = all.len() - 3;
        all[last] ^= 0x40;
        let err = decode(0, all.clone()).expect_err("corrupt");
        assert!(
            matches!(
                err,
                ClientError::Corrupt {
                    offset: 2,
                    partition: 0,
                    ..
                }
            ),
            "{err}"
        );
        assert!(!err.is_retriable());
        // A flipped bit in the header (base offset is covered by the header CRC) too.
        let mut header_flip = all[..good_len].to_vec();
        header_flip[9] ^= 1;
        assert!(matches!(
            decode(0, header_flip),
            Err(ClientError::Corrupt { .. })
        ));
    }

    #[test]
    fn truncated_batch_is_corrupt() {
        let all = batch(0, &["a", "b"], false, Compression::None);
        let cut = all[..all.len() - 1].to_vec();
        assert!(matches!(decode(0, cut), Err(ClientError::Corrupt { .. })));
    }

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn public_futures_are_send() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let _guard = rt.enter();
        let mut c = Consumer::new("127.0.0.1:1", ConsumerConfig::default()).expect("consumer");
        assert_send(&c.poll(Duration::ZERO));
        assert_send(&c.seek("t", 0, SeekTo::Earliest));
        let admin = crate::Admin::new("127.0.0.1:1").expect("admin");
        assert_send(&admin.create_topic("t", 1, 1, &[]));
        assert_send(&admin.list_offsets("t", 0, crate::OffsetSpec::Latest));
        let p = crate::Producer::new("127.0.0.1:1", Default::default()).expect("producer");
        assert_send(&p.send(crate::ProducerRecord::new("t", "v")));
        assert_send(&p.flush());
        assert_send(&p.close());
    }

    #[test]
    fn assign_keeps_positions_of_kept_partitions() {
        let mut c = Consumer::new("127.0.0.1:1", ConsumerConfig::default()).expect("consumer");
        c.assign(&[("a", 0), ("a", 1)]);
        c.assigned[0].position = Some(5);
        c.assign(&[
            ("a".to_string(), 0),
            ("b".to_string(), 0),
            ("a".to_string(), 0),
        ]);
        assert_eq!(c.position("a", 0), Some(5));
        assert_eq!(c.position("b", 0), None);
        assert_eq!(c.position("a", 1), None);
        assert_eq!(c.assignment(), vec![("a".into(), 0), ("b".into(), 0)]);
    }
}
