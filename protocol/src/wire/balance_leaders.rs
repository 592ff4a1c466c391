//! BalanceLeaders (key 30, admin and broker to broker): moves each partition's leadership to its
//! preferred replica (the first of its replicas) where that replica is up and in sync, and reports
//! per partition what happened. Any broker answers for the whole cluster: it asks every other
//! broker for the partitions that broker leads (the same request with `local` set) and merges the
//! answers.
//!
//! ```text
//! request:  bool local
//! response: u16 error, string message,
//!           [string topic, u32 partition, i32 preferred, i32 leader before, i32 leader,
//!            u8 outcome, string reason]
//! ```
//!
//! Broker ids are -1 when unknown; outcome 0 is moved, 1 already preferred, 2 skipped (`reason`
//! says why; empty otherwise).

use super::codec::{Reader, Writer};
use super::table::Body;
use super::{ErrorCode, ProtocolError};

/// Versions of BalanceLeaders this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BalanceLeadersRequest {
    /// Only the partitions the receiving broker leads (what brokers ask each other); a client asks
    /// with `false`, for the whole cluster.
    pub local: bool,
}

impl Body for BalanceLeadersRequest {
    fn encode(&self, w: &mut Writer) {
        w.bool(self.local);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(BalanceLeadersRequest {
            local: r.bool("local")?,
        })
    }
}

/// What happened to one partition's leadership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeaderMoveOutcome {
    Moved,
    AlreadyPreferred,
    #[default]
    Skipped,
}

impl LeaderMoveOutcome {
    fn to_u8(self) -> u8 {
        match self {
            LeaderMoveOutcome::Moved => 0,
            LeaderMoveOutcome::AlreadyPreferred => 1,
            LeaderMoveOutcome::Skipped => 2,
        }
    }

    fn from_u8(v: u8) -> Result<Self, ProtocolError> {
        match v {
            0 => Ok(LeaderMoveOutcome::Moved),
            1 => Ok(LeaderMoveOutcome::AlreadyPreferred),
            2 => Ok(LeaderMoveOutcome::Skipped),
            _ => Err(ProtocolError::Invalid("leader move outcome")),
        }
    }
}

/// One partition in a [`BalanceLeadersResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaderMove {
    pub topic: String,
    pub partition: u32,
    /// The preferred leader's broker id, -1 when the partition has no replicas.
    pub preferred: i32,
    /// The leader when the balance started, -1 when none was known.
    pub leader_before: i32,
    /// The leader when the balance ended, -1 when none is known.
    pub leader: i32,
    pub outcome: LeaderMoveOutcome,
    /// Why it was skipped; empty otherwise.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BalanceLeadersResponse {
    pub error: ErrorCode,
    pub message: String,
    pub partitions: Vec<LeaderMove>,
}

impl Body for BalanceLeadersResponse {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.error.0);
        w.string(&self.message);
        w.count(self.partitions.len());
        for p in &self.partitions {
            w.string(&p.topic);
            w.u32(p.partition);
            w.i32(p.preferred);
            w.i32(p.leader_before);
            w.i32(p.leader);
            w.u8(p.outcome.to_u8());
            w.string(&p.reason);
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(BalanceLeadersResponse {
            error: ErrorCode(r.u16("error")?),
            message: r.string("message")?,
            partitions: r.array(21, "partitions", |r| {
                Ok(LeaderMove {
                    topic: r.string("topic")?,
                    partition: r.u32("partition")?,
                    preferred: r.i32("preferred leader")?,
                    leader_before: r.i32("leader before")?,
                    leader: r.i32("leader")?,
                    outcome: LeaderMoveOutcome::from_u8(r.u8("outcome")?)?,
                    reason: r.string("reason")?,
                })
            })?,
        })
    }
}
