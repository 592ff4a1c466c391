//! InitProducerId (key 7): a producer asks for its producer id and epoch before it writes
//! idempotently. Without a name the broker hands out a fresh id (epoch 0) from a block it holds;
//! with a stable name (Kafka's `transactional.id`, Pulsar's producer name) the cluster returns the
//! name's id with its epoch bumped, which fences every earlier holder of the name.
//!
//! ```text
//! request:  string name        (empty: no name)
//! response: u16 error, string message, i64 producer id, i16 epoch   (id -1 on error)
//! ```

use super::codec::{Reader, Writer};
use super::table::Body;
use super::{ErrorCode, ProtocolError};

/// Versions of InitProducerId this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

/// Longest producer name accepted, in bytes.
pub const MAX_PRODUCER_NAME_BYTES: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitProducerIdRequest {
    /// A stable producer name, or empty for an anonymous producer.
    pub name: String,
}

impl Body for InitProducerIdRequest {
    fn encode(&self, w: &mut Writer) {
        w.string(&self.name);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(InitProducerIdRequest {
            name: r.string("producer name")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitProducerIdResponse {
    pub error: ErrorCode,
    pub message: String,
    pub producer_id: i64,
    pub epoch: i16,
}

impl Body for InitProducerIdResponse {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.error.0);
        w.string(&self.message);
        w.i64(self.producer_id);
        w.u16(self.epoch as u16);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(InitProducerIdResponse {
            error: ErrorCode(r.u16("error")?),
            message: r.string("message")?,
            producer_id: r.i64("producer id")?,
            epoch: r.u16("epoch")? as i16,
        })
    }
}
