//! The binary protocol's adapters: one file per wire API, each translating a wire request into
//! typed calls on the broker's services (`admin/`, `replica/`, `cluster/`) and their results back
//! into a wire response. Nothing below this layer names the wire `Request`/`Response` enums (raft's
//! own codec and metadata forwarding excepted); socket and framing code is `net/`'s.
//!
//! [`dispatch`] is generated from one table: each row names an API, its module and where its handler
//! runs:
//! - `connection`: awaited on the connection's reader, in the order requests arrived (produce
//!   proposes there, so one connection's batches land in the order sent; raft appends keep their
//!   order per group). The handler gets the connection's state and returns what is left to wait for
//!   as a [`Pending`], which runs apart;
//! - `detached`: spawned at once (long polls, forwarding, raft), so it never blocks the connection.
//!
//! A new API is one protocol module, one file here and one row.

mod add_broker;
mod alter_group_config;
mod alter_operator;
mod alter_replicas;
mod alter_topic_configs;
mod api_versions;
mod balance_leaders;
mod create_operator;
mod create_topics;
mod delete_group;
mod delete_operator;
mod delete_topics;
mod describe_group;
mod describe_operator;
mod describe_replicas;
mod fetch;
mod find_coordinator;
mod group_heartbeat;
mod init_producer_id;
mod list_groups;
mod list_offsets;
mod list_operators;
mod metadata;
mod metadata_command;
mod offset_commit;
mod offset_fetch;
mod produce;
mod raft;
mod reset_offsets;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sluice_protocol::wire::{ApiKey, Request, Response};

use crate::broker::Broker;
use crate::error::ServiceError;
use crate::raft::append_pipeline::AppendPipelines;

/// A request's answer: a response, or a top-level error for the whole request.
pub type Answer = Result<Response, ServiceError>;

/// What is left of a request after its in-order part ran.
pub enum Pending {
    /// The answer is ready.
    Ready(Answer),
    /// The answer comes later (`None`: the request wants none, like produce with acks `none`).
    Later(Pin<Box<dyn Future<Output = Option<Answer>> + Send + 'static>>),
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pending::Ready(a) => f.debug_tuple("Ready").field(a).finish(),
            Pending::Later(_) => f.write_str("Later(..)"),
        }
    }
}

/// Where an API's handler runs (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Connection,
    Detached,
}

/// Per-connection state the in-order handlers share.
#[derive(Debug, Default)]
pub struct Connection {
    /// Raft appends from a peer keep their order per group (pipelined replication).
    pub appends: AppendPipelines,
    /// The length of the request frame being handled (produce budgets its bytes).
    pub frame_len: usize,
    /// The client's address (a group member's host, as `sluice group describe` shows it).
    pub peer: Option<std::net::SocketAddr>,
}

macro_rules! api_table {
    (
        requests without a body { $($uvariant:ident => $umodule:ident, $uorder:ident;)* }
        $($variant:ident => $module:ident, $order:ident;)+
    ) => {
        /// Where `api`'s handler runs.
        pub fn order(api: ApiKey) -> Order {
            match api {
                $(ApiKey::$uvariant => api_table!(@order $uorder),)*
                $(ApiKey::$variant => api_table!(@order $order),)+
            }
        }

        /// Handles one request: runs a `connection` row's handler now and returns what is left;
        /// a `detached` row's handler comes back whole as [`Pending::Later`], for the caller to run
        /// apart.
        pub async fn dispatch(broker: &Arc<Broker>, conn: &mut Connection, request: Request) -> Pending {
            match request {
                $(Request::$uvariant => {
                    let r = ();
                    api_table!(@call $uorder, $umodule, broker, conn, r)
                })*
                $(Request::$variant(r) => api_table!(@call $order, $module, broker, conn, r),)+
            }
        }
    };
    (@order connection) => { Order::Connection };
    (@order detached) => { Order::Detached };
    (@call connection, $module:ident, $broker:ident, $conn:ident, $r:ident) => {
        $module::handle($broker, $conn, $r).await
    };
    (@call detached, $module:ident, $broker:ident, $conn:ident, $r:ident) => {{
        let broker = $broker.clone();
        Pending::Later(Box::pin(async move { Some($module::handle(broker, $r).await) }))
    }};
}

api_table! {
    // API           module            where it runs
    requests without a body {
        ApiVersions => api_versions,     connection;
        ListGroups  => list_groups,      detached;
        ListOperators => list_operators, detached;
    }
    Metadata        => metadata,         connection;
    ListOffsets     => list_offsets,     connection;
    InitProducerId  => init_producer_id, detached;
    Produce         => produce,          connection;
    Fetch           => fetch,            detached;
    CreateTopics    => create_topics,    detached;
    DeleteTopics    => delete_topics,    detached;
    Raft            => raft,             connection;
    AddBroker       => add_broker,       detached;
    AlterReplicas   => alter_replicas,   detached;
    MetadataCommand => metadata_command, detached;
    FindCoordinator => find_coordinator, detached;
    // In order only to read the member's address off the connection; answered apart.
    GroupHeartbeat  => group_heartbeat,  connection;
    OffsetCommit    => offset_commit,    detached;
    OffsetFetch     => offset_fetch,     detached;
    DescribeGroup   => describe_group,   detached;
    ResetOffsets    => reset_offsets,    detached;
    DeleteGroup     => delete_group,     detached;
    AlterGroupConfig => alter_group_config, detached;
    // Changes wait for a metadata write; reads are answered from memory but cost a copy.
    CreateOperator  => create_operator,  detached;
    DescribeOperator => describe_operator, detached;
    AlterOperator   => alter_operator,   detached;
    DeleteOperator  => delete_operator,  detached;
    // Waits for a metadata write and for this broker's replicas to take the new settings.
    AlterTopicConfigs => alter_topic_configs, detached;
    // Waits for leadership transfers, here and on the other brokers.
    BalanceLeaders  => balance_leaders,  detached;
    // Reads every hosted replica from memory; apart, so a broker with many does not hold the line.
    DescribeReplicas => describe_replicas, detached;
}

/// The wire form of an admin service's outcome.
fn admin_result(outcome: crate::error::Result<()>) -> sluice_protocol::wire::AdminResult {
    let (error, message) = match outcome {
        Ok(()) => (sluice_protocol::wire::ErrorCode::NONE, String::new()),
        Err(e) => e.into_parts(),
    };
    sluice_protocol::wire::AdminResult { error, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every API the protocol declares has a row (`order` is an exhaustive match, so a missing row
    /// fails to compile); the rows that must keep connection order do.
    #[test]
    fn ordered_apis_are_the_ones_that_need_it() {
        for api in ApiKey::ALL {
            let want = match api {
                ApiKey::Produce | ApiKey::Raft => Order::Connection,
                ApiKey::Fetch
                | ApiKey::CreateTopics
                | ApiKey::DeleteTopics
                | ApiKey::AddBroker
                | ApiKey::AlterReplicas
                | ApiKey::MetadataCommand
                // May wait for a metadata write (a new id block, a named producer's epoch).
                | ApiKey::InitProducerId
                // Wait for the coordinator's raft writes (or create the offsets topic).
                | ApiKey::FindCoordinator
                | ApiKey::OffsetCommit
                | ApiKey::OffsetFetch
                | ApiKey::ListGroups
                | ApiKey::DescribeGroup
                | ApiKey::ResetOffsets
                | ApiKey::DeleteGroup
                | ApiKey::AlterGroupConfig
                // Wait for a metadata write (or read the metadata and leaders).
                | ApiKey::CreateOperator
                | ApiKey::ListOperators
                | ApiKey::DescribeOperator
                | ApiKey::AlterOperator
                | ApiKey::DeleteOperator
                | ApiKey::AlterTopicConfigs
                | ApiKey::BalanceLeaders
                | ApiKey::DescribeReplicas => Order::Detached,
                // Reads the peer address in order, then answers apart.
                ApiKey::GroupHeartbeat => Order::Connection,
                // Answered at once from memory: no reason to leave the connection.
                ApiKey::ApiVersions | ApiKey::Metadata | ApiKey::ListOffsets => Order::Connection,
            };
            assert_eq!(order(api), want, "{api:?}");
        }
    }
}
