//! A follower's snapshot install interrupted by power loss at each of its steps (storage's fault
//! seam, simulated power loss): staging the leader's segments (open, reset, append, close), saving
//! the snapshot file, saving the purge point, replacing the live log from the staging, dropping the
//! staging. The machine stops at the `n`-th operation of each kind (file creation, write, length
//! change, file fsync, directory fsync, rename, removal) for every `n` until the install finishes
//! without reaching it; after the cut the group opens (finishing or dropping the install) and
//! holds either the old state or the new one, whole: never a snapshot naming entries the log
//! cannot serve, never a half-replaced log.
//!
//! It found a real bug: a cut after the snapshot file was saved but before its purge point came
//! back with the new snapshot and, once the open finished the install, a log starting at index 10
//! with no purge point (raft would ask for entries 1..10). `finish_interrupted_install` now saves
//! the purge point before it replaces the log. Also seen failing: with `write_file_durably` not
//! fsyncing the temporary file, `raft.snapshot` came back empty and the group did not open; with
//! `PartitionLog::close` not fsyncing the staging's active segment, the new snapshot came back over
//! the old log (the staging had lost its batches and was dropped).
//!
//! Each cut is also checked on an image that keeps all but one of the name changes no directory
//! fsync covered (which one turns with each cut), as a file system that wrote them out of order.
//! Removing only the directory fsync of `write_file_durably` is caught there, every run: at the
//! cut at the 9th length change, the purge point's `raft.meta` rename survived while the earlier
//! `raft.snapshot` rename was lost, and the group opened with the old log and snapshot but the new
//! purge point. (With every unsynced change lost it is not caught: the live log's reset fsyncs the
//! same directory before anything depends on the renames.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use rand::{Rng, SeedableRng};
use sluice_broker::raft::log_store::GroupLog;
use sluice_broker::raft::state_machine::{GroupSm, SnapshotData, SnapshotState};
use sluice_broker::raft::{log_id, SnapshotMeta, StoredMembership};
use sluice_protocol::RecordBatch;
use sluice_storage::fault::{LastWrite, Names, Op, Plan};
use sluice_storage::{FlushPolicy, LogConfig, PartitionLog};

fn raft_batch(tag: &str) -> bytes::Bytes {
    let mut b = sluice_protocol::BatchBuilder::new(sluice_protocol::Compression::None);
    for i in 0..2 {
        b.append(1_000, None, Some(format!("{tag}-{i}").as_bytes()), &[]);
    }
    b.seal().unwrap()
}

fn config() -> LogConfig {
    LogConfig {
        flush: FlushPolicy::External,
        ..LogConfig::default()
    }
}

/// The follower's log before the install: three entries of term 1 at offsets 0..6.
fn old_log(live: &Path) {
    let (log, _) = PartitionLog::open(live, config()).unwrap();
    for i in 1..=3 {
        log.append_raft(&raft_batch(&format!("old{i}")), 1, i)
            .unwrap();
    }
    log.close().unwrap();
}

/// The install as the registry and openraft run it: stage the leader's retained log (entries
/// 10..=14 of term 2 from offset 100, as `stage_chunk` writes them), close it, install. Stops at
/// the first failure (the machine has stopped).
async fn install(group: &Arc<GroupLog>, sm: &mut GroupSm) -> Result<(), String> {
    let staging = group.staging_dir();
    let stage = || -> Result<(), sluice_storage::StorageError> {
        let (st, _) = PartitionLog::open(&staging, LogConfig::default())?;
        st.reset(100)?;
        for i in 0..5u64 {
            st.append_raft(&raft_batch(&format!("new{i}")), 2, 10 + i)?;
        }
        st.close()
    };
    stage().map_err(|e| format!("staging: {e}"))?;
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(2, 14)),
        last_membership: StoredMembership::default(),
    };
    let data = SnapshotData {
        state: SnapshotState {
            high_watermark: 110,
            log_start_offset: 100,
            applier: bytes::Bytes::new(),
        },
        staged: Some(staging),
    };
    sm.install_snapshot(&meta, data)
        .await
        .map_err(|e| format!("install: {e}"))
}

/// (raft term, raft index, first value) of every batch in the live log.
fn batches(log: &PartitionLog) -> Vec<(u64, u64, String)> {
    log.read(log.log_start_offset(), usize::MAX)
        .map(|r| {
            RecordBatch::iter_all(r.bytes)
                .map(|b| {
                    let b = b.unwrap();
                    let h = *b.header();
                    let v = b.records().unwrap().next().unwrap().unwrap().value.unwrap();
                    (
                        h.raft_term,
                        h.raft_index,
                        String::from_utf8(v.to_vec()).unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// After a cut: the group opens on `live` (finishing or dropping the install) and holds the old
/// state or the new one, whole (the new one if the install was not cut). Whether it is the new one.
async fn check_after_cut(
    live: &Path,
    what: &str,
    crashed: bool,
    old: &[(u64, u64, String)],
    new: &[(u64, u64, String)],
) -> bool {
    let listing: Vec<String> = std::fs::read_dir(live)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let len = e.metadata().unwrap().len();
            format!("{}:{len}", e.file_name().to_string_lossy())
        })
        .collect();
    let what = format!("{what} {listing:?}");
    let (log, _) = PartitionLog::open(live, config())
        .unwrap_or_else(|e| panic!("{what}: the log does not open: {e}"));
    let group = GroupLog::open(log.clone())
        .unwrap_or_else(|e| panic!("{what}: the group does not open: {e}"));
    let hw = Arc::new(tokio::sync::watch::channel(0u64).0);
    let mut sm = GroupSm::open(group.clone(), hw.clone())
        .unwrap_or_else(|e| panic!("{what}: the state machine does not open: {e}"));
    let snapshot = sm.get_current_snapshot().await.unwrap();
    let state = group.log_state();
    let got = batches(&log);
    let came_back_new = match snapshot.map(|s| s.meta.last_log_id) {
        Some(Some(l)) if l == log_id(2, 14) => {
            assert_eq!(got, new, "{what}: the new snapshot over another log");
            assert_eq!(log.log_start_offset(), 100, "{what}");
            assert_eq!(log.log_end_offset(), 110, "{what}");
            assert_eq!(*hw.borrow(), 110, "{what}");
            assert_eq!(state.last_purged_log_id, Some(log_id(2, 14)), "{what}");
            true
        }
        other => {
            assert!(crashed, "{what}: finished, yet the snapshot is {other:?}");
            assert_eq!(got, old, "{what}: no new snapshot, yet the log changed");
            assert_eq!(state.last_purged_log_id, None, "{what}");
            assert_eq!(state.last_log_id, Some(log_id(1, 3)), "{what}");
            false
        }
    };
    assert!(
        !group.staging_dir().exists(),
        "{what}: the staging is left behind after opening"
    );
    log.close().unwrap();
    came_back_new
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_install_cut_at_any_step_comes_back_old_or_new_never_half() {
    let seed: u64 = std::env::var("SLUICE_POWER_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let old: Vec<(u64, u64, String)> = (1..=3).map(|i| (1, i, format!("old{i}-0"))).collect();
    let new: Vec<(u64, u64, String)> = (0..5).map(|i| (2, 10 + i, format!("new{i}-0"))).collect();
    let (mut cuts, mut came_back_new, mut reordered_new) = (0, 0, 0);
    for op in [
        Op::Create,
        Op::Write,
        Op::SetLen,
        Op::Sync,
        Op::SyncDir,
        Op::Rename,
        Op::Remove,
    ] {
        for n in 1.. {
            let dir = tempfile::tempdir().unwrap();
            let live = dir.path().join("0");
            old_log(&live);
            let (log, _) = PartitionLog::open(&live, config()).unwrap();
            let group = GroupLog::open(log).unwrap();
            let hw = Arc::new(tokio::sync::watch::channel(0u64).0);
            let mut sm = GroupSm::open(group.clone(), hw).unwrap();
            let armed = Plan::new(dir.path()).power_loss().crash_at(op, n).arm();
            let result = install(&group, &mut sm).await;
            let crashed = armed.crashed();
            drop(sm);
            drop(group);
            let last = if rng.gen_bool(0.5) {
                LastWrite::Lose
            } else {
                LastWrite::Keep(rng.gen_range(0..300))
            };
            // Also an image in which the name changes no directory fsync covered reach the disk
            // all but one (which one turns with each cut): a file system may write them in any
            // order.
            let images = tempfile::tempdir().unwrap();
            let unsynced = armed.unsynced_names();
            let reordered = (unsynced > 0).then(|| {
                let names = Names::all_but(unsynced, cuts % unsynced);
                let image = images.path().join("cut");
                armed
                    .pull_plug_into_with(LastWrite::Lose, &names, &image)
                    .unwrap();
                (image.join("0"), names)
            });
            let cut = armed.pull_plug(last).unwrap();
            let what = format!("seed {seed}, cut at {op:?} #{n} ({result:?}, {cut:?})");
            if !crashed {
                assert!(result.is_ok(), "{what}: no cut, yet the install failed");
            }
            came_back_new += u32::from(check_after_cut(&live, &what, crashed, &old, &new).await);
            if let Some((live, names)) = reordered {
                let what = format!("{what}, name changes kept {names:?}");
                reordered_new +=
                    u32::from(check_after_cut(&live, &what, crashed, &old, &new).await);
            }
            cuts += 1;
            if !crashed {
                break;
            }
        }
    }
    eprintln!(
        "snapshot install: {cuts} cuts, {came_back_new} came back with the new snapshot \
         ({reordered_new} of their reordered images)"
    );
    assert!(
        came_back_new > 6,
        "too few cuts landed after the install became durable"
    );
}
