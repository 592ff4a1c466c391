//! `GET /v1/cluster`: the brokers (with the partitions each leads), the controller (metadata
//! leader), the metadata group's raft state as this broker sees it, and this broker's replicas by
//! role. Translation only ([`Broker::describe_cluster`], `admin::status`).
//!
//! [`Broker::describe_cluster`]: crate::broker::Broker::describe_cluster

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::Json;
use super::AppState;
use crate::raft::RaftStatus;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(cluster))
}

/// One broker of the cluster.
#[derive(Debug, Serialize, ToSchema)]
pub struct BrokerInfo {
    pub node_id: u32,
    pub host: String,
    pub port: u16,
    /// Partitions it leads, as the answering broker knows it.
    pub leaders: u32,
    /// The last metadata log index known to match on it: filled only when the answering broker
    /// is the controller (only the raft leader tracks its followers).
    pub metadata_matched_index: Option<u64>,
}

/// A raft group's state as the answering broker sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RaftInfo {
    pub term: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: String,
    pub leader: Option<u64>,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
}

impl From<&RaftStatus> for RaftInfo {
    fn from(s: &RaftStatus) -> RaftInfo {
        RaftInfo {
            term: s.term,
            role: s.role.to_string(),
            leader: s.leader,
            last_log_index: s.last_log_index,
            committed_index: s.committed_index,
            applied_index: s.applied_index,
        }
    }
}

/// The answering broker's replicas by role.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplicaInfo {
    pub hosted: u32,
    pub leading: u32,
    pub following: u32,
    pub without_leader: u32,
}

/// The cluster as the answering broker sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cluster {
    /// The broker that answered.
    pub node_id: u32,
    /// The metadata leader, if known.
    pub controller: Option<u32>,
    pub brokers: Vec<BrokerInfo>,
    /// The metadata group, from the answering broker.
    pub metadata_raft: RaftInfo,
    /// The answering broker's partition replicas.
    pub replicas: ReplicaInfo,
}

/// Brokers, controller, metadata raft state, and this broker's replicas.
#[utoipa::path(get, path = "/v1/cluster", tag = "cluster",
    responses((status = 200, body = Cluster)))]
async fn cluster(State(s): State<AppState>) -> Json<Cluster> {
    let b = &s.broker;
    let view = b.describe_cluster(Some(&[]));
    let meta = b.metadata_raft_status();
    let leaders = b.leader_counts();
    let counts = b.replica_counts();
    Json(Cluster {
        node_id: b.cluster.ctx.node_id as u32,
        controller: view.controller,
        brokers: view
            .brokers
            .into_iter()
            .map(|x| BrokerInfo {
                leaders: leaders.get(&x.node_id).copied().unwrap_or(0),
                metadata_matched_index: meta
                    .matched
                    .iter()
                    .find(|(id, _)| *id == u64::from(x.node_id))
                    .and_then(|(_, m)| *m),
                node_id: x.node_id,
                host: x.host,
                port: x.port,
            })
            .collect(),
        metadata_raft: RaftInfo::from(&meta),
        replicas: ReplicaInfo {
            hosted: counts.hosted,
            leading: counts.leading,
            following: counts.following,
            without_leader: counts.without_leader,
        },
    })
}
