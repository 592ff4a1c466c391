//! Simulated power loss around the storage crate's replace-by-rename steps: `write_file_durably`
//! (old or new content, whole), a clean `close` (its checkpoint), and compaction's swap stopped at
//! every operation of the pass, before and after its `.swap` marker (every record compaction must
//! keep survives, nothing else appears). Each case stops the machine at one operation
//! ([`Plan::crash_at`]) and then either reopens as after a process crash (the page cache survives)
//! or pulls the plug first.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::Path;

use super::power_tests::{batch, served, Rec};
use super::tests::small_config;
use crate::fault::{LastWrite, Op, Plan};
use crate::{write_file_durably, FlushPolicy, PartitionLog};

const OPS: [Op; 6] = [
    Op::Create,
    Op::Write,
    Op::SetLen,
    Op::Sync,
    Op::SyncDir,
    Op::Rename,
];

/// Crash points: every operation of each kind whose numbers (counted from arming) are in the
/// range given for it, then `None` (not stopped).
fn crash_points(counts: &[(Op, RangeInclusive<u64>)]) -> Vec<Option<(Op, u64)>> {
    let mut v: Vec<_> = counts
        .iter()
        .flat_map(|(op, r)| r.clone().map(move |i| Some((*op, i))))
        .collect();
    v.push(None);
    v
}

fn plan(dir: &Path, crash: Option<(Op, u64)>) -> Plan {
    let p = Plan::new(dir).power_loss();
    match crash {
        Some((op, n)) => p.crash_at(op, n),
        None => p,
    }
}

const LAST: [LastWrite; 3] = [
    LastWrite::Lose,
    LastWrite::Keep(3),
    LastWrite::Keep(usize::MAX),
];

/// `write_file_durably` stopped at each of its operations (creating the temporary, writing it,
/// fsyncing it, the rename, the directory fsync) or not at all, then power lost with the last
/// unsynced write lost, torn after 3 bytes, or whole: the file holds the old content or the new
/// one, whole, and the new one whenever the call returned `Ok`.
///
/// Broken by skipping the directory fsync in `write_file_durably`: a call that returned `Ok` left
/// the old content (the rename was lost) and the test failed. Broken by skipping the temporary's
/// fsync: the rename survived over a file whose data did not, the file read empty and the test
/// failed.
#[test]
fn a_durable_write_is_old_or_new_after_power_loss() {
    let (old, new) = (&b"old state"[..], &b"new state, longer"[..]);
    let counts: Vec<_> = [Op::Create, Op::Write, Op::Sync, Op::Rename, Op::SyncDir]
        .map(|op| (op, 1..=1))
        .to_vec();
    for crash in crash_points(&counts) {
        for last in LAST {
            let what = format!("crash at {crash:?}, last write {last:?}");
            let dir = tempfile::tempdir().unwrap();
            write_file_durably(dir.path(), "state", old).unwrap();
            let armed = plan(dir.path(), crash).arm();
            let r = write_file_durably(dir.path(), "state", new);
            assert!(r.is_ok() || armed.crashed(), "{what}: {r:?}");
            armed.pull_plug(last).unwrap();
            let got = std::fs::read(dir.path().join("state")).unwrap();
            if r.is_ok() {
                assert_eq!(got, new, "{what}: a completed durable write was lost");
            } else {
                assert!(got == old || got == new, "{what}: read {got:?}");
            }
        }
    }
}

fn fill(log: &PartitionLog, batches: usize, keys: usize) -> BTreeMap<u64, Rec> {
    let mut out = BTreeMap::new();
    for n in 0..batches {
        let tag = format!("b{n}");
        let info = log.append(&batch(&tag, 4, keys, n * 3)).unwrap();
        for j in 0..4u64 {
            let key = (keys > 0).then(|| format!("k{}", (n * 3 + j as usize) % keys));
            out.insert(info.base_offset + j, (key, format!("{tag}-{j}")));
        }
    }
    out
}

/// Operations of each kind `armed` counted.
fn counted(armed: &crate::fault::Armed) -> Vec<(Op, u64)> {
    OPS.iter().map(|&op| (op, armed.count(op))).collect()
}

/// A clean `close` (flush `never`, so close does every fsync) stopped at each of its operations or
/// not at all, then power lost: a close that returned `Ok` reopens clean with every record; one that
/// failed reopens with a dense prefix of what was appended, whole.
///
/// Broken by skipping the directory fsync in `write_file_durably`: the clean checkpoint's rename
/// was lost, the reopen after a completed close was not clean, and the test failed.
#[test]
fn a_clean_close_survives_power_loss() {
    let cfg = small_config(FlushPolicy::Never);
    let mut counts = Vec::new();
    for pass in 0..2 {
        let points = if pass == 0 {
            vec![None]
        } else {
            crash_points(&counts)
        };
        for crash in points {
            let what = format!("crash at {crash:?}");
            let dir = tempfile::tempdir().unwrap();
            let armed = plan(dir.path(), crash).arm();
            let (log, _) = PartitionLog::open(dir.path(), cfg.clone()).unwrap_or_else(|e| {
                panic!("{what}: open failed before the close: {e}");
            });
            let appended = fill(&log, 150, 0);
            let before = counted(&armed);
            let r = log.close();
            if pass == 0 {
                // Only the close's own operations are crash points (the fill is deterministic).
                counts = before
                    .iter()
                    .map(|&(op, b)| (op, b + 1..=armed.count(op)))
                    .collect();
            }
            drop(log);
            armed.pull_plug(LastWrite::Keep(usize::MAX)).unwrap();
            let (log, report) = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
            let got = served(&log);
            if r.is_ok() {
                assert!(
                    report.clean_shutdown,
                    "{what}: completed close reopened unclean"
                );
                assert_eq!(got, appended, "{what}");
            } else {
                for (i, (off, rec)) in got.iter().enumerate() {
                    assert_eq!(*off, i as u64, "{what}: offsets must be dense");
                    assert_eq!(Some(rec), appended.get(off), "{what}: offset {off}");
                }
            }
        }
    }
}

/// A cleanly closed log of keyed records (10 keys) over several sealed segments, and its records.
fn compaction_template(dir: &Path) -> BTreeMap<u64, Rec> {
    let (log, _) = PartitionLog::open(dir, small_config(FlushPolicy::External)).unwrap();
    let appended = fill(&log, 120, 10);
    log.close().unwrap();
    assert!(log.segment_bases().len() >= 3, "the template should roll");
    appended
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn names_ending(dir: &Path, suffix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect()
}

/// How a compaction case ends after the machine stopped.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// The process dies, the kernel lives: the page cache survives.
    Process,
    /// The power goes: what no fsync covered is lost, the last unsynced write as given.
    Power(LastWrite),
}

/// Compaction of a log whose sealed segments mostly drop out, stopped at every operation of the
/// pass (writing the cleaned copies, fsyncing them, writing and renaming the `.swap` marker, the
/// renames of the cleaned files into place, the directory fsyncs, the reopen of the swapped
/// segment) and then crashed as a process or by a power cut (last unsynced write lost, or whole):
/// the reopened log holds every record the uninterrupted compaction keeps and nothing that was not
/// appended at its offset, its end is unchanged, no `.cleaned` or `.swap` file is left, and cases
/// reopening with the marker on disk (the open finishes the swap) and without it both occur.
///
/// Broken by skipping the cleaned copy's fsync before the swap (`cleaned.sync_all()` in
/// `compaction::compact`): a power cut after the marker's directory fsync left the cleaned names
/// durable over empty files, the reopen finished the swap with them, records compaction keeps were
/// lost, the reopened log failed a read with `Corrupt` (an empty swapped-in segment) and the test
/// failed. Not caught, and why: skipping the directory fsync between the renames and the marker's
/// removal, or writing the marker with a plain `fs::write` (no fsync at all) — the directory fsync
/// after the renames makes the marker and the renames durable together, and the model does not
/// reorder changes one directory fsync covers (see `power.rs`); a process crash keeps the page
/// cache, marker included. Bounded by default (see the loop); `SLUICE_POWER_ROUNDS` above 12 runs
/// every operation with every way of stopping.
#[test]
fn a_compaction_swap_interrupted_anywhere_keeps_what_compaction_keeps() {
    let template = tempfile::tempdir().unwrap();
    let original = compaction_template(template.path());
    let end = original.keys().next_back().map_or(0, |o| o + 1);
    let cfg = small_config(FlushPolicy::External);
    let mut counts = Vec::new();
    let mut kept = BTreeMap::new();
    let (mut before_marker, mut after_marker) = (0, 0);
    let full = super::power_tests::rounds() > 12;
    for pass in 0..2 {
        let points = if pass == 0 {
            vec![None]
        } else {
            crash_points(&counts)
        };
        // Bounded by default: every 4th file creation and length change (index files opened and
        // sized, ~60 of them), one way of stopping per point in turn. All with more rounds.
        let points = points.into_iter().enumerate().filter(|(_, p)| {
            full || !matches!(p, Some((Op::Create | Op::SetLen, n)) if n % 4 != 0)
        });
        for (i, crash) in points {
            let stops = [
                Stop::Process,
                Stop::Power(LastWrite::Lose),
                Stop::Power(LastWrite::Keep(usize::MAX)),
            ];
            let stops = if full {
                &stops[..]
            } else {
                &stops[i % 3..=i % 3]
            };
            for &stop in stops {
                let what = format!("crash at {crash:?}, {stop:?}");
                let dir = tempfile::tempdir().unwrap();
                copy_dir(template.path(), dir.path());
                let (log, _) = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
                let armed = plan(dir.path(), crash).arm();
                let r = log.compact(0);
                assert!(r.is_ok() || armed.crashed(), "{what}: {r:?}");
                if pass == 0 {
                    assert!(r.as_ref().unwrap().segments_rewritten >= 2, "{what}: {r:?}");
                    counts = OPS.iter().map(|&op| (op, 1..=armed.count(op))).collect();
                }
                drop(log);
                match stop {
                    Stop::Process => drop(armed),
                    Stop::Power(last) => drop(armed.pull_plug(last).unwrap()),
                }
                if names_ending(dir.path(), ".swap").is_empty() {
                    before_marker += 1;
                } else {
                    after_marker += 1;
                }
                let (log, _) = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
                let got = served(&log);
                if pass == 0 {
                    assert!(got.len() < original.len(), "{what}: nothing compacted");
                    kept = got.clone();
                }
                for (off, rec) in &got {
                    assert_eq!(Some(rec), original.get(off), "{what}: offset {off}");
                }
                for (off, rec) in &kept {
                    assert_eq!(got.get(off), Some(rec), "{what}: kept offset {off} lost");
                }
                assert_eq!(log.log_end_offset(), end, "{what}: log end");
                let left = [".cleaned", ".swap", ".swap.tmp"].map(|s| names_ending(dir.path(), s));
                assert!(left.iter().all(Vec::is_empty), "{what}: left {left:?}");
            }
        }
    }
    println!("compaction: {before_marker} reopened without a swap marker, {after_marker} with one (finishing the swap)");
    assert!(before_marker > 0 && after_marker > 0);
}
