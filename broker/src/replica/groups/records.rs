//! The records of the internal `__consumer_offsets` topic: keys and values, encoded and decoded.
//! Pure: no I/O, no state. The topic is compacted, so each key's latest value is what counts and a
//! null value (tombstone) deletes the key.
//!
//! ```text
//! key:   u8 kind, string group, then by kind:
//!          1 offset:  string topic, u32 partition
//!          2 group:   (nothing)
//!          3 member:  string member id
//! value: u8 version (0), then the kind's fields (see the value types)
//! ```
//!
//! A record the coordinator wrote is always decodable by the same version; one that is not (a newer
//! version's, or damaged bytes that passed the CRC) is reported by the caller and skipped, never a
//! panic.

use bytes::Bytes;
use sluice_protocol::wire::codec::{concat, Reader, Writer};
use sluice_protocol::wire::ProtocolError;

const KIND_OFFSET: u8 = 1;
const KIND_GROUP: u8 = 2;
const KIND_MEMBER: u8 = 3;
const VALUE_VERSION: u8 = 0;

/// What a record is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    Offset {
        group: String,
        topic: String,
        partition: u32,
    },
    Group {
        group: String,
    },
    Member {
        group: String,
        member_id: String,
    },
}

impl Key {
    pub fn group(&self) -> &str {
        match self {
            Key::Offset { group, .. } | Key::Group { group } | Key::Member { group, .. } => group,
        }
    }

    pub fn encode(&self) -> Bytes {
        let mut w = Writer::new();
        match self {
            Key::Offset {
                group,
                topic,
                partition,
            } => {
                w.u8(KIND_OFFSET);
                w.string(group);
                w.string(topic);
                w.u32(*partition);
            }
            Key::Group { group } => {
                w.u8(KIND_GROUP);
                w.string(group);
            }
            Key::Member { group, member_id } => {
                w.u8(KIND_MEMBER);
                w.string(group);
                w.string(member_id);
            }
        }
        concat(&w.finish())
    }

    pub fn decode(b: Bytes) -> Result<Key, ProtocolError> {
        let mut r = Reader::new(b);
        let kind = r.u8("record kind")?;
        let group = r.string("group id")?;
        let key = match kind {
            KIND_OFFSET => Key::Offset {
                group,
                topic: r.string("topic")?,
                partition: r.u32("partition")?,
            },
            KIND_GROUP => Key::Group { group },
            KIND_MEMBER => Key::Member {
                group,
                member_id: r.string("member id")?,
            },
            _ => return Err(ProtocolError::Invalid("offsets record kind")),
        };
        r.finish()?;
        Ok(key)
    }
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    /// The next offset to read.
    pub offset: u64,
    pub metadata: String,
    pub commit_ms: i64,
    /// The member epoch the committing member held the partition under (-1: admin).
    pub epoch: i32,
}

/// A partition in an assignment, with the member epoch it was assigned in.
pub type Assigned = (String, u32, i32);

/// A group's own record: its epoch and what its target assignment was computed from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupValue {
    /// Bumped whenever the target assignment is recomputed.
    pub epoch: i32,
    pub assignor: String,
    /// When the group last became empty (its offsets expire from then); -1 while it has members.
    pub empty_since_ms: i64,
    /// Offset resets waiting for their partitions to be released: (topic, partition, offset).
    pub resetting: Vec<(String, u32, u64)>,
    /// Partition counts of the topics the target assignment was computed over.
    pub topics: Vec<(String, u32)>,
    /// The group's own session for members that ask for none (0: the broker's default).
    pub session_timeout_ms: u32,
    /// The group's own heartbeat interval (0: the broker's default).
    pub heartbeat_interval_ms: u32,
}

/// A member's record: who it is, what it subscribes to, and its assignment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberValue {
    pub instance_id: String,
    pub client_id: String,
    pub host: String,
    pub topics: Vec<String>,
    pub regex: String,
    /// The assignor the member asked for (empty: no preference).
    pub assignor: String,
    pub session_timeout_ms: u32,
    /// The group epoch the member has reconciled to.
    pub epoch: i32,
    /// What the member may own now.
    pub assigned: Vec<Assigned>,
    /// What it must give up and has not yet acknowledged giving up (still its own until then).
    pub revoking: Vec<Assigned>,
    /// Its part of the group's target assignment.
    pub target: Vec<(String, u32)>,
}

/// A decoded value of any kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Offset(OffsetValue),
    Group(GroupValue),
    Member(MemberValue),
}

fn put_tps(w: &mut Writer, v: &[Assigned]) {
    w.count(v.len());
    for (t, p, e) in v {
        w.string(t);
        w.u32(*p);
        w.i32(*e);
    }
}

fn get_tps(r: &mut Reader, what: &'static str) -> Result<Vec<Assigned>, ProtocolError> {
    r.array(10, what, |r| {
        Ok((r.string("topic")?, r.u32("partition")?, r.i32("epoch")?))
    })
}

impl Value {
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::new();
        w.u8(VALUE_VERSION);
        match self {
            Value::Offset(o) => {
                w.u64(o.offset);
                w.string(&o.metadata);
                w.i64(o.commit_ms);
                w.i32(o.epoch);
            }
            Value::Group(g) => {
                w.i32(g.epoch);
                w.string(&g.assignor);
                w.i64(g.empty_since_ms);
                w.count(g.resetting.len());
                for (t, p, o) in &g.resetting {
                    w.string(t);
                    w.u32(*p);
                    w.u64(*o);
                }
                w.count(g.topics.len());
                for (t, n) in &g.topics {
                    w.string(t);
                    w.u32(*n);
                }
                w.u32(g.session_timeout_ms);
                w.u32(g.heartbeat_interval_ms);
            }
            Value::Member(m) => {
                w.string(&m.instance_id);
                w.string(&m.client_id);
                w.string(&m.host);
                w.count(m.topics.len());
                for t in &m.topics {
                    w.string(t);
                }
                w.string(&m.regex);
                w.string(&m.assignor);
                w.u32(m.session_timeout_ms);
                w.i32(m.epoch);
                put_tps(&mut w, &m.assigned);
                put_tps(&mut w, &m.revoking);
                w.count(m.target.len());
                for (t, p) in &m.target {
                    w.string(t);
                    w.u32(*p);
                }
            }
        }
        concat(&w.finish())
    }

    /// Decodes the value of a record whose key is `key`.
    pub fn decode(key: &Key, b: Bytes) -> Result<Value, ProtocolError> {
        let mut r = Reader::new(b);
        if r.u8("value version")? != VALUE_VERSION {
            return Err(ProtocolError::Invalid("offsets record value version"));
        }
        let v = match key {
            Key::Offset { .. } => Value::Offset(OffsetValue {
                offset: r.u64("offset")?,
                metadata: r.string("metadata")?,
                commit_ms: r.i64("commit time")?,
                epoch: r.i32("epoch")?,
            }),
            Key::Group { .. } => Value::Group(GroupValue {
                epoch: r.i32("group epoch")?,
                assignor: r.string("assignor")?,
                empty_since_ms: r.i64("empty since")?,
                resetting: r.array(14, "resetting", |r| {
                    Ok((r.string("topic")?, r.u32("partition")?, r.u64("offset")?))
                })?,
                topics: r.array(6, "topics", |r| Ok((r.string("topic")?, r.u32("count")?)))?,
                session_timeout_ms: r.u32("group session timeout")?,
                heartbeat_interval_ms: r.u32("group heartbeat interval")?,
            }),
            Key::Member { .. } => Value::Member(MemberValue {
                instance_id: r.string("instance id")?,
                client_id: r.string("client id")?,
                host: r.string("host")?,
                topics: r.array(2, "topics", |r| r.string("topic"))?,
                regex: r.string("regex")?,
                assignor: r.string("assignor")?,
                session_timeout_ms: r.u32("session timeout")?,
                epoch: r.i32("member epoch")?,
                assigned: get_tps(&mut r, "assigned")?,
                revoking: get_tps(&mut r, "revoking")?,
                target: r.array(6, "target", |r| {
                    Ok((r.string("topic")?, r.u32("partition")?))
                })?,
            }),
        };
        r.finish()?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind round-trips, and truncated or padded bytes are errors, never panics.
    #[test]
    fn records_round_trip_and_damage_is_an_error() {
        let cases = vec![
            (
                Key::Offset {
                    group: "g".into(),
                    topic: "t".into(),
                    partition: 3,
                },
                Value::Offset(OffsetValue {
                    offset: 42,
                    metadata: "m".into(),
                    commit_ms: 7,
                    epoch: 2,
                }),
            ),
            (
                Key::Group { group: "g".into() },
                Value::Group(GroupValue {
                    epoch: 5,
                    assignor: "uniform".into(),
                    empty_since_ms: -1,
                    resetting: vec![("t".into(), 1, 9)],
                    topics: vec![("t".into(), 12)],
                    session_timeout_ms: 30_000,
                    heartbeat_interval_ms: 0,
                }),
            ),
            (
                Key::Member {
                    group: "g".into(),
                    member_id: "m-1".into(),
                },
                Value::Member(MemberValue {
                    instance_id: "i".into(),
                    client_id: "c".into(),
                    host: "h".into(),
                    topics: vec!["t".into()],
                    regex: "^t.*".into(),
                    assignor: "range".into(),
                    session_timeout_ms: 45_000,
                    epoch: 4,
                    assigned: vec![("t".into(), 0, 3)],
                    revoking: vec![("t".into(), 1, 2)],
                    target: vec![("t".into(), 0)],
                }),
            ),
        ];
        for (k, v) in cases {
            let kb = k.encode();
            assert_eq!(Key::decode(kb.clone()).unwrap(), k);
            let vb = v.encode();
            assert_eq!(Value::decode(&k, vb.clone()).unwrap(), v);
            for cut in 0..vb.len() {
                assert!(Value::decode(&k, vb.slice(..cut)).is_err(), "cut at {cut}");
            }
            for cut in 0..kb.len() {
                assert!(Key::decode(kb.slice(..cut)).is_err(), "cut at {cut}");
            }
            let mut padded = vb.to_vec();
            padded.push(0);
            assert!(Value::decode(&k, padded.into()).is_err());
        }
    }
}
