//! The raft log store's append guards on a follower, in process over real segment logs: an entry the
//! leader stored at an offset this replica's log does not end at is refused, and so is an append
//! whose raft index does not follow the last one. Either refusal leaves the log as it was: same log
//! end, same last entry, the same entries after a reopen. The control appends the same entries
//! where they fit and sees them accepted at the leader's offsets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use openraft::storage::IOFlushed;
use openraft::EntryPayload;
use sluice_broker::raft::log_store::GroupLog;
use sluice_broker::raft::{log_id, Entry, Proposal};
use sluice_protocol::{BatchBuilder, Compression, RecordBatch};
use sluice_storage::{FlushPolicy, LogConfig, PartitionLog};

fn open(dir: &std::path::Path) -> Arc<GroupLog> {
    let config = LogConfig {
        flush: FlushPolicy::External,
        ..LogConfig::default()
    };
    let (log, _) = PartitionLog::open(dir, config).unwrap();
    GroupLog::open(log).unwrap()
}

/// A fresh proposal (no offsets of its own) at `index` holding `values`, one record each.
fn normal(term: u64, index: u64, values: &[&str]) -> Entry {
    let mut b = BatchBuilder::new(Compression::None);
    for v in values {
        b.append(1_000, None, Some(v.as_bytes()), &[]);
    }
    let batch = RecordBatch::decode(&b.seal().unwrap()).unwrap().0;
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Proposal::new(batch)),
    }
}

fn blank(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Blank,
    }
}

fn append(g: &GroupLog, entries: Vec<Entry>) -> std::io::Result<()> {
    g.append(entries, IOFlushed::noop())
}

/// (log end offset, last raft index, base offset of every entry 1..=last) of `g`.
fn shape(g: &GroupLog) -> (u64, Option<u64>, Vec<u64>) {
    let last = g.log_state().last_log_id.map(|l| l.index);
    let offsets = (1..=last.unwrap_or(0))
        .map(|i| g.entry_pos(i).expect("every entry mapped").base_offset)
        .collect();
    (g.log.log_end_offset(), last, offsets)
}

/// The leader stored entry 3 at offset 2; a follower whose log ends at 3 (its entry 2 holds two
/// records where the leader's held one) must refuse it rather than store it at another offset than
/// the leader's. Seen to fail (the entry stored at offset 3) with the `leader_offset != end` check
/// in `GroupLog::append` removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_refuses_an_entry_the_leader_stored_at_another_offset() {
    let (ld, fd, cd) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let leader = open(ld.path());
    append(
        &leader,
        vec![blank(1, 1), normal(1, 2, &["a"]), normal(1, 3, &["b"])],
    )
    .unwrap();
    // What the leader sends: entries as stored, carrying their offsets.
    let sent = leader.entries(2, 4).unwrap();
    assert_eq!(sent.len(), 2);
    let stored_at = |e: &Entry| match &e.payload {
        EntryPayload::Normal(p) => {
            assert!(p.stored, "read back from a log: stored");
            p.batch.header().base_offset
        }
        _ => panic!("a normal entry"),
    };
    assert_eq!((stored_at(&sent[0]), stored_at(&sent[1])), (1, 2));

    let follower = open(fd.path());
    append(&follower, vec![blank(1, 1), normal(1, 2, &["x", "y"])]).unwrap();
    let before = shape(&follower);
    assert_eq!(before, (3, Some(2), vec![0, 1]));
    let third = leader.entries(3, 4).unwrap();
    let err = append(&follower, third).expect_err("a mismatched offset");
    assert!(err.to_string().contains("offset 2"), "{err}");
    assert_eq!(
        shape(&follower),
        before,
        "the refused entry changed the log"
    );
    follower.log.close().unwrap();
    drop(follower);
    assert_eq!(
        shape(&open(fd.path())),
        before,
        "the refused entry is there after a reopen"
    );

    // The control: a follower whose log matches the leader's takes both at the leader's offsets.
    let control = open(cd.path());
    append(&control, vec![blank(1, 1)]).unwrap();
    append(&control, sent).unwrap();
    assert_eq!(shape(&control), (3, Some(3), vec![0, 1, 2]));
}

/// Entries must follow the last one: an append of index 4 on a log ending at index 2 (a hole), or
/// of index 2 again after the log moved on (a repeat), is refused, and the log keeps its end and
/// its entries, also after a reopen. Seen to fail when the index check ran only after the batch was
/// written (the hole's batch was in the segment, its offset taken, and after a reopen the rebuilt
/// map ended at index 4): the check now runs before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_that_do_not_follow_the_last_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    append(&g, vec![blank(1, 1), normal(1, 2, &["a"])]).unwrap();
    let before = shape(&g);
    assert_eq!(before, (2, Some(2), vec![0, 1]));

    let err = append(&g, vec![normal(1, 4, &["hole"])]).expect_err("a hole");
    assert!(err.to_string().contains("index 4"), "{err}");
    assert_eq!(shape(&g), before, "the hole changed the log");
    let err = append(&g, vec![normal(1, 2, &["again"])]).expect_err("a repeat");
    assert!(err.to_string().contains("index 2"), "{err}");
    assert_eq!(shape(&g), before, "the repeat changed the log");
    // Within one append too: 3 then 5.
    let err = append(&g, vec![normal(1, 3, &["ok"]), normal(1, 5, &["gap"])]).expect_err("a gap");
    assert!(err.to_string().contains("index 5"), "{err}");
    let mid = shape(&g);
    assert!(
        mid == before || mid == (3, Some(3), vec![0, 1, 2]),
        "at most the entry before the gap is written: {mid:?}"
    );
    g.log.close().unwrap();
    drop(g);
    let g = open(dir.path());
    assert_eq!(shape(&g), mid, "the log after a reopen differs");
    // The control: the next index is taken.
    let next = mid.1.unwrap() + 1;
    append(&g, vec![normal(1, next, &["next"])]).unwrap();
    assert_eq!(shape(&g).1, Some(next));
}
