//! Extractors whose refusals are [`ApiError`]s: a malformed JSON body or path answers with
//! the admin API's JSON error (`INVALID_REQUEST`, 400; a body that is not JSON, 415), never with
//! axum's plain-text rejection.

use axum::extract::{FromRequest, FromRequestParts};

use super::error::ApiError;

/// A JSON body.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

/// Path parameters.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}
