//! [`ClientError`], the one error type of the client, and [`ClientError::is_retriable`], which the
//! producer's retry loop, the consumer's poll loop and the admin client's idempotent reads use to decide
//! whether sending the same request again (after a backoff, a metadata refresh or a reconnect) may
//! succeed. Errors are `Clone` because one failed request fails every record of every batch it carried.

use std::sync::Arc;

use sluice_protocol::wire::{ErrorCode, ProtocolError};
use sluice_protocol::BatchError;
use thiserror::Error;

/// Shorthand for results of this crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Everything that can go wrong talking to a Sluice cluster.
#[derive(Debug, Clone, Error)]
pub enum ClientError {
    /// Connecting to, reading from or writing to a broker failed.
    #[error("i/o error with {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The connection closed (or was closed) before the answer arrived.
    #[error("connection to {addr} closed: {reason}")]
    Connection { addr: String, reason: String },
    /// The broker sent bytes that are not a valid response.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// A response frame longer than the configured maximum; the connection is closed.
    #[error("frame of {len} bytes from {addr} exceeds the limit of {max} bytes")]
    FrameTooLarge {
        addr: String,
        len: usize,
        max: usize,
    },
    /// The broker answered with an error code.
    #[error("broker error {code}: {message}")]
    Broker { code: ErrorCode, message: String },
    /// A fetched batch failed its CRC or format checks. Never retried: the bytes are bad.
    #[error("corrupt batch in {topic}/{partition} at offset {offset}: {source}")]
    Corrupt {
        topic: String,
        partition: u32,
        /// The fetch position the batch was read at.
        offset: u64,
        #[source]
        source: BatchError,
    },
    /// A batch could not be built (compression failure, batch too large).
    #[error("cannot build batch: {0}")]
    Batch(#[source] BatchError),
    /// No answer within the request timeout.
    #[error("request timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The producer, consumer or connection was closed.
    #[error("closed")]
    Closed,
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An argument is invalid (unknown partition, unassigned partition, bad name, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A record is larger than a batch or the producer's buffer can ever hold.
    #[error("record of {size} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge { size: usize, max: usize },
}

impl ClientError {
    /// Whether the same request may succeed if sent again later: I/O and connection failures,
    /// timeouts, and the broker codes that [`ErrorCode::is_retriable`] names (`NOT_LEADER`,
    /// `REQUEST_TIMED_OUT`, `THROTTLED`, `BROKER_SHUTTING_DOWN`, `UNKNOWN_TOPIC_OR_PARTITION`,
    /// `NOT_COORDINATOR`, `COORDINATOR_NOT_AVAILABLE`).
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Io { .. } | ClientError::Connection { .. } | ClientError::Timeout(_) => {
                true
            }
            ClientError::Broker { code, .. } => code.is_retriable(),
            ClientError::Protocol(_)
            | ClientError::FrameTooLarge { .. }
            | ClientError::Corrupt { .. }
            | ClientError::Batch(_)
            | ClientError::Closed
            | ClientError::InvalidConfig(_)
            | ClientError::InvalidArgument(_)
            | ClientError::RecordTooLarge { .. } => false,
        }
    }

    /// Whether the connection the request went over is unusable and should be dropped, so the next
    /// request reconnects.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            ClientError::Io { .. }
                | ClientError::Connection { .. }
                | ClientError::FrameTooLarge { .. }
        )
    }

    /// Whether cached metadata (partition leaders, partition counts) may be stale.
    pub fn invalidates_metadata(&self) -> bool {
        matches!(
            self,
            ClientError::Broker { code, .. }
                if *code == ErrorCode::NOT_LEADER
                    || *code == ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
        ) || self.is_connection_error()
    }

    /// The broker error code, if the broker answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn broker(code: ErrorCode, message: impl Into<String>) -> Self {
        ClientError::Broker {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn io(addr: &str, e: std::io::Error) -> Self {
        ClientError::Io {
            addr: addr.to_string(),
            source: Arc::new(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_classes() {
        let io = ClientError::io(
            "a:1",
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
        );
        assert!(io.is_retriable());
        assert!(io.is_connection_error());
        assert!(ClientError::Timeout(std::time::Duration::from_secs(1)).is_retriable());
        assert!(ClientError::Connection {
            addr: "a:1".into(),
            reason: "eof".into()
        }
        .is_retriable());
        for code in [
            ErrorCode::NOT_LEADER,
            ErrorCode::REQUEST_TIMED_OUT,
            ErrorCode::THROTTLED,
            ErrorCode::BROKER_SHUTTING_DOWN,
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
        ] {
            assert!(ClientError::broker(code, "").is_retriable(), "{code}");
        }
        for code in [
            ErrorCode::UNKNOWN,
            ErrorCode::CORRUPT_MESSAGE,
            ErrorCode::MESSAGE_TOO_LARGE,
            ErrorCode::TOPIC_ALREADY_EXISTS,
            ErrorCode::INVALID_REQUEST,
            ErrorCode::OFFSET_OUT_OF_RANGE,
        ] {
            assert!(!ClientError::broker(code, "").is_retriable(), "{code}");
        }
        assert!(!ClientError::Closed.is_retriable());
        assert!(!ClientError::Protocol(ProtocolError::Invalid("x")).is_retriable());
        assert!(!ClientError::Corrupt {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            source: BatchError::Empty
        }
        .is_retriable());
        assert!(!ClientError::RecordTooLarge { size: 2, max: 1 }.is_retriable());
    }

    #[test]
    fn metadata_invalidation() {
        assert!(ClientError::broker(ErrorCode::NOT_LEADER, "").invalidates_metadata());
        assert!(
            ClientError::broker(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, "").invalidates_metadata()
        );
        assert!(!ClientError::broker(ErrorCode::THROTTLED, "").invalidates_metadata());
        assert!(!ClientError::Timeout(std::time::Duration::ZERO).invalidates_metadata());
    }
}
