//! The record batch: the unit Sluice writes, stores, replicates and serves.
//!
//! Layout (little-endian; byte diagrams in `docs/format.md`):
//!
//! ```text
//!  0  u8   version (1; 0 never starts a batch, so a zeroed file tail reads as "no batch")
//!  1  u8   attributes: bits 0-2 codec, bit 3 timestamp type, bit 4 control batch
//!  2  u16  reserved, zero
//!  4  u32  batch length in bytes, header included
//!  8  u64  base offset          \
//! 16  u64  raft term             > patched by the broker on append
//! 24  u64  raft index           /
//! 32  u32  header CRC-32 over bytes [0, 32)
//! 36  u32  CRC-32 over bytes [0, 8) and [40, length)
//! 40  u32  last offset delta
//! 44  u32  record count
//! 48  i64  first timestamp (ms)
//! 56  i64  max timestamp (ms)
//! 64  i64  producer id (-1 = none)
//! 72  i16  producer epoch (-1 = none)
//! 74  u16  reserved, zero
//! 76  i32  base sequence (-1 = none)
//! 80  ...  records section, compressed as a whole if the codec says so
//! ```
//!
//! The body CRC is computed once by the producer and leaves out the fields the broker patches, so a
//! leader or replica assigns offsets and raft positions by rewriting 24 bytes and the 4-byte header CRC.
//! Between them the two CRCs cover every byte, so any flipped bit in a stored batch is detected.

mod builder;
mod reader;

pub use builder::BatchBuilder;
pub use reader::{first_timestamp, Record, RecordBatch, Records};

use bytes::Bytes;
use thiserror::Error;

use crate::compression::CompressionError;

/// Format version written in byte 0.
pub const VERSION: u8 = 1;
/// Bytes before the records section.
pub const HEADER_LEN: usize = 80;
/// Largest batch accepted anywhere (header included). Bounds every buffer a length field can ask for.
pub const MAX_BATCH_LEN: usize = 64 << 20;
/// Default cap on a decompressed records section.
pub const MAX_DECOMPRESSED_LEN: usize = 256 << 20;

pub(crate) const OFF_VERSION: usize = 0;
pub(crate) const OFF_ATTRIBUTES: usize = 1;
pub(crate) const OFF_LENGTH: usize = 4;
pub(crate) const OFF_BASE_OFFSET: usize = 8;
pub(crate) const OFF_RAFT_TERM: usize = 16;
pub(crate) const OFF_RAFT_INDEX: usize = 24;
pub(crate) const OFF_HEADER_CRC: usize = 32;
pub(crate) const OFF_CRC: usize = 36;
pub(crate) const OFF_LAST_OFFSET_DELTA: usize = 40;
pub(crate) const OFF_RECORD_COUNT: usize = 44;
pub(crate) const OFF_FIRST_TIMESTAMP: usize = 48;
pub(crate) const OFF_MAX_TIMESTAMP: usize = 56;
pub(crate) const OFF_PRODUCER_ID: usize = 64;
pub(crate) const OFF_PRODUCER_EPOCH: usize = 72;
pub(crate) const OFF_BASE_SEQUENCE: usize = 76;

const ATTR_CODEC_MASK: u8 = 0b0000_0111;
const ATTR_LOG_APPEND_TIME: u8 = 0b0000_1000;
const ATTR_CONTROL: u8 = 0b0001_0000;
const ATTR_KNOWN: u8 = ATTR_CODEC_MASK | ATTR_LOG_APPEND_TIME | ATTR_CONTROL;

/// Why bytes are not a valid batch.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchError {
    #[error("batch truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("no batch here: version byte is 0")]
    Empty,
    #[error("unsupported batch version {0}")]
    UnsupportedVersion(u8),
    #[error("unknown batch attribute bits {0:#04x}")]
    UnknownAttributes(u8),
    #[error("batch length {0} is outside [{HEADER_LEN}, {MAX_BATCH_LEN}]")]
    BadLength(u32),
    #[error("header CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    HeaderCrc { stored: u32, computed: u32 },
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("malformed record {index}: {reason}")]
    MalformedRecord { index: u32, reason: &'static str },
    #[error("records section holds {found} records, header says {declared}")]
    RecordCount { declared: u32, found: u32 },
    #[error(transparent)]
    Compression(#[from] CompressionError),
}

/// How a batch's timestamps were assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// Set by the producer.
    CreateTime,
    /// Set by the broker when it appended the batch.
    LogAppendTime,
}

/// A record header: a key and an optional value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

/// The fixed-size header of a batch, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub attributes: u8,
    pub length: u32,
    pub base_offset: u64,
    pub raft_term: u64,
    pub raft_index: u64,
    pub header_crc: u32,
    pub crc: u32,
    pub last_offset_delta: u32,
    pub record_count: u32,
    pub first_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl BatchHeader {
    /// Decodes and checks the header at the front of `buf`: version, attributes, length bounds and the
    /// header CRC. `buf` need not hold the whole batch; the body CRC is checked by [`verify_body`].
    pub fn decode(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < HEADER_LEN {
            if buf.first() == Some(&0) {
                return Err(BatchError::Empty);
            }
            return Err(BatchError::Truncated {
                needed: HEADER_LEN,
                available: buf.len(),
            });
        }
        match buf[OFF_VERSION] {
            VERSION => {}
            0 => return Err(BatchError::Empty),
            other => return Err(BatchError::UnsupportedVersion(other)),
        }
        let stored = get_u32(buf, OFF_HEADER_CRC);
        let computed = crc32fast::hash(&buf[..OFF_HEADER_CRC]);
        if stored != computed {
            return Err(BatchError::HeaderCrc { stored, computed });
        }
        let attributes = buf[OFF_ATTRIBUTES];
        if attributes & !ATTR_KNOWN != 0 {
            return Err(BatchError::UnknownAttributes(attributes));
        }
        crate::Compression::from_id(attributes & ATTR_CODEC_MASK)?;
        let length = get_u32(buf, OFF_LENGTH);
        if (length as usize) < HEADER_LEN || length as usize > MAX_BATCH_LEN {
            return Err(BatchError::BadLength(length));
        }
        Ok(BatchHeader {
            attributes,
            length,
            base_offset: get_u64(buf, OFF_BASE_OFFSET),
            raft_term: get_u64(buf, OFF_RAFT_TERM),
            raft_index: get_u64(buf, OFF_RAFT_INDEX),
            header_crc: stored,
            crc: get_u32(buf, OFF_CRC),
            last_offset_delta: get_u32(buf, OFF_LAST_OFFSET_DELTA),
            record_count: get_u32(buf, OFF_RECORD_COUNT),
            first_timestamp_ms: get_u64(buf, OFF_FIRST_TIMESTAMP) as i64,
            max_timestamp_ms: get_u64(buf, OFF_MAX_TIMESTAMP) as i64,
            producer_id: get_u64(buf, OFF_PRODUCER_ID) as i64,
            producer_epoch: u16::from_le_bytes([
                buf[OFF_PRODUCER_EPOCH],
                buf[OFF_PRODUCER_EPOCH + 1],
            ]) as i16,
            base_sequence: get_u32(buf, OFF_BASE_SEQUENCE) as i32,
        })
    }

    /// Offset of the batch's last record.
    pub fn last_offset(&self) -> u64 {
        self.base_offset
            .saturating_add(u64::from(self.last_offset_delta))
    }

    /// Offset after the batch's last record.
    pub fn next_offset(&self) -> u64 {
        self.last_offset().saturating_add(1)
    }

    /// The codec of the records section.
    pub fn compression(&self) -> Result<crate::Compression, BatchError> {
        Ok(crate::Compression::from_id(
            self.attributes & ATTR_CODEC_MASK,
        )?)
    }

    /// Whether this is a control batch (raft blank or membership entry) that consumers skip.
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// How the batch's timestamps were assigned.
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & ATTR_LOG_APPEND_TIME != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }
}

/// Checks the body CRC of the whole batch in `batch` (exactly `header.length` bytes).
pub fn verify_body(batch: &[u8]) -> Result<(), BatchError> {
    if batch.len() < HEADER_LEN {
        return Err(BatchError::Truncated {
            needed: HEADER_LEN,
            available: batch.len(),
        });
    }
    let stored = get_u32(batch, OFF_CRC);
    let computed = body_crc(batch);
    if stored != computed {
        return Err(BatchError::Crc { stored, computed });
    }
    Ok(())
}

/// Decodes the header of the batch at the front of `buf` and checks both CRCs over its full length.
/// Returns the header; the batch occupies `buf[..header.length]`.
pub fn check(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::decode(buf)?;
    let len = header.length as usize;
    if buf.len() < len {
        return Err(BatchError::Truncated {
            needed: len,
            available: buf.len(),
        });
    }
    verify_body(&buf[..len])?;
    Ok(header)
}

/// Rewrites the fields the broker assigns on append and recomputes the header CRC. The body CRC is
/// untouched because it does not cover these fields. `header` must be at least [`HEADER_LEN`] bytes.
pub fn patch_position(
    header: &mut [u8],
    base_offset: u64,
    raft_term: u64,
    raft_index: u64,
) -> Result<(), BatchError> {
    if header.len() < HEADER_LEN {
        return Err(BatchError::Truncated {
            needed: HEADER_LEN,
            available: header.len(),
        });
    }
    header[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_le_bytes());
    header[OFF_RAFT_TERM..OFF_RAFT_TERM + 8].copy_from_slice(&raft_term.to_le_bytes());
    header[OFF_RAFT_INDEX..OFF_RAFT_INDEX + 8].copy_from_slice(&raft_index.to_le_bytes());
    let crc = crc32fast::hash(&header[..OFF_HEADER_CRC]);
    header[OFF_HEADER_CRC..OFF_HEADER_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

pub(crate) fn body_crc(batch: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&batch[..OFF_BASE_OFFSET]);
    hasher.update(&batch[OFF_LAST_OFFSET_DELTA..]);
    hasher.finalize()
}

fn get_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

fn get_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

pub(crate) fn attributes(
    compression: crate::Compression,
    log_append_time: bool,
    control: bool,
) -> u8 {
    let mut a = compression.id() & ATTR_CODEC_MASK;
    if log_append_time {
        a |= ATTR_LOG_APPEND_TIME;
    }
    if control {
        a |= ATTR_CONTROL;
    }
    a
}

#[cfg(test)]
mod tests;
