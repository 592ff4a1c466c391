//! [`Admin`]: topic management, cluster metadata, consumer-group and window-operator administration
//! over the wire protocol. It never produces, consumes or joins a group.
//!
//! This file holds the topic and metadata calls. Create, delete and config changes go to the
//! bootstrap broker (the whole cluster, for now). Every call retries retriable errors a bounded
//! number of times (see [`crate::ClientConfig::retries`]); a create that was retried after its
//! first attempt reached the broker may therefore answer `TOPIC_ALREADY_EXISTS`.
//!
//! - `coordinator`: finding a group's coordinator and retrying a request on it when it moved;
//! - `groups`: list, describe (with lag), reset offsets of and delete consumer groups, each at the
//!   group's coordinator;
//! - `leaders`: moving partition leadership to the preferred replicas;
//! - `operators`: create, list, describe, pause, resume and delete window operator definitions;
//! - `partition_log`: what those need from partition leaders (bounds, record timestamps) and the
//!   pure arithmetic over it (lag, reset positions).

use sluice_protocol::wire::{
    AlterReplicasRequest, AlterTopicConfigsRequest, CreateTopicsRequest, DeleteTopicsRequest,
    MetadataResponse, NewTopic, Request, Response, TopicMetadata, TopicResults, EARLIEST, LATEST,
};

use crate::client::{unexpected, Client, ClientConfig};
use crate::error::{ClientError, Result};

mod coordinator;
mod groups;
mod leaders;
mod operators;
mod partition_log;

pub use coordinator::COORDINATOR_WAIT;
pub use groups::{GroupDescription, GroupListing, GroupMember, PartitionLag, RESET_WAIT};
pub use leaders::{LeaderOutcome, PartitionLeader};
pub use operators::{
    OperatorDefinition, OperatorDescription, OperatorListing, OperatorPartition, OperatorRun,
};
pub use partition_log::ResetSpec;

/// What [`Admin::list_offsets`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first retained offset (log start).
    Earliest,
    /// The next offset to be written (log end, or high watermark where replication applies).
    Latest,
    /// The first offset whose record timestamp is at or after this one (ms).
    Timestamp(i64),
}

impl OffsetSpec {
    fn to_wire(self) -> i64 {
        match self {
            OffsetSpec::Earliest => EARLIEST,
            OffsetSpec::Latest => LATEST,
            OffsetSpec::Timestamp(ts) => ts,
        }
    }
}

/// Administers topics and reads cluster metadata.
#[derive(Debug, Clone)]
pub struct Admin {
    client: Client,
}

impl Admin {
    /// An admin client with its own [`Client`] for the cluster at `bootstrap`.
    pub fn new(bootstrap: impl Into<String>) -> Result<Admin> {
        Ok(Admin::with_client(Client::new(ClientConfig::new(
            bootstrap,
        ))?))
    }

    /// An admin client over an existing client.
    pub fn with_client(client: Client) -> Admin {
        Admin { client }
    }

    /// The client this admin client sends through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates a topic. `configs` are topic settings as strings (`retention.ms`, `retention.bytes`,
    /// `segment.bytes`, `cleanup.policy`), validated by the broker.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
        configs: &[(&str, &str)],
    ) -> Result<()> {
        let request = Request::CreateTopics(CreateTopicsRequest {
            topics: vec![NewTopic {
                name: name.to_string(),
                partitions,
                replication_factor,
                configs: configs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }],
        });
        let response = self
            .client
            .retrying("create topic", || self.client.request(&request))
            .await?;
        self.client.invalidate_topic(name);
        let Response::CreateTopics(results) = response else {
            return Err(unexpected("answer to create topics"));
        };
        topic_result(&results, name)
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let request = Request::DeleteTopics(DeleteTopicsRequest {
            names: vec![name.to_string()],
        });
        let response = self
            .client
            .retrying("delete topic", || self.client.request(&request))
            .await?;
        self.client.invalidate_topic(name);
        let Response::DeleteTopics(results) = response else {
            return Err(unexpected("answer to delete topics"));
        };
        topic_result(&results, name)
    }

    /// Changes a live topic's settings: `set` keys take their values, `delete` keys go back to
    /// their defaults. Returns the topic's configs after the change (every key). The broker refuses
    /// keys a live topic cannot change (`segment.bytes`, `segment.ms`, the producer limits) with
    /// `INVALID_CONFIG`. Setting values is idempotent, so a retried call is safe.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        set: &[(&str, &str)],
        delete: &[&str],
    ) -> Result<Vec<(String, String)>> {
        let request = Request::AlterTopicConfigs(AlterTopicConfigsRequest {
            name: name.to_string(),
            set: set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            delete: delete.iter().map(|k| k.to_string()).collect(),
        });
        let configs = self
            .client
            .retrying("alter topic configs", || async {
                match self.client.request(&request).await? {
                    Response::AlterTopicConfigs(r) if r.error.is_ok() => Ok(r.configs),
                    Response::AlterTopicConfigs(r) => Err(ClientError::broker(r.error, r.message)),
                    _ => Err(unexpected("answer to alter topic configs")),
                }
            })
            .await;
        self.client.invalidate_topic(name);
        configs
    }

    /// Starts moving `topic`/`partition` to the `replicas` broker ids. Returns once the move is
    /// recorded; the partition's leader carries it out (new replicas catch up first).
    pub async fn reassign_partition(
        &self,
        topic: &str,
        partition: u32,
        replicas: &[u32],
    ) -> Result<()> {
        let request = Request::AlterReplicas(AlterReplicasRequest {
            topic: topic.to_string(),
            partition,
            replicas: replicas.to_vec(),
            complete: false,
        });
        let response = self
            .client
            .retrying("reassign partition", || async {
                match self.client.request(&request).await? {
                    Response::AlterReplicas(r) if r.error.is_ok() => Ok(()),
                    Response::AlterReplicas(r) => Err(ClientError::broker(r.error, r.message)),
                    _ => Err(unexpected("answer to alter replicas")),
                }
            })
            .await;
        self.client.invalidate_topic(topic);
        response
    }

    /// Metadata of every topic.
    pub async fn list_topics(&self) -> Result<Vec<TopicMetadata>> {
        Ok(self.client.metadata(None).await?.topics)
    }

    /// Metadata of one topic; an unknown topic is a [`ClientError::Broker`] with
    /// `UNKNOWN_TOPIC_OR_PARTITION`.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicMetadata> {
        self.client.describe(name).await
    }

    /// The whole cluster metadata: brokers, controller and every topic.
    pub async fn metadata(&self) -> Result<MetadataResponse> {
        self.client.metadata(None).await
    }

    /// An offset of `topic`/`partition`, asked of its leader. `None` when no record has a timestamp
    /// at or after the one asked for.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
    ) -> Result<Option<u64>> {
        let o = self
            .client
            .list_offset(topic, partition, spec.to_wire())
            .await?;
        Ok(u64::try_from(o).ok())
    }
}

/// The outcome for `name` in a create or delete answer.
fn topic_result(results: &TopicResults, name: &str) -> Result<()> {
    let r = results
        .results
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| unexpected("topic missing from the answer"))?;
    if r.error.is_ok() {
        Ok(())
    } else {
        Err(ClientError::broker(r.error, r.message.clone()))
    }
}
