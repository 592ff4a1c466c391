//! AddBroker (key 21, broker to broker): a broker started with `--join` asks to be added to the
//! cluster. What the metadata leader then does is the broker's business, not this module's.
//!
//! ```text
//! request:  u32 node id, string address (HOST:PORT)
//! response: u16 error, string message   (AdminResult)
//! ```

use super::codec::{Reader, Writer};
use super::table::Body;
use super::ProtocolError;

/// Versions of AddBroker this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

/// Adds a broker to a running cluster: it joins the metadata group (as a learner until it has caught
/// up, then as a voter). Sent by a broker started with `--join`; any broker forwards it to the
/// metadata leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddBrokerRequest {
    pub node_id: u32,
    /// `host:port` the other brokers and clients reach it at.
    pub address: String,
}

impl Body for AddBrokerRequest {
    fn encode(&self, w: &mut Writer) {
        w.u32(self.node_id);
        w.string(&self.address);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(AddBrokerRequest {
            node_id: r.u32("node id")?,
            address: r.string("broker address")?,
        })
    }
}
