//! The raft log of a group, stored in its segment log: `RaftLogStorage` and `RaftLogReader`.
//!
//! Invariants (checked where they can break):
//! - every raft entry is exactly one stored batch whose header carries the entry's term and index;
//! - the entries above the purge point are contiguous: [`IndexMap`] maps each raft index to the
//!   batch's offsets, rebuilt from batch headers on open (a cache, never the truth);
//! - offsets are assigned by the log at append (log end), so replicas that hold the same entries hold
//!   them at the same offsets; a follower's append checks that against the leader's offsets;
//! - an append is readable when `append` returns; its callback fires only after an fsync covering
//!   it, from one flusher task per group, in append order (group commit: one fsync for every append
//!   that queued behind it);
//! - the vote and the purge point are durable before the call that set them returns;
//! - a leader's proposal the partition state no longer admits is stored as a void batch, never as
//!   itself (`PartitionState::accept_append`).
//!
//! Purging is logical: it moves the purge point and drops entries from the map; retention later
//! deletes whole segments below it ([`GroupLog::with_retention_limit`]).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{IOFlushed, LogState};
use openraft::EntryPayload;
use sluice_protocol::RecordBatch;
use sluice_storage::PartitionLog;
use tokio::sync::mpsc;

use super::entry::batch_for;
pub use super::index_map::{EntryPos, IndexMap};
pub use super::log_storage::{LogReader, LogStore};
use super::meta_file::{MetaFile, RaftMeta};
use super::partition_state::{NoState, PartitionState, SharedState};
use super::{io_error, log_id, term_of, Entry, LogId, TypeConfig, Vote};

/// Holds back retention at `offset` until dropped (see [`GroupLog::pin_log_start`]).
#[derive(Debug)]
pub struct LogStartPin {
    group: Arc<GroupLog>,
    offset: u64,
}

impl LogStartPin {
    /// The log start when the pin was taken: readable for as long as the pin lives.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl Drop for LogStartPin {
    fn drop(&mut self) {
        // Not `lock`: a drop while unwinding from a panic under this lock must not panic again
        // (that aborts the process); the panic that poisoned it already stops the broker loudly.
        let mut pins = match self.group.pins.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let std::collections::btree_map::Entry::Occupied(mut e) = pins.entry(self.offset) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// What the flusher task owes raft: a callback to fire once everything appended before it is fsynced.
struct FlushJob {
    callback: Flushed,
}

/// Who hears that an append is durable: raft's own callback, or any function (a test that stops the
/// machine at the very instant a callback fires, so it checks what was durable then).
pub enum Flushed {
    Raft(IOFlushed<TypeConfig>),
    Then(Box<dyn FnOnce(io::Result<()>) + Send>),
}

impl Debug for Flushed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Flushed::Raft(_) => "Flushed::Raft",
            Flushed::Then(_) => "Flushed::Then",
        })
    }
}

impl From<IOFlushed<TypeConfig>> for Flushed {
    fn from(callback: IOFlushed<TypeConfig>) -> Flushed {
        Flushed::Raft(callback)
    }
}

impl Flushed {
    fn fire(self, result: io::Result<()>) {
        match self {
            Flushed::Raft(callback) => callback.io_completed(result),
            Flushed::Then(f) => f(result),
        }
    }
}

/// A group's log shared by its log store, log readers, state machine and snapshot sender.
#[derive(Debug)]
pub struct GroupLog {
    pub log: PartitionLog,
    map: Mutex<IndexMap>,
    meta: Mutex<RaftMeta>,
    meta_file: MetaFile,
    flush_tx: mpsc::UnboundedSender<FlushJob>,
    /// Log starts pinned by snapshot transfers, with how many transfers pinned each.
    pins: Mutex<BTreeMap<u64, usize>>,
    /// The partition's replicated state: told of every append and truncation here, in log order
    /// (under the map lock), and of commits by the state machine.
    state: SharedState,
}

impl Debug for FlushJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FlushJob")
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a panic mid-update: the map or meta may no longer match the log, and
    // raft would act on it. Stop loudly rather than carry on.
    super::lock(m, "raft log")
}

/// Batches whose headers are read per step when the index map is rebuilt.
const SCAN_STEP: usize = 4096;

impl GroupLog {
    /// [`GroupLog::open_with_state`] for a log that keeps no partition state.
    pub fn open(log: PartitionLog) -> io::Result<Arc<GroupLog>> {
        GroupLog::open_with_state(log, Box::new(NoState))
    }

    /// Wraps an opened segment log: loads the vote and purge point, rebuilds the index map from the
    /// batch headers, and starts the flusher task (call inside a tokio runtime). `state` is told of
    /// appends and truncations from now on; the state machine restores it and replays the log tail
    /// into it ([`GroupLog::replay_appended`]).
    pub fn open_with_state(
        log: PartitionLog,
        state: Box<dyn PartitionState>,
    ) -> io::Result<Arc<GroupLog>> {
        let meta_file = MetaFile::new(log.dir());
        let meta = meta_file.load()?;
        let (flush_tx, flush_rx) = mpsc::unbounded_channel();
        let group = Arc::new(GroupLog {
            map: Mutex::new(IndexMap::default()),
            meta: Mutex::new(meta),
            meta_file,
            flush_tx,
            pins: Mutex::default(),
            state: SharedState::new(state),
            log,
        });
        group.rebuild_map()?;
        tokio::spawn(flusher(group.log.clone(), flush_rx));
        Ok(group)
    }

    /// Rebuilds the index map from the stored batch headers (after open, or after a snapshot
    /// replaced the log). Keeps the contiguous run of entries that ends at the log end and lies
    /// above the purge point.
    pub fn rebuild_map(&self) -> io::Result<()> {
        let mut map = lock(&self.map);
        self.rebuild_map_locked(&mut map)
    }

    /// Replaces the whole log with `src`'s batches (a snapshot's staged segments), holding the map
    /// lock throughout so no append, truncation or purge runs in between.
    pub fn adopt(&self, src: &PartitionLog) -> io::Result<()> {
        let err = |e: sluice_storage::StorageError| io_error(format!("installing snapshot: {e}"));
        let mut map = lock(&self.map);
        self.log.reset(src.log_start_offset()).map_err(err)?;
        let mut offset = src.log_start_offset();
        while offset < src.log_end_offset() {
            let read = src.read(offset, READ_STEP_BYTES).map_err(err)?;
            // `read` has CRC-checked what it returns: decode without checking again.
            let mut rest = read.bytes;
            while !rest.is_empty() {
                let (b, tail) = RecordBatch::decode_verified(&rest)
                    .map_err(|e| io_error(format!("staged snapshot batch: {e}")))?;
                rest = tail;
                let h = *b.header();
                // At its own offset: a compacted log's copy keeps the gaps.
                self.log
                    .append_batch_at_own_offset(&b, h.raft_term, h.raft_index)
                    .map_err(err)?;
            }
            if read.next_offset <= offset {
                break;
            }
            offset = read.next_offset;
        }
        self.log.flush().map_err(err)?;
        self.rebuild_map_locked(&mut map)
    }

    fn rebuild_map_locked(&self, slot: &mut IndexMap) -> io::Result<()> {
        let purged = lock(&self.meta).purged.map(|p| p.index);
        let mut map = IndexMap::default();
        let mut offset = self.log.log_start_offset();
        loop {
            let headers = self
                .log
                .batch_headers(offset, SCAN_STEP)
                .map_err(|e| io_error(format!("scanning raft log: {e}")))?;
            let Some(last) = headers.last() else { break };
            offset = last.next_offset();
            for h in headers {
                if purged.is_some_and(|p| h.raft_index <= p) {
                    continue;
                }
                let pos = EntryPos {
                    term: h.raft_term,
                    base_offset: h.base_offset,
                    next_offset: h.next_offset(),
                };
                if map.push(h.raft_index, pos).is_err() {
                    // A gap (below it, compaction or a replaced log): only the newest run counts.
                    map = IndexMap::default();
                    map.push(h.raft_index, pos)?;
                }
            }
        }
        if map.is_empty() {
            if let Some(p) = purged {
                map.first = p + 1;
            }
        }
        *slot = map;
        Ok(())
    }

    /// The partition state this log tells of appends and truncations.
    pub fn state(&self) -> &SharedState {
        &self.state
    }

    /// Tells the partition state of every normal entry the log holds above raft index `above` (the
    /// snapshot point it was restored from), in log order, as if appended now. Run once at open.
    pub fn replay_appended(&self, above: Option<u64>) -> io::Result<()> {
        if !self.state.lock().tracks_appends() {
            return Ok(());
        }
        let (start, end) = {
            let map = lock(&self.map);
            let end = map.first + map.entries.len() as u64;
            (above.map_or(map.first, |a| (a + 1).max(map.first)), end)
        };
        // Read in bounded steps, then lock the state for each: locks are taken map -> state, never
        // the other way.
        let mut index = start;
        while index < end {
            let entries = self.entries_up_to(index, end, READ_STEP_BYTES)?;
            let Some(last) = entries.last() else { break };
            index = last.log_id.index + 1;
            let mut state = self.state.lock();
            for entry in entries {
                if let EntryPayload::Normal(p) = &entry.payload {
                    let h = p.batch.header();
                    state.appended(entry.log_id.index, h.base_offset..h.next_offset(), &p.batch);
                }
            }
        }
        Ok(())
    }

    pub fn entry_pos(&self, index: u64) -> Option<EntryPos> {
        lock(&self.map).get(index)
    }

    /// Runs `retain` with the offset below which retention may delete segments: raft needs nothing
    /// below the first entry it still holds, and a snapshot transfer in progress nothing below the
    /// offset it pinned. No transfer can pin an offset while `retain` runs, so none starts from a
    /// segment that `retain` is deleting.
    pub fn with_retention_limit<R>(&self, retain: impl FnOnce(u64) -> R) -> R {
        let pins = lock(&self.pins);
        let held = {
            let map = lock(&self.map);
            match map.entries.front() {
                Some(p) => p.base_offset,
                None => self.log.log_end_offset(),
            }
        };
        let limit = pins.keys().next().map_or(held, |&pinned| pinned.min(held));
        retain(limit)
    }

    /// Pins the log start for a snapshot transfer: retention deletes nothing from it on while the
    /// pin lives (a leader streams its retained log from there; if retention moved the start past
    /// it, the transfer would fail and start over, perhaps again and again on a busy log).
    pub fn pin_log_start(self: &Arc<Self>) -> LogStartPin {
        let mut pins = lock(&self.pins);
        let offset = self.log.log_start_offset();
        *pins.entry(offset).or_insert(0) += 1;
        LogStartPin {
            group: self.clone(),
            offset,
        }
    }

    pub fn vote(&self) -> Option<Vote> {
        lock(&self.meta).vote
    }

    pub fn log_state(&self) -> LogState<TypeConfig> {
        let purged = lock(&self.meta).purged;
        let last = lock(&self.map)
            .last()
            .map(|(i, p)| log_id(p.term, i))
            .or(purged);
        LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        }
    }

    /// Appends entries (synchronously: readable on return) and queues `callback` for the flusher.
    pub fn append(
        &self,
        entries: impl IntoIterator<Item = Entry>,
        callback: impl Into<Flushed>,
    ) -> io::Result<()> {
        let callback = callback.into();
        let mut map = lock(&self.map);
        let mut state = self.state.lock();
        let tracks = state.tracks_appends();
        for entry in entries {
            let index = entry.log_id.index;
            let term = term_of(&entry.log_id);
            // Entries follow each other: refused before anything is written.
            map.check_next(index)?;
            let mut batch = batch_for(&entry.payload).map_err(|e| io_error(e.to_string()))?;
            let mut void = false;
            if let EntryPayload::Normal(p) = &entry.payload {
                // A leader's proposal whose admission the state forgot (an earlier batch of its
                // producer never reached the log): storing it would leave a hole in its producer's
                // sequences, so its index holds a void batch and its producer hears NOT_LEADER.
                if let Some(t) = &p.ticket {
                    if tracks && !state.accept_append(t.number(), &p.batch) {
                        batch = super::entry::void_batch().map_err(|e| io_error(e.to_string()))?;
                        void = true;
                    }
                }
                if super::entry::is_raft_entry_batch(&p.batch) {
                    return Err(io_error(format!(
                        "raft entry {index}: a normal entry holds raft's own control batch"
                    )));
                }
                // A replicated batch carries the leader's offsets: the logs up to
                // here are identical, so ours must agree. A divergence is refused before anything
                // is written (openraft then stops the group rather than serve wrong offsets).
                let leader_offset = batch.header().base_offset;
                let end = self.log.log_end_offset();
                if p.stored && leader_offset != end {
                    return Err(io_error(format!(
                        "raft entry {index}: the leader stored it at offset {leader_offset}, \
                         this replica's log ends at {end}"
                    )));
                }
            }
            let info = self
                .log
                .append_batch(&batch, term, index)
                .map_err(|e| io_error(format!("appending raft entry {index}: {e}")))?;
            map.push(
                index,
                EntryPos {
                    term,
                    base_offset: info.base_offset,
                    next_offset: info.last_offset + 1,
                },
            )?;
            if let EntryPayload::Normal(mut p) = entry.payload {
                if let Some(t) = p.ticket.take() {
                    t.settle();
                }
                if tracks {
                    state.appended(index, info.base_offset..info.last_offset + 1, &batch);
                }
                // A void batch's ack is dropped unsent: its produce answers NOT_LEADER.
                if let (Some(ack), false) = (p.ack, void) {
                    let _ = ack.send(info.base_offset..info.last_offset + 1);
                }
            }
        }
        drop(state);
        drop(map);
        self.flush_tx
            .send(FlushJob { callback })
            .map_err(|_| io_error("raft log flusher stopped"))
    }

    pub fn truncate_after(&self, last: Option<LogId>) -> io::Result<()> {
        let mut map = lock(&self.map);
        let keep = last.map(|l| l.index);
        let last_kept_offset = match keep.and_then(|i| map.get(i)) {
            Some(p) => Some(p.next_offset - 1),
            None => {
                // Keeping nothing this map holds: cut before its first entry.
                let Some(first) = map.entries.front() else {
                    return Ok(());
                };
                if keep.is_some_and(|k| k >= map.first + map.entries.len() as u64) {
                    return Ok(());
                }
                // The batch before the first entry ends there, unless the log starts with it.
                if first.base_offset <= self.log.log_start_offset() {
                    None
                } else {
                    first.base_offset.checked_sub(1)
                }
            }
        };
        map.truncate_after(keep);
        self.log
            .truncate_after(last_kept_offset)
            .map_err(|e| io_error(format!("truncating raft log after {keep:?}: {e}")))?;
        self.state.lock().truncated(keep);
        Ok(())
    }

    pub fn purge(&self, upto: LogId) -> io::Result<()> {
        {
            let mut meta = lock(&self.meta);
            if meta.purged.is_some_and(|p| p >= upto) {
                return Ok(());
            }
            let mut next = meta.clone();
            next.purged = Some(upto);
            self.meta_file.save(&next)?;
            *meta = next;
        }
        // Locks are never nested the other way round (`map` then `meta` in a rebuild).
        lock(&self.map).purge(upto.index);
        Ok(())
    }

    pub fn save_vote(&self, vote: &Vote) -> io::Result<()> {
        let mut meta = lock(&self.meta);
        let mut next = meta.clone();
        next.vote = Some(*vote);
        self.meta_file.save(&next)?;
        *meta = next;
        Ok(())
    }

    /// The first entry at or after `start` below `end` the log holds: its index, the end clipped
    /// to the log, and the offset of its batch.
    pub(super) fn entry_start(&self, start: u64, end: u64) -> Option<(u64, u64, u64)> {
        let map = lock(&self.map);
        let start = start.max(map.first);
        let end = end.min(map.first + map.entries.len() as u64);
        if start >= end {
            return None;
        }
        map.get(start).map(|p| (start, end, p.base_offset))
    }

    pub fn dir(&self) -> PathBuf {
        self.log.dir().to_path_buf()
    }

    /// Where a snapshot's segments are staged before they replace this log.
    pub fn staging_dir(&self) -> PathBuf {
        let mut d = self.log.dir().as_os_str().to_os_string();
        d.push(".staging");
        d.into()
    }
}

/// Batch bytes one append request carries at most (past the entry that crosses it).
pub const MAX_APPEND_BYTES: usize = 8 << 20;

/// Bytes read per step when entries are fetched for replication or apply.
pub(super) const READ_STEP_BYTES: usize = 4 << 20;

/// Fires append callbacks in order after the fsync that covers them. Each round takes every job
/// queued so far and runs one fsync for all of them (group commit).
async fn flusher(log: PartitionLog, mut rx: mpsc::UnboundedReceiver<FlushJob>) {
    let mut jobs = Vec::new();
    while rx.recv_many(&mut jobs, 1024).await > 0 {
        let l = log.clone();
        let result = match tokio::task::spawn_blocking(move || l.flush()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        for job in jobs.drain(..) {
            job.callback
                .fire(result.clone().map_err(|e| io_error(format!("fsync: {e}"))));
        }
    }
}
