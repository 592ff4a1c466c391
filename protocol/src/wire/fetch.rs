//! Fetch (key 5): reads whole stored batches from partitions, from an offset on. The record bytes
//! are passed through as stored (zero-copy on the way out, see [`super::codec::Writer`]); this
//! module never looks inside them.
//!
//! ```text
//! request:  u32 max wait ms, u32 min bytes, u32 max bytes,
//!           [string topic, [u32 partition, u64 offset, u32 partition max bytes]]
//! response: [string topic, [u32 partition, u16 error, u64 high watermark, u64 log start, records]]
//! ```

use bytes::Bytes;

use super::codec::{Reader, Writer};
use super::table::Body;
use super::{ErrorCode, ProtocolError};

/// Versions of Fetch this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// Longest the broker may hold the request waiting for `min_bytes`.
    pub max_wait_ms: u32,
    pub min_bytes: u32,
    /// Cap on the whole response's record bytes.
    pub max_bytes: u32,
    pub topics: Vec<FetchTopic>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTopic {
    pub name: String,
    pub partitions: Vec<FetchPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartition {
    pub partition: u32,
    pub offset: u64,
    pub max_bytes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    pub topics: Vec<FetchTopicResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTopicResult {
    pub name: String,
    pub partitions: Vec<FetchPartitionResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartitionResult {
    pub partition: u32,
    pub error: ErrorCode,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    /// Whole stored batches, exactly as stored. The first may start before the requested offset.
    pub records: Bytes,
}

impl Body for FetchRequest {
    fn encode(&self, w: &mut Writer) {
        w.u32(self.max_wait_ms);
        w.u32(self.min_bytes);
        w.u32(self.max_bytes);
        w.count(self.topics.len());
        for t in &self.topics {
            w.string(&t.name);
            w.count(t.partitions.len());
            for part in &t.partitions {
                w.u32(part.partition);
                w.u64(part.offset);
                w.u32(part.max_bytes);
            }
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(FetchRequest {
            max_wait_ms: r.u32("max wait")?,
            min_bytes: r.u32("min bytes")?,
            max_bytes: r.u32("max bytes")?,
            topics: r.array(6, "topics", |r| {
                Ok(FetchTopic {
                    name: r.string("topic name")?,
                    partitions: r.array(16, "partitions", |r| {
                        Ok(FetchPartition {
                            partition: r.u32("partition")?,
                            offset: r.u64("offset")?,
                            max_bytes: r.u32("partition max bytes")?,
                        })
                    })?,
                })
            })?,
        })
    }
}

impl Body for FetchResponse {
    fn encode(&self, w: &mut Writer) {
        w.count(self.topics.len());
        for t in &self.topics {
            w.string(&t.name);
            w.count(t.partitions.len());
            for part in &t.partitions {
                w.u32(part.partition);
                w.u16(part.error.0);
                w.u64(part.high_watermark);
                w.u64(part.log_start_offset);
                w.bytes(&part.records);
            }
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(FetchResponse {
            topics: r.array(6, "topics", |r| {
                Ok(FetchTopicResult {
                    name: r.string("topic name")?,
                    partitions: r.array(26, "partitions", |r| {
                        Ok(FetchPartitionResult {
                            partition: r.u32("partition")?,
                            error: ErrorCode(r.u16("error")?),
                            high_watermark: r.u64("high watermark")?,
                            log_start_offset: r.u64("log start offset")?,
                            records: r.bytes("records")?,
                        })
                    })?,
                })
            })?,
        })
    }
}
