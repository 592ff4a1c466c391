//! [`BatchBuilder`]: appends records into one buffer and seals them into a batch.
//!
//! Records are encoded straight into the buffer that becomes the batch, behind a reserved header, so an
//! uncompressed batch is sealed without copying its records.

use bytes::Bytes;

use super::*;
use crate::varint;
use crate::Compression;

/// Builds one record batch. Offsets are assigned later by the broker; the builder numbers records from
/// delta 0 (or from the deltas given to [`BatchBuilder::append_at`], which compaction uses).
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    compression: Compression,
    control: bool,
    record_count: u32,
    last_offset_delta: u32,
    first_timestamp_ms: i64,
    max_timestamp_ms: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
}

impl BatchBuilder {
    /// A builder whose records section will be compressed with `compression`.
    pub fn new(compression: Compression) -> Self {
        Self::with_capacity(compression, 4096)
    }

    /// A builder with room for about `capacity_bytes` of records before it reallocates.
    pub fn with_capacity(compression: Compression, capacity_bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER_LEN + capacity_bytes);
        buf.resize(HEADER_LEN, 0);
        BatchBuilder {
            buf,
            compression,
            control: false,
            record_count: 0,
            last_offset_delta: 0,
            first_timestamp_ms: 0,
            max_timestamp_ms: i64::MIN,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }

    /// Marks the batch as sent by an idempotent producer.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Marks the batch as a control batch (consumers skip it).
    pub fn control(mut self) -> Self {
        self.control = true;
        self
    }

    /// Records appended so far.
    pub fn record_count(&self) -> u32 {
        self.record_count
    }

    /// Whether no record was appended yet.
    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    /// Bytes the batch would take if sealed uncompressed now.
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Appends a record at the next offset delta.
    pub fn append(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) {
        let delta = if self.record_count == 0 {
            0
        } else {
            self.last_offset_delta.saturating_add(1)
        };
        self.push(delta, timestamp_ms, key, value, headers);
    }

    /// Appends a record at an explicit offset delta, which must exceed the previous record's (compaction
    /// keeps surviving records at their original offsets). Returns false and appends nothing otherwise.
    pub fn append_at(
        &mut self,
        offset_delta: u32,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) -> bool {
        if self.record_count > 0 && offset_delta <= self.last_offset_delta {
            return false;
        }
        self.push(offset_delta, timestamp_ms, key, value, headers);
        true
    }

    fn push(
        &mut self,
        offset_delta: u32,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) {
        if self.record_count == 0 {
            self.first_timestamp_ms = timestamp_ms;
        }
        let ts_delta = timestamp_ms.wrapping_sub(self.first_timestamp_ms);
        let body_len = 1
            + varint::len_i64(ts_delta)
            + varint::len_u64(u64::from(offset_delta))
            + bytes_len(key)
            + bytes_len(value)
            + varint::len_u64(headers.len() as u64)
            + headers
                .iter()
                .map(|h| {
                    varint::len_u64(h.key.len() as u64)
                        + h.key.len()
                        + bytes_len(h.value.as_deref())
                })
                .sum::<usize>();
        let buf = &mut self.buf;
        buf.reserve(body_len + varint::MAX_VARINT_LEN);
        varint::put_u64(buf, body_len as u64);
        buf.push(0); // record attributes, reserved
        varint::put_i64(buf, ts_delta);
        varint::put_u64(buf, u64::from(offset_delta));
        put_bytes(buf, key);
        put_bytes(buf, value);
        varint::put_u64(buf, headers.len() as u64);
        for h in headers {
            varint::put_u64(buf, h.key.len() as u64);
            buf.extend_from_slice(&h.key);
            put_bytes(buf, h.value.as_deref());
        }
        self.record_count += 1;
        self.last_offset_delta = offset_delta;
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
    }

    /// Seals the batch: compresses the records section if asked, fills in the header and both CRCs.
    pub fn seal(self) -> Result<Bytes, BatchError> {
        let mut buf = match self.compression {
            Compression::None => self.buf,
            codec => {
                let mut out = Vec::with_capacity(HEADER_LEN + self.buf.len() / 2);
                out.resize(HEADER_LEN, 0);
                codec.compress_into(&self.buf[HEADER_LEN..], &mut out)?;
                out
            }
        };
        if buf.len() > MAX_BATCH_LEN {
            return Err(BatchError::BadLength(
                u32::try_from(buf.len()).unwrap_or(u32::MAX),
            ));
        }
        let max_ts = if self.record_count == 0 {
            self.first_timestamp_ms
        } else {
            self.max_timestamp_ms
        };
        buf[OFF_VERSION] = VERSION;
        buf[OFF_ATTRIBUTES] = attributes(self.compression, false, self.control);
        let len = buf.len() as u32;
        buf[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&len.to_le_bytes());
        buf[OFF_LAST_OFFSET_DELTA..OFF_LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&self.last_offset_delta.to_le_bytes());
        buf[OFF_RECORD_COUNT..OFF_RECORD_COUNT + 4]
            .copy_from_slice(&self.record_count.to_le_bytes());
        buf[OFF_FIRST_TIMESTAMP..OFF_FIRST_TIMESTAMP + 8]
            .copy_from_slice(&self.first_timestamp_ms.to_le_bytes());
        buf[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8].copy_from_slice(&max_ts.to_le_bytes());
        buf[OFF_PRODUCER_ID..OFF_PRODUCER_ID + 8].copy_from_slice(&self.producer_id.to_le_bytes());
        buf[OFF_PRODUCER_EPOCH..OFF_PRODUCER_EPOCH + 2]
            .copy_from_slice(&self.producer_epoch.to_le_bytes());
        buf[OFF_BASE_SEQUENCE..OFF_BASE_SEQUENCE + 4]
            .copy_from_slice(&self.base_sequence.to_le_bytes());
        let crc = body_crc(&buf);
        buf[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        patch_position(&mut buf, 0, 0, 0)?;
        Ok(Bytes::from(buf))
    }
}

fn bytes_len(b: Option<&[u8]>) -> usize {
    match b {
        None => varint::len_i64(-1),
        Some(b) => varint::len_i64(b.len() as i64) + b.len(),
    }
}

fn put_bytes(buf: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => varint::put_i64(buf, -1),
        Some(b) => {
            varint::put_i64(buf, b.len() as i64);
            buf.extend_from_slice(b);
        }
    }
}
