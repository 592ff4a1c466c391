//! [`RecordBatch`]: a checked view of one batch over `Bytes`, and [`Records`], the lazy iterator over its
//! records. Keys, values and headers of an uncompressed batch are slices of the original buffer.

use bytes::Bytes;

use super::*;
use crate::varint;

/// One batch whose header and both CRCs have been checked. Cheap to clone (it holds `Bytes`).
#[derive(Debug, Clone)]
pub struct RecordBatch {
    header: BatchHeader,
    bytes: Bytes,
}

/// One record read from a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

impl RecordBatch {
    /// Checks the batch at the front of `buf` (header, length, both CRCs) and returns it with the bytes
    /// that follow it.
    pub fn decode(buf: &Bytes) -> Result<(RecordBatch, Bytes), BatchError> {
        let header = check(buf)?;
        let len = header.length as usize;
        Ok((
            RecordBatch {
                header,
                bytes: buf.slice(..len),
            },
            buf.slice(len..),
        ))
    }

    /// [`RecordBatch::decode`] for bytes whose body CRC the caller has already verified (a storage
    /// read, which CRC-checks every batch it returns): checks the header (its own CRC and the length)
    /// but does not read the body again.
    pub fn decode_verified(buf: &Bytes) -> Result<(RecordBatch, Bytes), BatchError> {
        let header = BatchHeader::decode(buf)?;
        let len = header.length as usize;
        if buf.len() < len {
            return Err(BatchError::Truncated {
                needed: len,
                available: buf.len(),
            });
        }
        Ok((
            RecordBatch {
                header,
                bytes: buf.slice(..len),
            },
            buf.slice(len..),
        ))
    }

    /// Iterates over the checked batches in `buf`, a concatenation of whole batches (a fetch response).
    pub fn iter_all(buf: Bytes) -> impl Iterator<Item = Result<RecordBatch, BatchError>> {
        let mut rest = buf;
        let mut failed = false;
        std::iter::from_fn(move || {
            if failed || rest.is_empty() {
                return None;
            }
            match RecordBatch::decode(&rest) {
                Ok((batch, tail)) => {
                    rest = tail;
                    Some(Ok(batch))
                }
                Err(e) => {
                    failed = true;
                    Some(Err(e))
                }
            }
        })
    }

    /// The decoded header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The batch's bytes, exactly as stored and sent.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Iterates the records, decompressing the records section first if needed (at most
    /// [`MAX_DECOMPRESSED_LEN`] bytes).
    pub fn records(&self) -> Result<Records, BatchError> {
        self.records_with_limit(MAX_DECOMPRESSED_LEN)
    }

    /// Like [`RecordBatch::records`] with an explicit cap on the decompressed size.
    pub fn records_with_limit(&self, limit: usize) -> Result<Records, BatchError> {
        let section = self.bytes.slice(HEADER_LEN..);
        let data = match self.header.compression()? {
            crate::Compression::None => section,
            codec => Bytes::from(codec.decompress(&section, limit)?),
        };
        Ok(Records {
            data,
            pos: 0,
            index: 0,
            declared: self.header.record_count,
            base_offset: self.header.base_offset,
            first_timestamp_ms: self.header.first_timestamp_ms,
            failed: false,
        })
    }
}

/// Iterator over the records of one batch. Yields an error (and then stops) on a malformed record or a
/// record count that does not match the header.
#[derive(Debug)]
pub struct Records {
    data: Bytes,
    pos: usize,
    index: u32,
    declared: u32,
    base_offset: u64,
    first_timestamp_ms: i64,
    failed: bool,
}

impl Iterator for Records {
    type Item = Result<Record, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.index == self.declared {
            if self.pos != self.data.len() {
                self.failed = true;
                return Some(Err(BatchError::MalformedRecord {
                    index: self.index,
                    reason: "bytes after the last record",
                }));
            }
            return None;
        }
        if self.pos == self.data.len() {
            self.failed = true;
            return Some(Err(BatchError::RecordCount {
                declared: self.declared,
                found: self.index,
            }));
        }
        let result = self.decode_one();
        if result.is_err() {
            self.failed = true;
        }
        self.index += 1;
        Some(result)
    }
}

impl Records {
    fn decode_one(&mut self) -> Result<Record, BatchError> {
        let index = self.index;
        let bad = |reason| BatchError::MalformedRecord { index, reason };
        let mut cur = Cursor {
            data: &self.data,
            pos: self.pos,
        };
        let len = cur.u64().ok_or_else(|| bad("bad record length"))?;
        let end = cur
            .pos
            .checked_add(usize::try_from(len).map_err(|_| bad("record length overflows"))?)
            .filter(|&end| end <= self.data.len())
            .ok_or_else(|| bad("record length past the end of the batch"))?;
        let mut rec = Cursor {
            data: &self.data[..end],
            pos: cur.pos,
        };
        let _attributes = rec.byte().ok_or_else(|| bad("missing attributes"))?;
        let ts_delta = rec.i64().ok_or_else(|| bad("bad timestamp delta"))?;
        let offset_delta = rec.u64().ok_or_else(|| bad("bad offset delta"))?;
        let key = rec.bytes(&self.data).map_err(bad)?;
        let value = rec.bytes(&self.data).map_err(bad)?;
        let header_count = rec.u64().ok_or_else(|| bad("bad header count"))?;
        // Each header takes at least two bytes, so a count past that cannot be honest; refuse it before
        // reserving anything.
        if header_count > (end - rec.pos) as u64 / 2 {
            return Err(bad("header count larger than the record"));
        }
        let mut headers = Vec::with_capacity(header_count as usize);
        for _ in 0..header_count {
            let klen = rec.u64().ok_or_else(|| bad("bad header key length"))?;
            let kend = rec
                .pos
                .checked_add(klen as usize)
                .filter(|&e| e <= end && klen <= end as u64)
                .ok_or_else(|| bad("header key past the end of the record"))?;
            let hkey = self.data.slice(rec.pos..kend);
            rec.pos = kend;
            let hvalue = rec.bytes(&self.data).map_err(bad)?;
            headers.push(Header {
                key: hkey,
                value: hvalue,
            });
        }
        if rec.pos != end {
            return Err(bad("bytes left over in the record"));
        }
        self.pos = end;
        Ok(Record {
            offset: self.base_offset.wrapping_add(offset_delta),
            timestamp_ms: self.first_timestamp_ms.wrapping_add(ts_delta),
            key,
            value,
            headers,
        })
    }
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn u64(&mut self) -> Option<u64> {
        let (v, n) = varint::get_u64(self.data.get(self.pos..)?)?;
        self.pos += n;
        Some(v)
    }

    fn i64(&mut self) -> Option<i64> {
        let (v, n) = varint::get_i64(self.data.get(self.pos..)?)?;
        self.pos += n;
        Some(v)
    }

    /// A length-prefixed byte string (-1 = null), sliced out of `whole` without copying.
    fn bytes(&mut self, whole: &Bytes) -> Result<Option<Bytes>, &'static str> {
        let len = self.i64().ok_or("bad length")?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| "negative length")?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.data.len())
            .ok_or("field past the end of the record")?;
        let out = whole.slice(self.pos..end);
        self.pos = end;
        Ok(Some(out))
    }
}

/// In `bytes` (whole batches read or fetched at `from`): the timestamp of the first data record at or after
/// `from`, and the position after the last batch read. Control batches have no records to consume
/// and are stepped over. A batch stamped by the broker (log-append time) gives its records the
/// batch's timestamp.
pub fn first_timestamp(from: u64, bytes: Bytes) -> Result<(Option<i64>, u64), BatchError> {
    let mut position = from;
    for batch in RecordBatch::iter_all(bytes) {
        let batch = batch?;
        let header = *batch.header();
        if header.next_offset() <= position {
            continue;
        }
        if !header.is_control() {
            for record in batch.records()? {
                let record = record?;
                if record.offset >= position {
                    let ts = match header.timestamp_type() {
                        TimestampType::LogAppendTime => header.max_timestamp_ms,
                        TimestampType::CreateTime => record.timestamp_ms,
                    };
                    return Ok((Some(ts), record.offset));
                }
            }
        }
        position = position.max(header.next_offset());
    }
    Ok((None, position))
}
