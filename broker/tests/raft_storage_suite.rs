//! openraft's own storage test suite (`openraft::testing::log::Suite`) run against the raft log
//! store over a real segment log and the group state machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::StorageError;
use sluice_broker::raft::log_store::{GroupLog, LogStore};
use sluice_broker::raft::state_machine::GroupSm;
use sluice_broker::raft::TypeConfig;
use sluice_storage::{FlushPolicy, LogConfig, PartitionLog};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, GroupSm, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, GroupSm), StorageError<TypeConfig>> {
        let err = |e: &dyn std::fmt::Display| {
            StorageError::write(TypeConfig::err_from_string(e.to_string()))
        };
        let dir = tempfile::tempdir().map_err(|e| err(&e))?;
        let config = LogConfig {
            segment_bytes: 8192,
            flush: FlushPolicy::Never,
            ..LogConfig::default()
        };
        let (log, _) = PartitionLog::open(dir.path(), config).map_err(|e| err(&e))?;
        let group = GroupLog::open(log).map_err(|e| err(&e))?;
        let hw = Arc::new(tokio::sync::watch::channel(0u64).0);
        let sm = GroupSm::open(group.clone(), hw).map_err(|e| err(&e))?;
        Ok((dir, LogStore { group }, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes() {
    Suite::test_all(Builder).await.unwrap();
}

/// A batch of `n` records stored as raft entry (`term`, `index`).
fn raft_batch(n: usize, tag: &str) -> bytes::Bytes {
    let mut b = sluice_protocol::BatchBuilder::new(sluice_protocol::Compression::None);
    for i in 0..n {
        b.append(1_000, None, Some(format!("{tag}-{i}").as_bytes()), &[]);
    }
    b.seal().unwrap()
}

/// A crash in the middle of a snapshot install (snapshot and purge point saved, the live log reset
/// and half refilled, the staging still there) is finished when the group opens again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_snapshot_install_is_finished_on_open() {
    use sluice_broker::raft::meta_file::{MetaFile, RaftMeta};
    use sluice_broker::raft::state_machine::{encode_snapshot, SnapshotState};
    use sluice_broker::raft::{log_id, SnapshotMeta, StoredMembership};

    let dir = tempfile::tempdir().unwrap();
    let live_dir = dir.path().join("0");
    let staging_dir = dir.path().join("0.staging");
    let cfg = LogConfig {
        segment_bytes: 8192,
        flush: FlushPolicy::Never,
        ..LogConfig::default()
    };
    // The old live log: three entries of term 1.
    {
        let (live, _) = PartitionLog::open(&live_dir, cfg.clone()).unwrap();
        for i in 1..=3 {
            live.append_raft(&raft_batch(2, "old"), 1, i).unwrap();
        }
        live.close().unwrap();
    }
    // The leader's retained log, staged: entries 10..=14 of term 2 from offset 100.
    let staged: Vec<bytes::Bytes> = (0..5).map(|i| raft_batch(2, &format!("new{i}"))).collect();
    {
        let (st, _) = PartitionLog::open(&staging_dir, cfg.clone()).unwrap();
        st.reset(100).unwrap();
        for (i, b) in staged.iter().enumerate() {
            st.append_raft(b, 2, 10 + i as u64).unwrap();
        }
        st.close().unwrap();
    }
    // The snapshot (last entry 14, high watermark 110) and the purge point were saved...
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(2, 14)),
        last_membership: StoredMembership::default(),
    };
    let state = SnapshotState {
        high_watermark: 110,
        log_start_offset: 100,
        applier: bytes::Bytes::new(),
    };
    std::fs::write(
        live_dir.join("raft.snapshot"),
        encode_snapshot(&meta, &state),
    )
    .unwrap();
    MetaFile::new(&live_dir)
        .save(&RaftMeta {
            vote: None,
            purged: Some(log_id(2, 14)),
        })
        .unwrap();
    // ...and the crash came after the live log was reset and two batches copied.
    {
        let (live, _) = PartitionLog::open(&live_dir, cfg.clone()).unwrap();
        live.reset(100).unwrap();
        for (i, b) in staged.iter().take(2).enumerate() {
            live.append_raft(b, 2, 10 + i as u64).unwrap();
        }
    }

    let (live, _) = PartitionLog::open(&live_dir, cfg).unwrap();
    let group = GroupLog::open(live.clone()).unwrap();
    let hw = Arc::new(tokio::sync::watch::channel(0u64).0);
    let _sm = GroupSm::open(group.clone(), hw.clone()).unwrap();
    assert_eq!(live.log_start_offset(), 100);
    assert_eq!(live.log_end_offset(), 110);
    assert_eq!(*hw.borrow(), 110);
    assert!(
        !staging_dir.exists(),
        "the staging is removed once installed"
    );
    let headers = live.batch_headers(100, usize::MAX).unwrap();
    assert_eq!(
        headers
            .iter()
            .map(|h| (h.raft_term, h.raft_index))
            .collect::<Vec<_>>(),
        (10..=14).map(|i| (2, i)).collect::<Vec<_>>()
    );
    let state = group.log_state();
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 14)));
    assert_eq!(state.last_log_id, Some(log_id(2, 14)));
}

/// Retention deletes nothing raft holds or a snapshot transfer has pinned: a pinned log start
/// holds the limit back until the pin goes, whatever raft purged meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_log_start_holds_retention_back() {
    use sluice_broker::raft::log_id;

    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 8192,
        flush: FlushPolicy::Never,
        // Everything below the limit may go (the metadata log's rule).
        retention_bytes: Some(0),
        retention_ms: None,
        ..LogConfig::default()
    };
    let (log, _) = PartitionLog::open(dir.path(), cfg).unwrap();
    // 40 entries of 50 records each (~1 KiB, 50 offsets): several segments.
    for i in 1..=40u64 {
        log.append_raft(&raft_batch(50, &format!("e{i}")), 1, i)
            .unwrap();
    }
    let group = GroupLog::open(log.clone()).unwrap();
    assert!(log.segment_bases().len() > 2, "{:?}", log.segment_bases());
    let retain = |group: &GroupLog| {
        group.with_retention_limit(|limit| {
            group.log.apply_retention_below(0, limit).unwrap();
            limit
        })
    };
    // Nothing purged: raft holds everything, nothing goes.
    assert_eq!(retain(&group), 0);
    assert_eq!(log.log_start_offset(), 0);

    // A transfer pins the start; then raft purges most of the log.
    let pin = group.pin_log_start();
    assert_eq!(pin.offset(), 0);
    group.purge(log_id(1, 30)).unwrap();
    assert_eq!(retain(&group), 0, "the pin holds the limit at its offset");
    assert_eq!(log.log_start_offset(), 0);
    // The pinned range stays readable for the transfer.
    assert!(!log.read(0, 1 << 20).unwrap().bytes.is_empty());

    // Pin gone: retention deletes up to the first held entry (index 31, offset 30 * 50).
    drop(pin);
    assert_eq!(retain(&group), 30 * 50);
    let start = log.log_start_offset();
    assert!(start > 0 && start <= 30 * 50, "log start {start}");
    // A new transfer pins the new start.
    let pin = group.pin_log_start();
    assert_eq!(pin.offset(), start);
    assert_eq!(group.with_retention_limit(|l| l), start);
}
