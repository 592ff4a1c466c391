//! Reaching the metadata leader from any broker: a request that must run there (topic creation and
//! deletion, adding a broker) is forwarded whole (as its wire request, over the peer connection) and
//! its answer relayed; a command a broker proposes on its own behalf goes as `MetadataCommand`,
//! forwarded again by a receiver that no longer leads. Also asking another broker to hand the
//! partitions it leads to their preferred replicas (a cluster-wide leader balance), and what
//! another broker holds (DescribeReplicas, for the admin API's cluster-wide views). This is the one
//! place outside the adapters that names the wire request and response enums: forwarding *is* a
//! wire round trip.

use sluice_protocol::wire::{
    BalanceLeadersRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeReplicasRequest,
    DescribeReplicasResponse, ErrorCode, LeaderMove, LeaderMoveOutcome, MetadataCommandRequest,
    NewTopic, RaftRole, RaftState, Request, Response,
};

use super::rebalance::{LeaderOutcome, PartitionLeader};
use super::state::Command;
use super::Cluster;
use crate::error::{Result, ServiceError};
use crate::raft::{RaftSummary, Role};
use crate::replica::report::{BrokerReplicas, ReplicaCounts, ReplicaReport};

impl Cluster {
    /// The metadata leader's address when it is another broker (requests go there).
    fn metadata_leader_elsewhere(&self) -> Option<Result<String>> {
        let g = &self.metadata.group;
        if g.is_leader() {
            return None;
        }
        Some(
            g.leader_addr()
                .ok_or_else(|| ServiceError::not_leader(None)),
        )
    }

    /// `None` when this broker leads the metadata group (the caller handles `request` itself);
    /// otherwise the metadata leader's answer to `request`, forwarded there.
    pub async fn on_metadata_leader(&self, request: Request) -> Option<Result<Response>> {
        let addr = match self.metadata_leader_elsewhere()? {
            Ok(addr) => addr,
            Err(e) => return Some(Err(e)),
        };
        let api = request.api_key();
        Some(
            match self.ctx.peers.client().request_to(&addr, &request).await {
                Ok(r) if r.api_key() == api => Ok(r),
                Ok(_) => Err(ServiceError::unknown("unexpected answer")),
                Err(e) => Err(ServiceError::new(
                    ErrorCode::NOT_LEADER,
                    format!("metadata leader at {addr}: {e}"),
                )),
            },
        )
    }

    /// `None` when this broker leads the metadata group (the caller proposes the changes itself);
    /// otherwise the metadata leader's outcome of each topic creation or deletion in `commands`,
    /// forwarded there as one CreateTopics or DeleteTopics request, so the leader answers once it
    /// sees the changes too (as a client asking it directly would get).
    pub async fn topic_changes_on_leader(&self, commands: &[Command]) -> Option<Vec<Result<()>>> {
        let creates: Vec<NewTopic> = commands
            .iter()
            .filter_map(|c| match c {
                Command::CreateTopic {
                    name,
                    partitions,
                    replication_factor,
                    configs,
                } => Some(NewTopic {
                    name: name.clone(),
                    partitions: *partitions,
                    replication_factor: *replication_factor,
                    configs: configs.clone(),
                }),
                _ => None,
            })
            .collect();
        let deletes: Vec<String> = commands
            .iter()
            .filter_map(|c| match c {
                Command::DeleteTopic { name } => Some(name.clone()),
                _ => None,
            })
            .collect();
        // One kind per request, as the wire APIs carry them.
        assert!(
            creates.len() == commands.len() || deletes.len() == commands.len(),
            "topic changes mix kinds or carry other commands"
        );
        let request = if deletes.len() == commands.len() && !commands.is_empty() {
            Request::DeleteTopics(DeleteTopicsRequest { names: deletes })
        } else {
            Request::CreateTopics(CreateTopicsRequest { topics: creates })
        };
        let each = |e: ServiceError| commands.iter().map(|_| Err(e.clone())).collect();
        Some(match self.on_metadata_leader(request).await? {
            Ok(Response::CreateTopics(r) | Response::DeleteTopics(r))
                if r.results.len() == commands.len() =>
            {
                r.results
                    .into_iter()
                    .map(|r| match r.error {
                        ErrorCode::NONE => Ok(()),
                        code => Err(ServiceError::new(code, r.message)),
                    })
                    .collect()
            }
            Ok(_) => each(ServiceError::unknown("unexpected answer")),
            Err(e) => each(e),
        })
    }

    /// Proposes `cmd` on the metadata leader, wherever it is; returns once the leader applied it.
    pub async fn propose_anywhere(&self, cmd: &Command) -> Result<()> {
        let command = serde_json::to_vec(cmd)
            .map_err(|e| ServiceError::unknown(format!("encoding command: {e}")))?;
        let request = Request::MetadataCommand(MetadataCommandRequest {
            command: bytes::Bytes::from(command),
        });
        match self.on_metadata_leader(request).await {
            None => self.metadata.propose(cmd).await,
            Some(answer) => answer.and_then(admin_outcome),
        }
    }

    /// `None` when this broker leads the metadata group (the caller adds the broker itself);
    /// otherwise the metadata leader's answer to adding broker `node_id` at `address`.
    pub async fn add_broker_on_leader(&self, node_id: u32, address: &str) -> Option<Result<()>> {
        let request = Request::AddBroker(sluice_protocol::wire::AddBrokerRequest {
            node_id,
            address: address.to_string(),
        });
        Some(
            self.on_metadata_leader(request)
                .await?
                .and_then(admin_outcome),
        )
    }

    /// Asks the cluster, through the broker at `via`, to add this broker (`--join`). `Ok` once the
    /// metadata leader accepted it.
    pub async fn ask_to_join(&self, via: &str, node_id: u32, address: String) -> Result<()> {
        let request =
            Request::AddBroker(sluice_protocol::wire::AddBrokerRequest { node_id, address });
        match self.ctx.peers.client().request_to(via, &request).await {
            Ok(r) => admin_outcome(r),
            Err(e) => Err(ServiceError::new(
                ErrorCode::NOT_LEADER,
                format!("cannot reach {via}: {e}"),
            )),
        }
    }
}

impl Cluster {
    /// Asks the broker at `addr` to hand the partitions it leads to their preferred replicas
    /// (BalanceLeaders with `local`), waiting at most `timeout`; what it reports per partition.
    pub async fn balance_leaders_at(
        &self,
        addr: &str,
        timeout: std::time::Duration,
    ) -> Result<Vec<PartitionLeader>> {
        let request = Request::BalanceLeaders(BalanceLeadersRequest { local: true });
        match self.ask_peer(addr, &request, timeout).await? {
            Response::BalanceLeaders(r) if r.error.is_ok() => {
                Ok(r.partitions.into_iter().map(from_wire).collect())
            }
            Response::BalanceLeaders(r) => Err(ServiceError::new(r.error, r.message)),
            _ => Err(ServiceError::unknown("unexpected answer")),
        }
    }

    /// `request` sent to the broker at `addr` over the peer connection, answered within `timeout`
    /// (a broker that does not answer in time, or cannot be reached, is `REQUEST_TIMED_OUT`).
    async fn ask_peer(
        &self,
        addr: &str,
        request: &Request,
        timeout: std::time::Duration,
    ) -> Result<Response> {
        self.ctx
            .peers
            .client()
            .request_to_with_timeout(addr, request, timeout)
            .await
            .map_err(|e| {
                ServiceError::new(
                    ErrorCode::REQUEST_TIMED_OUT,
                    format!("broker at {addr}: {e}"),
                )
            })
    }
}

/// A partition's leadership as another broker reported it.
fn from_wire(m: LeaderMove) -> PartitionLeader {
    let id = |v: i32| u32::try_from(v).ok();
    PartitionLeader {
        preferred: id(m.preferred),
        leader_before: id(m.leader_before),
        leader: id(m.leader),
        outcome: match m.outcome {
            LeaderMoveOutcome::Moved => LeaderOutcome::Moved,
            LeaderMoveOutcome::AlreadyPreferred => LeaderOutcome::AlreadyPreferred,
            LeaderMoveOutcome::Skipped => LeaderOutcome::Skipped,
        },
        reason: (!m.reason.is_empty()).then_some(m.reason),
        topic: m.topic,
        partition: m.partition,
    }
}

/// The outcome an admin answer (`AdminResult`: AddBroker, AlterReplicas, MetadataCommand) carries.
fn admin_outcome(response: Response) -> Result<()> {
    match response {
        Response::AddBroker(r) | Response::AlterReplicas(r) | Response::MetadataCommand(r) => {
            if r.error.is_ok() {
                Ok(())
            } else {
                Err(ServiceError::new(r.error, r.message))
            }
        }
        _ => Err(ServiceError::unknown("unexpected answer")),
    }
}

impl Cluster {
    /// What the broker at `addr` holds (DescribeReplicas): its metadata raft state, its replicas by
    /// role and, with `partitions`, each replica of `topics` (every topic when empty), waiting at
    /// most `timeout`.
    pub async fn describe_replicas_at(
        &self,
        addr: &str,
        topics: Vec<String>,
        partitions: bool,
        timeout: std::time::Duration,
    ) -> Result<BrokerReplicas> {
        let request = Request::DescribeReplicas(DescribeReplicasRequest { topics, partitions });
        match self.ask_peer(addr, &request, timeout).await? {
            Response::DescribeReplicas(r) if r.error.is_ok() => Ok(replicas_from_wire(r)),
            Response::DescribeReplicas(r) => Err(ServiceError::new(r.error, r.message)),
            _ => Err(ServiceError::unknown("unexpected answer")),
        }
    }
}

fn raft_from_wire(r: RaftState) -> RaftSummary {
    RaftSummary {
        term: r.term,
        role: match r.role {
            RaftRole::Leader => Role::Leader,
            RaftRole::Follower => Role::Follower,
            RaftRole::Candidate => Role::Candidate,
            RaftRole::Learner => Role::Learner,
            RaftRole::Shutdown => Role::Shutdown,
        },
        leader: r.leader,
        last_log_index: r.last_log_index,
        committed_index: r.committed_index,
        applied_index: r.applied_index,
    }
}

/// Another broker's DescribeReplicas answer.
fn replicas_from_wire(r: DescribeReplicasResponse) -> BrokerReplicas {
    BrokerReplicas {
        node_id: r.node_id,
        metadata: raft_from_wire(r.metadata),
        counts: ReplicaCounts {
            hosted: r.hosted,
            leading: r.leading,
            following: r.following,
            without_leader: r.without_leader,
        },
        topics: r
            .topics
            .into_iter()
            .map(|t| {
                let parts = t
                    .partitions
                    .into_iter()
                    .map(|p| ReplicaReport {
                        partition: p.partition,
                        raft: raft_from_wire(p.raft),
                        log_start_offset: p.log_start_offset,
                        log_end_offset: p.log_end_offset,
                        high_watermark: p.high_watermark,
                        size_bytes: p.size_bytes,
                    })
                    .collect();
                (t.topic, parts)
            })
            .collect(),
    }
}
