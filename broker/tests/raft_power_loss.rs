//! The raft log store's durability promises under simulated power loss (storage's fault seam):
//! the vote and the purge point are on disk when `save_vote` / `purge` return, so a machine that
//! loses power right after still has them (raft must never vote twice in a term, nor ask for
//! entries it purged). Each test fails when the save is not durable: seen by writing `raft.meta`
//! with a plain `std::fs::write` (no fsync of the file or its directory) in `MetaFile::save`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openraft::vote::RaftLeaderId;
use sluice_broker::raft::log_store::GroupLog;
use sluice_broker::raft::{log_id, Vote};
use sluice_storage::fault::{LastWrite, Plan};
use sluice_storage::{FlushPolicy, LogConfig, PartitionLog};

fn open(dir: &std::path::Path) -> std::sync::Arc<GroupLog> {
    let config = LogConfig {
        flush: FlushPolicy::External,
        ..LogConfig::default()
    };
    let (log, _) = PartitionLog::open(dir, config).unwrap();
    GroupLog::open(log).unwrap()
}

fn vote(term: u64, node: u64) -> Vote {
    openraft::impls::Vote {
        leader_id: openraft::impls::leader_id_std::LeaderId::new(term, node),
        committed: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_vote_survives_power_loss() {
    let dir = tempfile::tempdir().unwrap();
    let group = open(dir.path());
    group.save_vote(&vote(1, 1)).unwrap();
    group.log.close().unwrap();
    drop(group);
    for (i, last) in [LastWrite::Lose, LastWrite::Keep(3)]
        .into_iter()
        .enumerate()
    {
        let group = open(dir.path());
        let armed = Plan::new(dir.path()).power_loss().arm();
        let v = vote(2 + i as u64, 2);
        group.save_vote(&v).unwrap();
        drop(group);
        armed.pull_plug(last).unwrap();
        let group = open(dir.path());
        assert_eq!(
            group.vote(),
            Some(v),
            "the vote saved before the cut is lost"
        );
        group.log.close().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_purge_point_survives_power_loss() {
    let dir = tempfile::tempdir().unwrap();
    let group = open(dir.path());
    group.log.close().unwrap();
    drop(group);
    let group = open(dir.path());
    let armed = Plan::new(dir.path()).power_loss().arm();
    group.purge(log_id(3, 40)).unwrap();
    drop(group);
    armed.pull_plug(LastWrite::Lose).unwrap();
    let group = open(dir.path());
    assert_eq!(
        group.log_state().last_purged_log_id,
        Some(log_id(3, 40)),
        "the purge point saved before the cut is lost"
    );
}
