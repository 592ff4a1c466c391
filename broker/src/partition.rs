//! One partition as the request handlers see it: append record batches, read them, wait for new
//! data. This is the seam where replication slots in later: handlers call `append` and `read` and
//! never touch the storage log directly.

use std::time::Instant;

use bytes::Bytes;
use sluice_protocol::wire::ErrorCode;
use sluice_protocol::RecordBatch;
use sluice_storage::{PartitionLog, ReadResult, StorageError};
use tokio::sync::watch;

/// A partition's log plus the signal long-polling fetches wait on.
#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub id: u32,
    log: PartitionLog,
    end_tx: watch::Sender<u64>,
    /// Bumped on every append to any partition, for fetches that span several partitions.
    any_tx: std::sync::Arc<watch::Sender<u64>>,
}

/// An error code and the message that goes with it to the client.
pub type CodedError = (ErrorCode, String);

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

fn coded(e: StorageError) -> CodedError {
    (storage_error_code(&e), e.to_string())
}

impl Partition {
    pub fn new(
        topic: String,
        id: u32,
        log: PartitionLog,
        any_tx: std::sync::Arc<watch::Sender<u64>>,
    ) -> Partition {
        let (end_tx, _) = watch::channel(log.log_end_offset());
        Partition {
            topic,
            id,
            log,
            end_tx,
            any_tx,
        }
    }

    /// Appends every batch in `records` (whole batches back to back). All batches are checked before
    /// any is written, so a bad batch rejects the whole set. Returns the first base offset.
    pub fn append(&self, records: &Bytes) -> Result<u64, CodedError> {
        // Check every batch (both CRCs, once) before appending any, so a bad batch rejects the set.
        let batches = RecordBatch::iter_all(records.clone())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| (ErrorCode::CORRUPT_MESSAGE, e.to_string()))?;
        if batches.is_empty() {
            return Err((ErrorCode::CORRUPT_MESSAGE, "empty record set".into()));
        }
        let mut first = None;
        for b in &batches {
            let info = self.log.append_batch(b, 0, 0).map_err(coded)?;
            first.get_or_insert(info.base_offset);
        }
        self.end_tx.send_replace(self.log.log_end_offset());
        self.any_tx.send_modify(|g| *g = g.wrapping_add(1));
        first.ok_or_else(|| (ErrorCode::CORRUPT_MESSAGE, "empty record set".into()))
    }

    /// Makes everything appended so far durable (blocking: run it off the async threads).
    pub fn flush(&self) -> Result<u64, CodedError> {
        self.log.flush().map_err(coded)
    }

    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<ReadResult, CodedError> {
        self.log.read(offset, max_bytes).map_err(coded)
    }

    pub fn log(&self) -> &PartitionLog {
        &self.log
    }

    pub fn high_watermark(&self) -> u64 {
        self.log.log_end_offset()
    }

    pub fn log_start_offset(&self) -> u64 {
        self.log.log_start_offset()
    }

    /// Waits until the log end passes `offset` or `deadline` is reached.
    pub async fn wait_beyond(&self, offset: u64, deadline: Instant) {
        let mut rx = self.end_tx.subscribe();
        let wait = async {
            loop {
                if *rx.borrow_and_update() > offset {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout_at(deadline.into(), wait).await;
    }
}
