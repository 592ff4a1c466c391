//! `sluice-broker`: the server behind the `sluice` binary.
//!
//! Map of the crate, top layer first. A module uses only modules below it (a workspace test,
//! `tests/tests/broker_layers.rs`, keeps it so):
//! - [`node`]: starts a broker and owns its listener and background tasks under one cancellation
//!   token; graceful shutdown;
//! - [`net`]: sockets and framing, every per-connection bound; the only socket code;
//! - [`api`]: one file per wire API, translating wire requests into typed calls, and the dispatch
//!   table that says which APIs run in connection order;
//! - [`http`]: the HTTP admin API (axum): JSON endpoints under `/v1`, probes, the OpenAPI
//!   document, the bearer token; an adapter like `api/`;
//! - [`admin`]: typed admin services (topics, brokers, replica moves, the cluster view);
//! - [`broker`]: the running broker's shared services (config, replicas, cluster, budgets);
//! - [`groups`]: the consumer-group coordinator (a leader service on `__consumer_offsets`
//!   partitions), its pure decisions and assignors;
//! - [`operators`]: running window operators — a driver per local replica of each source
//!   partition, folding the local log and, on the leader, writing results and marks;
//! - [`cluster`]: the metadata group, forwarding to its leader, the leader report, the reconciler
//!   and quiescing;
//! - [`replica`]: the partition seam — [`replica::Replica`], replicated partition state, the
//!   leadership watch and leader services, and the registry of hosted replicas;
//! - [`raft`]: openraft over the segment log — log storage, state machine, wire codec, network;
//! - [`metrics`]: every metric of the broker — the hot-path counters and histograms, and the
//!   Prometheus text rendering of them with the state read at scrape time;
//! - [`config`], [`error`]: configuration, and the one error type of the services.
//!
//! Below `api/`, nothing names the wire `Request`/`Response` enums (raft's own network and
//! `cluster::forward`, which *are* wire round trips, excepted). The command-line client commands of
//! the binary live in `main.rs` and `cli/`, on top of `sluice-client`.

pub mod admin;
pub mod api;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod error;
pub mod groups;
pub mod http;
pub mod metrics;
pub mod net;
pub mod node;
pub mod operators;
pub mod raft;
pub mod replica;
