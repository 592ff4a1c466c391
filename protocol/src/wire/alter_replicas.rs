//! AlterReplicas (key 22, admin and broker to broker): moves a partition to a new replica set, and
//! reports the move complete (the same request with `complete` set).
//!
//! ```text
//! request:  string topic, u32 partition, [u32 replica], bool complete
//! response: u16 error, string message   (AdminResult)
//! ```

use super::codec::{Reader, Writer};
use super::table::Body;
use super::ProtocolError;

/// Versions of AlterReplicas this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

/// Moves a partition to a new replica set. The metadata records the target; the partition's leader
/// adds the new replicas (as learners until they have caught up), changes the group's voters, and
/// then reports the move complete (the same request with `complete` set), after which replicas that
/// left delete their copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterReplicasRequest {
    pub topic: String,
    pub partition: u32,
    pub replicas: Vec<u32>,
    pub complete: bool,
}

impl Body for AlterReplicasRequest {
    fn encode(&self, w: &mut Writer) {
        w.string(&self.topic);
        w.u32(self.partition);
        w.count(self.replicas.len());
        for r in &self.replicas {
            w.u32(*r);
        }
        w.bool(self.complete);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(AlterReplicasRequest {
            topic: r.string("topic name")?,
            partition: r.u32("partition")?,
            replicas: r.array(4, "replicas", |r| r.u32("replica"))?,
            complete: r.bool("complete")?,
        })
    }
}
