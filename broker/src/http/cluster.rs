//! `GET /v1/cluster`: the brokers (with the partitions each leads), the controller (metadata
//! leader), the metadata group's raft state as this broker sees it, and this broker's replicas by
//! role; `POST /v1/cluster/balance-leaders`: leadership back to the preferred replicas. Translation
//! only ([`Broker::describe_cluster`], `admin::status`, `admin::leaders`).
//!
//! [`Broker::describe_cluster`]: crate::broker::Broker::describe_cluster

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::Json;
use super::AppState;
use crate::cluster::rebalance::LeaderOutcome;
use crate::raft::RaftStatus;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(cluster))
        .routes(routes!(balance_leaders))
}

/// One broker of the cluster.
#[derive(Debug, Serialize, ToSchema)]
pub struct BrokerInfo {
    pub node_id: u32,
    pub host: String,
    pub port: u16,
    /// Partitions it leads, as the answering broker knows it.
    pub leaders: usize,
    /// Partitions whose preferred leader (first replica) it is.
    pub preferred_leaders: usize,
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
    let count = |id: u32| leaders.iter().find(|l| l.node_id == id);
    let counts = b.replica_counts();
    Json(Cluster {
        node_id: b.cluster.ctx.node_id as u32,
        controller: view.controller,
        brokers: view
            .brokers
            .into_iter()
            .map(|x| BrokerInfo {
                leaders: count(x.node_id).map_or(0, |l| l.leaders),
                preferred_leaders: count(x.node_id).map_or(0, |l| l.preferred),
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

/// One partition's leadership in a balance.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeaderMove {
    pub topic: String,
    pub partition: u32,
    /// Its first replica.
    pub preferred: Option<u32>,
    pub leader_before: Option<u32>,
    pub leader: Option<u32>,
    /// `moved`, `already_preferred` or `skipped`.
    pub outcome: String,
    /// Why it was skipped.
    pub reason: Option<String>,
}

/// What a balance did.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeaderBalance {
    pub moved: usize,
    pub already_preferred: usize,
    pub skipped: usize,
    pub partitions: Vec<LeaderMove>,
}

/// Moves every partition's leadership to its preferred replica (its first) where that replica is
/// up and in sync, on every broker; answers with what happened to each partition.
#[utoipa::path(post, path = "/v1/cluster/balance-leaders", tag = "cluster",
    responses((status = 200, body = LeaderBalance), (status = 503, body = ErrorBody)))]
async fn balance_leaders(State(s): State<AppState>) -> Result<Json<LeaderBalance>, ApiError> {
    let b = s.broker.balance_leaders().await?;
    Ok(Json(LeaderBalance {
        moved: b.moved,
        already_preferred: b.already_preferred,
        skipped: b.skipped,
        partitions: b
            .partitions
            .into_iter()
            .map(|p| LeaderMove {
                topic: p.topic,
                partition: p.partition,
                preferred: p.preferred,
                leader_before: p.leader_before,
                leader: p.leader,
                outcome: match p.outcome {
                    LeaderOutcome::Moved => "moved",
                    LeaderOutcome::AlreadyPreferred => "already_preferred",
                    LeaderOutcome::Skipped => "skipped",
                }
                .to_string(),
                reason: p.reason,
            })
            .collect(),
    }))
}
