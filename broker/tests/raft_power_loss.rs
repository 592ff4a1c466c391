//! The raft log store's durability promises under simulated power loss (storage's fault seam):
//! the vote and the purge point are on disk when `save_vote` / `purge` return, so a machine that
//! loses power right after still has them (raft must never vote twice in a term, nor ask for
//! entries it purged). Each of those tests fails when the save is not durable: seen by writing
//! `raft.meta` with a plain `std::fs::write` (no fsync of the file or its directory) in
//! `MetaFile::save`. And an append's callback (what lets raft count the entry as stored, and so
//! acknowledge it) fires only after the fsync that covers it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use openraft::vote::RaftLeaderId;
use openraft::EntryPayload;
use rand::{Rng, SeedableRng};
use sluice_broker::raft::log_store::{Flushed, GroupLog};
use sluice_broker::raft::{log_id, Entry, Proposal, Vote};
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

/// Raft appends 20 times without waiting (1-3 entries each; the flusher batches their fsyncs). One
/// append's callback stops the machine itself, the instant it fires (no later operation reaches the
/// disk, so nothing the flusher does after the callback can make the entry durable in time); the
/// power goes. After the cut the log holds every entry of that append and of all before it, each
/// with its payload. Even rounds stop at the first append's callback (no flush of an earlier round
/// can have covered its entries) and lose the last unsynced write; odd rounds stop at a random
/// append's callback and tear the last unsynced write at a random byte. Rounds: `SLUICE_POWER_ROUNDS` (default 12); `SLUICE_POWER_SEED` replays one.
///
/// Seen failing in round 0 of every run (40 of 40, and 10 of 10) with the flusher firing its
/// callbacks before its fsync, and with `PartitionLog::flush_upto`'s `sync_data` made a no-op:
/// the reopened log ended before the entries whose callback had fired. Before the callback stopped the machine
/// itself (the test stopped it after `rx.await`), that second break was caught only when the test
/// thread beat the flusher's fsync.
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
        let armed = Arc::new(Plan::new(dir.path()).power_loss().arm());
        let group = open(dir.path());
        let pick = if round % 2 == 0 {
            0
        } else {
            rng.gen_range(0..20)
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut tx = Some(tx);
        let mut last = 0;
        let mut next = 1u64;
        for i in 0..20 {
            let n = rng.gen_range(1..=3u64);
            let entries: Vec<Entry> = (next..next + n).map(normal).collect();
            next += n;
            let done: Flushed = match if i == pick { tx.take() } else { None } {
                Some(tx) => {
                    last = next - 1;
                    let armed = armed.clone();
                    Flushed::Then(Box::new(move |r| {
                        armed.crash();
                        // Dropped before the test hears of it, so it can take the plan back.
                        drop(armed);
                        let _ = tx.send(r);
                    }))
                }
                None => Flushed::Then(Box::new(|_| {})),
            };
            // Appends after the pick's callback stopped the machine fail, as they would on it.
            match group.append(entries, done) {
                Err(_) if armed.crashed() => break,
                r => r.unwrap(),
            }
        }
        rx.await.unwrap().unwrap();
        drop(group);
        let armed = Arc::try_unwrap(armed).expect("the callback dropped its handle");
        // Even rounds lose the last unsynced write: one that lands whole could carry the picked
        // entries and hide a callback that fired early.
        let last_write = if round % 2 == 0 {
            LastWrite::Lose
        } else {
            LastWrite::Keep(rng.gen_range(0..200usize))
        };
        let cut = armed.pull_plug(last_write).unwrap();
        let group = open(dir.path());
        let state = group.log_state();
        assert!(
            state.last_log_id.is_some_and(|l| l.index >= last),
            "seed {seed}, round {round}: the callback for entries up to {last} fired, but after \
             the cut the log ends at {:?} ({cut:?})",
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
