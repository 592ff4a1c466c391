//! Which replicated state a partition keeps, by topic kind. The hooks themselves are
//! [`crate::raft::partition_state`] (the raft storage layer drives them); this is where a topic kind
//! picks its implementation. Plain topics keep none; idempotent-producer state, group offsets and
//! window state will each be one implementation chosen here.

pub use crate::raft::partition_state::{Admission, NoState, PartitionState, Refusal};

use super::settings::TopicSettings;

/// The state a partition of a topic with `settings` keeps.
pub fn for_topic(settings: &TopicSettings) -> Box<dyn PartitionState> {
    // Every topic is a plain topic today (compacted or not): no state beyond the high watermark.
    let _ = settings;
    Box::new(NoState)
}
