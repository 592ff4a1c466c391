//! What a consumer group's lag in time needs from a partition's local log: the timestamp of the
//! first data record at or after an offset, below the high watermark (the same rule as `sluice
//! group describe`'s, which asks the leader over the wire). Reads only; bounded per call.

use sluice_protocol::batch::first_timestamp;

use super::Replica;
use crate::error::Result;

/// Bytes one read of a timestamp lookup asks for (a read still returns one whole first batch).
const READ_BYTES: usize = 64 << 10;
/// Reads one lookup makes at most (each steps over batches without data records).
const READ_ROUNDS: usize = 8;

impl Replica {
    /// The timestamp (ms) of the first committed data record at or after `from` in this
    /// replica's log; `None` when there is none (only control batches up to the high watermark,
    /// or `from` at or past it). A `from` below the log start reads from the log start.
    pub fn timestamp_at(&self, from: u64) -> Result<Option<i64>> {
        let mut position = from.max(self.log_start_offset());
        for _ in 0..READ_ROUNDS {
            if position >= self.high_watermark() {
                return Ok(None);
            }
            let read = self.read_local(position, READ_BYTES)?;
            if read.bytes.is_empty() {
                return Ok(None);
            }
            let (found, next) = first_timestamp(position, read.bytes).map_err(|e| {
                crate::error::ServiceError::new(
                    sluice_protocol::wire::ErrorCode::CORRUPT_MESSAGE,
                    format!("{}/{} at {position}: {e}", self.topic(), self.partition()),
                )
            })?;
            if found.is_some() || next <= position {
                return Ok(found);
            }
            position = next;
        }
        Ok(None)
    }
}
