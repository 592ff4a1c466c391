//! Request handlers: turn a decoded request into a response using the topics and partitions.
//! Produce is split in two: the append runs in request order on the connection's reader task (so
//! one connection's batches land in the order they were sent), the wait for durability runs apart.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_protocol::wire::*;

use crate::config::BrokerConfig;
use crate::partition::Partition;
use crate::topics::Topics;

/// Shared state of a running broker.
#[derive(Debug)]
pub struct Broker {
    pub config: BrokerConfig,
    pub topics: Topics,
    /// The address clients are told to connect to.
    pub advertised: SocketAddr,
    /// Produce request bytes in flight across all connections (`max_produce_bytes`).
    pub produce_budget: Arc<tokio::sync::Semaphore>,
}

/// A produce whose appends are done; what is left is making them durable (acks `all`).
#[derive(Debug)]
pub struct PendingProduce {
    pub response: ProduceResponse,
    /// (topic index, partition index, partition) of each successful append.
    pub appended: Vec<(usize, usize, Arc<Partition>)>,
}

impl Broker {
    pub fn api_versions(&self) -> Response {
        Response::ApiVersions(ApiVersionsResponse {
            apis: ApiKey::ALL
                .iter()
                .map(|k| {
                    let (lo, hi) = k.versions();
                    (*k as u16, lo, hi)
                })
                .collect(),
        })
    }

    pub fn metadata(&self, req: &MetadataRequest) -> Response {
        let node = self.config.node_id;
        let describe = |t: &crate::topics::Topic| TopicMetadata {
            error: ErrorCode::NONE,
            name: t.name.clone(),
            configs: t.settings.to_pairs(),
            partitions: t
                .partitions
                .iter()
                .map(|p| PartitionMetadata {
                    error: ErrorCode::NONE,
                    partition: p.id,
                    leader: node as i32,
                    replicas: vec![node],
                    high_watermark: p.high_watermark(),
                    log_start_offset: p.log_start_offset(),
                })
                .collect(),
        };
        let topics = match &req.topics {
            None => self.topics.list().iter().map(|t| describe(t)).collect(),
            Some(names) => names
                .iter()
                .map(|n| match self.topics.get(n) {
                    Some(t) => describe(&t),
                    None => TopicMetadata {
                        error: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                        name: n.clone(),
                        partitions: Vec::new(),
                        configs: Vec::new(),
                    },
                })
                .collect(),
        };
        Response::Metadata(MetadataResponse {
            brokers: vec![BrokerInfo {
                node_id: node,
                host: self.advertised.ip().to_string(),
                port: self.advertised.port(),
            }],
            controller_id: node as i32,
            topics,
        })
    }

    /// Creates topics (blocking file I/O).
    pub fn create_topics(&self, req: &CreateTopicsRequest) -> Response {
        Response::CreateTopics(TopicResults {
            results: req
                .topics
                .iter()
                .map(|t| {
                    let (error, message) = match self.topics.create(
                        &t.name,
                        t.partitions,
                        t.replication_factor,
                        &t.configs,
                    ) {
                        Ok(()) => (ErrorCode::NONE, String::new()),
                        Err(e) => e,
                    };
                    TopicResult {
                        name: t.name.clone(),
                        error,
                        message,
                    }
                })
                .collect(),
        })
    }

    /// Deletes topics (blocking file I/O).
    pub fn delete_topics(&self, req: &DeleteTopicsRequest) -> Response {
        Response::DeleteTopics(TopicResults {
            results: req
                .names
                .iter()
                .map(|n| {
                    let (error, message) = match self.topics.delete(n) {
                        Ok(()) => (ErrorCode::NONE, String::new()),
                        Err(e) => e,
                    };
                    TopicResult {
                        name: n.clone(),
                        error,
                        message,
                    }
                })
                .collect(),
        })
    }

    /// Appends every partition's record set; durability waits come after (see [`finish_produce`]).
    pub fn produce_append(&self, req: &ProduceRequest) -> PendingProduce {
        let mut appended = Vec::new();
        let topics = req
            .topics
            .iter()
            .enumerate()
            .map(|(ti, t)| ProduceTopicResult {
                name: t.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .enumerate()
                    .map(|(pi, p)| {
                        let mut r = ProducePartitionResult {
                            partition: p.partition,
                            error: ErrorCode::NONE,
                            message: String::new(),
                            base_offset: 0,
                            log_start_offset: 0,
                        };
                        match self
                            .topics
                            .partition(&t.name, p.partition)
                            .and_then(|part| {
                                let base = part.append(&p.records)?;
                                Ok((part, base))
                            }) {
                            Ok((part, base)) => {
                                r.base_offset = base;
                                r.log_start_offset = part.log_start_offset();
                                appended.push((ti, pi, part));
                            }
                            Err((code, msg)) => {
                                r.error = code;
                                r.message = msg;
                            }
                        }
                        r
                    })
                    .collect(),
            })
            .collect();
        PendingProduce {
            response: ProduceResponse { topics },
            appended,
        }
    }

    /// Fetches with long polling: answers once `min_bytes` are available or the wait is over.
    pub async fn fetch(self: &Arc<Self>, req: &FetchRequest) -> Response {
        let wait =
            Duration::from_millis(u64::from(req.max_wait_ms)).min(self.config.max_fetch_wait);
        let deadline = Instant::now() + wait;
        let mut any = self.topics.subscribe_appends();
        loop {
            any.borrow_and_update();
            let (resp, bytes, errors, first) = self.fetch_once(req);
            if bytes >= req.min_bytes as usize || errors || Instant::now() >= deadline {
                return resp;
            }
            match first {
                // One partition: wait for that partition's log end to move.
                Some((p, offset))
                    if req.topics.iter().map(|t| t.partitions.len()).sum::<usize>() == 1 =>
                {
                    p.wait_beyond(offset, deadline).await;
                }
                _ => {
                    let _ = tokio::time::timeout_at(deadline.into(), any.changed()).await;
                }
            }
        }
    }

    fn fetch_once(
        &self,
        req: &FetchRequest,
    ) -> (Response, usize, bool, Option<(Arc<Partition>, u64)>) {
        let mut budget = (req.max_bytes as usize).min(self.config.max_fetch_response_bytes);
        let mut total = 0usize;
        let mut errors = false;
        let mut first = None;
        let topics = req
            .topics
            .iter()
            .map(|t| FetchTopicResult {
                name: t.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|fp| {
                        let mut r = FetchPartitionResult {
                            partition: fp.partition,
                            error: ErrorCode::NONE,
                            high_watermark: 0,
                            log_start_offset: 0,
                            records: bytes::Bytes::new(),
                        };
                        let part = match self.topics.partition(&t.name, fp.partition) {
                            Ok(p) => p,
                            Err((code, _)) => {
                                r.error = code;
                                errors = true;
                                return r;
                            }
                        };
                        r.high_watermark = part.high_watermark();
                        r.log_start_offset = part.log_start_offset();
                        if first.is_none() {
                            first = Some((part.clone(), fp.offset));
                        }
                        if budget == 0 {
                            return r;
                        }
                        match part.read(fp.offset, (fp.max_bytes as usize).min(budget).max(1)) {
                            Ok(read) => {
                                budget = budget.saturating_sub(read.bytes.len());
                                total += read.bytes.len();
                                r.records = read.bytes;
                            }
                            Err((code, _)) => {
                                r.error = code;
                                errors = true;
                            }
                        }
                        r
                    })
                    .collect(),
            })
            .collect();
        (
            Response::Fetch(FetchResponse { topics }),
            total,
            errors,
            first,
        )
    }

    pub fn list_offsets(&self, req: &ListOffsetsRequest) -> Response {
        let topics = req
            .topics
            .iter()
            .map(|t| ListOffsetsTopicResult {
                name: t.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|lp| {
                        let mut r = ListOffsetsPartitionResult {
                            partition: lp.partition,
                            error: ErrorCode::NONE,
                            offset: -1,
                        };
                        match self.topics.partition(&t.name, lp.partition) {
                            Err((code, _)) => r.error = code,
                            Ok(p) => match lp.spec {
                                LATEST => r.offset = p.high_watermark() as i64,
                                EARLIEST => r.offset = p.log_start_offset() as i64,
                                ts if ts >= 0 => match p.log().offset_for_timestamp(ts) {
                                    Ok(Some(o)) => r.offset = o as i64,
                                    Ok(None) => r.offset = -1,
                                    Err(e) => r.error = crate::partition::storage_error_code(&e),
                                },
                                _ => r.error = ErrorCode::INVALID_REQUEST,
                            },
                        }
                        r
                    })
                    .collect(),
            })
            .collect();
        Response::ListOffsets(ListOffsetsResponse { topics })
    }
}

/// Makes a produce's appends durable when acks is `all` (one node: fsynced), recording any failure in
/// the response. Blocking: run it off the async threads.
pub fn finish_produce(pending: PendingProduce, acks: Acks) -> ProduceResponse {
    let mut resp = pending.response;
    if acks == Acks::All {
        for (ti, pi, part) in pending.appended {
            if let Err((code, msg)) = part.flush() {
                if let Some(r) = resp
                    .topics
                    .get_mut(ti)
                    .and_then(|t| t.partitions.get_mut(pi))
                {
                    r.error = code;
                    r.message = msg;
                }
            }
        }
    }
    resp
}
