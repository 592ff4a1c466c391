//! Request handlers: turn a decoded request into a response using the cluster metadata and the
//! local partition replicas. Produce is split in two: proposing to raft runs in request order on the
//! connection's reader task (so one connection's batches land in the order they were sent); waiting
//! for the leader's append or the quorum commit runs apart.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_protocol::wire::*;

use crate::cluster::metadata::not_leader;
use crate::cluster::state::Command;
use crate::cluster::Cluster;
use crate::config::BrokerConfig;
use crate::partition::{CodedError, Partition, PendingAppend};
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
    pub cluster: Cluster,
    /// This broker, for tasks spawned from `&Broker` (set once at start).
    pub me: std::sync::Weak<Broker>,
}

/// A produce whose batches are proposed; what is left is waiting for the acks level.
#[derive(Debug)]
pub struct PendingProduce {
    pub response: ProduceResponse,
    /// (topic index, partition index, pending append) of each accepted proposal.
    pub proposed: Vec<(usize, usize, PendingAppend)>,
}

/// How long topic changes wait to become visible on this broker before answering anyway.
const TOPIC_CHANGE_WAIT: Duration = Duration::from_secs(10);

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
        let state = self.cluster.metadata.state();
        let brokers = self.cluster.metadata.brokers();
        let describe = |name: &str, rec: &crate::cluster::state::TopicRecord| {
            let local = self.topics.get(name).filter(|t| t.id == rec.id);
            TopicMetadata {
                error: ErrorCode::NONE,
                name: name.to_string(),
                configs: rec.configs.clone(),
                partitions: rec
                    .replicas
                    .iter()
                    .enumerate()
                    .map(|(p, replicas)| {
                        let part = local.as_ref().and_then(|t| t.partitions.get(&(p as u32)));
                        // A replica here knows the leader; otherwise the preferred leader is a
                        // hint, and a wrong guess answers NOT_LEADER with the real address.
                        // A replica here knows the leader; otherwise the leader's last report in the
                        // metadata, or the preferred leader before any report (a wrong guess answers
                        // NOT_LEADER with the real address).
                        let leader = match part {
                            Some(part) => part.group.leader().map_or(-1, |l| l as i32),
                            None => rec
                                .leaders
                                .get(&(p as u32))
                                .map(|(l, _)| *l)
                                .or_else(|| replicas.first().copied())
                                .map_or(-1, |r| r as i32),
                        };
                        PartitionMetadata {
                            error: if leader < 0 {
                                ErrorCode::NOT_LEADER
                            } else {
                                ErrorCode::NONE
                            },
                            partition: p as u32,
                            leader,
                            replicas: replicas.clone(),
                            high_watermark: part.map_or(0, |p| p.high_watermark()),
                            log_start_offset: part.map_or(0, |p| p.log_start_offset()),
                        }
                    })
                    .collect(),
            }
        };
        let topics = match &req.topics {
            None => state.topics.iter().map(|(n, r)| describe(n, r)).collect(),
            Some(names) => names
                .iter()
                .map(|n| match state.topics.get(n) {
                    Some(r) => describe(n, r),
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
            brokers: brokers
                .iter()
                .map(|(id, addr)| {
                    let (host, port) = split_addr(addr);
                    BrokerInfo {
                        node_id: *id,
                        host,
                        port,
                    }
                })
                .collect(),
            controller_id: self
                .cluster
                .metadata
                .group
                .leader()
                .map_or(-1, |l| l as i32),
            topics,
        })
    }

    /// The metadata leader's address when it is another broker (requests go there).
    fn metadata_leader_elsewhere(&self) -> Option<Result<String, CodedError>> {
        let g = &self.cluster.metadata.group;
        if g.is_leader() {
            return None;
        }
        Some(g.leader_addr().ok_or_else(|| not_leader(None)))
    }

    /// Proposes a topic change on the metadata leader (forwarding the request there if needed) and
    /// waits until this broker has applied it.
    async fn topic_change(&self, request: Request, commands: Vec<Command>) -> Response {
        let names: Vec<String> = commands
            .iter()
            .map(|c| match c {
                Command::CreateTopic { name, .. } | Command::DeleteTopic { name } => name.clone(),
                Command::ReassignPartition { topic, .. }
                | Command::CompleteReassignment { topic, .. }
                | Command::LeaderChanged { topic, .. } => topic.clone(),
                Command::AllocateProducerIds { .. } => String::new(),
            })
            .collect();
        // Forwarded whole to the metadata leader when that is another broker.
        let results: Vec<CodedError> = match self.on_metadata_leader(request.clone()).await {
            Some(Ok(Response::CreateTopics(r) | Response::DeleteTopics(r))) => r
                .results
                .into_iter()
                .map(|r| (r.error, r.message))
                .collect(),
            Some(Ok(_)) => names
                .iter()
                .map(|_| (ErrorCode::UNKNOWN, "unexpected answer".into()))
                .collect(),
            Some(Err(e)) => names.iter().map(|_| e.clone()).collect(),
            None => {
                let mut out = Vec::with_capacity(commands.len());
                for c in &commands {
                    out.push(match self.cluster.metadata.propose(c).await {
                        Ok(()) => (ErrorCode::NONE, String::new()),
                        Err(e) => e,
                    });
                }
                out
            }
        };
        // Answer once this broker sees the outcome, so the next request here finds it.
        let deadline = tokio::time::Instant::now() + TOPIC_CHANGE_WAIT;
        for (c, (code, _)) in commands.iter().zip(&results) {
            if !code.is_ok() {
                continue;
            }
            while tokio::time::Instant::now() < deadline && !self.change_visible(c) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let results = names
            .into_iter()
            .zip(results)
            .map(|(name, (error, message))| TopicResult {
                name,
                error,
                message,
            })
            .collect();
        match request {
            Request::DeleteTopics(_) => Response::DeleteTopics(TopicResults { results }),
            _ => Response::CreateTopics(TopicResults { results }),
        }
    }

    /// Whether a topic change is applied here, and for a creation, whether every local replica of
    /// the topic is open and knows its leader.
    fn change_visible(&self, c: &Command) -> bool {
        let state = self.cluster.metadata.state();
        let me = self.cluster.ctx.node_id;
        match c {
            Command::CreateTopic { name, .. } => {
                let Some(rec) = state.topics.get(name) else {
                    return false;
                };
                let local = self.topics.get(name);
                rec.replicas.iter().enumerate().all(|(p, r)| {
                    !r.iter().any(|b| u64::from(*b) == me)
                        || local
                            .as_ref()
                            .and_then(|t| t.partitions.get(&(p as u32)))
                            .is_some_and(|part| part.group.leader().is_some())
                })
            }
            Command::DeleteTopic { name } => {
                !state.topics.contains_key(name)
                    && self.topics.get(name).is_none()
                    && !self.topics.has_dir(name)
            }
            Command::AllocateProducerIds { .. }
            | Command::LeaderChanged { .. }
            | Command::ReassignPartition { .. }
            | Command::CompleteReassignment { .. } => true,
        }
    }

    /// Adds a broker to the cluster: a learner of the metadata group until it has caught up, then a
    /// voter. Runs on the metadata leader (forwarded there from any broker).
    pub async fn add_broker(&self, req: AddBrokerRequest) -> Response {
        let answer =
            |error: ErrorCode, message: String| Response::AddBroker(AdminResult { error, message });
        if let Some(r) = self
            .on_metadata_leader(Request::AddBroker(req.clone()))
            .await
        {
            return r.unwrap_or_else(|(code, msg)| answer(code, msg));
        }
        if req.node_id == 0 || req.address.is_empty() {
            return answer(
                ErrorCode::INVALID_REQUEST,
                "a broker needs a node id and an address".into(),
            );
        }
        if let Some(addr) = self.cluster.metadata.brokers().get(&req.node_id) {
            return if *addr == req.address {
                answer(ErrorCode::NONE, String::new())
            } else {
                answer(
                    ErrorCode::INVALID_REQUEST,
                    format!("node id {} is already taken by {addr}", req.node_id),
                )
            };
        }
        let raft = &self.cluster.metadata.group.raft;
        let id = u64::from(req.node_id);
        if let Err(e) = raft
            .add_learner(id, openraft::BasicNode::new(req.address.clone()), true)
            .await
        {
            return answer(ErrorCode::NOT_LEADER, format!("adding broker {id}: {e}"));
        }
        let voters: std::collections::BTreeSet<u64> = [id].into_iter().collect();
        match raft
            .change_membership(openraft::ChangeMembers::AddVoterIds(voters), true)
            .await
        {
            Ok(_) => {
                tracing::info!(node = id, address = %req.address, "broker added to the cluster");
                answer(ErrorCode::NONE, String::new())
            }
            Err(e) => answer(ErrorCode::NOT_LEADER, format!("promoting broker {id}: {e}")),
        }
    }

    /// `None` when this broker leads the metadata group (the caller handles `request` itself);
    /// otherwise the metadata leader's answer to `request`, forwarded there.
    async fn on_metadata_leader(&self, request: Request) -> Option<Result<Response, CodedError>> {
        let addr = match self.metadata_leader_elsewhere()? {
            Ok(addr) => addr,
            Err(e) => return Some(Err(e)),
        };
        let api = request.api_key();
        Some(
            match self
                .cluster
                .ctx
                .peers
                .client()
                .request_to(&addr, &request)
                .await
            {
                Ok(r) if r.api_key() == api => Ok(r),
                Ok(_) => Err((ErrorCode::UNKNOWN, "unexpected answer".into())),
                Err(e) => Err((
                    ErrorCode::NOT_LEADER,
                    format!("metadata leader at {addr}: {e}"),
                )),
            },
        )
    }

    /// Proposes `cmd` on the metadata leader, wherever it is.
    pub async fn propose_anywhere(&self, cmd: &Command) -> Result<(), CodedError> {
        let command = serde_json::to_vec(cmd)
            .map_err(|e| (ErrorCode::UNKNOWN, format!("encoding command: {e}")))?;
        let request = Request::MetadataCommand(MetadataCommandRequest {
            command: bytes::Bytes::from(command),
        });
        match self.on_metadata_leader(request).await {
            None => self.cluster.metadata.propose(cmd).await,
            Some(Ok(Response::MetadataCommand(r))) if r.error.is_ok() => Ok(()),
            Some(Ok(Response::MetadataCommand(r))) => Err((r.error, r.message)),
            Some(Ok(_)) => Err((ErrorCode::UNKNOWN, "unexpected answer".into())),
            Some(Err(e)) => Err(e),
        }
    }

    /// A metadata command from another broker (this broker should be the metadata leader).
    pub async fn metadata_command(&self, req: MetadataCommandRequest) -> Response {
        let result = match serde_json::from_slice::<Command>(&req.command) {
            Ok(cmd) => self.propose_anywhere(&cmd).await,
            Err(e) => Err((
                ErrorCode::INVALID_REQUEST,
                format!("bad metadata command: {e}"),
            )),
        };
        let (error, message) = match result {
            Ok(()) => (ErrorCode::NONE, String::new()),
            Err(e) => e,
        };
        Response::MetadataCommand(AdminResult { error, message })
    }

    /// Starts (or, from the partition's leader, completes) a move of a partition to new replicas.
    /// Runs on the metadata leader (forwarded there from any broker).
    pub async fn alter_replicas(&self, req: AlterReplicasRequest) -> Response {
        let answer = |error: ErrorCode, message: String| {
            Response::AlterReplicas(AdminResult { error, message })
        };
        match self
            .on_metadata_leader(Request::AlterReplicas(req.clone()))
            .await
        {
            Some(r) => r.unwrap_or_else(|(code, msg)| answer(code, msg)),
            None => {
                let cmd = if req.complete {
                    Command::CompleteReassignment {
                        topic: req.topic,
                        partition: req.partition,
                        replicas: req.replicas,
                    }
                } else {
                    Command::ReassignPartition {
                        topic: req.topic,
                        partition: req.partition,
                        replicas: req.replicas,
                    }
                };
                match self.cluster.metadata.propose(&cmd).await {
                    Ok(()) => answer(ErrorCode::NONE, String::new()),
                    Err((code, msg)) => answer(code, msg),
                }
            }
        }
    }

    pub async fn create_topics(&self, req: CreateTopicsRequest) -> Response {
        let commands = req
            .topics
            .iter()
            .map(|t| Command::CreateTopic {
                name: t.name.clone(),
                partitions: t.partitions,
                replication_factor: t.replication_factor,
                configs: t.configs.clone(),
            })
            .collect();
        self.topic_change(Request::CreateTopics(req), commands)
            .await
    }

    pub async fn delete_topics(&self, req: DeleteTopicsRequest) -> Response {
        let commands = req
            .names
            .iter()
            .map(|n| Command::DeleteTopic { name: n.clone() })
            .collect();
        self.topic_change(Request::DeleteTopics(req), commands)
            .await
    }

    /// Proposes every partition's record set to its raft group; waiting comes after (see
    /// [`finish_produce`]).
    pub async fn produce_propose(&self, req: &ProduceRequest) -> PendingProduce {
        let mut proposed = Vec::new();
        let mut topics = Vec::with_capacity(req.topics.len());
        for (ti, t) in req.topics.iter().enumerate() {
            let mut partitions = Vec::with_capacity(t.partitions.len());
            for (pi, p) in t.partitions.iter().enumerate() {
                let mut r = ProducePartitionResult {
                    partition: p.partition,
                    error: ErrorCode::NONE,
                    message: String::new(),
                    base_offset: 0,
                    log_start_offset: 0,
                };
                let outcome = match self.topics.partition(&t.name, p.partition) {
                    Ok(part) => {
                        r.log_start_offset = part.log_start_offset();
                        part.propose(&p.records, req.acks).await
                    }
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(pending) => proposed.push((ti, pi, pending)),
                    Err((code, msg)) => {
                        r.error = code;
                        r.message = msg;
                    }
                }
                partitions.push(r);
            }
            topics.push(ProduceTopicResult {
                name: t.name.clone(),
                partitions,
            });
        }
        PendingProduce {
            response: ProduceResponse { topics },
            proposed,
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

/// Waits for what the acks level promises (the leader's append for `leader`, the quorum commit for
/// `all`) and fills in offsets or errors.
pub async fn finish_produce(pending: PendingProduce, timeout: Duration) -> ProduceResponse {
    let mut resp = pending.response;
    for (ti, pi, p) in pending.proposed {
        let outcome = p.wait(timeout).await;
        if let Some(r) = resp
            .topics
            .get_mut(ti)
            .and_then(|t| t.partitions.get_mut(pi))
        {
            match outcome {
                Ok(base) => r.base_offset = base,
                Err((code, msg)) => {
                    r.error = code;
                    r.message = msg;
                }
            }
        }
    }
    resp
}

/// Splits `host:port` (the port 0 if it does not parse).
fn split_addr(addr: &str) -> (String, u16) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().unwrap_or(0)),
        None => (addr.to_string(), 0),
    }
}
