//! MetadataCommand (key 23, broker to broker): a command for the cluster metadata, forwarded to the
//! metadata leader, which proposes it. The command is the broker's own encoding (JSON of one
//! cluster-state command); this module carries it and never parses it.
//!
//! ```text
//! request:  bytes command
//! response: u16 error, string message   (AdminResult)
//! ```

use bytes::Bytes;

use super::codec::{Reader, Writer};
use super::table::Body;
use super::ProtocolError;

/// Versions of MetadataCommand this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

/// Broker to broker: a command for the cluster metadata (the broker's own encoding), forwarded to
/// the metadata leader, which proposes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataCommandRequest {
    pub command: Bytes,
}

impl Body for MetadataCommandRequest {
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.command);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(MetadataCommandRequest {
            command: r.bytes("metadata command")?,
        })
    }
}
