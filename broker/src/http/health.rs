//! Probes: `/healthz` (the process answers) and `/readyz` (this broker has caught up with the
//! metadata group and leads or follows every replica it hosts; [`Broker::readiness`]). Neither
//! needs the admin token, so orchestrators can probe without a secret; neither says more than
//! whether and why not.
//!
//! [`Broker::readiness`]: crate::broker::Broker::readiness

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::Json;
use super::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// A probe's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Probe {
    /// `ok` or `not ready`.
    pub status: String,
    /// Why not ready (empty when ready).
    pub reasons: Vec<String>,
}

/// The process is up and answering.
#[utoipa::path(get, path = "/healthz", tag = "probes", security(()),
    responses((status = 200, body = Probe)))]
async fn healthz() -> Json<Probe> {
    Json(Probe {
        status: "ok".into(),
        reasons: Vec::new(),
    })
}

/// The broker has caught up with the metadata group and leads or follows every replica it hosts.
#[utoipa::path(get, path = "/readyz", tag = "probes", security(()),
    responses((status = 200, body = Probe), (status = 503, description = "not ready", body = Probe)))]
async fn readyz(State(s): State<AppState>) -> (StatusCode, Json<Probe>) {
    let r = s.broker.readiness();
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let probe = Probe {
        status: if r.ready { "ok" } else { "not ready" }.into(),
        reasons: r.reasons,
    };
    (status, Json(probe))
}
