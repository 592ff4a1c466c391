//! Consumer groups over HTTP: `GET /v1/groups`, `GET/DELETE /v1/groups/{id}` and
//! `POST /v1/groups/{id}/offsets/reset`. A group lives on its coordinator and its lag on the
//! partitions' leaders, so these go through `sluice-client` from this broker (every broker asked
//! for the list; the coordinator for the rest), exactly as `sluice group ...` does.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sluice_client::{GroupDescription, ResetSpec};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Path};
use super::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(describe, delete))
        .routes(routes!(reset))
}

/// A group in the list.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupSummary {
    pub group: String,
    /// `Empty`, `Reconciling` or `Stable`.
    pub state: String,
    pub members: u32,
}

/// Every group of the cluster.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupList {
    pub groups: Vec<GroupSummary>,
}

/// A topic partition.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

/// A member of a group.
#[derive(Debug, Serialize, ToSchema)]
pub struct Member {
    pub member_id: String,
    /// A static member's instance id.
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub member_epoch: i32,
    pub subscription: Vec<String>,
    pub subscription_regex: Option<String>,
    /// What it owns now.
    pub assignment: Vec<TopicPartition>,
    /// What it is giving up (still its own until it acknowledges).
    pub revoking: Vec<TopicPartition>,
}

/// A partition's committed offset and lag.
#[derive(Debug, Serialize, ToSchema)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: u32,
    /// The next offset the group will read; `null` without a commit.
    pub committed_offset: Option<u64>,
    /// The member that owns it.
    pub owner: Option<String>,
    pub log_start_offset: Option<u64>,
    pub high_watermark: Option<u64>,
    /// Records not consumed yet.
    pub lag: Option<u64>,
    /// Age of the oldest record not consumed yet, in ms.
    pub lag_ms: Option<u64>,
    /// Why the log's numbers are missing, if they are.
    pub error: Option<String>,
}

/// A group: members, assignments, committed offsets and lag.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupDetail {
    pub group: String,
    pub state: String,
    pub epoch: i32,
    pub assignor: String,
    pub members: Vec<Member>,
    pub offsets: Vec<PartitionLag>,
}

/// Where to move a group's offsets.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetOffsets {
    pub topic: String,
    /// One partition; every partition of the topic when absent.
    pub partition: Option<u32>,
    /// `earliest`, `latest`, `offset` (to `value`), `timestamp` (first record at or after `value`
    /// ms) or `shift-by` (`value` records, negative: back).
    pub to: String,
    pub value: Option<i64>,
}

/// The offsets after a reset.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResetResult {
    pub offsets: Vec<CommittedOffset>,
}

/// A committed offset.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
}

fn pairs(v: Vec<(String, u32)>) -> Vec<TopicPartition> {
    v.into_iter()
        .map(|(topic, partition)| TopicPartition { topic, partition })
        .collect()
}

impl From<GroupDescription> for GroupDetail {
    fn from(d: GroupDescription) -> GroupDetail {
        GroupDetail {
            group: d.group,
            state: d.state,
            epoch: d.epoch,
            assignor: d.assignor,
            members: d
                .members
                .into_iter()
                .map(|m| Member {
                    member_id: m.member_id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    host: m.host,
                    member_epoch: m.member_epoch,
                    subscription: m.subscription,
                    subscription_regex: m.subscription_regex,
                    assignment: pairs(m.partitions),
                    revoking: pairs(m.revoking),
                })
                .collect(),
            offsets: d
                .offsets
                .into_iter()
                .map(|o| PartitionLag {
                    topic: o.topic,
                    partition: o.partition,
                    committed_offset: o.committed_offset,
                    owner: o.owner,
                    log_start_offset: o.log_start_offset,
                    high_watermark: o.high_watermark,
                    lag: o.lag,
                    lag_ms: o.lag_ms,
                    error: o.error,
                })
                .collect(),
        }
    }
}

/// Every group of the cluster (each broker lists those it coordinates).
#[utoipa::path(get, path = "/v1/groups", tag = "groups",
    responses((status = 200, body = GroupList), (status = 503, body = ErrorBody)))]
async fn list(State(s): State<AppState>) -> Result<Json<GroupList>, ApiError> {
    let groups = s.admin.list_groups().await?;
    Ok(Json(GroupList {
        groups: groups
            .into_iter()
            .map(|g| GroupSummary {
                group: g.group,
                state: g.state,
                members: g.members,
            })
            .collect(),
    }))
}

/// A group with its members, assignments, committed offsets and lag (records and time).
#[utoipa::path(get, path = "/v1/groups/{id}", tag = "groups",
    params(("id" = String, Path, description = "Group id")),
    responses((status = 200, body = GroupDetail), (status = 404, body = ErrorBody)))]
async fn describe(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<GroupDetail>, ApiError> {
    Ok(Json(s.admin.describe_group(&id).await?.into()))
}

/// Deletes an empty group and its committed offsets (`NON_EMPTY_GROUP`, 409, while it has
/// members).
#[utoipa::path(delete, path = "/v1/groups/{id}", tag = "groups",
    params(("id" = String, Path, description = "Group id")),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn delete(State(s): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    s.admin.delete_group(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Moves a group's committed offsets of a topic; on a live group the coordinator takes the
/// partitions from their members, moves the offsets and hands them back.
#[utoipa::path(post, path = "/v1/groups/{id}/offsets/reset", tag = "groups",
    params(("id" = String, Path, description = "Group id")),
    request_body = ResetOffsets,
    responses((status = 200, body = ResetResult), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn reset(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<ResetOffsets>,
) -> Result<Json<ResetResult>, ApiError> {
    let value = || {
        req.value
            .ok_or_else(|| ApiError::invalid(format!("\"to\": \"{}\" needs a \"value\"", req.to)))
    };
    let spec = match req.to.as_str() {
        "earliest" => ResetSpec::Earliest,
        "latest" => ResetSpec::Latest,
        "offset" => ResetSpec::Offset(
            u64::try_from(value()?).map_err(|_| ApiError::invalid("an offset is not negative"))?,
        ),
        "timestamp" => ResetSpec::Timestamp(value()?),
        "shift-by" => ResetSpec::ShiftBy(value()?),
        other => {
            return Err(ApiError::invalid(format!(
                "\"to\": {other:?} is not one of earliest, latest, offset, timestamp, shift-by"
            )))
        }
    };
    let moved = s
        .admin
        .reset_offsets(&id, &req.topic, req.partition, spec)
        .await?;
    Ok(Json(ResetResult {
        offsets: moved
            .into_iter()
            .map(|(topic, partition, offset)| CommittedOffset {
                topic,
                partition,
                offset,
            })
            .collect(),
    }))
}
