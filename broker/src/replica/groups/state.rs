//! The replicated state of a `__consumer_offsets` partition: its [`Groups`], rebuilt from committed
//! records in log order on every replica and carried in raft snapshots, so a new coordinator serves
//! the groups the moment it leads. Only the coordinator writes to these partitions (clients are
//! refused at the produce API), so admission has nothing to check.

use std::any::Any;
use std::io;

use bytes::Bytes;
use sluice_protocol::RecordBatch;

use super::model::Groups;
use crate::raft::Membership;
use crate::replica::PartitionState;

/// Groups state of one offsets partition.
#[derive(Debug, Default)]
pub struct OffsetsState {
    pub groups: Groups,
    /// Records that did not decode (written by a newer version, or damaged): skipped and counted,
    /// never served as group state.
    pub skipped: u64,
}

impl PartitionState for OffsetsState {
    fn tracks_appends(&self) -> bool {
        false
    }

    fn committed(&mut self, batch: &RecordBatch, _membership: &Membership) {
        if batch.header().is_control() {
            return;
        }
        let records = match batch.records() {
            Ok(r) => r,
            Err(e) => {
                self.skipped += 1;
                tracing::error!(error = %e, "undecodable batch in an offsets partition; skipped");
                return;
            }
        };
        for r in records {
            let outcome = match r {
                Ok(r) => match r.key {
                    Some(k) => self
                        .groups
                        .apply_stored(k, r.value)
                        .map_err(|e| e.to_string()),
                    None => Err("record without a key".into()),
                },
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = outcome {
                self.skipped += 1;
                tracing::error!(error = %e, "undecodable record in an offsets partition; skipped");
            }
        }
    }

    fn snapshot(&self) -> io::Result<Bytes> {
        Ok(self.groups.encode())
    }

    fn restore(&mut self, state: &[u8]) -> io::Result<()> {
        self.groups = Groups::decode(Bytes::copy_from_slice(state))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        Ok(())
    }

    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}
