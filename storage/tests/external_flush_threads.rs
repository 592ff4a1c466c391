//! `FlushPolicy::External` runs no thread per log: a broker hosts hundreds of partition replicas and
//! must not pay an OS thread for each. In a test binary of its own (one test), so no other test's
//! threads come and go while `/proc/self/task` is counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use sluice_storage::{FlushPolicy, PartitionLog};

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Opening (and appending to) 64 `External` logs adds no thread; 4 `Interval` logs add 4, which
/// shows the count sees a per-log thread. Broken once by spawning the flusher for `External` too:
/// the count rose by 64 and the test failed.
#[test]
fn external_logs_spawn_no_thread() {
    let dir = tempfile::tempdir().unwrap();
    let before = threads();
    let logs: Vec<PartitionLog> = (0..64)
        .map(|i| {
            let (log, _) = PartitionLog::open(
                dir.path().join(format!("ext-{i}")),
                small_config(FlushPolicy::External),
            )
            .unwrap();
            log.append(&batch("x", 2, 0, 1)).unwrap();
            log
        })
        .collect();
    assert_eq!(threads(), before, "External logs must not spawn threads");

    let interval: Vec<PartitionLog> = (0..4)
        .map(|i| {
            PartitionLog::open(
                dir.path().join(format!("int-{i}")),
                small_config(FlushPolicy::interval()),
            )
            .unwrap()
            .0
        })
        .collect();
    assert_eq!(threads(), before + 4, "the count must see per-log threads");
    drop(interval);
    drop(logs);
}
