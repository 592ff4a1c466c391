//! DescribeReplicas (key 31, admin and broker to broker): what one broker holds, as that broker
//! sees it — the metadata group's raft state there, its partition replicas counted by role, and
//! (when asked) each replica's raft state, log start and end, high watermark and bytes on disk.
//! Like Kafka's DescribeLogDirs it answers for the receiving broker only: a caller that wants the
//! cluster asks every broker (the admin API's `GET /v1/cluster` and `GET /v1/topics/{name}` do).
//!
//! ```text
//! request:  [string topic] (empty: every hosted replica), bool partitions
//! response: u16 error, string message, u32 node id, raft metadata,
//!           u32 hosted, u32 leading, u32 following, u32 without leader,
//!           [string topic, [u32 partition, raft, u64 log start, u64 log end,
//!                           u64 high watermark, u64 size bytes]]
//! raft:     u64 term, u8 role, i64 leader, i64 last log index, i64 committed index,
//!           i64 applied index
//! ```
//!
//! `partitions` false answers the summary only (no topic array), so a cluster overview costs the
//! same on a broker with ten replicas as on one with ten thousand. Topics the broker hosts no
//! replica of are left out. Raft roles: 0 leader, 1 follower, 2 candidate, 3 learner,
//! 4 shutdown; a leader or index that is not known is -1.

use super::codec::{Reader, Writer};
use super::table::Body;
use super::{ErrorCode, ProtocolError};

/// Versions of DescribeReplicas this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeReplicasRequest {
    /// Only these topics; empty: every replica the broker hosts.
    pub topics: Vec<String>,
    /// Whether to list the replicas one by one (false: the counts only).
    pub partitions: bool,
}

impl Body for DescribeReplicasRequest {
    fn encode(&self, w: &mut Writer) {
        w.count(self.topics.len());
        for t in &self.topics {
            w.string(t);
        }
        w.bool(self.partitions);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(DescribeReplicasRequest {
            topics: r.array(2, "topics", |r| r.string("topic"))?,
            partitions: r.bool("partitions")?,
        })
    }
}

/// A raft group member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RaftRole {
    Leader,
    #[default]
    Follower,
    Candidate,
    Learner,
    Shutdown,
}

impl RaftRole {
    /// The name the admin API and the CLI show.
    pub fn name(self) -> &'static str {
        match self {
            RaftRole::Leader => "leader",
            RaftRole::Follower => "follower",
            RaftRole::Candidate => "candidate",
            RaftRole::Learner => "learner",
            RaftRole::Shutdown => "shutdown",
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            RaftRole::Leader => 0,
            RaftRole::Follower => 1,
            RaftRole::Candidate => 2,
            RaftRole::Learner => 3,
            RaftRole::Shutdown => 4,
        }
    }

    fn from_u8(v: u8) -> Result<Self, ProtocolError> {
        Ok(match v {
            0 => RaftRole::Leader,
            1 => RaftRole::Follower,
            2 => RaftRole::Candidate,
            3 => RaftRole::Learner,
            4 => RaftRole::Shutdown,
            _ => return Err(ProtocolError::Invalid("raft role")),
        })
    }
}

/// One raft group's state on the answering broker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RaftState {
    pub term: u64,
    pub role: RaftRole,
    /// The leader's broker id, if known.
    pub leader: Option<u64>,
    pub last_log_index: Option<u64>,
    /// The last index this broker knows committed.
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
}

/// Bytes of an encoded [`RaftState`].
const RAFT_STATE_BYTES: usize = 8 + 1 + 4 * 8;

fn put_opt(w: &mut Writer, v: Option<u64>) {
    // Indexes and broker ids stay far below i64::MAX; one that did not would read back as unknown.
    w.i64(v.and_then(|v| i64::try_from(v).ok()).unwrap_or(-1));
}

fn get_opt(r: &mut Reader, what: &'static str) -> Result<Option<u64>, ProtocolError> {
    match r.i64(what)? {
        -1 => Ok(None),
        v => u64::try_from(v)
            .map(Some)
            .map_err(|_| ProtocolError::Invalid(what)),
    }
}

impl RaftState {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.term);
        w.u8(self.role.to_u8());
        put_opt(w, self.leader);
        put_opt(w, self.last_log_index);
        put_opt(w, self.committed_index);
        put_opt(w, self.applied_index);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(RaftState {
            term: r.u64("term")?,
            role: RaftRole::from_u8(r.u8("raft role")?)?,
            leader: get_opt(r, "leader")?,
            last_log_index: get_opt(r, "last log index")?,
            committed_index: get_opt(r, "committed index")?,
            applied_index: get_opt(r, "applied index")?,
        })
    }
}

/// One partition replica on the answering broker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaState {
    pub partition: u32,
    pub raft: RaftState,
    pub log_start_offset: u64,
    /// The end of its log, committed or not.
    pub log_end_offset: u64,
    pub high_watermark: u64,
    /// Bytes of its segment files on disk.
    pub size_bytes: u64,
}

/// The replicas of one topic on the answering broker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicReplicas {
    pub topic: String,
    pub partitions: Vec<ReplicaState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeReplicasResponse {
    pub error: ErrorCode,
    pub message: String,
    pub node_id: u32,
    pub metadata: RaftState,
    pub hosted: u32,
    pub leading: u32,
    pub following: u32,
    /// Hosted replicas that know no leader.
    pub without_leader: u32,
    pub topics: Vec<TopicReplicas>,
}

impl Body for DescribeReplicasResponse {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.error.0);
        w.string(&self.message);
        w.u32(self.node_id);
        self.metadata.encode(w);
        w.u32(self.hosted);
        w.u32(self.leading);
        w.u32(self.following);
        w.u32(self.without_leader);
        w.count(self.topics.len());
        for t in &self.topics {
            w.string(&t.topic);
            w.count(t.partitions.len());
            for p in &t.partitions {
                w.u32(p.partition);
                p.raft.encode(w);
                w.u64(p.log_start_offset);
                w.u64(p.log_end_offset);
                w.u64(p.high_watermark);
                w.u64(p.size_bytes);
            }
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(DescribeReplicasResponse {
            error: ErrorCode(r.u16("error")?),
            message: r.string("message")?,
            node_id: r.u32("node id")?,
            metadata: RaftState::decode(r)?,
            hosted: r.u32("hosted")?,
            leading: r.u32("leading")?,
            following: r.u32("following")?,
            without_leader: r.u32("without leader")?,
            topics: r.array(6, "topics", |r| {
                Ok(TopicReplicas {
                    topic: r.string("topic")?,
                    partitions: r.array(4 + RAFT_STATE_BYTES + 32, "partitions", |r| {
                        Ok(ReplicaState {
                            partition: r.u32("partition")?,
                            raft: RaftState::decode(r)?,
                            log_start_offset: r.u64("log start offset")?,
                            log_end_offset: r.u64("log end offset")?,
                            high_watermark: r.u64("high watermark")?,
                            size_bytes: r.u64("size bytes")?,
                        })
                    })?,
                })
            })?,
        })
    }
}
