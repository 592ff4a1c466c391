//! `GET /v1/cluster`: the brokers (with the partitions each leads, and each broker's own raft state
//! and replicas by role, asked of it), the controller (metadata leader), and the answering broker's
//! metadata raft state and replicas; `POST /v1/cluster/balance-leaders`: leadership back to the
//! preferred replicas. Translation only ([`Broker::describe_cluster`], `admin::replicas`,
//! `admin::status`, `admin::leaders`).
//!
//! [`Broker::describe_cluster`]: crate::broker::Broker::describe_cluster

use std::collections::BTreeMap;

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::Json;
use super::AppState;
use crate::cluster::rebalance::LeaderOutcome;
use crate::raft::RaftSummary;
use crate::replica::report::ReplicaCounts;

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
    /// The metadata group's raft state on that broker, as it reports it (`null` if it did not
    /// answer).
    pub metadata_raft: Option<RaftInfo>,
    /// That broker's replicas by role, as it reports them (`null` if it did not answer).
    pub replicas: Option<ReplicaInfo>,
    /// Why `metadata_raft` and `replicas` are missing, if they are.
    pub error: Option<String>,
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

impl From<&RaftSummary> for RaftInfo {
    fn from(s: &RaftSummary) -> RaftInfo {
        RaftInfo {
            term: s.term,
            role: s.role.name().to_string(),
            leader: s.leader,
            last_log_index: s.last_log_index,
            committed_index: s.committed_index,
            applied_index: s.applied_index,
        }
    }
}

/// A broker's replicas by role.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplicaInfo {
    pub hosted: u32,
    pub leading: u32,
    pub following: u32,
    pub without_leader: u32,
}

impl From<&ReplicaCounts> for ReplicaInfo {
    fn from(c: &ReplicaCounts) -> ReplicaInfo {
        ReplicaInfo {
            hosted: c.hosted,
            leading: c.leading,
            following: c.following,
            without_leader: c.without_leader,
        }
    }
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

/// Brokers (each with its own raft state and replicas, asked of it), controller, and the
/// answering broker's metadata raft state and replicas.
#[utoipa::path(get, path = "/v1/cluster", tag = "cluster",
    responses((status = 200, body = Cluster)))]
async fn cluster(State(s): State<AppState>) -> Json<Cluster> {
    let b = &s.broker;
    let view = b.describe_cluster(Some(&[]));
    let meta = b.metadata_raft_status();
    let leaders = b.leader_counts();
    let count = |id: u32| leaders.iter().find(|l| l.node_id == id);
    let mut reported: BTreeMap<u32, _> = b
        .replicas_everywhere(None, &[], false)
        .await
        .into_iter()
        .collect();
    let here = b.local_replicas(&[], false);
    Json(Cluster {
        node_id: here.node_id,
        controller: view.controller,
        brokers: view
            .brokers
            .into_iter()
            .map(|x| {
                let (metadata_raft, replicas, error) = match reported.remove(&x.node_id) {
                    Some(Ok(r)) => (
                        Some(RaftInfo::from(&r.metadata)),
                        Some(ReplicaInfo::from(&r.counts)),
                        None,
                    ),
                    Some(Err(e)) => (None, None, Some(e.to_string())),
                    None => (None, None, Some("not a raft member (yet)".to_string())),
                };
                BrokerInfo {
                    leaders: count(x.node_id).map_or(0, |l| l.leaders),
                    preferred_leaders: count(x.node_id).map_or(0, |l| l.preferred),
                    metadata_matched_index: meta
                        .matched
                        .iter()
                        .find(|(id, _)| *id == u64::from(x.node_id))
                        .and_then(|(_, m)| *m),
                    metadata_raft,
                    replicas,
                    error,
                    node_id: x.node_id,
                    host: x.host,
                    port: x.port,
                }
            })
            .collect(),
        metadata_raft: RaftInfo::from(&meta.summary()),
        replicas: ReplicaInfo::from(&here.counts),
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
