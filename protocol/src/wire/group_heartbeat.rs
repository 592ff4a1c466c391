//! GroupHeartbeat (key 9): the one call of the consumer-group protocol (after Kafka's KIP-848).
//! A member joins with epoch [`JOIN_EPOCH`], then heartbeats with the epoch and id it was given,
//! listing the partitions it owns; it leaves with [`LEAVE_EPOCH`] (or [`STATIC_LEAVE_EPOCH`]: a
//! static member that will be back keeps its assignment for the session timeout). The coordinator
//! answers with the partitions the member may own now: it revokes (leaves partitions out) before
//! it hands out new ones, and a partition it hands out is owned by nobody else.
//!
//! ```text
//! request:  string group, string member id (empty to join), i32 member epoch,
//!           string instance id (empty: dynamic member), string client id,
//!           [string topic] subscribed topics, string subscription regex (empty: none),
//!           string assignor (empty: the group's, else "uniform"),
//!           u32 session timeout ms (0: the coordinator's default),
//!           u32 processing deadline ms (time from now the member promises progress; 0: none),
//!           [string topic, [u32 partition]] owned partitions
//! response: u16 error, string message, string member id, i32 member epoch,
//!           u32 heartbeat interval ms, u32 session timeout ms,
//!           [string topic, [u32 partition]] assignment (what the member may own now)
//! ```

use super::codec::{Reader, Writer};
use super::shared::{get_strings, get_topic_partitions, put_strings, put_topic_partitions};
use super::table::Body;
use super::{ErrorCode, ProtocolError, TopicPartitions};

/// Versions of GroupHeartbeat this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

/// A member's first heartbeat.
pub const JOIN_EPOCH: i32 = 0;
/// A member leaves the group for good.
pub const LEAVE_EPOCH: i32 = -1;
/// A static member leaves for a restart: it keeps its assignment until its session times out.
pub const STATIC_LEAVE_EPOCH: i32 = -2;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupHeartbeatRequest {
    pub group: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: String,
    pub client_id: String,
    pub topics: Vec<String>,
    pub regex: String,
    pub assignor: String,
    pub session_timeout_ms: u32,
    pub deadline_ms: u32,
    pub owned: Vec<TopicPartitions>,
}

impl Body for GroupHeartbeatRequest {
    fn encode(&self, w: &mut Writer) {
        w.string(&self.group);
        w.string(&self.member_id);
        w.i32(self.member_epoch);
        w.string(&self.instance_id);
        w.string(&self.client_id);
        put_strings(w, &self.topics);
        w.string(&self.regex);
        w.string(&self.assignor);
        w.u32(self.session_timeout_ms);
        w.u32(self.deadline_ms);
        put_topic_partitions(w, &self.owned);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(GroupHeartbeatRequest {
            group: r.string("group id")?,
            member_id: r.string("member id")?,
            member_epoch: r.i32("member epoch")?,
            instance_id: r.string("instance id")?,
            client_id: r.string("client id")?,
            topics: get_strings(r, "subscribed topic")?,
            regex: r.string("subscription regex")?,
            assignor: r.string("assignor")?,
            session_timeout_ms: r.u32("session timeout")?,
            deadline_ms: r.u32("processing deadline")?,
            owned: get_topic_partitions(r, "owned partitions")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupHeartbeatResponse {
    pub error: ErrorCode,
    pub message: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: u32,
    pub session_timeout_ms: u32,
    pub assignment: Vec<TopicPartitions>,
}

impl Body for GroupHeartbeatResponse {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.error.0);
        w.string(&self.message);
        w.string(&self.member_id);
        w.i32(self.member_epoch);
        w.u32(self.heartbeat_interval_ms);
        w.u32(self.session_timeout_ms);
        put_topic_partitions(w, &self.assignment);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(GroupHeartbeatResponse {
            error: ErrorCode(r.u16("error")?),
            message: r.string("message")?,
            member_id: r.string("member id")?,
            member_epoch: r.i32("member epoch")?,
            heartbeat_interval_ms: r.u32("heartbeat interval")?,
            session_timeout_ms: r.u32("session timeout")?,
            assignment: get_topic_partitions(r, "assignment")?,
        })
    }
}
