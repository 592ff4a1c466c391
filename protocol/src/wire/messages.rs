//! Request and response bodies, one pair per [`ApiKey`], with their encoders and decoders.
//!
//! Conventions: strings are `u16` length + UTF-8, byte strings `u32` length + bytes, arrays `u32`
//! count + elements, optional values a `bool` flag then the value. Partition record sets are one or
//! more whole record batches back to back (the same bytes the broker stores).

use bytes::Bytes;

use super::codec::{Reader, Writer};
use super::{ApiKey, ErrorCode, ProtocolError};

/// Latest offset, for [`ListOffsetsPartition::spec`].
pub const LATEST: i64 = -1;
/// Earliest offset, for [`ListOffsetsPartition::spec`].
pub const EARLIEST: i64 = -2;

/// What a produce acknowledgement waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// No response is sent.
    None,
    /// Answered after the leader appended the batches.
    Leader,
    /// Answered after the batches are committed (one node: flushed to disk; a cluster: replicated to
    /// a quorum).
    All,
}

impl Acks {
    fn to_i8(self) -> i8 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }

    fn from_i8(v: i8) -> Result<Acks, ProtocolError> {
        match v {
            0 => Ok(Acks::None),
            1 => Ok(Acks::Leader),
            -1 => Ok(Acks::All),
            _ => Err(ProtocolError::Invalid("acks")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    ApiVersions,
    Metadata(MetadataRequest),
    CreateTopics(CreateTopicsRequest),
    DeleteTopics(DeleteTopicsRequest),
    Produce(ProduceRequest),
    Fetch(FetchRequest),
    ListOffsets(ListOffsetsRequest),
    Raft(RaftRequest),
    AddBroker(AddBrokerRequest),
    AlterReplicas(AlterReplicasRequest),
    MetadataCommand(MetadataCommandRequest),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    ApiVersions(ApiVersionsResponse),
    Metadata(MetadataResponse),
    CreateTopics(TopicResults),
    DeleteTopics(TopicResults),
    Produce(ProduceResponse),
    Fetch(FetchResponse),
    ListOffsets(ListOffsetsResponse),
    Raft(RaftResponse),
    AddBroker(AdminResult),
    AlterReplicas(AdminResult),
    MetadataCommand(AdminResult),
}

/// Broker to broker: a command for the cluster metadata (the broker's own encoding), forwarded to
/// the metadata leader, which proposes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataCommandRequest {
    pub command: Bytes,
}

/// Moves a partition to a new replica set. The metadata records the target; the partition's leader
/// adds the new replicas (as learners until they have caught up), changes the group's voters, and
/// then reports the move complete (the same request with `complete` set), after which replicas that
/// left delete their copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterReplicasRequest {
    pub topic: String,
    pub partition: u32,
    pub replicas: Vec<u32>,
    pub complete: bool,
}

/// Adds a broker to a running cluster: it joins the metadata group (as a learner until it has caught
/// up, then as a voter). Sent by a broker started with `--join`; any broker forwards it to the
/// metadata leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddBrokerRequest {
    pub node_id: u32,
    /// `host:port` the other brokers and clients reach it at.
    pub address: String,
}

/// The outcome of an administrative request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminResult {
    pub error: ErrorCode,
    pub message: String,
}

/// A raft message between brokers: the group it is for (0 is the metadata group), what kind of
/// message, and its body. The body's layout belongs to the broker's raft codec; the protocol only
/// frames it, so raft messages share the one connection per peer with nothing else to parse here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftRequest {
    pub group: u64,
    pub kind: u8,
    /// The body as consecutive chunks (so record bytes travel without being joined); a decoded
    /// request holds one chunk.
    pub body: Vec<Bytes>,
}

impl RaftRequest {
    /// The body as one buffer (no copy when it is one chunk, as decoded).
    pub fn body_bytes(&self) -> Bytes {
        super::codec::concat(&self.body)
    }
}

/// The answer to a [`RaftRequest`]: an opaque body for the broker's raft codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftResponse {
    pub body: Bytes,
}

/// Metadata of the named topics, or of every topic when `topics` is `None` (this is also how topics
/// are listed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataRequest {
    pub topics: Option<Vec<String>>,
}

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTopicsRequest {
    pub names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    pub acks: Acks,
    pub timeout_ms: u32,
    pub topics: Vec<ProduceTopic>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceTopic {
    pub name: String,
    pub partitions: Vec<ProducePartition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartition {
    pub partition: u32,
    /// One or more whole record batches.
    pub records: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// Longest the broker may hold the request waiting for `min_bytes`.
    pub max_wait_ms: u32,
    pub min_bytes: u32,
    /// Cap on the whole response's record bytes.
    pub max_bytes: u32,
    pub topics: Vec<FetchTopic>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTopic {
    pub name: String,
    pub partitions: Vec<FetchPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartition {
    pub partition: u32,
    pub offset: u64,
    pub max_bytes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsRequest {
    pub topics: Vec<ListOffsetsTopic>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsTopic {
    pub name: String,
    pub partitions: Vec<ListOffsetsPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsPartition {
    pub partition: u32,
    /// [`LATEST`], [`EARLIEST`], or a timestamp in ms (the first offset at or after it).
    pub spec: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiVersionsResponse {
    pub apis: Vec<(u16, u16, u16)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub node_id: u32,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataResponse {
    pub brokers: Vec<BrokerInfo>,
    pub controller_id: i32,
    pub topics: Vec<TopicMetadata>,
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

/// Per-topic outcome of create and delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicResults {
    pub results: Vec<TopicResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicResult {
    pub name: String,
    pub error: ErrorCode,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceResponse {
    pub topics: Vec<ProduceTopicResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceTopicResult {
    pub name: String,
    pub partitions: Vec<ProducePartitionResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartitionResult {
    pub partition: u32,
    pub error: ErrorCode,
    pub message: String,
    /// Offset of the first record of the first batch.
    pub base_offset: u64,
    pub log_start_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    pub topics: Vec<FetchTopicResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTopicResult {
    pub name: String,
    pub partitions: Vec<FetchPartitionResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartitionResult {
    pub partition: u32,
    pub error: ErrorCode,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    /// Whole stored batches, exactly as stored. The first may start before the requested offset.
    pub records: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsResponse {
    pub topics: Vec<ListOffsetsTopicResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsTopicResult {
    pub name: String,
    pub partitions: Vec<ListOffsetsPartitionResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsPartitionResult {
    pub partition: u32,
    pub error: ErrorCode,
    /// -1 when no record is at or after the requested timestamp.
    pub offset: i64,
}

fn put_configs(w: &mut Writer, configs: &[(String, String)]) {
    w.count(configs.len());
    for (k, v) in configs {
        w.string(k);
        w.string(v);
    }
}

fn get_configs(r: &mut Reader) -> Result<Vec<(String, String)>, ProtocolError> {
    r.array(4, "configs", |r| {
        Ok((r.string("config key")?, r.string("config value")?))
    })
}

fn put_strings(w: &mut Writer, v: &[String]) {
    w.count(v.len());
    for s in v {
        w.string(s);
    }
}

fn get_strings(r: &mut Reader, what: &'static str) -> Result<Vec<String>, ProtocolError> {
    r.array(2, what, |r| r.string(what))
}

impl Request {
    pub fn api_key(&self) -> ApiKey {
        match self {
            Request::ApiVersions => ApiKey::ApiVersions,
            Request::Metadata(_) => ApiKey::Metadata,
            Request::CreateTopics(_) => ApiKey::CreateTopics,
            Request::DeleteTopics(_) => ApiKey::DeleteTopics,
            Request::Produce(_) => ApiKey::Produce,
            Request::Fetch(_) => ApiKey::Fetch,
            Request::ListOffsets(_) => ApiKey::ListOffsets,
            Request::Raft(_) => ApiKey::Raft,
            Request::AddBroker(_) => ApiKey::AddBroker,
            Request::AlterReplicas(_) => ApiKey::AlterReplicas,
            Request::MetadataCommand(_) => ApiKey::MetadataCommand,
        }
    }

    pub fn encode_body(&self) -> Vec<Bytes> {
        let mut w = Writer::new();
        match self {
            Request::ApiVersions => {}
            Request::Metadata(m) => match &m.topics {
                None => w.bool(false),
                Some(t) => {
                    w.bool(true);
                    put_strings(&mut w, t);
                }
            },
            Request::CreateTopics(c) => {
                w.count(c.topics.len());
                for t in &c.topics {
                    w.string(&t.name);
                    w.u32(t.partitions);
                    w.u16(t.replication_factor);
                    put_configs(&mut w, &t.configs);
                }
            }
            Request::DeleteTopics(d) => put_strings(&mut w, &d.names),
            Request::Produce(p) => {
                w.i8(p.acks.to_i8());
                w.u32(p.timeout_ms);
                w.count(p.topics.len());
                for t in &p.topics {
                    w.string(&t.name);
                    w.count(t.partitions.len());
                    for part in &t.partitions {
                        w.u32(part.partition);
                        w.bytes(&part.records);
                    }
                }
            }
            Request::Fetch(f) => {
                w.u32(f.max_wait_ms);
                w.u32(f.min_bytes);
                w.u32(f.max_bytes);
                w.count(f.topics.len());
                for t in &f.topics {
                    w.string(&t.name);
                    w.count(t.partitions.len());
                    for part in &t.partitions {
                        w.u32(part.partition);
                        w.u64(part.offset);
                        w.u32(part.max_bytes);
                    }
                }
            }
            Request::AddBroker(a) => {
                w.u32(a.node_id);
                w.string(&a.address);
            }
            Request::MetadataCommand(m) => w.bytes(&m.command),
            Request::AlterReplicas(a) => {
                w.string(&a.topic);
                w.u32(a.partition);
                w.count(a.replicas.len());
                for r in &a.replicas {
                    w.u32(*r);
                }
                w.bool(a.complete);
            }
            Request::Raft(m) => {
                w.u64(m.group);
                w.u8(m.kind);
                w.bytes_chunks(&m.body);
            }
            Request::ListOffsets(l) => {
                w.count(l.topics.len());
                for t in &l.topics {
                    w.string(&t.name);
                    w.count(t.partitions.len());
                    for part in &t.partitions {
                        w.u32(part.partition);
                        w.i64(part.spec);
                    }
                }
            }
        }
        w.finish()
    }

    pub fn decode_body(api: ApiKey, body: Bytes) -> Result<Request, ProtocolError> {
        let mut r = Reader::new(body);
        let req = match api {
            ApiKey::ApiVersions => Request::ApiVersions,
            ApiKey::Metadata => Request::Metadata(MetadataRequest {
                topics: if r.bool("topics flag")? {
                    Some(get_strings(&mut r, "topic name")?)
                } else {
                    None
                },
            }),
            ApiKey::CreateTopics => Request::CreateTopics(CreateTopicsRequest {
                topics: r.array(12, "topics", |r| {
                    Ok(NewTopic {
                        name: r.string("topic name")?,
                        partitions: r.u32("partitions")?,
                        replication_factor: r.u16("replication factor")?,
                        configs: get_configs(r)?,
                    })
                })?,
            }),
            ApiKey::DeleteTopics => Request::DeleteTopics(DeleteTopicsRequest {
                names: get_strings(&mut r, "topic name")?,
            }),
            ApiKey::Produce => Request::Produce(ProduceRequest {
                acks: Acks::from_i8(r.i8("acks")?)?,
                timeout_ms: r.u32("timeout")?,
                topics: r.array(6, "topics", |r| {
                    Ok(ProduceTopic {
                        name: r.string("topic name")?,
                        partitions: r.array(8, "partitions", |r| {
                            Ok(ProducePartition {
                                partition: r.u32("partition")?,
                                records: r.bytes("records")?,
                            })
                        })?,
                    })
                })?,
            }),
            ApiKey::Fetch => Request::Fetch(FetchRequest {
                max_wait_ms: r.u32("max wait")?,
                min_bytes: r.u32("min bytes")?,
                max_bytes: r.u32("max bytes")?,
                topics: r.array(6, "topics", |r| {
                    Ok(FetchTopic {
                        name: r.string("topic name")?,
                        partitions: r.array(16, "partitions", |r| {
                            Ok(FetchPartition {
                                partition: r.u32("partition")?,
                                offset: r.u64("offset")?,
                                max_bytes: r.u32("partition max bytes")?,
                            })
                        })?,
                    })
                })?,
            }),
            ApiKey::MetadataCommand => Request::MetadataCommand(MetadataCommandRequest {
                command: r.bytes("metadata command")?,
            }),
            ApiKey::AlterReplicas => Request::AlterReplicas(AlterReplicasRequest {
                topic: r.string("topic name")?,
                partition: r.u32("partition")?,
                replicas: r.array(4, "replicas", |r| r.u32("replica"))?,
                complete: r.bool("complete")?,
            }),
            ApiKey::AddBroker => Request::AddBroker(AddBrokerRequest {
                node_id: r.u32("node id")?,
                address: r.string("broker address")?,
            }),
            ApiKey::Raft => Request::Raft(RaftRequest {
                group: r.u64("raft group")?,
                kind: r.u8("raft message kind")?,
                body: vec![r.bytes("raft message")?],
            }),
            ApiKey::ListOffsets => Request::ListOffsets(ListOffsetsRequest {
                topics: r.array(6, "topics", |r| {
                    Ok(ListOffsetsTopic {
                        name: r.string("topic name")?,
                        partitions: r.array(12, "partitions", |r| {
                            Ok(ListOffsetsPartition {
                                partition: r.u32("partition")?,
                                spec: r.i64("offset spec")?,
                            })
                        })?,
                    })
                })?,
            }),
        };
        r.finish()?;
        Ok(req)
    }
}

impl Response {
    pub fn api_key(&self) -> ApiKey {
        match self {
            Response::ApiVersions(_) => ApiKey::ApiVersions,
            Response::Metadata(_) => ApiKey::Metadata,
            Response::CreateTopics(_) => ApiKey::CreateTopics,
            Response::DeleteTopics(_) => ApiKey::DeleteTopics,
            Response::Produce(_) => ApiKey::Produce,
            Response::Fetch(_) => ApiKey::Fetch,
            Response::ListOffsets(_) => ApiKey::ListOffsets,
            Response::Raft(_) => ApiKey::Raft,
            Response::AddBroker(_) => ApiKey::AddBroker,
            Response::AlterReplicas(_) => ApiKey::AlterReplicas,
            Response::MetadataCommand(_) => ApiKey::MetadataCommand,
        }
    }

    pub fn encode_body(&self) -> Vec<Bytes> {
        let mut w = Writer::new();
        match self {
            Response::ApiVersions(a) => {
                w.count(a.apis.len());
                for (k, lo, hi) in &a.apis {
                    w.u16(*k);
                    w.u16(*lo);
                    w.u16(*hi);
                }
            }
            Response::Metadata(m) => {
                w.count(m.brokers.len());
                for b in &m.brokers {
                    w.u32(b.node_id);
                    w.string(&b.host);
                    w.u16(b.port);
                }
                w.i32(m.controller_id);
                w.count(m.topics.len());
                for t in &m.topics {
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
                    put_configs(&mut w, &t.configs);
                }
            }
            Response::CreateTopics(t) | Response::DeleteTopics(t) => {
                w.count(t.results.len());
                for r in &t.results {
                    w.string(&r.name);
                    w.u16(r.error.0);
                    w.string(&r.message);
                }
            }
            Response::Produce(p) => {
                w.count(p.topics.len());
                for t in &p.topics {
                    w.string(&t.name);
                    w.count(t.partitions.len());
                    for part in &t.partitions {
                        w.u32(part.partition);
                        w.u16(part.error.0);
                        w.string(&part.message);
                        w.u64(part.base_offset);
                        w.u64(part.log_start_offset);
                    }
                }
            }
            Response::Fetch(f) => {
                w.count(f.topics.len());
                for t in &f.topics {
                    w.string(&t.name);
                    w.count(t.partitions.len());
                    for part in &t.partitions {
                        w.u32(part.partition);
                        w.u16(part.error.0);
                        w.u64(part.high_watermark);
                        w.u64(part.log_start_offset);
                        w.bytes(&part.records);
                    }
                }
            }
            Response::Raft(m) => w.bytes(&m.body),
            Response::AddBroker(a) | Response::AlterReplicas(a) | Response::MetadataCommand(a) => {
                w.u16(a.error.0);
                w.string(&a.message);
            }
            Response::ListOffsets(l) => {
                w.count(l.topics.len());
                for t in &l.topics {
                    w.string(&t.name);
                    w.count(t.partitions.len());
                    for part in &t.partitions {
                        w.u32(part.partition);
                        w.u16(part.error.0);
                        w.i64(part.offset);
                    }
                }
            }
        }
        w.finish()
    }

    pub fn decode_body(api: ApiKey, r: &mut Reader) -> Result<Response, ProtocolError> {
        Ok(match api {
            ApiKey::ApiVersions => Response::ApiVersions(ApiVersionsResponse {
                apis: r.array(6, "apis", |r| {
                    Ok((r.u16("api")?, r.u16("min")?, r.u16("max")?))
                })?,
            }),
            ApiKey::Metadata => Response::Metadata(MetadataResponse {
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
            }),
            ApiKey::CreateTopics | ApiKey::DeleteTopics => {
                let t = TopicResults {
                    results: r.array(6, "results", |r| {
                        Ok(TopicResult {
                            name: r.string("topic name")?,
                            error: ErrorCode(r.u16("error")?),
                            message: r.string("message")?,
                        })
                    })?,
                };
                if api == ApiKey::CreateTopics {
                    Response::CreateTopics(t)
                } else {
                    Response::DeleteTopics(t)
                }
            }
            ApiKey::Produce => Response::Produce(ProduceResponse {
                topics: r.array(6, "topics", |r| {
                    Ok(ProduceTopicResult {
                        name: r.string("topic name")?,
                        partitions: r.array(24, "partitions", |r| {
                            Ok(ProducePartitionResult {
                                partition: r.u32("partition")?,
                                error: ErrorCode(r.u16("error")?),
                                message: r.string("message")?,
                                base_offset: r.u64("base offset")?,
                                log_start_offset: r.u64("log start offset")?,
                            })
                        })?,
                    })
                })?,
            }),
            ApiKey::Fetch => Response::Fetch(FetchResponse {
                topics: r.array(6, "topics", |r| {
                    Ok(FetchTopicResult {
                        name: r.string("topic name")?,
                        partitions: r.array(26, "partitions", |r| {
                            Ok(FetchPartitionResult {
                                partition: r.u32("partition")?,
                                error: ErrorCode(r.u16("error")?),
                                high_watermark: r.u64("high watermark")?,
                                log_start_offset: r.u64("log start offset")?,
                                records: r.bytes("records")?,
                            })
                        })?,
                    })
                })?,
            }),
            ApiKey::AddBroker | ApiKey::AlterReplicas | ApiKey::MetadataCommand => {
                let a = AdminResult {
                    error: ErrorCode(r.u16("error")?),
                    message: r.string("message")?,
                };
                match api {
                    ApiKey::AddBroker => Response::AddBroker(a),
                    ApiKey::AlterReplicas => Response::AlterReplicas(a),
                    _ => Response::MetadataCommand(a),
                }
            }
            ApiKey::Raft => Response::Raft(RaftResponse {
                body: r.bytes("raft message")?,
            }),
            ApiKey::ListOffsets => Response::ListOffsets(ListOffsetsResponse {
                topics: r.array(6, "topics", |r| {
                    Ok(ListOffsetsTopicResult {
                        name: r.string("topic name")?,
                        partitions: r.array(14, "partitions", |r| {
                            Ok(ListOffsetsPartitionResult {
                                partition: r.u32("partition")?,
                                error: ErrorCode(r.u16("error")?),
                                offset: r.i64("offset")?,
                            })
                        })?,
                    })
                })?,
            }),
        })
    }
}
