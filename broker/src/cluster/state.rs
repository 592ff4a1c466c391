//! The cluster metadata the metadata raft group replicates: topics, their partitions' replica
//! assignments, deleted topic ids, the producer-id allocator and the window operators' definitions
//! (their rules in [`super::operators`]) — and the commands that change it (a live topic's settings:
//! [`super::topic_configs`]).
//!
//! Pure and deterministic: every broker applies the same commands in the same order and gets the same
//! state. Brokers are the metadata group's raft membership (its nodes), passed in at apply time, so an
//! assignment depends only on the log. Commands are JSON (named fields, so adding one stays readable by
//! older state), one command per record.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sluice_protocol::wire::ErrorCode;

use super::operators::{OperatorDef, OperatorRecord};
use crate::error::ServiceError;
use crate::replica::settings::{validate_name, TopicSettings, MAX_PARTITIONS};

/// One topic in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// Cluster-unique and never reused: a partition's raft group is `(id << 32) | partition`.
    pub id: u32,
    pub configs: Vec<(String, String)>,
    /// Replica broker ids per partition (the group's voters); the first is the preferred leader.
    pub replicas: Vec<Vec<u32>>,
    /// The replicas each partition was created with: only these initialize its raft group (a
    /// replica added later joins through the leader).
    #[serde(default)]
    pub initial_replicas: Vec<Vec<u32>>,
    /// Moves under way: partition -> the replica set it is moving to.
    #[serde(default)]
    pub moving: BTreeMap<u32, Vec<u32>>,
    /// The last leader each partition's leader reported: partition -> (broker, raft term). Brokers
    /// that host no replica of a partition answer metadata from this.
    #[serde(default)]
    pub leaders: BTreeMap<u32, (u32, u64)>,
}

impl TopicRecord {
    pub fn group_id(&self, partition: u32) -> u64 {
        (u64::from(self.id) << 32) | u64::from(partition)
    }
}

/// The raft group id of the metadata group.
pub const METADATA_GROUP: u64 = 0;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub topics: BTreeMap<String, TopicRecord>,
    /// Ids of deleted topics: a broker that was down during a deletion removes their directories.
    pub deleted_topic_ids: BTreeSet<u32>,
    pub next_topic_id: u32,
    pub next_producer_id: i64,
    /// The last block of producer ids each broker was given: (token of the allocation, first,
    /// end), ids `[first, end)`.
    #[serde(default)]
    pub producer_blocks: BTreeMap<u32, (u64, i64, i64)>,
    /// Named producers: name -> their id and current epoch.
    #[serde(default)]
    pub named_producers: BTreeMap<String, NamedProducer>,
    /// The last [`RECENT_INITS`] named inits: (token, id, epoch), so the broker that proposed one
    /// reads back what it got even if another init of the name came right after.
    #[serde(default)]
    pub recent_inits: std::collections::VecDeque<(u64, i64, i16)>,
    /// Window operators by name.
    #[serde(default)]
    pub operators: BTreeMap<String, OperatorRecord>,
}

/// Named-producer inits remembered in [`ClusterState::recent_inits`].
pub const RECENT_INITS: usize = 256;

/// A named producer's id and current epoch (every init of the name bumps the epoch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedProducer {
    pub id: i64,
    pub epoch: i16,
}

/// A change to the cluster state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    CreateTopic {
        name: String,
        partitions: u32,
        replication_factor: u16,
        configs: Vec<(String, String)>,
    },
    DeleteTopic {
        name: String,
    },
    /// Changes a live topic's settings: `set` keys take the values given, `delete` keys go back
    /// to their defaults (the rules in [`super::topic_configs`]).
    AlterTopicConfig {
        name: String,
        #[serde(default)]
        set: Vec<(String, String)>,
        #[serde(default)]
        delete: Vec<String>,
    },
    /// Gives `broker` the next `count` producer ids (it hands them out without a metadata write).
    AllocateProducerIds {
        count: u32,
        #[serde(default)]
        broker: u32,
        /// Tells the proposer's allocation apart from an earlier one of the same broker.
        #[serde(default)]
        token: u64,
    },
    /// A named producer starts: a new name gets the next id at epoch 0, a known one its epoch + 1
    /// (a fresh id at epoch 0 once the epoch is exhausted). `token` tells the proposer's init apart.
    InitProducer {
        name: String,
        token: u64,
    },
    /// Starts moving a partition to `replicas` (its leader carries the move out).
    ReassignPartition {
        topic: String,
        partition: u32,
        replicas: Vec<u32>,
    },
    /// The partition's voters are now `replicas`: the move is done.
    CompleteReassignment {
        topic: String,
        partition: u32,
        replicas: Vec<u32>,
    },
    /// A partition's new leader reports itself (newer terms win).
    LeaderChanged {
        topic: String,
        topic_id: u32,
        partition: u32,
        leader: u32,
        term: u64,
    },
    /// Defines a window operator, creating its missing output topics (see `operators`).
    CreateOperator {
        /// Boxed: it would make every command as large as itself.
        def: Box<OperatorDef>,
        created_ms: i64,
    },
    /// Pauses or resumes a window operator.
    AlterOperator {
        name: String,
        paused: bool,
    },
    /// Deletes a window operator's definition (its topics stay).
    DeleteOperator {
        name: String,
    },
}

impl ClusterState {
    /// Whether `cmd` would apply cleanly to this state with these brokers (checked by the proposer
    /// before proposing, and again by everyone at apply).
    pub fn check(&self, cmd: &Command, brokers: &[u32]) -> Result<(), ServiceError> {
        match cmd {
            Command::CreateTopic {
                name,
                partitions,
                replication_factor,
                configs,
            } => {
                validate_name(name).map_err(|m| ServiceError::new(ErrorCode::INVALID_TOPIC, m))?;
                if *partitions == 0 || *partitions > MAX_PARTITIONS {
                    return Err(ServiceError::new(
                        ErrorCode::INVALID_PARTITIONS,
                        format!("partitions must be 1 to {MAX_PARTITIONS}"),
                    ));
                }
                let rf = usize::from(*replication_factor);
                if rf == 0 || rf > brokers.len() {
                    return Err(ServiceError::new(
                        ErrorCode::INVALID_REPLICATION_FACTOR,
                        format!(
                            "replication factor {rf} needs {rf} brokers; this cluster has {}",
                            brokers.len()
                        ),
                    ));
                }
                TopicSettings::from_pairs(configs)
                    .map_err(|m| ServiceError::new(ErrorCode::INVALID_CONFIG, m))?;
                if self.topics.contains_key(name) {
                    return Err(ServiceError::new(
                        ErrorCode::TOPIC_ALREADY_EXISTS,
                        format!("topic {name} already exists"),
                    ));
                }
                Ok(())
            }
            Command::DeleteTopic { name } => {
                if self.topics.contains_key(name) {
                    Ok(())
                } else {
                    Err(ServiceError::new(
                        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("unknown topic {name}"),
                    ))
                }
            }
            Command::AlterTopicConfig { name, set, delete } => {
                self.altered_configs(name, set, delete).map(|_| ())
            }
            Command::AllocateProducerIds { count, .. } => {
                if *count == 0 {
                    return Err(ServiceError::new(
                        ErrorCode::INVALID_REQUEST,
                        "count must be positive",
                    ));
                }
                Ok(())
            }
            Command::InitProducer { name, .. } => {
                if name.is_empty() || name.len() > sluice_protocol::wire::MAX_PRODUCER_NAME_BYTES {
                    return Err(ServiceError::new(
                        ErrorCode::INVALID_REQUEST,
                        format!(
                            "a producer name has 1 to {} bytes",
                            sluice_protocol::wire::MAX_PRODUCER_NAME_BYTES
                        ),
                    ));
                }
                Ok(())
            }
            Command::CreateOperator { def, .. } => self.check_create_operator(def, brokers),
            Command::AlterOperator { name, .. } | Command::DeleteOperator { name } => {
                self.check_operator_exists(name)
            }
            Command::LeaderChanged {
                topic,
                topic_id,
                partition,
                ..
            } => match self.topics.get(topic) {
                Some(t) if t.id == *topic_id && (*partition as usize) < t.replicas.len() => Ok(()),
                _ => Err(ServiceError::new(
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("unknown partition {topic}/{partition}"),
                )),
            },
            Command::ReassignPartition {
                topic,
                partition,
                replicas,
            }
            | Command::CompleteReassignment {
                topic,
                partition,
                replicas,
            } => {
                let t = self.topics.get(topic).ok_or_else(|| {
                    ServiceError::new(
                        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("unknown topic {topic}"),
                    )
                })?;
                if *partition as usize >= t.replicas.len() {
                    return Err(ServiceError::new(
                        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("topic {topic} has no partition {partition}"),
                    ));
                }
                let unique: BTreeSet<u32> = replicas.iter().copied().collect();
                if replicas.is_empty() || unique.len() != replicas.len() {
                    return Err(ServiceError::new(
                        ErrorCode::INVALID_REPLICATION_FACTOR,
                        "replicas must be distinct broker ids, at least one",
                    ));
                }
                if let Some(b) = replicas.iter().find(|r| !brokers.contains(r)) {
                    return Err(ServiceError::new(
                        ErrorCode::INVALID_REQUEST,
                        format!("broker {b} is not in the cluster"),
                    ));
                }
                if matches!(cmd, Command::ReassignPartition { .. })
                    && t.moving.get(partition).is_some_and(|m| m != replicas)
                {
                    return Err(ServiceError::new(
                        ErrorCode::INVALID_REQUEST,
                        format!(
                            "{topic}/{partition} is already moving to {:?}; wait for it to finish",
                            t.moving[partition]
                        ),
                    ));
                }
                if matches!(cmd, Command::CompleteReassignment { .. })
                    && t.moving.get(partition) != Some(replicas)
                {
                    return Err(ServiceError::new(
                        ErrorCode::INVALID_REQUEST,
                        format!("no move of {topic}/{partition} to {replicas:?} is under way"),
                    ));
                }
                Ok(())
            }
        }
    }

    /// Applies `cmd`; an invalid command changes nothing (and is reported).
    pub fn apply(&mut self, cmd: &Command, brokers: &[u32]) -> Result<(), ServiceError> {
        self.check(cmd, brokers)?;
        match cmd {
            Command::CreateTopic {
                name,
                partitions,
                replication_factor,
                configs,
            } => {
                self.next_topic_id = self.next_topic_id.max(1);
                let id = self.next_topic_id;
                self.next_topic_id += 1;
                let replicas = assign(brokers, *partitions, *replication_factor, id);
                // Keep the configs normalised (every key, canonical values).
                let configs = TopicSettings::from_pairs(configs)
                    .map(|s| s.to_pairs())
                    .unwrap_or_default();
                self.topics.insert(
                    name.clone(),
                    TopicRecord {
                        id,
                        configs,
                        initial_replicas: replicas.clone(),
                        replicas,
                        moving: BTreeMap::new(),
                        leaders: BTreeMap::new(),
                    },
                );
            }
            Command::DeleteTopic { name } => {
                if let Some(t) = self.topics.remove(name) {
                    self.deleted_topic_ids.insert(t.id);
                }
            }
            Command::AlterTopicConfig { name, set, delete } => {
                let configs = self.altered_configs(name, set, delete)?;
                if let Some(t) = self.topics.get_mut(name) {
                    t.configs = configs;
                }
            }
            Command::AllocateProducerIds {
                count,
                broker,
                token,
            } => {
                let first = self.next_producer_id;
                self.next_producer_id += i64::from(*count);
                self.producer_blocks
                    .insert(*broker, (*token, first, self.next_producer_id));
            }
            Command::InitProducer { name, token } => {
                let next = match self.named_producers.get(name) {
                    Some(p) if p.epoch < i16::MAX => NamedProducer {
                        id: p.id,
                        epoch: p.epoch + 1,
                    },
                    _ => {
                        let id = self.next_producer_id;
                        self.next_producer_id += 1;
                        NamedProducer { id, epoch: 0 }
                    }
                };
                self.named_producers.insert(name.clone(), next);
                self.recent_inits.push_back((*token, next.id, next.epoch));
                while self.recent_inits.len() > RECENT_INITS {
                    self.recent_inits.pop_front();
                }
            }
            Command::ReassignPartition {
                topic,
                partition,
                replicas,
            } => {
                // Recorded even when it names the current replicas: a move back must still reach
                // the group's voters if an earlier move already changed them.
                if let Some(t) = self.topics.get_mut(topic) {
                    t.moving.insert(*partition, replicas.clone());
                }
            }
            Command::LeaderChanged {
                topic,
                partition,
                leader,
                term,
                ..
            } => {
                if let Some(t) = self.topics.get_mut(topic) {
                    let newer = t.leaders.get(partition).is_none_or(|(_, old)| *term > *old);
                    if newer {
                        t.leaders.insert(*partition, (*leader, *term));
                    }
                }
            }
            Command::CompleteReassignment {
                topic,
                partition,
                replicas,
            } => {
                if let Some(t) = self.topics.get_mut(topic) {
                    if let Some(r) = t.replicas.get_mut(*partition as usize) {
                        *r = replicas.clone();
                    }
                    t.moving.remove(partition);
                }
            }
            Command::CreateOperator { def, created_ms } => {
                self.apply_create_operator(def, *created_ms, brokers)?;
            }
            Command::AlterOperator { name, paused } => {
                if let Some(o) = self.operators.get_mut(name) {
                    o.paused = *paused;
                }
            }
            Command::DeleteOperator { name } => {
                self.operators.remove(name);
            }
        }
        Ok(())
    }
}

/// Spreads replicas round-robin over the sorted brokers, each partition starting one broker further
/// (offset by the topic id so small topics do not all lead on the same broker).
pub fn assign(brokers: &[u32], partitions: u32, rf: u16, topic_id: u32) -> Vec<Vec<u32>> {
    let mut sorted = brokers.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let n = sorted.len();
    if n == 0 {
        return vec![Vec::new(); partitions as usize];
    }
    (0..partitions as usize)
        .map(|p| {
            let start = (p + topic_id as usize) % n;
            (0..usize::from(rf).min(n))
                .map(|i| sorted[(start + i) % n])
                .collect()
        })
        .collect()
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
