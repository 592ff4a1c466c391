//! ResetOffsets (key 14): moves a group's committed offsets to the given positions, also while
//! the group has members: the coordinator takes the affected partitions from their owners (they
//! revoke as in any reassignment), writes the new offsets once nobody owns them, and hands them
//! back, so the members continue from the new positions. The client resolves earliest, latest,
//! timestamps and shifts into offsets before it asks. Answered once every offset is written.
//!
//! ```text
//! request:  string group, [string topic, u32 partition, u64 offset]   (one entry per partition)
//! response: u16 error, string message
//! ```

use super::codec::{Reader, Writer};
use super::table::Body;
use super::ProtocolError;

/// Versions of ResetOffsets this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResetOffsetsRequest {
    pub group: String,
    /// (topic, partition, new offset).
    pub offsets: Vec<(String, u32, u64)>,
}

impl Body for ResetOffsetsRequest {
    fn encode(&self, w: &mut Writer) {
        w.string(&self.group);
        w.count(self.offsets.len());
        for (t, p, o) in &self.offsets {
            w.string(t);
            w.u32(*p);
            w.u64(*o);
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(ResetOffsetsRequest {
            group: r.string("group id")?,
            offsets: r.array(14, "offsets", |r| {
                Ok((r.string("topic name")?, r.u32("partition")?, r.u64("offset")?))
            })?,
        })
    }
}
