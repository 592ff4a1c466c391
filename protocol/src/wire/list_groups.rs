//! ListGroups (key 12): the consumer groups this broker coordinates (those on the
//! `__consumer_offsets` partitions it leads). A client lists a cluster's groups by asking every
//! broker.
//!
//! ```text
//! request:  (no body)
//! response: u16 error, string message, [string group, string state, u32 members]
//! ```

use super::codec::{Reader, Writer};
use super::table::Body;
use super::{ErrorCode, ProtocolError};

/// Versions of ListGroups this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListGroupsResponse {
    pub error: ErrorCode,
    pub message: String,
    pub groups: Vec<GroupListing>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group: String,
    /// `Empty`, `Reconciling` or `Stable`.
    pub state: String,
    pub members: u32,
}

impl Body for ListGroupsResponse {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.error.0);
        w.string(&self.message);
        w.count(self.groups.len());
        for g in &self.groups {
            w.string(&g.group);
            w.string(&g.state);
            w.u32(g.members);
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(ListGroupsResponse {
            error: ErrorCode(r.u16("error")?),
            message: r.string("message")?,
            groups: r.array(8, "groups", |r| {
                Ok(GroupListing {
                    group: r.string("group id")?,
                    state: r.string("state")?,
                    members: r.u32("members")?,
                })
            })?,
        })
    }
}
