//! DescribeGroup (key 13): a group's state, members and committed offsets, from its coordinator.
//! Lag needs the partitions' logs, which other brokers may lead: the client adds it (high
//! watermark and the timestamp of the first unconsumed record, each from its partition's leader).
//!
//! ```text
//! request:  string group
//! response: u16 error, string message, string group, string state, i32 group epoch,
//!           string assignor,
//!           [string member id, string instance id, string client id, string host,
//!            i32 member epoch, [string topic] subscription, string regex,
//!            [string topic, [u32 partition]] assigned, [string topic, [u32 partition]] revoking],
//!           [committed offset, as OffsetFetch answers]
//! ```

use super::codec::{Reader, Writer};
use super::offset_fetch::{get_committed, put_committed};
use super::shared::{get_strings, get_topic_partitions, put_strings, put_topic_partitions};
use super::table::Body;
use super::{CommittedOffset, ErrorCode, ProtocolError, TopicPartitions};

/// Versions of DescribeGroup this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeGroupRequest {
    pub group: String,
}

impl Body for DescribeGroupRequest {
    fn encode(&self, w: &mut Writer) {
        w.string(&self.group);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(DescribeGroupRequest {
            group: r.string("group id")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeGroupResponse {
    pub error: ErrorCode,
    pub message: String,
    pub group: String,
    pub state: String,
    pub epoch: i32,
    pub assignor: String,
    pub members: Vec<GroupMemberDescription>,
    pub offsets: Vec<CommittedOffset>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupMemberDescription {
    pub member_id: String,
    pub instance_id: String,
    pub client_id: String,
    pub host: String,
    pub member_epoch: i32,
    pub topics: Vec<String>,
    pub regex: String,
    pub assigned: Vec<TopicPartitions>,
    pub revoking: Vec<TopicPartitions>,
}

impl Body for DescribeGroupResponse {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.error.0);
        w.string(&self.message);
        w.string(&self.group);
        w.string(&self.state);
        w.i32(self.epoch);
        w.string(&self.assignor);
        w.count(self.members.len());
        for m in &self.members {
            w.string(&m.member_id);
            w.string(&m.instance_id);
            w.string(&m.client_id);
            w.string(&m.host);
            w.i32(m.member_epoch);
            put_strings(w, &m.topics);
            w.string(&m.regex);
            put_topic_partitions(w, &m.assigned);
            put_topic_partitions(w, &m.revoking);
        }
        put_committed(w, &self.offsets);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(DescribeGroupResponse {
            error: ErrorCode(r.u16("error")?),
            message: r.string("message")?,
            group: r.string("group id")?,
            state: r.string("state")?,
            epoch: r.i32("group epoch")?,
            assignor: r.string("assignor")?,
            members: r.array(22, "members", |r| {
                Ok(GroupMemberDescription {
                    member_id: r.string("member id")?,
                    instance_id: r.string("instance id")?,
                    client_id: r.string("client id")?,
                    host: r.string("host")?,
                    member_epoch: r.i32("member epoch")?,
                    topics: get_strings(r, "subscribed topic")?,
                    regex: r.string("regex")?,
                    assigned: get_topic_partitions(r, "assigned")?,
                    revoking: get_topic_partitions(r, "revoking")?,
                })
            })?,
            offsets: get_committed(r)?,
        })
    }
}
