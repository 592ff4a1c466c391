//! `sluice-broker`: the server that will serve the wire protocol over `sluice-storage` partition logs,
//! replicate them through openraft and expose the admin API.
//!
//! Nothing is here yet: the broker is the subject of a later issue. This crate exists so the workspace
//! already has its final shape and the dependency rule (`protocol` <- `storage` <- `broker`) is checked.
