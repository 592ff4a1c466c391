//! Which replicated state a partition keeps, by topic kind. The hooks themselves are
//! [`crate::raft::partition_state`] (the raft storage layer drives them); this is where a topic kind
//! picks its implementation. Every topic keeps idempotent-producer state; the offsets topic keeps consumer groups; window
//! operators' marks live beside the producers ([`super::topic_state`]).

pub use crate::raft::partition_state::{Admission, NoState, PartitionState, Refusal};

use super::settings::TopicSettings;

/// The state a partition of topic `name` with `settings` keeps.
pub fn for_topic(name: &str, settings: &TopicSettings) -> Box<dyn PartitionState> {
    if name == super::groups::OFFSETS_TOPIC {
        // Consumer groups and their offsets; only the coordinator writes here.
        return Box::<super::groups::OffsetsState>::default();
    }
    // Every topic accepts idempotent producers: batches of no producer (id -1) pass through it
    // untouched, so a topic nobody writes idempotently keeps an empty table.
    // Window operators reading the topic keep their marks beside the producers.
    Box::new(super::topic_state::TopicState::new(
        settings.producer_limits(),
    ))
}
