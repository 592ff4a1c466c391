//! The raft log store's durability promises under simulated power loss (storage's fault seam):
//! the vote and the purge point are on disk when `save_vote` / `purge` return, so a machine that
//! loses power right after still has them (raft must never vote twice in a term, nor ask for
//! entries it purged). Each of those tests fails when the save is not durable: seen by writing
//! `raft.meta` with a plain `std::fs::write` (no fsync of the file or its directory) in
//! `MetaFile::save`. And an append's callback (what lets raft count the entry as stored, and so
//! acknowledge it) fires only after the fsync that covers it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openraft::storage::IOFlushed;
use openraft::type_config::TypeConfigExt;
use openraft::vote::RaftLeaderId;
use openraft::EntryPayload;
use rand::{Rng, SeedableRng};
use sluice_broker::raft::log_store::GroupLog;
use sluice_broker::raft::{log_id, Entry, Proposal, TypeConfig, Vote};
use sluice_protocol::{BatchBuilder, Compression, RecordBatch};
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

fn normal(index: u64) -> Entry {
    let mut b = BatchBuilder::new(Compression::None);
    b.append(1_000, None, Some(format!("v{index}").as_bytes()), &[]);
    let batch = RecordBatch::decode(&b.seal().unwrap()).unwrap().0;
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(Proposal::new(batch)),
    }
}

/// Raft appends 20 times without waiting (1-3 entries each; the flusher batches their fsyncs);
/// the moment the callback of a randomly chosen append fires, the machine stops (no later operation
/// reaches the disk) and the power goes, the last unsynced write torn at a random byte. After the
/// cut the log holds every entry of that append and of all before it, each with its payload.
/// Rounds: `SLUICE_POWER_ROUNDS` (default 12); `SLUICE_POWER_SEED` replays one. Seen failing with
/// `PartitionLog::flush_upto`'s `sync_data` made a no-op, and with the flusher firing its callbacks
/// before its fsync: both times the reopened log was empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_callback_fires_only_after_its_entries_are_durable() {
    let rounds: u64 = std::env::var("SLUICE_POWER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let seed: u64 = std::env::var("SLUICE_POWER_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    for round in 0..rounds {
        let seed = seed.wrapping_add(round);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        open(dir.path()).log.close().unwrap();
        let armed = Plan::new(dir.path()).power_loss().arm();
        let group = open(dir.path());
        let mut waits = Vec::new();
        let mut next = 1u64;
        for _ in 0..20 {
            let n = rng.gen_range(1..=3u64);
            let entries: Vec<Entry> = (next..next + n).map(normal).collect();
            next += n;
            let (tx, rx) = TypeConfig::oneshot();
            group.append(entries, IOFlushed::signal(tx)).unwrap();
            waits.push((next - 1, rx));
        }
        let pick = rng.gen_range(0..waits.len());
        let (last, rx) = waits.swap_remove(pick);
        rx.await.unwrap().unwrap();
        armed.crash();
        drop(waits);
        drop(group);
        let keep = rng.gen_range(0..200usize);
        let cut = armed.pull_plug(LastWrite::Keep(keep)).unwrap();
        let group = open(dir.path());
        let state = group.log_state();
        assert!(
            state.last_log_id.is_some_and(|l| l.index >= last),
            "seed {seed}: the callback for entries up to {last} fired, but after the cut the log \
             ends at {:?} ({cut:?})",
            state.last_log_id
        );
        for (i, e) in group.entries(1, last + 1).unwrap().into_iter().enumerate() {
            assert_eq!(e.log_id, log_id(1, i as u64 + 1), "seed {seed}");
            let EntryPayload::Normal(p) = e.payload else {
                panic!(
                    "seed {seed}: entry {} is not the normal entry appended",
                    i + 1
                )
            };
            let r = p.batch.records().unwrap().next().unwrap().unwrap();
            assert_eq!(
                r.value.unwrap(),
                format!("v{}", i + 1).as_bytes(),
                "seed {seed}"
            );
        }
        group.log.close().unwrap();
    }
}
