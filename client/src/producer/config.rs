//! [`ProducerConfig`]: the producer's settings, their defaults and their validation.
//!
//! This module owns the numbers and the rules they must obey, and the one limit derived from them
//! (the largest record `send` accepts). It never acts on them: the accumulator, the buffer and the
//! sender read the settings they need.

use std::time::Duration;

use sluice_protocol::batch::{HEADER_LEN, MAX_BATCH_LEN};
use sluice_protocol::wire::Acks;
use sluice_protocol::Compression;
use tokio::sync::Semaphore;

use crate::error::{ClientError, Result};

/// Settings of a [`Producer`](super::Producer).
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
    /// Idempotent writes: each batch carries the producer's id, epoch and sequence, so a retry of
    /// a batch the broker already stored is answered with its first offset instead of being
    /// written twice. Default on; no effect with [`Acks::None`] (nothing is retried on an answer).
    pub idempotence: bool,
    /// A stable producer name: a restarted producer with the same name gets the same producer id
    /// with a newer epoch, which fences the earlier one. Default none (a fresh id per producer).
    pub producer_name: Option<String>,
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
            idempotence: true,
            producer_name: None,
        }
    }
}

impl ProducerConfig {
    pub(super) fn validate(&self) -> Result<()> {
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
        if let Some(name) = &self.producer_name {
            if name.is_empty() || name.len() > sluice_protocol::wire::MAX_PRODUCER_NAME_BYTES {
                return bad("producer_name must have 1 to 255 bytes");
            }
            if !self.idempotence {
                return bad("producer_name needs idempotence");
            }
        }
        Ok(())
    }

    /// The largest record `send` accepts: it must fit a batch on its own and the buffer.
    pub(super) fn max_record_bytes(&self) -> usize {
        (MAX_BATCH_LEN - HEADER_LEN).min(self.buffer_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation() {
        assert!(ProducerConfig::default().validate().is_ok());
        let bad = [
            ProducerConfig {
                batch_bytes: 10,
                ..Default::default()
            },
            ProducerConfig {
                buffer_bytes: 1000,
                batch_bytes: 2000,
                ..Default::default()
            },
            ProducerConfig {
                max_in_flight: 0,
                ..Default::default()
            },
        ];
        for c in bad {
            assert!(matches!(c.validate(), Err(ClientError::InvalidConfig(_))));
        }
    }
}
