//! [`Consumer`]: reads assigned partitions from a position, with long-poll fetches.
//!
//! The consumer is manually assigned its partitions ([`Consumer::assign`]); each has a position, the
//! offset of the next record to return, set by [`Consumer::seek`] or, on first use, by the
//! `auto_offset_reset` policy. [`Consumer::poll`] sends one fetch per leader (waiting up to the poll
//! timeout for at least one byte), checks every batch it receives with
//! [`RecordBatch::iter_all`](sluice_protocol::RecordBatch::iter_all) (both CRCs, header and length),
//! skips control batches and records below the position, and advances the position past what it
//! returns. A batch that fails its checks makes `poll` return [`ClientError::Corrupt`] without
//! moving any position. Retriable failures (a broker restart, a changed leader) are retried inside
//! `poll` until its timeout, reconnecting as needed.
//!
//! Fetches are pipelined: when `poll` returns records, it has already started (in a background task)
//! the fetch for the positions after them, without long-poll, so the broker prepares the next answer
//! while the application handles this one. The next `poll` uses that answer only if every assigned
//! partition is still at the position the prefetch asked for (a `seek` or `assign` in between
//! discards it); an answer with no records, or one that failed with a retriable error, is followed at
//! once by an ordinary fetch. At most one prefetch is outstanding, so it holds at most one fetch
//! answer (`max_bytes`) beyond what `poll` returned.
//!
//! The parts: `positions` keeps the assignment and each partition's position (`seek`, resets,
//! out-of-range answers); `fetcher` builds the fetches, runs the prefetch and decodes answers into
//! records. This module holds the [`Consumer`] handle and its settings, and the `poll` loop that
//! retries a round until the timeout.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::Header;
use tokio::time::Instant;
use tracing::warn;

use crate::client::{Client, ClientConfig};
use crate::error::{ClientError, Result};

mod fetcher;
mod positions;

use fetcher::Prefetch;
use positions::Positions;

pub use positions::{OffsetReset, SeekTo};

/// Pause after a fetch round that returned nothing early, so `poll` never spins.
const EMPTY_ROUND_PAUSE: Duration = Duration::from_millis(10);

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

/// Reads records from manually assigned partitions. Not shared between tasks: every method takes
/// `&mut self` except the read-only ones.
#[derive(Debug)]
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    /// The assigned partitions and their positions.
    positions: Positions,
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
            positions: Positions::default(),
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
        self.positions.assign(partitions);
        self.discard_stale_prefetch();
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.positions.assignment()
    }

    /// The offset of the next record `poll` returns for an assigned partition, if known yet.
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.positions.position(topic, partition)
    }

    /// The high watermark the last fetch reported for an assigned partition.
    pub fn high_watermark(&self, topic: &str, partition: u32) -> Option<u64> {
        self.positions.high_watermark(topic, partition)
    }

    /// Moves the position of an assigned partition. Earliest, latest and timestamps are resolved on
    /// the partition's leader (ListOffsets); a timestamp after every record resolves to the end.
    pub async fn seek(&mut self, topic: &str, partition: u32, to: SeekTo) -> Result<()> {
        self.positions
            .seek(&self.client, topic, partition, to)
            .await?;
        self.discard_stale_prefetch();
        Ok(())
    }

    /// Waits up to `timeout` for records from the assigned partitions and returns those available
    /// (possibly none). Fails on a corrupt batch, a non-retriable broker error, or a partition without
    /// position under [`OffsetReset::None`]; retriable failures are retried until the timeout.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        if self.positions.is_empty() {
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
}

#[cfg(test)]
mod tests;
