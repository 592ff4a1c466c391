//! Typed admin services: topics, brokers and replica moves. Each takes and returns domain types and
//! [`ServiceError`](crate::error::ServiceError)s, whichever adapter calls it (the binary protocol's
//! `api/` and the HTTP admin API's `http/`). Requests that must run on the metadata leader get there as
//! metadata commands (`cluster::forward`); nothing here names a wire request or response.
//!
//! - [`topics`]: create and delete topics, answered once this broker sees the outcome;
//! - [`topic_configs`]: change a live topic's settings;
//! - [`brokers`]: add a broker to the cluster (`--join`);
//! - [`groups`]: consumer groups: find the coordinator (creating the offsets topic), route to it;
//! - [`metrics`]: the metrics scrape (`render_metrics`), with the state it reads;
//! - [`leaders`]: partition leadership: move it to the preferred replicas on demand, counts;
//! - [`moves`]: start and complete partition replica moves;
//! - [`operators`]: window operator definitions (create, list, describe, pause, resume, delete);
//! - [`producers`]: producer ids and epochs for idempotent producers;
//! - [`replicas`]: what each broker holds (raft state, replicas, offsets, sizes), asked of each;
//! - [`status`]: readiness, raft state and replicas by role;
//! - [`view`]: the cluster as a client sees it (brokers, controller, topics, partition leaders).

pub mod brokers;
pub mod groups;
pub mod leaders;
pub mod metrics;
pub mod moves;
pub mod operators;
pub mod producers;
pub mod replicas;
pub mod status;
pub mod topic_configs;
pub mod topics;
pub mod view;
