//! OffsetCommit (key 10): a group member stores the next offset to read for partitions it owns.
//! The coordinator accepts a partition's commit only from a current member that owns it in the
//! current assignment, at a member epoch no older than the one the partition was assigned in
//! (fencing by member epoch *and* per-partition assignment epoch). An admin commit (empty member id,
//! epoch -1) is accepted only while the group has no members.
//!
//! ```text
//! request:  string group, string member id, i32 member epoch,
//!           [string topic, [u32 partition, u64 offset, string metadata]]
//! response: u16 error, string message, [string topic, [u32 partition, u16 error, string message]]
//! ```

use super::codec::{Reader, Writer};
use super::table::Body;
use super::{ErrorCode, ProtocolError};

/// Versions of OffsetCommit this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

/// Longest commit metadata string accepted, in bytes.
pub const MAX_COMMIT_METADATA_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetCommitRequest {
    pub group: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub topics: Vec<OffsetCommitTopic>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetCommitTopic {
    pub topic: String,
    pub partitions: Vec<OffsetCommitPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetCommitPartition {
    pub partition: u32,
    /// The next offset to read.
    pub offset: u64,
    pub metadata: String,
}

impl Body for OffsetCommitRequest {
    fn encode(&self, w: &mut Writer) {
        w.string(&self.group);
        w.string(&self.member_id);
        w.i32(self.member_epoch);
        w.count(self.topics.len());
        for t in &self.topics {
            w.string(&t.topic);
            w.count(t.partitions.len());
            for p in &t.partitions {
                w.u32(p.partition);
                w.u64(p.offset);
                w.string(&p.metadata);
            }
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(OffsetCommitRequest {
            group: r.string("group id")?,
            member_id: r.string("member id")?,
            member_epoch: r.i32("member epoch")?,
            topics: r.array(6, "topics", |r| {
                Ok(OffsetCommitTopic {
                    topic: r.string("topic name")?,
                    partitions: r.array(14, "partitions", |r| {
                        Ok(OffsetCommitPartition {
                            partition: r.u32("partition")?,
                            offset: r.u64("offset")?,
                            metadata: r.string("metadata")?,
                        })
                    })?,
                })
            })?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetCommitResponse {
    /// A whole-request error (no coordinator, unknown member); per-partition errors are below.
    pub error: ErrorCode,
    pub message: String,
    pub topics: Vec<PartitionErrors>,
}

/// Per-partition outcomes of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionErrors {
    pub topic: String,
    pub partitions: Vec<PartitionError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionError {
    pub partition: u32,
    pub error: ErrorCode,
    pub message: String,
}

impl Body for OffsetCommitResponse {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.error.0);
        w.string(&self.message);
        w.count(self.topics.len());
        for t in &self.topics {
            w.string(&t.topic);
            w.count(t.partitions.len());
            for p in &t.partitions {
                w.u32(p.partition);
                w.u16(p.error.0);
                w.string(&p.message);
            }
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(OffsetCommitResponse {
            error: ErrorCode(r.u16("error")?),
            message: r.string("message")?,
            topics: r.array(6, "topics", |r| {
                Ok(PartitionErrors {
                    topic: r.string("topic name")?,
                    partitions: r.array(8, "partitions", |r| {
                        Ok(PartitionError {
                            partition: r.u32("partition")?,
                            error: ErrorCode(r.u16("error")?),
                            message: r.string("message")?,
                        })
                    })?,
                })
            })?,
        })
    }
}
