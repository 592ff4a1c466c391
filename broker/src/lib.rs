//! `sluice-broker`: the server behind the `sluice` binary.
//!
//! Map of the crate:
//! - [`config`]: defaults, TOML file, environment and flags;
//! - [`server`]: listener, connections, frame bounds, dispatch, graceful shutdown;
//! - [`handlers`]: one function per API, over [`topics`] and [`partition`];
//! - [`topics`]: the topics on this broker and their directories;
//! - [`partition`]: propose / read / wait on one partition replica (a raft group);
//! - [`raft`]: openraft over the segment log — log storage, state machine, wire codec, network;
//! - [`cluster`]: the metadata group, raft groups' lifecycle, local replicas following the metadata.
//!
//! The command-line client commands of the binary live in `main.rs` and `cli/`, on top of
//! `sluice-client`.

pub mod cluster;
pub mod config;
pub mod handlers;
pub mod partition;
pub mod raft;
pub mod server;
pub mod topics;
