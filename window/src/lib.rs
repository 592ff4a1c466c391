//! Event-time windows for Sluice's server-side operator, as pure code: no I/O, no clock, no
//! threads. The broker feeds an [`Operator`] the committed records of one source partition in log
//! order (and watermark advances that reached it through the log) and writes what comes out; given
//! the same inputs every replica computes the same state and the same outputs, which is what lets
//! a new leader carry on exactly where the old one was.
//!
//! - [`spec`]: what an operator computes (window kind, time and value sources, aggregates,
//!   disorder, lateness, idle timeout, state limit), parsed from the CLI's strings and checked;
//! - [`extract`]: a record's event time and value, or why they cannot be read;
//! - [`acc`]: the mergeable accumulator, the sink key and the JSON result;
//! - [`operator`]: windows, watermark, firing, late records, session merging, state bounds;
//! - `timers`: per-key pending window ends and the fire and drop queues;
//! - [`codec`]: the state as bytes for checkpoints and snapshots, damage an error;
//! - [`model`]: the reference model of the semantics, brute force, for tests only (never used by
//!   the broker).

pub mod acc;
pub mod codec;
pub mod extract;
pub mod model;
pub mod operator;
pub mod spec;
mod timers;

pub use operator::{Input, Operator, Output, StateLimit, Stats};
pub use spec::{Aggregate, Spec, SpecError, TimeSource, ValueSource, WindowKind};
