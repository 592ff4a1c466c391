//! CreateTopics (key 2): creates topics with their partition count, replication factor and configs.
//! The configs travel as strings; the broker validates them, this module never does.
//!
//! ```text
//! request:  [string name, u32 partitions, u16 replication factor,
//!            [string key, string value] configs]
//! response: [string name, u16 error, string message]   (TopicResults, shared with DeleteTopics)
//! ```

use super::codec::{Reader, Writer};
use super::shared::{get_configs, put_configs};
use super::table::Body;
use super::ProtocolError;

/// Versions of CreateTopics this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicsRequest {
    pub topics: Vec<NewTopic>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u16,
    /// Topic settings as strings (`retention.ms`, `retention.bytes`, `segment.bytes`,
    /// `cleanup.policy`), validated by the broker.
    pub configs: Vec<(String, String)>,
}

impl Body for CreateTopicsRequest {
    fn encode(&self, w: &mut Writer) {
        w.count(self.topics.len());
        for t in &self.topics {
            w.string(&t.name);
            w.u32(t.partitions);
            w.u16(t.replication_factor);
            put_configs(w, &t.configs);
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(CreateTopicsRequest {
            topics: r.array(12, "topics", |r| {
                Ok(NewTopic {
                    name: r.string("topic name")?,
                    partitions: r.u32("partitions")?,
                    replication_factor: r.u16("replication factor")?,
                    configs: get_configs(r)?,
                })
            })?,
        })
    }
}
