//! Simulated power loss under a partition log (the `power` model of the fault seam): rounds of
//! appends stopped at a random operation, then the plug is pulled (every write no fsync covered is
//! lost, the last one possibly torn at a random byte, names no directory fsync covered are gone) and
//! the log is reopened. Under flush `always` every acknowledged record survives; under `interval`
//! everything below the last `flushed_offset()` read before the cut survives; under both, offsets
//! are dense and every record served is one that was appended at that offset, whole.
//!
//! Rounds: 12 by default, `SLUICE_POWER_ROUNDS` for more; `SLUICE_POWER_SEED` replays a run (the
//! seed is printed). The durable-file, clean-close and compaction-swap cases are in
//! `power_swap_tests.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_protocol::{BatchBuilder, Compression, RecordBatch};

use super::tests::small_config;
use crate::fault::{LastWrite, Op, Plan};
use crate::{FlushPolicy, LogConfig, PartitionLog};

/// Rounds per test: `SLUICE_POWER_ROUNDS`, 12 by default.
pub(super) fn rounds() -> u64 {
    std::env::var("SLUICE_POWER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
}

/// A generator seeded from `SLUICE_POWER_SEED` or at random; the seed is printed for a replay.
pub(super) fn rng(test: &str) -> StdRng {
    let seed = std::env::var("SLUICE_POWER_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("{test}: SLUICE_POWER_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// A batch of `n` records with values `"{tag}-{i}"` and keys `k{(salt + i) % keys}` (no key when
/// `keys` is 0).
pub(super) fn batch(tag: &str, n: usize, keys: usize, salt: usize) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..n {
        let key = (keys > 0).then(|| format!("k{}", (salt + i) % keys));
        let value = format!("{tag}-{i}");
        b.append(
            0,
            key.as_deref().map(str::as_bytes),
            Some(value.as_bytes()),
            &[],
        );
    }
    b.seal().unwrap()
}

pub(super) type Rec = (Option<String>, String);

/// Every record the log serves, by offset, read through the public read API (panics on a batch
/// that fails its CRCs: a torn batch must never be served).
pub(super) fn served(log: &PartitionLog) -> BTreeMap<u64, Rec> {
    let mut out = BTreeMap::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let r = log.read(offset, 64 * 1024).unwrap();
        if r.bytes.is_empty() {
            break;
        }
        for b in RecordBatch::iter_all(r.bytes) {
            for rec in b.unwrap().records().unwrap() {
                let rec = rec.unwrap();
                let s = |x: Bytes| String::from_utf8(x.to_vec()).unwrap();
                out.insert(rec.offset, (rec.key.map(s), s(rec.value.unwrap())));
            }
        }
        offset = r.next_offset;
    }
    out
}

/// A random stop: the `nth` operation of one kind an append path does.
fn crash_point(rng: &mut StdRng) -> (Op, u64) {
    match rng.gen_range(0..10) {
        0..=3 => (Op::Write, rng.gen_range(1..150)),
        4..=7 => (Op::Sync, rng.gen_range(1..150)),
        8 => (Op::SyncDir, rng.gen_range(1..6)),
        _ => (Op::Rename, rng.gen_range(1..6)),
    }
}

/// Lose the last unsynced write (a third of the time) or let a random prefix of it land.
pub(super) fn last_write(rng: &mut StdRng) -> LastWrite {
    if rng.gen_range(0..3) == 0 {
        LastWrite::Lose
    } else {
        LastWrite::Keep(rng.gen_range(0..400))
    }
}

/// Reopens `dir` after a power cut and checks it against what must be there: offsets dense from
/// 0; every offset in `durable` served with its record; every record served is the one appended
/// at its offset (in `durable` or `attempted`). Returns what the log now holds, all of it durable
/// (recovery fsyncs what it keeps before `open` returns).
fn reopen_and_check(
    dir: &Path,
    cfg: &LogConfig,
    durable: &BTreeMap<u64, Rec>,
    attempted: &BTreeMap<u64, Rec>,
    what: &str,
) -> BTreeMap<u64, Rec> {
    let (log, _) = PartitionLog::open(dir, cfg.clone()).unwrap();
    let got = served(&log);
    for (i, (&off, rec)) in got.iter().enumerate() {
        assert_eq!(off, i as u64, "{what}: offsets must be dense");
        let want = durable.get(&off).or_else(|| attempted.get(&off));
        assert_eq!(
            Some(rec),
            want,
            "{what}: offset {off} serves what no append wrote there"
        );
    }
    for (off, rec) in durable {
        assert_eq!(got.get(off), Some(rec), "{what}: durable offset {off} lost");
    }
    assert_eq!(log.log_end_offset(), got.len() as u64, "{what}: log end");
    got
}

/// Flush `always` under power loss: each round opens the log under a power-loss plan that stops the
/// machine at a random operation (a write, fsync, directory fsync or rename, possibly during the
/// open's own recovery), appends until an append fails, drops the log, pulls the plug (the last
/// unsynced write lost or torn at a random byte) and reopens: every acknowledged record is there,
/// with everything earlier rounds' reopens kept, offsets dense, nothing torn served.
///
/// Broken by making `Segment::sync_data` a no-op (the segment's fdatasync skipped; the index and
/// checkpoint fsyncs still ran): acknowledged offsets were lost and the test failed.
#[test]
fn acknowledged_records_survive_power_loss_under_flush_always() {
    let mut rng = rng("always");
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(FlushPolicy::Always);
    let mut durable: BTreeMap<u64, Rec> = BTreeMap::new();
    let mut torn = 0;
    for round in 0..rounds() {
        let (op, nth) = crash_point(&mut rng);
        let what = format!("round {round}, crash at {op:?} #{nth}");
        let armed = Plan::new(dir.path()).power_loss().crash_at(op, nth).arm();
        let mut attempted = BTreeMap::new();
        if let Ok((log, _)) = PartitionLog::open(dir.path(), cfg.clone()) {
            for n in 0..300 {
                let records = rng.gen_range(1..8);
                let tag = format!("r{round}n{n}");
                let end = log.log_end_offset();
                for j in 0..records {
                    attempted.insert(end + j as u64, (None, format!("{tag}-{j}")));
                }
                match log.append(&batch(&tag, records, 0, 0)) {
                    Ok(info) => {
                        assert!(info.flushed, "{what}");
                        for j in 0..records as u64 {
                            durable.insert(info.base_offset + j, attempted[&(end + j)].clone());
                        }
                    }
                    Err(_) => break,
                }
            }
            drop(log); // the process dies with the machine: no close
        }
        let cut = armed.pull_plug(last_write(&mut rng)).unwrap();
        torn += usize::from(cut.torn.is_some());
        durable = reopen_and_check(dir.path(), &cfg, &durable, &attempted, &what);
    }
    println!(
        "always: {} records durable, {torn} torn writes landed",
        durable.len()
    );
    assert!(!durable.is_empty(), "the rounds should acknowledge records");
}

/// Flush `interval` under power loss: each round appends a random number of batches (pausing now
/// and then so the flusher runs), reads `flushed_offset()`, stops the machine, pulls the plug and
/// reopens: everything below that flushed offset is there, offsets dense, and every record served
/// is one appended at its offset, whole (a batch the cut tore is cut by recovery, never served).
/// Also checks that the rounds did lose unflushed appends (the model bites).
///
/// Broken by making `Segment::sync_data` a no-op: the flusher still advanced `flushed_offset`,
/// the offsets below it were lost and the test failed.
#[test]
fn flushed_records_survive_power_loss_under_flush_interval() {
    let mut rng = rng("interval");
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(FlushPolicy::Interval {
        max_bytes: 2048,
        max_delay: Duration::from_millis(2),
    });
    let mut durable: BTreeMap<u64, Rec> = BTreeMap::new();
    let mut lost = 0u64;
    for round in 0..rounds() {
        let what = format!("round {round}");
        let armed = Plan::new(dir.path()).power_loss().arm();
        let (log, _) = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
        let mut attempted = BTreeMap::new();
        for n in 0..rng.gen_range(1..200) {
            let records = rng.gen_range(1..8);
            let tag = format!("r{round}n{n}");
            let info = log.append(&batch(&tag, records, 0, 0)).unwrap();
            for j in 0..records as u64 {
                attempted.insert(info.base_offset + j, (None, format!("{tag}-{j}")));
            }
            if rng.gen_range(0..20) == 0 {
                std::thread::sleep(Duration::from_millis(rng.gen_range(1..5)));
            }
        }
        let flushed = log.flushed_offset();
        let end = log.log_end_offset();
        armed.crash();
        drop(log);
        let cut = armed.pull_plug(last_write(&mut rng)).unwrap();
        for off in durable.keys().next_back().map_or(0, |o| o + 1)..flushed {
            durable.insert(off, attempted[&off].clone());
        }
        let what = format!("{what}, flushed {flushed} of {end}, {cut:?}");
        durable = reopen_and_check(dir.path(), &cfg, &durable, &attempted, &what);
        lost += end - durable.len() as u64;
    }
    assert!(
        lost > 0,
        "no round lost an unflushed append: the power cut did nothing"
    );
}
