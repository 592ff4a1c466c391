//! ListOffsets (key 6): a partition's latest or earliest offset, or the first offset at or after a
//! timestamp. Answered by any replica from its own view.
//!
//! ```text
//! request:  [string topic, [u32 partition, i64 spec]]
//!             spec: -1 latest, -2 earliest, >= 0 a timestamp in ms
//! response: [string topic, [u32 partition, u16 error, i64 offset]]
//!             offset: -1 when no record is at or after the timestamp
//! ```

use super::codec::{Reader, Writer};
use super::table::Body;
use super::{ErrorCode, ProtocolError};

/// Versions of ListOffsets this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

/// Latest offset, for [`ListOffsetsPartition::spec`].
pub const LATEST: i64 = -1;
/// Earliest offset, for [`ListOffsetsPartition::spec`].
pub const EARLIEST: i64 = -2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsRequest {
    pub topics: Vec<ListOffsetsTopic>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsTopic {
    pub name: String,
    pub partitions: Vec<ListOffsetsPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsPartition {
    pub partition: u32,
    /// [`LATEST`], [`EARLIEST`], or a timestamp in ms (the first offset at or after it).
    pub spec: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsResponse {
    pub topics: Vec<ListOffsetsTopicResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsTopicResult {
    pub name: String,
    pub partitions: Vec<ListOffsetsPartitionResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsPartitionResult {
    pub partition: u32,
    pub error: ErrorCode,
    /// -1 when no record is at or after the requested timestamp.
    pub offset: i64,
}

impl Body for ListOffsetsRequest {
    fn encode(&self, w: &mut Writer) {
        w.count(self.topics.len());
        for t in &self.topics {
            w.string(&t.name);
            w.count(t.partitions.len());
            for part in &t.partitions {
                w.u32(part.partition);
                w.i64(part.spec);
            }
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(ListOffsetsRequest {
            topics: r.array(6, "topics", |r| {
                Ok(ListOffsetsTopic {
                    name: r.string("topic name")?,
                    partitions: r.array(12, "partitions", |r| {
                        Ok(ListOffsetsPartition {
                            partition: r.u32("partition")?,
                            spec: r.i64("offset spec")?,
                        })
                    })?,
                })
            })?,
        })
    }
}

impl Body for ListOffsetsResponse {
    fn encode(&self, w: &mut Writer) {
        w.count(self.topics.len());
        for t in &self.topics {
            w.string(&t.name);
            w.count(t.partitions.len());
            for part in &t.partitions {
                w.u32(part.partition);
                w.u16(part.error.0);
                w.i64(part.offset);
            }
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(ListOffsetsResponse {
            topics: r.array(6, "topics", |r| {
                Ok(ListOffsetsTopicResult {
                    name: r.string("topic name")?,
                    partitions: r.array(14, "partitions", |r| {
                        Ok(ListOffsetsPartitionResult {
                            partition: r.u32("partition")?,
                            error: ErrorCode(r.u16("error")?),
                            offset: r.i64("offset")?,
                        })
                    })?,
                })
            })?,
        })
    }
}
