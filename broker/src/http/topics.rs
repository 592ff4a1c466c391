//! Topics over HTTP: `GET/POST /v1/topics`, `GET/PATCH/DELETE /v1/topics/{name}` and
//! `POST /v1/topics/{name}/partitions/{partition}/reassignment` (a replica move). Translation only:
//! creation, settings and deletion are [`Broker::create_topics`], [`Broker::alter_topic_configs`]
//! and [`Broker::delete_topics`]; a partition's
//! offsets and sizes come from the brokers hosting its replicas (`Broker::replicas_everywhere`, one
//! DescribeReplicas per broker), and only when no replica reports leading from whoever leads now
//! (through `sluice-client`, as `sluice topic describe` does).
//!
//! [`Broker::create_topics`]: crate::broker::Broker::create_topics
//! [`Broker::delete_topics`]: crate::broker::Broker::delete_topics
//! [`Broker::alter_topic_configs`]: crate::broker::Broker::alter_topic_configs

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::State;
use axum::http::StatusCode;
use futures_util::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use sluice_client::OffsetSpec;
use sluice_protocol::wire::ErrorCode;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Path};
use super::AppState;
use crate::admin::topics::NewTopic;
use crate::admin::view::TopicView;
use crate::raft::Role;
use crate::replica::report::ReplicaReport;
use crate::replica::settings::is_internal;

/// Partitions whose offsets are asked of their leaders at the same time.
const OFFSET_LOOKUPS: usize = 16;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(describe, alter, delete))
        .routes(routes!(reassign))
}

/// A topic in the list.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopicSummary {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u32,
    /// The broker's own topics (`__consumer_offsets`, ...): readable, not changeable here.
    pub internal: bool,
    /// Settings given at creation (or changed since); the rest are defaults.
    pub configs: BTreeMap<String, String>,
}

/// Every topic.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopicList {
    pub topics: Vec<TopicSummary>,
}

/// A topic to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTopic {
    pub name: String,
    /// Default: the broker's `default_partitions`.
    pub partitions: Option<u32>,
    /// Default: 1.
    pub replication_factor: Option<u16>,
    /// Topic settings (`retention.ms`, `retention.bytes`, `segment.bytes`, `segment.ms`,
    /// `cleanup.policy`, ...).
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

/// One replica of a partition, as the broker hosting it reports it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplicaDetail {
    pub broker: u32,
    /// Its raft role (`leader`, `follower`, `candidate`, `learner`, `shutdown`); `null` when the
    /// broker did not answer or does not host the replica (yet).
    pub role: Option<String>,
    pub term: Option<u64>,
    /// The leader it knows.
    pub leader: Option<u64>,
    pub log_start_offset: Option<u64>,
    /// The end of its log, committed or not.
    pub log_end_offset: Option<u64>,
    pub high_watermark: Option<u64>,
    /// Bytes of its segments on disk.
    pub size_bytes: Option<u64>,
    /// Raft log positions: last entry written, committed, applied.
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// Why the numbers are missing, if they are.
    pub error: Option<String>,
}

/// One partition of a topic.
#[derive(Debug, Serialize, ToSchema)]
pub struct PartitionDetail {
    pub partition: u32,
    /// The leader's broker id, if one is known.
    pub leader: Option<u32>,
    /// Replica broker ids; the first is the preferred leader.
    pub replicas: Vec<u32>,
    /// From the leader's replica; `null` when no leader answered.
    pub high_watermark: Option<u64>,
    pub log_start_offset: Option<u64>,
    /// Of the leader's replica: the end of its log, committed or not.
    pub log_end_offset: Option<u64>,
    /// Bytes of the leader's replica's segments on disk (each replica's in `replica_states`).
    pub size_bytes: Option<u64>,
    /// Every replica, as the broker hosting it reports it, in `replicas` order.
    pub replica_states: Vec<ReplicaDetail>,
    /// Why the offsets are missing, if they are.
    pub error: Option<String>,
}

/// A topic with its partitions.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopicDetail {
    pub name: String,
    pub internal: bool,
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionDetail>,
}

/// Changes to a live topic's settings.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlterTopic {
    /// Settings to set (`retention.ms`, `retention.bytes`, `cleanup.policy`; the others are fixed
    /// once the topic exists).
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Settings to return to their defaults.
    #[serde(default)]
    pub delete: Vec<String>,
}

/// A replica move to start.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reassignment {
    /// The partition's new replicas; the first becomes its preferred leader.
    pub replicas: Vec<u32>,
}

/// A replica move under way.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReassignmentStarted {
    pub topic: String,
    pub partition: u32,
    pub replicas: Vec<u32>,
}

fn unknown_topic(name: &str) -> ApiError {
    ApiError::code(
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
        format!("no topic named {name:?}"),
    )
}

/// Every topic, internal ones included (flagged).
#[utoipa::path(get, path = "/v1/topics", tag = "topics",
    responses((status = 200, body = TopicList)))]
async fn list(State(s): State<AppState>) -> Json<TopicList> {
    let view = s.broker.describe_cluster(None);
    let topics = view
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t.partitions.unwrap_or_default();
            TopicSummary {
                internal: is_internal(&t.name),
                replication_factor: partitions.first().map_or(0, |p| p.replicas.len() as u32),
                partitions: partitions.len() as u32,
                configs: t.configs.into_iter().collect(),
                name: t.name,
            }
        })
        .collect();
    Json(TopicList { topics })
}

/// Creates a topic; answered once this broker's replicas of it are open.
#[utoipa::path(post, path = "/v1/topics", tag = "topics", request_body = CreateTopic,
    responses((status = 201, body = TopicDetail), (status = 400, body = ErrorBody),
              (status = 409, description = "the topic exists", body = ErrorBody)))]
async fn create(
    State(s): State<AppState>,
    Json(req): Json<CreateTopic>,
) -> Result<(StatusCode, Json<TopicDetail>), ApiError> {
    let topic = NewTopic {
        name: req.name.clone(),
        partitions: req.partitions.unwrap_or(s.broker.config.default_partitions),
        replication_factor: req.replication_factor.unwrap_or(1),
        configs: req.configs.into_iter().collect(),
    };
    let outcome = s.broker.create_topics(vec![topic]).await;
    match outcome.into_iter().next() {
        Some((_, Ok(()))) => Ok((StatusCode::CREATED, Json(detail(&s, &req.name).await?))),
        Some((_, Err(e))) => Err(e.into()),
        None => Err(ApiError::code(
            ErrorCode::UNKNOWN,
            "no outcome for the topic",
        )),
    }
}

/// A topic with every partition's leader, replicas, offsets and sizes, and each replica's state.
#[utoipa::path(get, path = "/v1/topics/{name}", tag = "topics",
    params(("name" = String, Path, description = "Topic name")),
    responses((status = 200, body = TopicDetail), (status = 404, body = ErrorBody)))]
async fn describe(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<TopicDetail>, ApiError> {
    Ok(Json(detail(&s, &name).await?))
}

/// Changes a live topic's settings; answered once this broker's replicas apply them (every broker's
/// follow). Keys fixed on a live log are refused with `INVALID_CONFIG`.
#[utoipa::path(patch, path = "/v1/topics/{name}", tag = "topics",
    params(("name" = String, Path, description = "Topic name")),
    request_body = AlterTopic,
    responses((status = 200, body = TopicDetail), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn alter(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Json(req): Json<AlterTopic>,
) -> Result<Json<TopicDetail>, ApiError> {
    s.broker
        .alter_topic_configs(&name, req.set.into_iter().collect(), req.delete)
        .await?;
    Ok(Json(detail(&s, &name).await?))
}

/// Deletes a topic and its data on every broker.
#[utoipa::path(delete, path = "/v1/topics/{name}", tag = "topics",
    params(("name" = String, Path, description = "Topic name")),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorBody)))]
async fn delete(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let outcome = s.broker.delete_topics(vec![name]).await;
    match outcome.into_iter().next() {
        Some((_, Ok(()))) => Ok(StatusCode::NO_CONTENT),
        Some((_, Err(e))) => Err(e.into()),
        None => Err(ApiError::code(
            ErrorCode::UNKNOWN,
            "no outcome for the topic",
        )),
    }
}

/// Starts moving a partition to other brokers; the partition's leader carries the move out
/// (`GET /v1/topics/{name}` shows the replicas once it is done).
#[utoipa::path(post, path = "/v1/topics/{name}/partitions/{partition}/reassignment", tag = "topics",
    params(("name" = String, Path, description = "Topic name"),
           ("partition" = u32, Path, description = "Partition")),
    request_body = Reassignment,
    responses((status = 202, body = ReassignmentStarted), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn reassign(
    State(s): State<AppState>,
    Path((name, partition)): Path<(String, u32)>,
    Json(req): Json<Reassignment>,
) -> Result<(StatusCode, Json<ReassignmentStarted>), ApiError> {
    s.broker
        .reassign_partition(name.clone(), partition, req.replicas.clone())
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ReassignmentStarted {
            topic: name,
            partition,
            replicas: req.replicas,
        }),
    ))
}

/// The topic as the brokers hosting its replicas report it (each asked once, all at once).
pub(super) async fn detail(s: &AppState, name: &str) -> Result<TopicDetail, ApiError> {
    let view = s
        .broker
        .describe_cluster(Some(std::slice::from_ref(&name.to_string())));
    let Some(TopicView {
        partitions: Some(partitions),
        configs,
        ..
    }) = view.topics.into_iter().next()
    else {
        return Err(unknown_topic(name));
    };
    let hosts: BTreeSet<u32> = partitions
        .iter()
        .flat_map(|p| p.replicas.iter().copied())
        .collect();
    let topics = [name.to_string()];
    let answers = s
        .broker
        .replicas_everywhere(Some(&hosts), &topics, true)
        .await;
    // (broker, partition) -> its report, or why the broker gave none.
    let mut reports: BTreeMap<(u32, u32), ReplicaReport> = BTreeMap::new();
    let mut silent: BTreeMap<u32, String> = BTreeMap::new();
    for (broker, answer) in answers {
        match answer {
            Ok(b) => {
                for (_, parts) in b.topics.into_iter().filter(|(t, _)| t == name) {
                    for r in parts {
                        reports.insert((broker, r.partition), r);
                    }
                }
            }
            Err(e) => {
                silent.insert(broker, e.to_string());
            }
        }
    }
    let partitions = stream::iter(partitions)
        .map(|p| {
            let states: Vec<ReplicaDetail> = p
                .replicas
                .iter()
                .map(|b| replica_detail(*b, reports.get(&(*b, p.partition)), silent.get(b)))
                .collect();
            // The replica that says it leads, in the highest term (an old leader that has not
            // heard of the new term yet may still say so for a moment).
            let leading = p
                .replicas
                .iter()
                .filter_map(|b| reports.get(&(*b, p.partition)))
                .filter(|r| r.raft.role == Role::Leader)
                .max_by_key(|r| r.raft.term)
                .cloned();
            async move {
                let mut d = PartitionDetail {
                    partition: p.partition,
                    leader: p.leader,
                    replicas: p.replicas,
                    high_watermark: None,
                    log_start_offset: None,
                    log_end_offset: None,
                    size_bytes: None,
                    replica_states: states,
                    error: None,
                };
                if let Some(r) = leading {
                    d.high_watermark = Some(r.high_watermark);
                    d.log_start_offset = Some(r.log_start_offset);
                    d.log_end_offset = Some(r.log_end_offset);
                    d.size_bytes = Some(r.size_bytes);
                    return d;
                }
                // No replica reported leading (an election, or the leader did not answer): ask
                // for the committed range the way a client would, through whoever leads now.
                let earliest = s
                    .admin
                    .list_offsets(name, d.partition, OffsetSpec::Earliest);
                let latest = s.admin.list_offsets(name, d.partition, OffsetSpec::Latest);
                match tokio::try_join!(earliest, latest) {
                    Ok((start, hw)) => {
                        d.log_start_offset = start;
                        d.high_watermark = hw;
                    }
                    Err(e) => d.error = Some(format!("asking the leader: {e}")),
                }
                d
            }
        })
        .buffered(OFFSET_LOOKUPS)
        .collect()
        .await;
    Ok(TopicDetail {
        name: name.to_string(),
        internal: is_internal(name),
        configs: configs.into_iter().collect(),
        partitions,
    })
}

/// Replica `broker`'s row: its report, or why there is none.
fn replica_detail(
    broker: u32,
    report: Option<&ReplicaReport>,
    silent: Option<&String>,
) -> ReplicaDetail {
    let error = match (report, silent) {
        (Some(_), _) => None,
        (None, Some(e)) => Some(format!("broker {broker} did not answer: {e}")),
        (None, None) => Some(format!("broker {broker} does not host it (yet)")),
    };
    ReplicaDetail {
        broker,
        role: report.map(|r| r.raft.role.name().to_string()),
        term: report.map(|r| r.raft.term),
        leader: report.and_then(|r| r.raft.leader),
        log_start_offset: report.map(|r| r.log_start_offset),
        log_end_offset: report.map(|r| r.log_end_offset),
        high_watermark: report.map(|r| r.high_watermark),
        size_bytes: report.map(|r| r.size_bytes),
        last_log_index: report.and_then(|r| r.raft.last_log_index),
        committed_index: report.and_then(|r| r.raft.committed_index),
        applied_index: report.and_then(|r| r.raft.applied_index),
        error,
    }
}
