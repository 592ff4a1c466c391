//! `sluice-storage`: partition logs on disk. A log is a directory of segments (`<base>.log` with its
//! `.index` and `.timeindex`); batches are stored exactly as `sluice-protocol` encodes them, with the
//! offsets and raft position patched into their headers on append.
//!
//! Contract, in brief (the whole of it is in `docs/architecture.md`):
//! - an append returns once written to the page cache, or fsynced, as the [`FlushPolicy`] says;
//! - a read returns `Bytes` borrowing the segment's memory map (or, for data outside the page-cache
//!   window, a cold read's buffer), never a copy, and never a batch whose CRCs fail;
//! - after a crash, open keeps every fsynced batch and truncates a torn or corrupt tail;
//! - after an fsync error the log refuses all writes.
//!
//! Map of the crate:
//! - [`log`]: [`PartitionLog`], append / flush / close, and the locks between them; `read`: reads;
//!   `flusher`: the interval policy's background thread;
//! - `cold`: reads of data outside the page-cache window (direct reads ahead of sequential
//!   readers, bounded read-ahead memory, [`ColdReads`]);
//! - `segment`, `index`: one segment's files, memory maps and sparse indexes;
//! - `recovery`, `checkpoint`: opening a directory after a clean or an unclean stop;
//! - `io`, [`write_file_durably`]: every write, fsync, rename and creation goes through `io`'s
//!   wrappers, the seam the `fault-injection` feature's `fault` plans hook into (failed and torn
//!   operations, simulated power loss);
//! - `retention`, `compaction`, `truncate`: the operations that remove data;
//! - `replica`: header scans and reset, for a log that is also a raft log;
//! - `publish`: how the writer publishes the readable end to readers (loom-checked);
//! - [`stats`]: the latency of every fsync, in an atomic histogram the broker exports.

mod checkpoint;
mod cold;
mod compaction;
mod config;
mod durable;
mod error;
#[cfg(any(test, feature = "fault-injection"))]
pub mod fault;
mod flusher;
mod index;
mod io;
pub mod log;
mod publish;
mod read;
mod recovery;
mod replica;
mod retention;
mod segment;
pub mod stats;
mod sync;
mod truncate;

pub use cold::{ColdReadConfig, ColdReads, ColdStats, ColdWait};
pub use compaction::CompactionReport;
pub use config::{FlushPolicy, LogConfig, MAX_SEGMENT_BYTES};
pub use durable::{create_dir_durably, write_file_durably};
pub use error::{Result, StorageError};
pub use log::{AppendInfo, PartitionLog};
pub use read::{ReadOrWait, ReadResult};
pub use recovery::{RecoveryReport, TruncatedTail};
pub use retention::{RetentionLimits, RetentionReport};
