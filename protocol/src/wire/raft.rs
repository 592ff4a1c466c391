//! Raft (key 20, broker to broker): one raft message of any group, on the one connection per peer
//! broker that every group shares. This module only frames the message: the body's layout belongs
//! to the broker's raft codec (`broker/src/raft/codec.rs`), and it is never parsed here.
//!
//! ```text
//! request:  u64 group (0: the metadata group), u8 kind, bytes body
//! response: bytes body
//! ```

use bytes::Bytes;

use super::codec::{Reader, Writer};
use super::table::Body;
use super::ProtocolError;

/// Versions of Raft this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

/// A raft message between brokers: the group it is for (0 is the metadata group), what kind of
/// message, and its body. The body's layout belongs to the broker's raft codec; the protocol only
/// frames it, so raft messages share the one connection per peer with nothing else to parse here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftRequest {
    pub group: u64,
    pub kind: u8,
    /// The body as consecutive chunks (so record bytes travel without being joined); a decoded
    /// request holds one chunk.
    pub body: Vec<Bytes>,
}

impl RaftRequest {
    /// The body as one buffer (no copy when it is one chunk, as decoded).
    pub fn body_bytes(&self) -> Bytes {
        super::codec::concat(&self.body)
    }
}

/// The answer to a [`RaftRequest`]: an opaque body for the broker's raft codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftResponse {
    pub body: Bytes,
}

impl Body for RaftRequest {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.group);
        w.u8(self.kind);
        w.bytes_chunks(&self.body);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(RaftRequest {
            group: r.u64("raft group")?,
            kind: r.u8("raft message kind")?,
            body: vec![r.bytes("raft message")?],
        })
    }
}

impl Body for RaftResponse {
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.body);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(RaftResponse {
            body: r.bytes("raft message")?,
        })
    }
}
