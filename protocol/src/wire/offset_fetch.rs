//! OffsetFetch (key 11): a group's committed offsets, from its coordinator. Every error is
//! retriable or names what to do; a client never takes an error for "no offset" (which is offset
//! -1 with no error) and never jumps to the end of a partition because of one.
//!
//! ```text
//! request:  string group, [string topic, [u32 partition]]   (empty: every committed offset)
//! response: u16 error, string message,
//!           [string topic, u32 partition, i64 offset (-1: none), string metadata,
//!            i64 commit timestamp ms, i32 assignment epoch]
//! ```

use super::codec::{Reader, Writer};
use super::shared::{get_topic_partitions, put_topic_partitions};
use super::table::Body;
use super::{ErrorCode, ProtocolError, TopicPartitions};

/// Versions of OffsetFetch this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetFetchRequest {
    pub group: String,
    /// The partitions to look up; empty: every offset the group has committed.
    pub partitions: Vec<TopicPartitions>,
}

impl Body for OffsetFetchRequest {
    fn encode(&self, w: &mut Writer) {
        w.string(&self.group);
        put_topic_partitions(w, &self.partitions);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(OffsetFetchRequest {
            group: r.string("group id")?,
            partitions: get_topic_partitions(r, "partitions")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetFetchResponse {
    pub error: ErrorCode,
    pub message: String,
    pub offsets: Vec<CommittedOffset>,
}

/// One partition's committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: u32,
    /// The next offset to read; -1 when nothing is committed.
    pub offset: i64,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
    /// The member epoch of the assignment the commit was made under (-1: an admin commit).
    pub assignment_epoch: i32,
}

pub(super) fn put_committed(w: &mut Writer, v: &[CommittedOffset]) {
    w.count(v.len());
    for o in v {
        w.string(&o.topic);
        w.u32(o.partition);
        w.i64(o.offset);
        w.string(&o.metadata);
        w.i64(o.commit_timestamp_ms);
        w.i32(o.assignment_epoch);
    }
}

pub(super) fn get_committed(r: &mut Reader) -> Result<Vec<CommittedOffset>, ProtocolError> {
    r.array(28, "offsets", |r| {
        Ok(CommittedOffset {
            topic: r.string("topic name")?,
            partition: r.u32("partition")?,
            offset: r.i64("offset")?,
            metadata: r.string("metadata")?,
            commit_timestamp_ms: r.i64("commit timestamp")?,
            assignment_epoch: r.i32("assignment epoch")?,
        })
    })
}

impl Body for OffsetFetchResponse {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.error.0);
        w.string(&self.message);
        put_committed(w, &self.offsets);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(OffsetFetchResponse {
            error: ErrorCode(r.u16("error")?),
            message: r.string("message")?,
            offsets: get_committed(r)?,
        })
    }
}
