//! `GET /metrics`: every metric of the broker in the Prometheus text format, rendered by
//! [`Broker::render_metrics`] (which reads logs for lag in time, so it runs off the async workers).
//! Guarded by the admin token like the rest: Prometheus sends it with `authorization.credentials`.
//!
//! [`Broker::render_metrics`]: crate::broker::Broker::render_metrics

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use sluice_protocol::wire::ErrorCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// The broker's metrics, in the Prometheus text exposition format 0.0.4 (docs/metrics.md).
#[utoipa::path(get, path = "/metrics", tag = "cluster",
    responses((status = 200, description = "Prometheus text", content_type = "text/plain; version=0.0.4")))]
async fn metrics(State(s): State<AppState>) -> Response {
    let broker = s.broker.clone();
    match tokio::task::spawn_blocking(move || broker.render_metrics()).await {
        Ok(Ok(text)) => ([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Ok(Err(e)) => ApiError::from(e).into_response(),
        Err(e) => ApiError::code(ErrorCode::UNKNOWN, format!("rendering metrics failed: {e}"))
            .into_response(),
    }
}
