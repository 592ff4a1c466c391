//! The OpenAPI 3 document of the admin API: its title, version, tags and the bearer security
//! scheme here; every path and schema comes from the handlers' `#[utoipa::path]` attributes as
//! the router is built (`utoipa_axum::routes!`), so a route cannot exist without its entry.

use axum::extract::State;
use axum::response::IntoResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::AppState;

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Sluice admin API",
        description = "Cluster, topics, consumer groups and window operators of a Sluice cluster, \
                       from any of its brokers. Errors are `{\"error\": CODE, \"message\": TEXT}`."
    ),
    modifiers(&BearerToken),
    security(("bearer" = [])),
    tags(
        (name = "cluster", description = "Brokers, raft state and partition leadership"),
        (name = "topics", description = "Topics, their partitions, settings and replica moves"),
        (name = "groups", description = "Consumer groups: members, offsets and lag"),
        (name = "operators", description = "Window operators"),
        (name = "probes", description = "Liveness and readiness (no token needed)"),
    )
)]
pub struct ApiDoc;

/// Declares the bearer token (required only when the broker has one set).
#[derive(Debug)]
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(document))
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "cluster",
    responses((status = 200, description = "The OpenAPI 3 document of this API", content_type = "application/json")))]
async fn document(State(s): State<AppState>) -> axum::response::Response {
    match s.openapi.get() {
        Some(json) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            json.clone(),
        )
            .into_response(),
        None => ApiError::code(
            sluice_protocol::wire::ErrorCode::UNKNOWN,
            "the OpenAPI document is not built yet",
        )
        .into_response(),
    }
}
