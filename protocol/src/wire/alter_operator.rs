//! AlterOperator (key 27): pauses or resumes a window operator (a flag in its definition, proposed
//! on the metadata leader; the answer comes once the answering broker sees it).
//!
//! ```text
//! request:  string name, bool paused
//! response: u16 error, string message   (AdminResult)
//! ```

use super::codec::{Reader, Writer};
use super::table::Body;
use super::ProtocolError;

/// Versions of AlterOperator this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlterOperatorRequest {
    pub name: String,
    /// `true` pauses, `false` resumes.
    pub paused: bool,
}

impl Body for AlterOperatorRequest {
    fn encode(&self, w: &mut Writer) {
        w.string(&self.name);
        w.bool(self.paused);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(AlterOperatorRequest {
            name: r.string("operator name")?,
            paused: r.bool("paused")?,
        })
    }
}
