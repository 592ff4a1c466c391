//! FindCoordinator (key 8): which broker coordinates a consumer group. A group lives on one
//! partition of the internal `__consumer_offsets` topic (chosen by a hash of its id); its
//! coordinator is that partition's leader. Any broker answers from its metadata view.
//!
//! ```text
//! request:  string group
//! response: u16 error, string message, u32 node id, string host:port, u32 offsets partition
//! ```

use super::codec::{Reader, Writer};
use super::table::Body;
use super::{ErrorCode, ProtocolError};

/// Versions of FindCoordinator this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

/// Longest group id accepted, in bytes.
pub const MAX_GROUP_ID_BYTES: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindCoordinatorRequest {
    pub group: String,
}

impl Body for FindCoordinatorRequest {
    fn encode(&self, w: &mut Writer) {
        w.string(&self.group);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(FindCoordinatorRequest {
            group: r.string("group id")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindCoordinatorResponse {
    pub error: ErrorCode,
    pub message: String,
    /// The coordinator's broker id (0 on error).
    pub node_id: u32,
    /// The coordinator's client address (empty on error).
    pub host: String,
    /// The group's partition of `__consumer_offsets`.
    pub partition: u32,
}

impl Body for FindCoordinatorResponse {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.error.0);
        w.string(&self.message);
        w.u32(self.node_id);
        w.string(&self.host);
        w.u32(self.partition);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(FindCoordinatorResponse {
            error: ErrorCode(r.u16("error")?),
            message: r.string("message")?,
            node_id: r.u32("node id")?,
            host: r.string("host")?,
            partition: r.u32("partition")?,
        })
    }
}
