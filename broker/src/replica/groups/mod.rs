//! Consumer-group state as a partition keeps it: the records of the internal `__consumer_offsets`
//! topic ([`records`]), the groups they describe ([`model`]), and the [`PartitionState`] that
//! rebuilds them in log order on every replica ([`state`]). What to write is decided by the group
//! coordinator (`crate::groups`), never here.
//!
//! [`PartitionState`]: super::PartitionState

pub mod model;
pub mod records;
pub mod state;

pub use model::{GroupModel, Groups, Tp};
pub use state::OffsetsState;

/// The internal compacted topic holding consumer groups and their committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
