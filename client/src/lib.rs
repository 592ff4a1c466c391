//! `sluice-client`: the Rust client library (producer, consumer, admin) that will speak the wire protocol
//! to a broker.
//!
//! Nothing is here yet: the client is the subject of a later issue. It depends on `sluice-protocol` only;
//! it must never depend on `sluice-storage` (checked by `tests/tests/dependency_rule.rs`).
