//! The one error type of the broker's typed services: a stable code and a message for people.
//!
//! Codes are the protocol's [`ErrorCode`] numbers, so the binary adapter maps an error 1:1 onto the
//! wire and the HTTP adapter (next) onto a status. Services never build wire responses; they return
//! this. It never carries a Rust error chain to a client: the message is already the context.

use sluice_protocol::wire::ErrorCode;
use sluice_storage::StorageError;

/// A service's refusal or failure: what the client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ServiceError {
    pub code: ErrorCode,
    pub message: String,
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

impl ServiceError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ServiceError {
        debug_assert!(!code.is_ok(), "an error needs a non-zero code");
        ServiceError {
            code,
            message: message.into(),
        }
    }

    /// This replica does not lead; `addr` is the leader's `host:port` when known.
    pub fn not_leader(addr: Option<String>) -> ServiceError {
        ServiceError::new(
            ErrorCode::NOT_LEADER,
            match addr {
                Some(a) => format!("not the leader; the leader is at {a}"),
                None => "not the leader; no leader is known yet".into(),
            },
        )
    }

    pub fn invalid(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorCode::INVALID_REQUEST, message)
    }

    pub fn unknown(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorCode::UNKNOWN, message)
    }

    pub fn shutting_down(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorCode::BROKER_SHUTTING_DOWN, message)
    }

    /// The code and message, for adapters that answer per item (`error`, `message` fields).
    pub fn into_parts(self) -> (ErrorCode, String) {
        (self.code, self.message)
    }
}

impl From<StorageError> for ServiceError {
    fn from(e: StorageError) -> ServiceError {
        ServiceError::new(storage_error_code(&e), e.to_string())
    }
}

/// The protocol code a storage error is reported with.
pub fn storage_error_code(e: &StorageError) -> ErrorCode {
    match e {
        StorageError::InvalidBatch(_)
        | StorageError::BatchLength { .. }
        | StorageError::EmptyBatch => ErrorCode::CORRUPT_MESSAGE,
        StorageError::OffsetOutOfRange { .. } => ErrorCode::OFFSET_OUT_OF_RANGE,
        StorageError::Closed => ErrorCode::BROKER_SHUTTING_DOWN,
        StorageError::NotBatchBoundary(_) | StorageError::Config(_) => ErrorCode::INVALID_REQUEST,
        _ => ErrorCode::STORAGE_ERROR,
    }
}
