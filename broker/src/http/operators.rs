//! Window operators over HTTP: `GET/POST /v1/operators`, `GET/DELETE /v1/operators/{name}`,
//! `POST /v1/operators/{name}/pause` and `.../resume`. Translation only, to the typed services of
//! `admin::operators`; the run figures of each source partition are what this broker's own driver
//! reports (every replica of the source runs one), as `sluice operator describe` shows them.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Path};
use super::AppState;
use crate::cluster::operators::OperatorDef;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(describe, delete))
        .routes(routes!(pause))
        .routes(routes!(resume))
}

/// An operator's definition (the fields of `sluice operator create`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub name: String,
    /// The topic of raw events.
    pub source: String,
    /// The compacted topic window results go to.
    pub sink: String,
    /// `tumbling:SIZE`, `sliding:SIZE:SLIDE` or `session:GAP` (durations like `500ms`, `10s`).
    pub window: String,
    /// `record`, `processing` or `field:NAME`.
    pub time: String,
    /// `number` or `field:NAME`.
    pub value: String,
    /// Of count, sum, min, max, avg, first, last.
    pub aggregates: Vec<String>,
    #[serde(default)]
    pub out_of_orderness_ms: i64,
    #[serde(default)]
    pub allowed_lateness_ms: i64,
    pub late_topic: Option<String>,
    pub dead_letter_topic: Option<String>,
    pub idle_timeout_ms: Option<i64>,
    /// State limit per source partition; 0 or absent: the default (256 MiB).
    #[serde(default)]
    pub max_state_bytes: u64,
}

impl From<Definition> for OperatorDef {
    fn from(d: Definition) -> OperatorDef {
        OperatorDef {
            name: d.name,
            source: d.source,
            sink: d.sink,
            window: d.window,
            time: d.time,
            value: d.value,
            aggregates: d.aggregates,
            out_of_orderness_ms: d.out_of_orderness_ms,
            allowed_lateness_ms: d.allowed_lateness_ms,
            late_topic: d.late_topic,
            dead_letter_topic: d.dead_letter_topic,
            idle_timeout_ms: d.idle_timeout_ms,
            max_state_bytes: d.max_state_bytes,
        }
    }
}

impl From<OperatorDef> for Definition {
    fn from(d: OperatorDef) -> Definition {
        Definition {
            name: d.name,
            source: d.source,
            sink: d.sink,
            window: d.window,
            time: d.time,
            value: d.value,
            aggregates: d.aggregates,
            out_of_orderness_ms: d.out_of_orderness_ms,
            allowed_lateness_ms: d.allowed_lateness_ms,
            late_topic: d.late_topic,
            dead_letter_topic: d.dead_letter_topic,
            idle_timeout_ms: d.idle_timeout_ms,
            max_state_bytes: d.max_state_bytes,
        }
    }
}

/// An operator in the list.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperatorSummary {
    pub definition: Definition,
    pub paused: bool,
    pub created_ms: i64,
}

/// Every operator.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperatorList {
    pub operators: Vec<OperatorSummary>,
}

/// What this broker's driver of one source partition reports.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunInfo {
    /// Whether this broker's driver leads (writes results) or follows (keeps the state).
    pub leader: bool,
    /// The next source offset it reads.
    pub position: u64,
    pub high_watermark: u64,
    /// Source records not read yet.
    pub lag: u64,
    /// How far event time behind the newest record read the clock is (ms).
    pub lag_ms: i64,
    /// `null`: no record yet.
    pub watermark_ms: Option<i64>,
    pub keys: u64,
    pub windows: u64,
    pub state_bytes: u64,
    pub late: u64,
    pub bad: u64,
    pub emitted: u64,
    pub emit_p99_ms: Option<f64>,
    /// Why this partition's operator stopped, if it did.
    pub failed: Option<String>,
}

/// One source partition of an operator.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperatorPartition {
    pub partition: u32,
    pub leader: Option<u32>,
    /// The idempotent producer id its results are written with.
    pub producer_id: i64,
    /// `null` when this broker runs no driver for it (it hosts no replica of the partition).
    pub run: Option<RunInfo>,
}

/// An operator with its source partitions.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperatorDetail {
    pub definition: Definition,
    pub paused: bool,
    pub created_ms: i64,
    pub partitions: Vec<OperatorPartition>,
}

fn detail(s: &AppState, name: &str) -> Result<OperatorDetail, ApiError> {
    let v = s.broker.describe_operator(name)?;
    let partitions = v
        .partitions
        .iter()
        .map(|&(partition, leader, producer_id)| OperatorPartition {
            partition,
            leader,
            producer_id,
            run: s
                .broker
                .operator_stats
                .get(name, partition)
                .map(|r| RunInfo {
                    leader: r.leader,
                    position: r.position,
                    high_watermark: r.high_watermark,
                    lag: r.high_watermark.saturating_sub(r.position),
                    lag_ms: r.lag_ms,
                    watermark_ms: r.window.watermark_ms,
                    keys: r.window.keys,
                    windows: r.window.windows,
                    state_bytes: r.window.state_bytes,
                    late: r.window.late,
                    bad: r.window.bad,
                    emitted: r.window.emitted,
                    emit_p99_ms: r.emit_p99_ms,
                    failed: r.failed.or(r.window.failed),
                }),
        })
        .collect();
    Ok(OperatorDetail {
        definition: v.record.def.into(),
        paused: v.record.paused,
        created_ms: v.record.created_ms,
        partitions,
    })
}

/// Every operator.
#[utoipa::path(get, path = "/v1/operators", tag = "operators",
    responses((status = 200, body = OperatorList)))]
async fn list(State(s): State<AppState>) -> Json<OperatorList> {
    let operators = s
        .broker
        .list_operators()
        .into_iter()
        .map(|r| OperatorSummary {
            definition: r.def.into(),
            paused: r.paused,
            created_ms: r.created_ms,
        })
        .collect();
    Json(OperatorList { operators })
}

/// Defines an operator (its missing sink, late and dead-letter topics are created with it).
#[utoipa::path(post, path = "/v1/operators", tag = "operators", request_body = Definition,
    responses((status = 201, body = OperatorDetail), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn create(
    State(s): State<AppState>,
    Json(def): Json<Definition>,
) -> Result<(StatusCode, Json<OperatorDetail>), ApiError> {
    let name = def.name.clone();
    s.broker.create_operator(def.into()).await?;
    Ok((StatusCode::CREATED, Json(detail(&s, &name)?)))
}

/// An operator with, per source partition, its leader and this broker's run figures.
#[utoipa::path(get, path = "/v1/operators/{name}", tag = "operators",
    params(("name" = String, Path, description = "Operator name")),
    responses((status = 200, body = OperatorDetail), (status = 404, body = ErrorBody)))]
async fn describe(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<OperatorDetail>, ApiError> {
    Ok(Json(detail(&s, &name)?))
}

/// Deletes an operator's definition (its topics stay).
#[utoipa::path(delete, path = "/v1/operators/{name}", tag = "operators",
    params(("name" = String, Path, description = "Operator name")),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorBody)))]
async fn delete(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.broker.describe_operator(&name)?;
    s.broker.delete_operator(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stops an operator reading (its state and position are kept).
#[utoipa::path(post, path = "/v1/operators/{name}/pause", tag = "operators",
    params(("name" = String, Path, description = "Operator name")),
    responses((status = 200, body = OperatorDetail), (status = 404, body = ErrorBody)))]
async fn pause(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<OperatorDetail>, ApiError> {
    set_paused(s, name, true).await
}

/// Resumes a paused operator where it stopped.
#[utoipa::path(post, path = "/v1/operators/{name}/resume", tag = "operators",
    params(("name" = String, Path, description = "Operator name")),
    responses((status = 200, body = OperatorDetail), (status = 404, body = ErrorBody)))]
async fn resume(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<OperatorDetail>, ApiError> {
    set_paused(s, name, false).await
}

async fn set_paused(
    s: AppState,
    name: String,
    paused: bool,
) -> Result<Json<OperatorDetail>, ApiError> {
    s.broker.describe_operator(&name)?;
    s.broker.set_operator_paused(&name, paused).await?;
    Ok(Json(detail(&s, &name)?))
}
