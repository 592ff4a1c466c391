//! [`ProducerRecord`] and what is decided from a record alone: its size in a batch, and the
//! partition it goes to ([`partition_for_key`] for keyed records). Also [`TrySendError`], which
//! hands a record back untouched.
//!
//! This module never holds producer state: the sticky partition an unkeyed record falls back to is
//! the accumulator's, passed in; nothing here waits, locks or sends.

use std::sync::Arc;

use bytes::Bytes;
use sluice_protocol::Header;

use crate::error::{ClientError, Result};

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
    pub(super) fn size_estimate(&self) -> usize {
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

/// Why [`Producer::try_send`](super::Producer::try_send) did not accept a record.
#[derive(Debug)]
pub enum TrySendError {
    /// Accepting it needs a wait (for buffer space or the topic's metadata): the record, untouched
    /// (boxed: this path is the rare one, and it keeps the `Result` small).
    WouldWait(Box<ProducerRecord>),
    /// Refused, as [`Producer::send`](super::Producer::send) would refuse it.
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

/// The partition of a keyed record: `crc32fast::hash(key) % partitions` (CRC-32, IEEE polynomial, of
/// the key bytes). Stable across processes and versions, so equal keys always go to the same
/// partition while the partition count stays the same. `partitions` must not be 0 (0 yields 0).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    crc32fast::hash(key).checked_rem(partitions).unwrap_or(0)
}

/// Refuses an explicit partition the topic does not have.
pub(super) fn check_partition(record: &ProducerRecord, partitions: u32) -> Result<()> {
    match record.partition {
        Some(p) if p >= partitions => Err(ClientError::InvalidArgument(format!(
            "partition {p} of topic {:?}, which has {partitions}",
            record.topic
        ))),
        _ => Ok(()),
    }
}

/// The partition of a record: explicit, else key hash, else the topic's sticky partition.
pub(super) fn choose_partition(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_partitioner_is_crc32_mod_partitions() {
        // CRC-32 (IEEE) of "hello" is 0x3610a686: the partition of a key never changes across
        // builds.
        assert_eq!(crc32fast::hash(b"hello"), 0x3610_a686);
        assert_eq!(partition_for_key(b"hello", 7), 0x3610_a686 % 7);
        assert_eq!(partition_for_key(b"hello", 1), 0);
        assert_eq!(partition_for_key(b"hello", 0), 0);
        for n in 1..50 {
            for key in [&b""[..], b"a", b"user-17", b"\xff\x00"] {
                let p = partition_for_key(key, n);
                assert!(p < n);
                assert_eq!(p, partition_for_key(key, n), "deterministic");
            }
        }
    }
}
