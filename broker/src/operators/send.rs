//! Writing an operator's target batches: each target partition's batches in order, to that
//! partition's leader, acks `all`, targets side by side. The batches carry the operator's producer
//! id and sequences, so a resend (after a lost answer, a retry, or a new leader redoing the tail)
//! is dropped by the target as a duplicate: `DUPLICATE_SEQUENCE` (older than the eight batches it
//! remembers) counts as written, as a duplicate inside that window already answers success.
//!
//! This module only talks to brokers; what the batches hold is `fold`'s business.

use std::time::Duration;

use bytes::Bytes;
use sluice_client::{Client, ClientError};
use sluice_protocol::wire::codec::concat;
use sluice_protocol::wire::{
    Acks, ErrorCode, ProducePartition, ProduceRequest, ProduceTopic, Request, Response,
};
use tokio_util::sync::CancellationToken;

use super::fold::Outbox;

/// Why target batches could not be written (retriable errors are retried, never returned).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("stopped")]
    Cancelled,
    #[error("{topic}/{partition} refused the operator's batch: {code}: {message}")]
    Refused {
        topic: String,
        partition: u32,
        code: ErrorCode,
        message: String,
    },
}

/// Writes target batches through the cluster's partition leaders.
#[derive(Debug, Clone)]
pub struct Sender {
    pub client: Client,
    /// How long a target may take to replicate one request.
    pub timeout: Duration,
}

const BACKOFF: Duration = Duration::from_millis(100);
/// The most batch bytes one produce request carries (well below the broker's frame limit).
const MAX_REQUEST_BYTES: usize = 8 << 20;

impl Sender {
    /// Writes every batch of `outbox`; returns once each is stored (or already was).
    pub async fn send(&self, outbox: &Outbox, cancel: &CancellationToken) -> Result<(), SendError> {
        let sends = outbox.batches.iter().map(|((topic, partition), batches)| {
            self.send_target(topic, *partition, batches, cancel)
        });
        for r in futures_util::future::join_all(sends).await {
            r?;
        }
        Ok(())
    }

    async fn send_target(
        &self,
        topic: &str,
        partition: u32,
        batches: &[Bytes],
        cancel: &CancellationToken,
    ) -> Result<(), SendError> {
        let mut rest = batches;
        while !rest.is_empty() {
            // As many batches as fit one request (at least one), in order.
            let mut n = 0;
            let mut bytes = 0;
            while n < rest.len() && (n == 0 || bytes + rest[n].len() <= MAX_REQUEST_BYTES) {
                bytes += rest[n].len();
                n += 1;
            }
            let (these, later) = rest.split_at(n);
            rest = later;
            match self
                .send_until_stored(topic, partition, concat(these), cancel)
                .await?
            {
                Stored::Yes => {}
                // The request is refused whole when its first batch is an old duplicate: the rest
                // may be new. One by one, each is either stored now or was before.
                Stored::OldDuplicate if these.len() > 1 => {
                    for b in these {
                        self.send_until_stored(topic, partition, b.clone(), cancel)
                            .await?;
                    }
                }
                Stored::OldDuplicate => {}
            }
        }
        Ok(())
    }

    async fn send_until_stored(
        &self,
        topic: &str,
        partition: u32,
        records: Bytes,
        cancel: &CancellationToken,
    ) -> Result<Stored, SendError> {
        let request = Request::Produce(ProduceRequest {
            acks: Acks::All,
            timeout_ms: self.timeout.as_millis().min(u32::MAX as u128) as u32,
            topics: vec![ProduceTopic {
                name: topic.to_string(),
                partitions: vec![ProducePartition { partition, records }],
            }],
        });
        loop {
            if cancel.is_cancelled() {
                return Err(SendError::Cancelled);
            }
            let (code, message) = match self.try_once(topic, partition, &request).await {
                Ok(r) => r,
                Err(e) => (
                    ErrorCode::REQUEST_TIMED_OUT,
                    format!("cannot reach the leader: {e}"),
                ),
            };
            match code {
                ErrorCode::NONE => return Ok(Stored::Yes),
                ErrorCode::DUPLICATE_SEQUENCE => return Ok(Stored::OldDuplicate),
                c if c.is_retriable() => {
                    tracing::debug!(topic, partition, %c, message, "operator output not stored yet; retrying");
                    self.client.invalidate_topic(topic);
                    tokio::select! {
                        _ = cancel.cancelled() => return Err(SendError::Cancelled),
                        _ = tokio::time::sleep(BACKOFF) => {}
                    }
                }
                code => {
                    return Err(SendError::Refused {
                        topic: topic.to_string(),
                        partition,
                        code,
                        message,
                    })
                }
            }
        }
    }

    /// One try: the partition's error code and message.
    async fn try_once(
        &self,
        topic: &str,
        partition: u32,
        request: &Request,
    ) -> Result<(ErrorCode, String), ClientError> {
        let addr = self.client.leader_for(topic, partition).await?;
        let response = self
            .client
            .request_to_with_timeout(&addr, request, self.timeout + Duration::from_secs(1))
            .await?;
        let Response::Produce(r) = response else {
            return Ok((
                ErrorCode::UNKNOWN,
                "an answer that is not a produce's".into(),
            ));
        };
        Ok(r.topics
            .into_iter()
            .flat_map(|t| t.partitions)
            .find(|p| p.partition == partition)
            .map_or_else(
                || (ErrorCode::UNKNOWN, "no answer for the partition".into()),
                |p| (p.error, p.message),
            ))
    }
}

/// How a write ended.
enum Stored {
    Yes,
    /// Refused whole as older than the target remembers: its first batch was stored before.
    OldDuplicate,
}
