//! The groups of one `__consumer_offsets` partition as its records say they are: per group its
//! own record (epoch, assignor, pending resets), its members and its committed offsets. Built the
//! same way on every replica by applying committed records in log order; carried in raft snapshots
//! as the list of live records. Pure: it never decides anything (the coordinator does) and never
//! does I/O.

use std::collections::BTreeMap;

use bytes::Bytes;
use sluice_protocol::wire::codec::{concat, Reader, Writer};
use sluice_protocol::wire::ProtocolError;

use super::records::{GroupValue, Key, MemberValue, OffsetValue, Value};

/// A topic partition.
pub type Tp = (String, u32);

/// One group as its records describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupModel {
    /// `None` until the coordinator first writes the group's record.
    pub meta: Option<GroupValue>,
    pub members: BTreeMap<String, MemberValue>,
    pub offsets: BTreeMap<Tp, OffsetValue>,
}

/// The group states a client sees.
pub const STATE_EMPTY: &str = "Empty";
pub const STATE_RECONCILING: &str = "Reconciling";
pub const STATE_STABLE: &str = "Stable";

impl GroupModel {
    pub fn epoch(&self) -> i32 {
        self.meta.as_ref().map_or(0, |m| m.epoch)
    }

    /// `Empty` without members; `Stable` when every member owns exactly its target at the group
    /// epoch; `Reconciling` otherwise.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            return STATE_EMPTY;
        }
        let epoch = self.epoch();
        let settled = self.members.values().all(|m| {
            m.epoch == epoch
                && m.revoking.is_empty()
                && m.assigned.len() == m.target.len()
                && m.assigned
                    .iter()
                    .all(|(t, p, _)| m.target.iter().any(|(tt, pp)| tt == t && pp == p))
        });
        if settled {
            STATE_STABLE
        } else {
            STATE_RECONCILING
        }
    }

    /// The member that owns `tp` now (assigned, or revoking and not yet released).
    pub fn owner_of(&self, topic: &str, partition: u32) -> Option<&str> {
        self.members.iter().find_map(|(id, m)| {
            m.assigned
                .iter()
                .chain(&m.revoking)
                .any(|(t, p, _)| t == topic && *p == partition)
                .then_some(id.as_str())
        })
    }

    fn is_blank(&self) -> bool {
        self.meta.is_none() && self.members.is_empty() && self.offsets.is_empty()
    }
}

/// Every group of one offsets partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Groups {
    pub groups: BTreeMap<String, GroupModel>,
}

impl Groups {
    pub fn get(&self, group: &str) -> Option<&GroupModel> {
        self.groups.get(group)
    }

    /// Applies one record (`None`: a tombstone).
    pub fn apply(&mut self, key: &Key, value: Option<&Value>) {
        let g = self.groups.entry(key.group().to_string()).or_default();
        match (key, value) {
            (
                Key::Offset {
                    topic, partition, ..
                },
                Some(Value::Offset(v)),
            ) => {
                g.offsets.insert((topic.clone(), *partition), v.clone());
            }
            (
                Key::Offset {
                    topic, partition, ..
                },
                None,
            ) => {
                g.offsets.remove(&(topic.clone(), *partition));
            }
            (Key::Group { .. }, Some(Value::Group(v))) => g.meta = Some(v.clone()),
            (Key::Group { .. }, None) => g.meta = None,
            (Key::Member { member_id, .. }, Some(Value::Member(v))) => {
                g.members.insert(member_id.clone(), v.clone());
            }
            (Key::Member { member_id, .. }, None) => {
                g.members.remove(member_id);
            }
            // `Value::decode` picks the value's kind from the key, and the coordinator pairs them
            // the same way: a mismatch is a bug here, not bad input.
            (k, v) => panic!("offsets record kind mismatch: {k:?} with {v:?}"),
        }
        if g.is_blank() {
            self.groups.remove(key.group());
        }
    }

    /// Applies a record as stored: a key and an optional value.
    pub fn apply_stored(&mut self, key: Bytes, value: Option<Bytes>) -> Result<(), ProtocolError> {
        let key = Key::decode(key)?;
        let value = value.map(|v| Value::decode(&key, v)).transpose()?;
        self.apply(&key, value.as_ref());
        Ok(())
    }

    /// Every live record, for a snapshot: applying them to an empty state rebuilds this one.
    pub fn records(&self) -> Vec<(Key, Value)> {
        let mut out = Vec::new();
        for (name, g) in &self.groups {
            if let Some(meta) = &g.meta {
                out.push((
                    Key::Group {
                        group: name.clone(),
                    },
                    Value::Group(meta.clone()),
                ));
            }
            for (id, m) in &g.members {
                out.push((
                    Key::Member {
                        group: name.clone(),
                        member_id: id.clone(),
                    },
                    Value::Member(m.clone()),
                ));
            }
            for ((topic, partition), o) in &g.offsets {
                out.push((
                    Key::Offset {
                        group: name.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                    },
                    Value::Offset(o.clone()),
                ));
            }
        }
        out
    }

    /// `[bytes key, bytes value]` of every live record.
    pub fn encode(&self) -> Bytes {
        let records = self.records();
        let mut w = Writer::new();
        w.count(records.len());
        for (k, v) in records {
            w.bytes(&k.encode());
            w.bytes(&v.encode());
        }
        concat(&w.finish())
    }

    pub fn decode(b: Bytes) -> Result<Groups, ProtocolError> {
        let mut groups = Groups::default();
        if b.is_empty() {
            return Ok(groups);
        }
        let mut r = Reader::new(b);
        let n = r.count(8, "records")?;
        for _ in 0..n {
            let k = r.bytes("key")?;
            let v = r.bytes("value")?;
            groups.apply_stored(k, Some(v))?;
        }
        r.finish()?;
        Ok(groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(g: &str, t: &str, p: u32) -> Key {
        Key::Offset {
            group: g.into(),
            topic: t.into(),
            partition: p,
        }
    }

    /// A snapshot rebuilds the same state, and tombstones delete (a group with nothing left goes).
    #[test]
    fn snapshot_round_trips_and_tombstones_delete() {
        let mut s = Groups::default();
        let v = Value::Offset(OffsetValue {
            offset: 5,
            metadata: String::new(),
            commit_ms: 1,
            epoch: 1,
        });
        s.apply(&offset("g", "t", 0), Some(&v));
        s.apply(&offset("g", "t", 1), Some(&v));
        s.apply(
            &Key::Member {
                group: "h".into(),
                member_id: "m".into(),
            },
            Some(&Value::Member(MemberValue::default())),
        );
        let back = Groups::decode(s.encode()).unwrap();
        assert_eq!(back, s);
        s.apply(&offset("g", "t", 0), None);
        assert_eq!(s.get("g").unwrap().offsets.len(), 1);
        s.apply(&offset("g", "t", 1), None);
        assert!(s.get("g").is_none(), "a group with nothing left is gone");
        assert!(Groups::decode(Bytes::from_static(&[9, 0, 0, 0])).is_err());
    }
}
