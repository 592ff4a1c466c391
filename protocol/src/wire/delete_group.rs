//! DeleteGroup (key 15): removes a group without members and its committed offsets at once
//! (`NON_EMPTY_GROUP` while it has members).
//!
//! ```text
//! request:  string group
//! response: u16 error, string message
//! ```

use super::codec::{Reader, Writer};
use super::table::Body;
use super::ProtocolError;

/// Versions of DeleteGroup this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteGroupRequest {
    pub group: String,
}

impl Body for DeleteGroupRequest {
    fn encode(&self, w: &mut Writer) {
        w.string(&self.group);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(DeleteGroupRequest {
            group: r.string("group id")?,
        })
    }
}
