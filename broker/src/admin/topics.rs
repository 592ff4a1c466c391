//! Creating and deleting topics. Each change is proposed on the metadata leader (the request is
//! forwarded there whole when it is another broker), and answered once this broker has applied it —
//! for a creation, once this broker's own replicas of the topic are open and know their leader — so
//! the client's next request here finds the outcome. The wait is bounded ([`TOPIC_CHANGE_WAIT`]).

use std::time::Duration;

use crate::broker::Broker;
use crate::cluster::state::Command;
use sluice_protocol::wire::ErrorCode;

use crate::error::{Result, ServiceError};
use crate::replica::settings::{internal_topic_message, is_internal};

/// How long topic changes wait to become visible on this broker before answering anyway.
pub const TOPIC_CHANGE_WAIT: Duration = Duration::from_secs(10);

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u16,
    /// Topic settings as strings (`retention.ms`, `cleanup.policy`, ...), validated by the metadata.
    pub configs: Vec<(String, String)>,
}

/// The outcome of one topic's change, by name.
pub type TopicOutcome = (String, Result<()>);

/// The refusal of a client's change to an internal topic.
fn internal(name: &str) -> ServiceError {
    ServiceError::new(ErrorCode::INVALID_TOPIC, internal_topic_message(name))
}

impl Broker {
    /// Creates topics for a client: internal names (`__...`) are refused.
    pub async fn create_topics(&self, topics: Vec<NewTopic>) -> Vec<TopicOutcome> {
        let (internal_ones, topics): (Vec<_>, Vec<_>) =
            topics.into_iter().partition(|t| is_internal(&t.name));
        let mut out = self.create_topics_unchecked(topics).await;
        out.extend(internal_ones.into_iter().map(|t| {
            let e = internal(&t.name);
            (t.name, Err(e))
        }));
        out
    }

    /// Creates an internal topic (the broker's own use: `__consumer_offsets`). It goes to the
    /// metadata leader as a metadata command, not as a client's CreateTopics (which the leader
    /// refuses for internal names), and is answered once this broker sees it applied.
    pub(crate) async fn create_internal_topic(&self, t: NewTopic) -> Result<()> {
        assert!(is_internal(&t.name), "{} is not an internal topic", t.name);
        let command = Command::CreateTopic {
            name: t.name,
            partitions: t.partitions,
            replication_factor: t.replication_factor,
            configs: t.configs,
        };
        match self.cluster.propose_anywhere(&command).await {
            Err(e) if e.code != ErrorCode::TOPIC_ALREADY_EXISTS => return Err(e),
            _ => {}
        }
        let deadline = tokio::time::Instant::now() + TOPIC_CHANGE_WAIT;
        while tokio::time::Instant::now() < deadline && !self.change_visible(&command) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    async fn create_topics_unchecked(&self, topics: Vec<NewTopic>) -> Vec<TopicOutcome> {
        let commands = topics
            .into_iter()
            .map(|t| Command::CreateTopic {
                name: t.name,
                partitions: t.partitions,
                replication_factor: t.replication_factor,
                configs: t.configs,
            })
            .collect();
        self.topic_changes(commands).await
    }

    pub async fn delete_topics(&self, names: Vec<String>) -> Vec<TopicOutcome> {
        let (internal_ones, names): (Vec<_>, Vec<_>) =
            names.into_iter().partition(|n| is_internal(n));
        let mut out = self.delete_topics_unchecked(names).await;
        out.extend(internal_ones.into_iter().map(|n| {
            let e = internal(&n);
            (n, Err(e))
        }));
        out
    }

    async fn delete_topics_unchecked(&self, names: Vec<String>) -> Vec<TopicOutcome> {
        let commands = names
            .into_iter()
            .map(|name| Command::DeleteTopic { name })
            .collect();
        self.topic_changes(commands).await
    }

    /// Proposes each change on the metadata leader (forwarding the whole request there when it is
    /// another broker, which answers once it sees the changes itself), then waits until this broker
    /// sees the applied ones.
    async fn topic_changes(&self, commands: Vec<Command>) -> Vec<TopicOutcome> {
        let results = match self.cluster.topic_changes_on_leader(&commands).await {
            Some(results) => results,
            None => {
                let mut results = Vec::with_capacity(commands.len());
                for c in &commands {
                    results.push(self.cluster.metadata.propose(c).await);
                }
                results
            }
        };
        let deadline = tokio::time::Instant::now() + TOPIC_CHANGE_WAIT;
        for (c, r) in commands.iter().zip(&results) {
            if r.is_err() {
                continue;
            }
            while tokio::time::Instant::now() < deadline && !self.change_visible(c) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        commands
            .iter()
            .map(|c| match c {
                Command::CreateTopic { name, .. } | Command::DeleteTopic { name } => name.clone(),
                _ => String::new(),
            })
            .zip(results)
            .collect()
    }

    /// Whether a topic change is applied here, and for a creation, whether every local replica of
    /// the topic is open and knows its leader.
    pub(crate) fn change_visible(&self, c: &Command) -> bool {
        let state = self.cluster.metadata.state();
        let me = self.cluster.ctx.node_id;
        match c {
            Command::CreateTopic { name, .. } => {
                let Some(rec) = state.topics.get(name) else {
                    return false;
                };
                let local = self.replicas.get(name);
                rec.replicas.iter().enumerate().all(|(p, r)| {
                    !r.iter().any(|b| u64::from(*b) == me)
                        || local
                            .as_ref()
                            .and_then(|t| t.partitions.get(&(p as u32)))
                            .is_some_and(|part| part.leader().is_some())
                })
            }
            Command::DeleteTopic { name } => {
                !state.topics.contains_key(name)
                    && self.replicas.get(name).is_none()
                    && !self.replicas.has_dir(name)
            }
            Command::AllocateProducerIds { .. }
            | Command::AlterTopicConfig { .. }
            | Command::InitProducer { .. }
            | Command::LeaderChanged { .. }
            | Command::ReassignPartition { .. }
            | Command::CompleteReassignment { .. }
            | Command::CreateOperator { .. }
            | Command::AlterOperator { .. }
            | Command::DeleteOperator { .. } => true,
        }
    }
}
