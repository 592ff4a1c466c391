//! Produce (key 4): appends record batches to partitions, and what the acknowledgement waits for.
//! Record sets travel as the producer built them (whole batches back to back, the bytes the broker
//! stores); this module never looks inside them.
//!
//! ```text
//! request:  i8 acks (0 none, 1 leader, -1 all), u32 timeout ms,
//!           [string topic, [u32 partition, records]]
//! response: [string topic,
//!            [u32 partition, u16 error, string message, u64 base offset, u64 log start]]
//! ```

use bytes::Bytes;

use super::codec::{Reader, Writer};
use super::table::Body;
use super::{ErrorCode, ProtocolError};

/// Versions of Produce this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

/// What a produce acknowledgement waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// No response is sent.
    None,
    /// Answered after the leader appended the batches.
    Leader,
    /// Answered after the batches are committed (one node: flushed to disk; a cluster: replicated to
    /// a quorum).
    All,
}

impl Acks {
    fn to_i8(self) -> i8 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }

    fn from_i8(v: i8) -> Result<Acks, ProtocolError> {
        match v {
            0 => Ok(Acks::None),
            1 => Ok(Acks::Leader),
            -1 => Ok(Acks::All),
            _ => Err(ProtocolError::Invalid("acks")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    pub acks: Acks,
    pub timeout_ms: u32,
    pub topics: Vec<ProduceTopic>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceTopic {
    pub name: String,
    pub partitions: Vec<ProducePartition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartition {
    pub partition: u32,
    /// One or more whole record batches.
    pub records: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceResponse {
    pub topics: Vec<ProduceTopicResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceTopicResult {
    pub name: String,
    pub partitions: Vec<ProducePartitionResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartitionResult {
    pub partition: u32,
    pub error: ErrorCode,
    pub message: String,
    /// Offset of the first record of the first batch.
    pub base_offset: u64,
    pub log_start_offset: u64,
}

impl Body for ProduceRequest {
    fn encode(&self, w: &mut Writer) {
        w.i8(self.acks.to_i8());
        w.u32(self.timeout_ms);
        w.count(self.topics.len());
        for t in &self.topics {
            w.string(&t.name);
            w.count(t.partitions.len());
            for part in &t.partitions {
                w.u32(part.partition);
                w.bytes(&part.records);
            }
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(ProduceRequest {
            acks: Acks::from_i8(r.i8("acks")?)?,
            timeout_ms: r.u32("timeout")?,
            topics: r.array(6, "topics", |r| {
                Ok(ProduceTopic {
                    name: r.string("topic name")?,
                    partitions: r.array(8, "partitions", |r| {
                        Ok(ProducePartition {
                            partition: r.u32("partition")?,
                            records: r.bytes("records")?,
                        })
                    })?,
                })
            })?,
        })
    }
}

impl Body for ProduceResponse {
    fn encode(&self, w: &mut Writer) {
        w.count(self.topics.len());
        for t in &self.topics {
            w.string(&t.name);
            w.count(t.partitions.len());
            for part in &t.partitions {
                w.u32(part.partition);
                w.u16(part.error.0);
                w.string(&part.message);
                w.u64(part.base_offset);
                w.u64(part.log_start_offset);
            }
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(ProduceResponse {
            topics: r.array(6, "topics", |r| {
                Ok(ProduceTopicResult {
                    name: r.string("topic name")?,
                    partitions: r.array(24, "partitions", |r| {
                        Ok(ProducePartitionResult {
                            partition: r.u32("partition")?,
                            error: ErrorCode(r.u16("error")?),
                            message: r.string("message")?,
                            base_offset: r.u64("base offset")?,
                            log_start_offset: r.u64("log start offset")?,
                        })
                    })?,
                })
            })?,
        })
    }
}
