//! `sluice-protocol`: the bytes Sluice agrees on. The record batch defined here is the unit on the wire
//! and on disk alike, so the broker stores and serves what producers send without re-encoding it.
//!
//! Everything in this crate is pure: it turns bytes into values and back, never touches sockets or files,
//! and returns an error (never panics, never allocates from an unchecked length) on any input.
//!
//! Map of the crate:
//! - [`batch`]: the record-batch layout, [`BatchBuilder`] to write one and [`RecordBatch`] to read one.
//! - [`varint`]: the LEB128 / zigzag integers records are framed with.
//! - [`compression`]: the codecs a batch's records section may be compressed with.
//! - [`wire`]: the binary protocol: frames and error codes, and one module per API (its request
//!   and response, their encoding, its versions), all listed once in the API table in `wire`.

pub mod batch;
pub mod compression;
pub mod varint;
pub mod wire;

pub use batch::{
    BatchBuilder, BatchError, BatchHeader, Header, Record, RecordBatch, Records, TimestampType,
};
pub use compression::Compression;
