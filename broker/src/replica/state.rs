//! Which replicated state a partition keeps, by topic kind. The hooks themselves are
//! [`crate::raft::partition_state`] (the raft storage layer drives them); this is where a topic kind
//! picks its implementation. Every topic keeps idempotent-producer state; group offsets and window
//! state will each be one implementation chosen here.

pub use crate::raft::partition_state::{Admission, NoState, PartitionState, Refusal};

use super::settings::TopicSettings;

/// The state a partition of a topic with `settings` keeps.
pub fn for_topic(settings: &TopicSettings) -> Box<dyn PartitionState> {
    // Every topic accepts idempotent producers: batches of no producer (id -1) pass through it
    // untouched, so a topic nobody writes idempotently keeps an empty table.
    Box::new(super::producers::ProducerState::new(
        settings.producer_limits(),
    ))
}
