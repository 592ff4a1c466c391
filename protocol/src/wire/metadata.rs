//! Metadata (key 1): the cluster's brokers, its controller, and the named topics' partitions (their
//! leaders, replicas and offsets) and configs. With no topic named it describes every topic: this
//! is how topics are listed.
//!
//! ```text
//! request:  option<[string topic]>
//! response: [u32 node, string host, u16 port] brokers, i32 controller,
//!           [u16 error, string name,
//!             [u16 error, u32 partition, i32 leader, [u32 replica], u64 high watermark,
//!              u64 log start],
//!            [string key, string value] configs] topics
//! ```

use super::codec::{Reader, Writer};
use super::shared::{get_configs, get_strings, put_configs, put_strings};
use super::table::Body;
use super::{ErrorCode, ProtocolError};

/// Versions of Metadata this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

/// Metadata of the named topics, or of every topic when `topics` is `None` (this is also how topics
/// are listed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataRequest {
    pub topics: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataResponse {
    pub brokers: Vec<BrokerInfo>,
    pub controller_id: i32,
    pub topics: Vec<TopicMetadata>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub node_id: u32,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub error: ErrorCode,
    pub name: String,
    pub partitions: Vec<PartitionMetadata>,
    pub configs: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub error: ErrorCode,
    pub partition: u32,
    /// Node id of the leader, -1 if none.
    pub leader: i32,
    pub replicas: Vec<u32>,
    pub high_watermark: u64,
    pub log_start_offset: u64,
}

impl Body for MetadataRequest {
    fn encode(&self, w: &mut Writer) {
        match &self.topics {
            None => w.bool(false),
            Some(t) => {
                w.bool(true);
                put_strings(w, t);
            }
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(MetadataRequest {
            topics: if r.bool("topics flag")? {
                Some(get_strings(r, "topic name")?)
            } else {
                None
            },
        })
    }
}

impl Body for MetadataResponse {
    fn encode(&self, w: &mut Writer) {
        w.count(self.brokers.len());
        for b in &self.brokers {
            w.u32(b.node_id);
            w.string(&b.host);
            w.u16(b.port);
        }
        w.i32(self.controller_id);
        w.count(self.topics.len());
        for t in &self.topics {
            w.u16(t.error.0);
            w.string(&t.name);
            w.count(t.partitions.len());
            for p in &t.partitions {
                w.u16(p.error.0);
                w.u32(p.partition);
                w.i32(p.leader);
                w.count(p.replicas.len());
                for r in &p.replicas {
                    w.u32(*r);
                }
                w.u64(p.high_watermark);
                w.u64(p.log_start_offset);
            }
            put_configs(w, &t.configs);
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(MetadataResponse {
            brokers: r.array(8, "brokers", |r| {
                Ok(BrokerInfo {
                    node_id: r.u32("node id")?,
                    host: r.string("host")?,
                    port: r.u16("port")?,
                })
            })?,
            controller_id: r.i32("controller id")?,
            topics: r.array(12, "topics", |r| {
                Ok(TopicMetadata {
                    error: ErrorCode(r.u16("error")?),
                    name: r.string("topic name")?,
                    // A partition without replicas takes 30 bytes (see the regression test).
                    partitions: r.array(30, "partitions", |r| {
                        Ok(PartitionMetadata {
                            error: ErrorCode(r.u16("error")?),
                            partition: r.u32("partition")?,
                            leader: r.i32("leader")?,
                            replicas: r.array(4, "replicas", |r| r.u32("replica"))?,
                            high_watermark: r.u64("high watermark")?,
                            log_start_offset: r.u64("log start offset")?,
                        })
                    })?,
                    configs: get_configs(r)?,
                })
            })?,
        })
    }
}
