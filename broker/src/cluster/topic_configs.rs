//! Changing a live topic's settings (the `AlterTopicConfig` command): how `set` and `delete` merge
//! into the topic's configs, and which changes are refused — an internal topic, a key named twice, a
//! value [`TopicSettings::from_pairs`] refuses, a key whose value is fixed once the topic exists
//! ([`FIXED_KEYS`]), and `cleanup.policy=delete` on a window operator's sink.
//!
//! Pure, like the rest of the cluster state. Bringing the new settings to the open replicas is the
//! reconciler's and the replica registry's; this module never touches a replica.

use std::collections::BTreeSet;

use sluice_protocol::wire::ErrorCode;

use super::state::ClusterState;
use crate::error::ServiceError;
use crate::replica::settings::{internal_topic_message, is_internal, TopicSettings};

/// Keys whose value cannot change on a live topic, and why.
pub const FIXED_KEYS: &[(&str, &str)] = &[
    (
        "segment.bytes",
        "open partition logs roll their segments by the size they were opened with",
    ),
    (
        "segment.ms",
        "open partition logs roll their segments by the age they were opened with",
    ),
    (
        "producer.id.expiration.ms",
        "every replica must build its idempotent-producer state with the same limits at the same \
         log position, and a live change would reach the replicas at different positions",
    ),
    (
        "producer.ids.max",
        "every replica must build its idempotent-producer state with the same limits at the same \
         log position, and a live change would reach the replicas at different positions",
    ),
];

fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::new(ErrorCode::INVALID_CONFIG, message)
}

/// `current` (a topic's configs) with `delete` keys back at their defaults and `set` keys at their
/// values, normalised (every key once, canonical values), or why that is not a valid change.
pub fn merge(
    current: &[(String, String)],
    set: &[(String, String)],
    delete: &[String],
) -> Result<Vec<(String, String)>, ServiceError> {
    let mut seen = BTreeSet::new();
    for key in set.iter().map(|(k, _)| k).chain(delete) {
        if !seen.insert(key.as_str()) {
            return Err(invalid(format!(
                "{key} is named twice (set or delete each key once)"
            )));
        }
    }
    let defaults = TopicSettings::default().to_pairs();
    let mut pairs = TopicSettings::from_pairs(current)
        .map_err(|m| invalid(format!("the topic's current configs: {m}")))?
        .to_pairs();
    for key in delete {
        let (_, default) = defaults
            .iter()
            .find(|(k, _)| k == key)
            .ok_or_else(|| invalid(format!("unknown topic config {key:?}")))?;
        set_pair(&mut pairs, key, default);
    }
    for (key, value) in set {
        set_pair(&mut pairs, key, value);
    }
    TopicSettings::from_pairs(&pairs)
        .map(|s| s.to_pairs())
        .map_err(invalid)
}

/// Replaces `key`'s value in `pairs`, or adds it (an unknown key then fails the parse after).
fn set_pair(pairs: &mut Vec<(String, String)>, key: &str, value: &str) {
    match pairs.iter_mut().find(|(k, _)| k == key) {
        Some(pair) => pair.1 = value.to_string(),
        None => pairs.push((key.to_string(), value.to_string())),
    }
}

/// The value of `key` in normalised `pairs`.
fn value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

impl ClusterState {
    /// The configs topic `name` has after the change, or why the change is refused.
    pub(super) fn altered_configs(
        &self,
        name: &str,
        set: &[(String, String)],
        delete: &[String],
    ) -> Result<Vec<(String, String)>, ServiceError> {
        if is_internal(name) {
            return Err(ServiceError::new(
                ErrorCode::INVALID_TOPIC,
                internal_topic_message(name),
            ));
        }
        let topic = self.topics.get(name).ok_or_else(|| {
            ServiceError::new(
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                format!("unknown topic {name}"),
            )
        })?;
        let before = TopicSettings::from_pairs(&topic.configs)
            .map(|s| s.to_pairs())
            .map_err(|m| invalid(format!("the topic's current configs: {m}")))?;
        let after = merge(&topic.configs, set, delete)?;
        for (key, why) in FIXED_KEYS {
            if value(&before, key) != value(&after, key) {
                return Err(invalid(format!(
                    "{key} cannot change on a live topic: {why}"
                )));
            }
        }
        let compact =
            |pairs: &[(String, String)]| value(pairs, "cleanup.policy") == Some("compact");
        if compact(&before) && !compact(&after) {
            if let Some(op) = self.operators.values().find(|o| o.def.sink == name) {
                return Err(invalid(format!(
                    "cleanup.policy must stay compact: topic {name} is the sink of window \
                     operator {:?}",
                    op.def.name
                )));
            }
        }
        Ok(after)
    }
}

#[cfg(test)]
#[path = "topic_configs_tests.rs"]
mod tests;
