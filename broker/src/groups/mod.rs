//! Consumer groups: the coordinator, a leader service on the leader of each `__consumer_offsets`
//! partition, which keeps its groups' membership, assignments and committed offsets as that
//! partition's replicated state (`crate::replica::groups`), so a new leader coordinates at once.
//!
//! - [`coordinator`]: the runs (one task per offsets partition led here, deciding queued requests
//!   in rounds), liveness timers and tick, and writing decisions through raft;
//! - `requests`: heartbeats, commits, resets, deletion and reads, as decisions queued to a run;
//! - `liveness`: members' timers and the tick (eviction, released resets, new partitions, expiry);
//! - [`reconcile`]: the membership decisions, pure (heartbeat, reconciliation, eviction);
//! - [`round`]: a round of decisions on a working copy of the groups, encoded as one proposal;
//! - [`settings`]: a group's own session and heartbeat interval over the broker's, pure;
//! - [`offsets`]: the offset decisions, pure (commit fencing, reset, deletion, retention);
//! - [`assign`]: the assignors (`uniform`, sticky, the default; `range`), pure;
//! - [`subscription`]: topic lists and patterns resolved against the topics that exist.
//!
//! Nothing here knows the wire protocol: `api/` translates requests into these calls.

pub mod assign;
pub mod coordinator;
mod liveness;
pub mod offsets;
pub mod reconcile;
mod requests;
pub mod round;
pub mod settings;
pub mod subscription;

pub use crate::replica::groups::OFFSETS_TOPIC;
pub use coordinator::{CoordinatorService, GroupCoordinator};

/// The offsets partition of `group` among `partitions`: CRC-32 of the group id, so every broker
/// and every version agrees (a changed rule would split a group's records over two partitions).
pub fn partition_for(group: &str, partitions: u32) -> u32 {
    assert!(partitions > 0, "the offsets topic has partitions");
    crc32fast::hash(group.as_bytes()) % partitions
}

#[cfg(test)]
mod tests {
    /// The rule is part of the on-disk format: these values must never change.
    #[test]
    fn a_group_always_lands_on_the_same_partition() {
        assert_eq!(
            super::partition_for("orders", 16),
            crc32fast::hash(b"orders") % 16
        );
        assert_eq!(super::partition_for("g", 1), 0);
    }
}
