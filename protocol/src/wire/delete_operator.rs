//! DeleteOperator (key 28): removes a window operator's definition. Its sink, late and
//! dead-letter topics stay.
//!
//! ```text
//! request:  string name
//! response: u16 error, string message   (AdminResult)
//! ```

use super::codec::{Reader, Writer};
use super::table::Body;
use super::ProtocolError;

/// Versions of DeleteOperator this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteOperatorRequest {
    pub name: String,
}

impl Body for DeleteOperatorRequest {
    fn encode(&self, w: &mut Writer) {
        w.string(&self.name);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(DeleteOperatorRequest {
            name: r.string("operator name")?,
        })
    }
}
