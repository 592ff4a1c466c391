//! The HTTP admin API (axum): JSON endpoints under `/v1` for the cluster, topics, replica moves,
//! groups and operators, `/metrics` for Prometheus, `/healthz` and `/readyz` for probes, and
//! `/v1/openapi.json`, the OpenAPI 3 document generated from the handlers and their types
//! (utoipa), so it lists exactly what the router serves. Every error answers with [`error::ErrorBody`]; an optional bearer token guards
//! everything but the probes (`auth`).
//!
//! An adapter and nothing more: each handler translates HTTP into one typed service call (`admin/`)
//! and the answer back. Questions only the whole cluster can answer (a group lives on its
//! coordinator, a partition's offsets on its leader) go through `sluice-client` to this broker, as
//! the CLI's do, so the HTTP API and the CLI cannot disagree about them. Nothing here touches a log
//! or a raft group.

mod auth;
mod cluster;
mod error;
mod extract;
mod groups;
mod health;
mod metrics;
mod openapi;
mod operators;
mod topics;

use std::sync::{Arc, OnceLock};

use axum::middleware;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use auth::check_exposure;
pub use error::{ApiError, ErrorBody};

use crate::broker::Broker;

/// What every handler gets: the broker, and a client of the cluster that starts at this broker.
#[derive(Debug, Clone)]
pub struct AppState {
    pub broker: Arc<Broker>,
    pub admin: sluice_client::Admin,
    /// The OpenAPI document as JSON, set once the router is built (it is built from the router).
    pub openapi: Arc<OnceLock<String>>,
}

/// The admin router: every route, the OpenAPI document built from them, the guard and the
/// fallbacks. `token`: the bearer token every non-probe request must carry.
pub fn router(state: AppState, token: Option<Arc<str>>) -> axum::Router {
    let (guarded, mut api) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(openapi::routes())
        .merge(cluster::routes())
        .merge(topics::routes())
        .merge(groups::routes())
        .merge(operators::routes())
        .merge(metrics::routes())
        .split_for_parts();
    let (probes, probe_api) = OpenApiRouter::new()
        .merge(health::routes())
        .split_for_parts();
    api.merge(probe_api);
    // Set once, here: a second router over the same state keeps the first document.
    match api.to_json() {
        Ok(json) => {
            let _ = state.openapi.set(json);
        }
        Err(e) => tracing::error!(error = %e, "admin API: cannot encode the OpenAPI document"),
    }
    // A layer over everything, fallbacks included, so that without the token even "no such path"
    // is not answered; the probes are let through by path (`auth::require`).
    guarded
        .merge(probes)
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(middleware::from_fn_with_state(token, auth::require))
        .with_state(state)
}

/// Serves the admin API on `listener` until `stop`; requests under way are finished.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>, stop: CancellationToken) {
    let admin = match sluice_client::Admin::new(broker.advertised.to_string()) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "admin API: cannot make a client of this broker");
            return;
        }
    };
    let token = broker.config.admin.token.as_deref().map(Arc::from);
    let state = AppState {
        broker,
        admin,
        openapi: Arc::default(),
    };
    let app = router(state, token);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "admin API stopped");
    }
}
