//! A group's state machine: the small state raft applies committed entries to, and its snapshots.
//!
//! The state is the high watermark (the offset after the last applied entry — the commit point
//! consumers read below) plus the group's [`PartitionState`] (nothing for a plain topic; the
//! cluster metadata for the metadata group), which it drives at commit, snapshot and restore. A snapshot is that state with the log id it covers;
//! it is saved to `raft.snapshot` (explicit layout, CRC-checked) when built or installed. Record data
//! is never in a snapshot: a replica that is behind the leader's log start receives the leader's
//! retained segments, staged beside the log, and [`GroupSm::install_snapshot`] swaps them in.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use sluice_protocol::wire::codec::{Reader, Writer};
use sluice_storage::PartitionLog;
use tokio::sync::watch;

use super::codec::{get_log_id, put_log_id};
use super::entry::{decode_membership, join, write_membership};
use super::log_store::GroupLog;
use super::partition_state::SharedState;
use super::{io_error, Applied, LogId, SnapshotMeta, StoredMembership, TypeConfig};

/// The state a snapshot carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotState {
    pub high_watermark: u64,
    pub log_start_offset: u64,
    pub applier: Bytes,
}

/// What openraft moves around as a snapshot: the state, and on a receiving replica the directory of
/// staged segments (the leader's retained log up to the snapshot point).
#[derive(Debug, Clone, Default)]
pub struct SnapshotData {
    pub state: SnapshotState,
    pub staged: Option<PathBuf>,
}

const SNAPSHOT_MAGIC: &[u8; 4] = b"SLRS";

/// `b"SLRS"` | log id? (last) | log id? (membership's) | membership | u64 high watermark |
/// u64 log start | bytes applier state | u32 CRC-32 of everything before it.
pub fn encode_snapshot(meta: &SnapshotMeta, state: &SnapshotState) -> Bytes {
    let mut w = Writer::new();
    w.u32(u32::from_le_bytes(*SNAPSHOT_MAGIC));
    put_log_id(&mut w, &meta.last_log_id);
    let m = &meta.last_membership;
    put_log_id(&mut w, m.log_id());
    write_membership(&mut w, m.membership());
    w.u64(state.high_watermark);
    w.u64(state.log_start_offset);
    w.bytes(&state.applier);
    let body = join(w.finish());
    let crc = crc32fast::hash(&body);
    let mut out = body.to_vec();
    out.extend_from_slice(&crc.to_le_bytes());
    Bytes::from(out)
}

pub fn decode_snapshot(bytes: Bytes) -> io::Result<(SnapshotMeta, SnapshotState)> {
    if bytes.len() < 8 {
        return Err(io_error("snapshot file too short"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(io_error("snapshot file CRC mismatch"));
    }
    let mut r = Reader::new(bytes.slice(..bytes.len() - 4));
    let bad = |e: sluice_protocol::wire::ProtocolError| io_error(format!("snapshot file: {e}"));
    if r.u32("magic").map_err(bad)? != u32::from_le_bytes(*SNAPSHOT_MAGIC) {
        return Err(io_error("not a snapshot file"));
    }
    let last = get_log_id(&mut r).map_err(bad)?;
    let membership_id = get_log_id(&mut r).map_err(bad)?;
    let membership = decode_membership(&mut r).map_err(bad)?;
    let state = SnapshotState {
        high_watermark: r.u64("high watermark").map_err(bad)?,
        log_start_offset: r.u64("log start").map_err(bad)?,
        applier: r.bytes("applier state").map_err(bad)?,
    };
    r.finish().map_err(bad)?;
    Ok((
        SnapshotMeta {
            last_log_id: last,
            last_membership: StoredMembership::new(membership_id, membership),
        },
        state,
    ))
}

/// A group's state machine (owned by openraft; the high watermark is shared through a watch).
pub struct GroupSm {
    group: Arc<GroupLog>,
    state: SharedState,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    high_watermark: Arc<watch::Sender<u64>>,
    dir: PathBuf,
}

impl std::fmt::Debug for GroupSm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupSm")
            .field("dir", &self.dir)
            .field("last_applied", &self.last_applied)
            .finish()
    }
}

const SNAPSHOT_FILE: &str = "raft.snapshot";

impl GroupSm {
    /// Opens the state machine from the group's saved snapshot, if any, restoring the group's
    /// partition state from it and replaying the log's appends above it into that state.
    pub fn open(
        group: Arc<GroupLog>,
        high_watermark: Arc<watch::Sender<u64>>,
    ) -> io::Result<GroupSm> {
        let dir = group.dir();
        let state = group.state().clone();
        let mut sm = GroupSm {
            group,
            state,
            last_applied: None,
            membership: StoredMembership::default(),
            high_watermark,
            dir,
        };
        let snapshot = sm.load_snapshot()?;
        finish_interrupted_install(&sm.group, snapshot.as_ref())?;
        if let Some((meta, state)) = snapshot {
            sm.state.lock().restore(&state.applier)?;
            sm.last_applied = meta.last_log_id;
            sm.membership = meta.last_membership;
            sm.set_high_watermark(state.high_watermark);
        }
        let above = sm.last_applied.map(|l| l.index);
        sm.group.replay_appended(above)?;
        Ok(sm)
    }

    fn load_snapshot(&self) -> io::Result<Option<(SnapshotMeta, SnapshotState)>> {
        match std::fs::read(self.dir.join(SNAPSHOT_FILE)) {
            Ok(b) => decode_snapshot(Bytes::from(b)).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn set_high_watermark(&self, hw: u64) {
        self.high_watermark.send_if_modified(|cur| {
            if hw > *cur {
                *cur = hw;
                true
            } else {
                false
            }
        });
    }

    fn state(&self) -> io::Result<SnapshotState> {
        Ok(SnapshotState {
            high_watermark: *self.high_watermark.borrow(),
            log_start_offset: self.group.log.log_start_offset(),
            applier: self.state.lock().snapshot()?,
        })
    }

    /// Replaces the live log with the staged one (the leader's retained segments).
    fn adopt_staged(&self, staged: &Path) -> io::Result<()> {
        let (src, _) = PartitionLog::open(staged, sluice_storage::LogConfig::default())
            .map_err(|e| io_error(format!("opening staged snapshot: {e}")))?;
        self.group.adopt(&src)?;
        drop(src);
        let _ = std::fs::remove_dir_all(staged);
        Ok(())
    }
}

/// The raft position (term, index) of the batch ending right before `end`, if the log holds it.
fn last_position(log: &PartitionLog, end: u64) -> Option<(u64, u64)> {
    let at = end.checked_sub(1)?;
    let h = log.batch_headers(at, 1).ok()?.into_iter().next()?;
    (h.next_offset() == end).then_some((h.raft_term, h.raft_index))
}

/// After a crash during a snapshot install: if a complete staging matches the saved snapshot and
/// the live log does not yet end exactly at it, save the snapshot's purge point (the crash may have
/// come before it) and replace the live log again; then drop the staging (a partial transfer's
/// staging is simply dropped).
fn finish_interrupted_install(
    group: &GroupLog,
    snapshot: Option<&(SnapshotMeta, SnapshotState)>,
) -> io::Result<()> {
    let staging = group.staging_dir();
    if !staging.exists() {
        return Ok(());
    }
    if let Some((meta, state)) = snapshot {
        let (src, _) = PartitionLog::open(&staging, sluice_storage::LogConfig::default())
            .map_err(|e| io_error(format!("opening staged snapshot: {e}")))?;
        let want = meta.last_log_id.map(|l| (super::term_of(&l), l.index));
        let hw = state.high_watermark;
        let staged_complete =
            src.log_end_offset() == hw && (want.is_none() || last_position(&src, hw) == want);
        let live = &group.log;
        let live_done = live.log_end_offset() == hw
            && live.log_start_offset() == src.log_start_offset()
            && (want.is_none() || last_position(live, hw) == want);
        if staged_complete && !live_done {
            tracing::warn!(dir = %live.dir().display(), "finishing an interrupted snapshot install");
            // The cut may have come between saving the snapshot and saving its purge point: redo
            // the purge first (idempotent), or the log would start past an unpurged index.
            if let Some(id) = meta.last_log_id {
                group.purge(id)?;
            }
            group.adopt(&src)?;
        }
        drop(src);
    }
    std::fs::remove_dir_all(&staging)
}

/// Builds a snapshot from the state captured when the builder was made.
#[derive(Debug)]
pub struct SnapshotBuilder {
    meta: SnapshotMeta,
    /// The state to save, or why it could not be encoded (reported by `build_snapshot`).
    state: Result<SnapshotState, String>,
    dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(
        &mut self,
    ) -> io::Result<openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>> {
        let state = self
            .state
            .clone()
            .map_err(|e| io_error(format!("snapshot state: {e}")))?;
        let body = encode_snapshot(&self.meta, &state);
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            sluice_storage::write_file_durably(&dir, SNAPSHOT_FILE, &body)
        })
        .await
        .map_err(|e| io_error(e.to_string()))??;
        Ok(openraft::Snapshot {
            meta: self.meta.clone(),
            snapshot: SnapshotData {
                state,
                staged: None,
            },
        })
    }
}

impl RaftStateMachine<TypeConfig> for GroupSm {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> io::Result<()>
    where
        S: futures_util::Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + Send,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let index = entry.log_id.index;
            self.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Normal(p) => self
                    .state
                    .lock()
                    .committed(&p.batch, self.membership.membership()),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                }
                EntryPayload::Blank => {}
            }
            if let Some(pos) = self.group.entry_pos(index) {
                self.set_high_watermark(pos.next_offset);
            }
            if let Some(r) = responder {
                r.send(Applied {
                    next_offset: *self.high_watermark.borrow(),
                });
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
            },
            state: self.state().map_err(|e| e.to_string()),
            dir: self.dir.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> io::Result<()> {
        // Crash-safe order: the snapshot and the purge point are durable first, then the log is
        // replaced from the staging directory, which goes last. A crash in between leaves the staging
        // and a snapshot that names it, and opening the group finishes the job
        // (`finish_interrupted_install`).
        let body = encode_snapshot(meta, &snapshot.state);
        sluice_storage::write_file_durably(&self.dir, SNAPSHOT_FILE, &body)?;
        if let Some(id) = meta.last_log_id {
            self.group.purge(id)?;
        }
        if let Some(staged) = &snapshot.staged {
            let this = &*self;
            this.adopt_staged(staged)?;
        }
        self.state.lock().restore(&snapshot.state.applier)?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        // A snapshot may move the watermark back only on a replica that had applied past it, which
        // raft never asks for (it ignores snapshots older than what is committed here).
        self.high_watermark
            .send_replace(snapshot.state.high_watermark);
        tracing::info!(
            dir = %self.dir.display(),
            high_watermark = snapshot.state.high_watermark,
            staged = snapshot.staged.is_some(),
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> io::Result<Option<openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>>>
    {
        Ok(self
            .load_snapshot()?
            .map(|(meta, state)| openraft::Snapshot {
                meta,
                snapshot: SnapshotData {
                    state,
                    staged: None,
                },
            }))
    }
}
