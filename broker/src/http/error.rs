//! The admin API's one error answer: an HTTP status and a JSON body `{"error": CODE, "message":
//! TEXT}`, where CODE is the protocol's error name (`UNKNOWN_TOPIC_OR_PARTITION`, ...) or, for what
//! only HTTP has, `NOT_FOUND`, `METHOD_NOT_ALLOWED`, `UNAUTHORIZED`, `UNSUPPORTED_MEDIA_TYPE`.
//! A 4xx is what the caller got wrong (or may retry: 503 with `Retry-After`), a 5xx only a broker
//! fault. Mapping only: nothing here decides whether a request succeeds.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use sluice_client::ClientError;
use sluice_protocol::wire::ErrorCode;
use utoipa::ToSchema;

use crate::error::ServiceError;

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code: the protocol's error name, or an HTTP-only one (`NOT_FOUND`, ...).
    #[schema(example = "UNKNOWN_TOPIC_OR_PARTITION")]
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
}

/// An error answer: status and body.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody {
                error: code.to_string(),
                message: message.into(),
            },
        }
    }

    /// A protocol error code with the status it maps to.
    pub fn code(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::new(status_of(code), code.name(), message)
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::code(ErrorCode::INVALID_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }
}

/// The HTTP status of a protocol error code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
        | ErrorCode::GROUP_ID_NOT_FOUND
        | ErrorCode::OPERATOR_NOT_FOUND => StatusCode::NOT_FOUND,
        ErrorCode::TOPIC_ALREADY_EXISTS
        | ErrorCode::OPERATOR_ALREADY_EXISTS
        | ErrorCode::NON_EMPTY_GROUP => StatusCode::CONFLICT,
        ErrorCode::INVALID_REQUEST
        | ErrorCode::INVALID_PARTITIONS
        | ErrorCode::INVALID_CONFIG
        | ErrorCode::INVALID_TOPIC
        | ErrorCode::INVALID_REPLICATION_FACTOR
        | ErrorCode::INVALID_GROUP_ID
        | ErrorCode::INVALID_REGULAR_EXPRESSION
        | ErrorCode::UNSUPPORTED_ASSIGNOR
        | ErrorCode::INVALID_OPERATOR
        | ErrorCode::OFFSET_OUT_OF_RANGE
        | ErrorCode::MESSAGE_TOO_LARGE => StatusCode::BAD_REQUEST,
        ErrorCode::THROTTLED => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::NOT_LEADER
        | ErrorCode::REQUEST_TIMED_OUT
        | ErrorCode::BROKER_SHUTTING_DOWN
        | ErrorCode::NOT_COORDINATOR
        | ErrorCode::COORDINATOR_NOT_AVAILABLE => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        ApiError::code(e.code, e.message)
    }
}

impl From<ClientError> for ApiError {
    /// Errors of requests this broker made to the cluster on the caller's behalf: a broker's
    /// answer keeps its code; failing to reach one is a 503 (another try may find it).
    fn from(e: ClientError) -> ApiError {
        match e {
            ClientError::Broker { code, message } => ApiError::code(code, message),
            ClientError::InvalidArgument(m) => ApiError::invalid(m),
            e @ (ClientError::Io { .. }
            | ClientError::Connection { .. }
            | ClientError::Timeout(_)) => {
                ApiError::code(ErrorCode::REQUEST_TIMED_OUT, e.to_string())
            }
            e => ApiError::code(ErrorCode::UNKNOWN, e.to_string()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> ApiError {
        match e {
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "the body must be JSON (Content-Type: application/json)",
            ),
            e => ApiError::invalid(format!("malformed JSON body: {}", e.body_text())),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> ApiError {
        ApiError::invalid(format!("bad path: {}", e.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = self.status == StatusCode::SERVICE_UNAVAILABLE
            || self.status == StatusCode::TOO_MANY_REQUESTS;
        let mut r = (self.status, Json(self.body)).into_response();
        if retry {
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        r
    }
}

/// Answers a path no route serves.
pub async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such path: {}", uri.path()))
}

/// Answers a known path asked with a method it does not serve (axum then adds `Allow`).
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_errors_are_4xx_and_broker_faults_5xx() {
        assert_eq!(status_of(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION), 404);
        assert_eq!(status_of(ErrorCode::TOPIC_ALREADY_EXISTS), 409);
        assert_eq!(status_of(ErrorCode::INVALID_CONFIG), 400);
        assert_eq!(status_of(ErrorCode::NOT_LEADER), 503);
        assert_eq!(status_of(ErrorCode::STORAGE_ERROR), 500);
        assert_eq!(status_of(ErrorCode::UNKNOWN), 500);
    }
}
