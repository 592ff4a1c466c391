//! Changing a live topic's settings: the change is a metadata command proposed on the metadata
//! leader (forwarded there from any broker), and answered with the topic's configs once this
//! broker has applied it — to its copy of the metadata and to its own open replicas of the topic —
//! so the client's next request here sees the new settings. The wait is bounded
//! ([`TOPIC_CHANGE_WAIT`]). Which keys may change, and how a change merges, is the metadata's
//! (`cluster::topic_configs`); nothing here reopens a replica.

use std::time::Duration;

use sluice_protocol::wire::ErrorCode;

use crate::broker::Broker;
use crate::cluster::state::Command;
use crate::cluster::topic_configs::merge;
use crate::error::{Result, ServiceError};
use crate::replica::settings::TopicSettings;

use super::topics::TOPIC_CHANGE_WAIT;

fn unknown_topic(name: &str) -> ServiceError {
    ServiceError::new(
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
        format!("unknown topic {name}"),
    )
}

impl Broker {
    /// Sets the `set` keys of topic `name` to their values and the `delete` keys back to their
    /// defaults; returns the topic's configs after the change (every key, canonical values). No
    /// key at all changes nothing and returns the configs as they are.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        set: Vec<(String, String)>,
        delete: Vec<String>,
    ) -> Result<Vec<(String, String)>> {
        if !set.is_empty() || !delete.is_empty() {
            let command = Command::AlterTopicConfig {
                name: name.to_string(),
                set,
                delete,
            };
            self.cluster.propose_anywhere(&command).await?;
            let Command::AlterTopicConfig { set, delete, .. } = &command else {
                return Err(ServiceError::unknown("the command changed kind"));
            };
            let deadline = tokio::time::Instant::now() + TOPIC_CHANGE_WAIT;
            while tokio::time::Instant::now() < deadline && !self.configs_applied(name, set, delete)
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        self.cluster
            .metadata
            .with_state(|s| s.topics.get(name).map(|t| t.configs.clone()))
            .ok_or_else(|| unknown_topic(name))
    }

    /// Whether this broker's metadata holds the values `set` and `delete` give topic `name`, and
    /// its open replicas of the topic (if any) run with the topic's settings. (A later change of
    /// the same keys to other values keeps this false: the caller's wait is bounded.)
    fn configs_applied(&self, name: &str, set: &[(String, String)], delete: &[String]) -> bool {
        let Some(record) = self
            .cluster
            .metadata
            .with_state(|s| s.topics.get(name).cloned())
        else {
            return true;
        };
        // The changed keys' values do not depend on the other keys, so merging into this
        // broker's copy gives what the leader applied (or the merge fails: nothing to wait for).
        let Ok(want) = merge(&record.configs, set, delete) else {
            return true;
        };
        let changed = |k: &String| set.iter().any(|(s, _)| s == k) || delete.contains(k);
        let recorded = want
            .iter()
            .filter(|(k, _)| changed(k))
            .all(|pair| record.configs.contains(pair));
        let hosted = self.replicas.get(name).filter(|t| t.id == record.id);
        recorded
            && hosted.is_none_or(|t| {
                TopicSettings::from_pairs(&record.configs).is_ok_and(|s| s == t.settings)
            })
    }
}
