//! `sluice-client`: the asynchronous Rust client of Sluice, speaking the wire protocol of
//! `sluice-protocol` over TCP (tokio).
//!
//! Map of the crate:
//! - [`Producer`] ([`producer`]): per-partition batching with linger and a size bound, key-hash and
//!   sticky partitioning, compression, acks, bounded in-flight requests, retries with backoff, a
//!   bounded buffer that makes `send` wait, per-record [`DeliveryFuture`]s, `flush` and `close`.
//!   Inside: `config` ([`ProducerConfig`]), `record` ([`ProducerRecord`], the partitioner),
//!   `delivery` ([`DeliveryFuture`], [`RecordMetadata`]), `accumulator` (open batches, sealing,
//!   the buffer) and `sender` (the task that submits sealed batches, in-flight bookkeeping,
//!   retries).
//! - [`Consumer`] ([`consumer`]): assigned partitions, `seek` (offset, earliest, latest, timestamp),
//!   long-poll `poll` that verifies the CRCs of every batch it receives. Inside: `positions`
//!   (assignment, positions, seek, resets, out of range) and `fetcher` (fetch requests, prefetch,
//!   decoding).
//! - [`GroupConsumer`] ([`group`]): a member of a consumer group, reading the partitions its
//!   coordinator assigns. Inside: `config` ([`GroupConsumerConfig`], [`Subscription`]), `coordinator`
//!   (FindCoordinator and requests to the coordinator), `membership` and `heartbeat` (the
//!   background heartbeat task), `rebalance` ([`RebalanceListener`], revoking and starting
//!   partitions) and `commit` (commits, committed offsets).
//! - [`Admin`] ([`admin`]): create, delete, list and describe topics; metadata; list offsets;
//!   list, describe (with lag), reset the offsets of and delete consumer groups.
//! - [`Client`] ([`client`]): the shared handle under all of them: lazily (re)opened connections and
//!   cached topic metadata (partition counts and leaders).
//! - `connection`: one multiplexed TCP connection (writer task, reader task, correlation ids).
//! - [`ClientError`] ([`error`]): every failure, with [`ClientError::is_retriable`].
//! - `raw` (hidden from these docs): the raw request transport the broker uses between brokers
//!   (`Client::request_to` and its kin, `raw::ResponseFuture`). Not a stable API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sluice_client::ClientError> {
//! use sluice_client::{Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord};
//! use std::time::Duration;
//!
//! let admin = Admin::new("127.0.0.1:9092")?;
//! admin.create_topic("events", 3, 1, &[]).await?;
//!
//! let producer = Producer::new("127.0.0.1:9092", ProducerConfig::default())?;
//! let delivery = producer.send(ProducerRecord::new("events", "hello").key("k")).await?;
//! let meta = delivery.await?;
//!
//! let mut consumer = Consumer::new("127.0.0.1:9092", ConsumerConfig::default())?;
//! consumer.assign(&[("events", meta.partition)]);
//! let records = consumer.poll(Duration::from_secs(1)).await?;
//! # Ok(()) }
//! ```
//!
//! The client depends on `sluice-protocol` only, never on `sluice-storage`.

pub mod admin;
pub mod client;
mod connection;
pub mod consumer;
pub mod error;
pub mod group;
pub mod producer;
#[doc(hidden)]
pub mod raw;

pub use admin::{
    Admin, GroupDescription, GroupListing, GroupMember, LeaderOutcome, OffsetSpec,
    OperatorDefinition, OperatorDescription, OperatorListing, OperatorPartition, OperatorRun,
    PartitionLag, PartitionLeader, ResetSpec,
};
pub use client::{Client, ClientConfig};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, SeekTo};
pub use error::{ClientError, Result};
pub use group::{Commits, GroupConsumer, GroupConsumerConfig, RebalanceListener, Subscription};
pub use producer::{
    partition_for_key, DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
    TrySendError,
};

pub use sluice_protocol::wire::{
    Acks, BrokerInfo, ErrorCode, MetadataResponse, PartitionMetadata, TopicMetadata,
};
pub use sluice_protocol::{Compression, Header};
