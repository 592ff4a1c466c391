//! The replicated partition state's hooks, driven by the real raft log store and state machine over
//! a real segment log: `appended` for every normal entry in log order (control entries never),
//! `truncated` when an uncommitted suffix is cut, `committed` as entries are applied, `snapshot`
//! saved with the raft snapshot and `restore`d from it on open, then `appended` replayed for the
//! entries above the snapshot only. Each assertion fails if its hook call is removed from
//! `raft/log_store.rs` or `raft/state_machine.rs` (tried for `appended`, `truncated` and the replay).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::stream;
use openraft::storage::{IOFlushed, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use sluice_broker::raft::log_store::GroupLog;
use sluice_broker::raft::partition_state::PartitionState;
use sluice_broker::raft::state_machine::GroupSm;
use sluice_broker::raft::{log_id, Entry, Membership, Proposal};
use sluice_protocol::{BatchBuilder, Compression, RecordBatch};
use sluice_storage::{FlushPolicy, LogConfig, PartitionLog};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Appended(u64, Range<u64>),
    Truncated(Option<u64>),
    Committed(String),
    Restored(String),
}

/// Records every hook call; its committed state is the list of committed values.
#[derive(Debug, Clone, Default)]
struct Recorder {
    events: Arc<Mutex<Vec<Event>>>,
    committed: Vec<String>,
}

impl Recorder {
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

fn value(batch: &RecordBatch) -> String {
    let r = batch.records().unwrap().next().unwrap().unwrap();
    String::from_utf8(r.value.unwrap().to_vec()).unwrap()
}

impl PartitionState for Recorder {
    fn appended(&mut self, index: u64, offsets: Range<u64>, _batch: &RecordBatch) {
        self.events
            .lock()
            .unwrap()
            .push(Event::Appended(index, offsets));
    }
    fn truncated(&mut self, after: Option<u64>) {
        self.events.lock().unwrap().push(Event::Truncated(after));
    }
    fn committed(&mut self, batch: &RecordBatch, _membership: &Membership) {
        let v = value(batch);
        self.committed.push(v.clone());
        self.events.lock().unwrap().push(Event::Committed(v));
    }
    fn snapshot(&self) -> io::Result<Bytes> {
        Ok(Bytes::from(self.committed.join(",")))
    }
    fn restore(&mut self, state: &[u8]) -> io::Result<()> {
        let s = String::from_utf8(state.to_vec()).unwrap();
        self.committed = s
            .split(',')
            .filter(|v| !v.is_empty())
            .map(String::from)
            .collect();
        self.events.lock().unwrap().push(Event::Restored(s));
        Ok(())
    }
}

fn normal(term: u64, index: u64, v: &str) -> Entry {
    let mut b = BatchBuilder::new(Compression::None);
    b.append(1_000, None, Some(v.as_bytes()), &[]);
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

fn open(dir: &std::path::Path, rec: &Recorder) -> (Arc<GroupLog>, GroupSm) {
    let config = LogConfig {
        flush: FlushPolicy::External,
        ..LogConfig::default()
    };
    let (log, _) = PartitionLog::open(dir, config).unwrap();
    let group = GroupLog::open_with_state(log, Box::new(rec.clone())).unwrap();
    let hw = Arc::new(tokio::sync::watch::channel(0u64).0);
    let sm = GroupSm::open(group.clone(), hw).unwrap();
    (group, sm)
}

async fn apply(sm: &mut GroupSm, entries: Vec<Entry>) {
    let items: Vec<io::Result<_>> = entries.into_iter().map(|e| Ok((e, None))).collect();
    sm.apply(stream::iter(items)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_follow_the_log_through_truncation_commit_snapshot_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::default();
    let (group, mut sm) = open(dir.path(), &rec);
    assert_eq!(rec.take(), vec![], "an empty log replays nothing");

    // Appends: every normal entry, in log order, with its offsets; the blank entry is not data.
    group
        .append(
            vec![
                blank(1, 1),
                normal(1, 2, "a"),
                normal(1, 3, "b"),
                normal(1, 4, "c"),
            ],
            IOFlushed::noop(),
        )
        .unwrap();
    assert_eq!(
        rec.take(),
        vec![
            Event::Appended(2, 1..2),
            Event::Appended(3, 2..3),
            Event::Appended(4, 3..4)
        ]
    );

    // An uncommitted suffix is cut (a new leader overrides it): the state hears where.
    group.truncate_after(Some(log_id(1, 2))).unwrap();
    assert_eq!(rec.take(), vec![Event::Truncated(Some(2))]);
    group
        .append(vec![normal(2, 3, "d")], IOFlushed::noop())
        .unwrap();
    assert_eq!(rec.take(), vec![Event::Appended(3, 2..3)]);

    // Commits, in log order.
    apply(&mut sm, group.entries(1, 4).unwrap()).await;
    assert_eq!(
        rec.take(),
        vec![Event::Committed("a".into()), Event::Committed("d".into())]
    );

    // A snapshot carries the committed state; one more entry is appended, not committed.
    let mut builder = sm.get_snapshot_builder().await;
    builder.build_snapshot().await.unwrap();
    group
        .append(vec![normal(2, 4, "e")], IOFlushed::noop())
        .unwrap();
    rec.take();
    group.log.close().unwrap();
    drop((group, sm));

    // Reopen: restore from the snapshot, then replay only the entries above it.
    let rec = Recorder::default();
    let (_group, _sm) = open(dir.path(), &rec);
    assert_eq!(
        rec.take(),
        vec![Event::Restored("a,d".into()), Event::Appended(4, 3..4)]
    );
}
