//! Window operator definitions: create, list, describe, pause, resume and delete. Changes are
//! metadata commands proposed on the metadata leader (forwarded there from any broker) and answered
//! once this broker sees them applied — for a creation, once the topics it created have their
//! local replicas open — so the client's next request here finds the outcome. Reads come from this
//! broker's copy of the metadata. Running the operators is not this module's (nor built yet).

use std::time::Duration;

use sluice_protocol::wire::ErrorCode;

use crate::broker::Broker;
use crate::cluster::operators::{OperatorDef, OperatorRecord};
use crate::cluster::state::{ClusterState, Command};
use crate::error::{Result, ServiceError};

use super::topics::TOPIC_CHANGE_WAIT;

/// An operator as described: its record and, per source partition, the leader (if known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorView {
    pub record: OperatorRecord,
    /// `(partition, leader, producer id)` per source partition.
    pub partitions: Vec<(u32, Option<u32>, i64)>,
}

impl Broker {
    /// Defines an operator (checked whole; its missing sink, late and dead-letter topics are
    /// created with it, or nothing is).
    pub async fn create_operator(&self, def: OperatorDef) -> Result<()> {
        let def = def.canonical()?;
        let name = def.name.clone();
        let command = Command::CreateOperator {
            def: Box::new(def),
            created_ms: crate::cluster::metadata::now_ms(),
        };
        self.cluster.propose_anywhere(&command).await?;
        let Command::CreateOperator { def, .. } = &command else {
            return Ok(());
        };
        let outputs: Vec<&String> = [Some(&def.sink), def.late_topic.as_ref()]
            .into_iter()
            .chain([def.dead_letter_topic.as_ref()])
            .flatten()
            .collect();
        self.until_visible(|b, s| {
            s.operators.contains_key(&name)
                && outputs.iter().all(|t| {
                    b.change_visible(&Command::CreateTopic {
                        name: (*t).clone(),
                        partitions: 0,
                        replication_factor: 0,
                        configs: Vec::new(),
                    })
                })
        })
        .await;
        Ok(())
    }

    /// Every operator, by name.
    pub fn list_operators(&self) -> Vec<OperatorRecord> {
        self.cluster
            .metadata
            .with_state(|s| s.operators.values().cloned().collect())
    }

    /// One operator, with its source partitions' leaders.
    pub fn describe_operator(&self, name: &str) -> Result<OperatorView> {
        let record = self
            .cluster
            .metadata
            .with_state(|s| s.operators.get(name).cloned())
            .ok_or_else(|| {
                ServiceError::new(
                    ErrorCode::OPERATOR_NOT_FOUND,
                    format!("no operator named {name:?}"),
                )
            })?;
        let view = self.describe_cluster(Some(std::slice::from_ref(&record.def.source)));
        let leaders: Vec<Option<u32>> = view
            .topics
            .first()
            .and_then(|t| t.partitions.as_ref())
            .map(|ps| ps.iter().map(|p| p.leader).collect())
            .unwrap_or_default();
        let partitions = record
            .producer_ids
            .iter()
            .enumerate()
            .map(|(p, id)| (p as u32, leaders.get(p).copied().flatten(), *id))
            .collect();
        Ok(OperatorView { record, partitions })
    }

    /// Pauses (`true`) or resumes (`false`) an operator.
    pub async fn set_operator_paused(&self, name: &str, paused: bool) -> Result<()> {
        let command = Command::AlterOperator {
            name: name.to_string(),
            paused,
        };
        self.cluster.propose_anywhere(&command).await?;
        self.until_visible(|_, s| s.operators.get(name).is_none_or(|o| o.paused == paused))
            .await;
        Ok(())
    }

    /// Deletes an operator's definition; its topics stay.
    pub async fn delete_operator(&self, name: &str) -> Result<()> {
        let command = Command::DeleteOperator {
            name: name.to_string(),
        };
        self.cluster.propose_anywhere(&command).await?;
        self.until_visible(|_, s| !s.operators.contains_key(name))
            .await;
        Ok(())
    }

    /// Waits (up to [`TOPIC_CHANGE_WAIT`]) until `seen` holds on this broker: the change the
    /// metadata leader applied is applied here too.
    async fn until_visible(&self, seen: impl Fn(&Broker, &ClusterState) -> bool) {
        let deadline = tokio::time::Instant::now() + TOPIC_CHANGE_WAIT;
        while tokio::time::Instant::now() < deadline {
            // A copy, not under the state's lock: `seen` may read the state again.
            if seen(self, &self.cluster.metadata.state()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
