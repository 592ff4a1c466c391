//! Typed errors of the storage engine.

use std::io;
use std::path::PathBuf;

use sluice_protocol::BatchError;
use thiserror::Error;

/// Everything a partition log operation can fail with.
#[derive(Debug, Error)]
pub enum StorageError {
    #[error("{context} ({path}): {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the log stopped after a failed fsync and accepts nothing more: {0}")]
    Failed(String),
    #[error("the log is closed")]
    Closed,
    #[error("invalid batch: {0}")]
    InvalidBatch(#[source] BatchError),
    #[error("a batch must hold at least one record")]
    EmptyBatch,
    #[error("expected exactly one batch of {declared} bytes, got {actual} bytes")]
    BatchLength { declared: usize, actual: usize },
    #[error("corrupt batch in {path} at byte {position}: {source}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        #[source]
        source: BatchError,
    },
    #[error("offset {offset} is outside the log [{log_start}, {log_end})")]
    OffsetOutOfRange {
        offset: u64,
        log_start: u64,
        log_end: u64,
    },
    #[error("offset {0} is not the last offset of a stored batch")]
    NotBatchBoundary(u64),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("compaction key map would exceed {limit_bytes} bytes")]
    CompactionMemory { limit_bytes: usize },
}

/// Storage result.
pub type Result<T> = std::result::Result<T, StorageError>;

/// Attaches what was being done and to which file to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| StorageError::Io {
            context,
            path: path.to_path_buf(),
            source,
        })
    }
}
