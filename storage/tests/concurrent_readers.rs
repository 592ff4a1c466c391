//! Many readers tail a log while one writer appends and rolls segments: every reader sees every record,
//! in order, with the bytes the writer wrote, and never a partial batch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::thread;

use common::*;
use sluice_protocol::RecordBatch;
use sluice_storage::{FlushPolicy, PartitionLog};

const BATCHES: u64 = 3_000;
const PER_BATCH: u64 = 3;

#[test]
fn readers_tailing_a_growing_log_see_everything_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small_config(FlushPolicy::Never)).unwrap();
    let log = Arc::new(log);
    let total = BATCHES * PER_BATCH;

    let readers: Vec<_> = (0..3)
        .map(|r| {
            let log = log.clone();
            thread::spawn(move || {
                let mut offset = 0u64;
                let mut seen = 0u64;
                // Different read sizes so readers cut batches differently.
                let max_bytes = [1usize, 700, 64 * 1024][r];
                while offset < total {
                    let res = log.read(offset, max_bytes).unwrap();
                    // A read never runs ahead of the log end it reports (the segment publishes a
                    // batch a moment before the log end moves past it).
                    assert!(res.next_offset <= res.log_end_offset, "{res:?}");
                    if res.bytes.is_empty() {
                        thread::yield_now();
                        continue;
                    }
                    for b in RecordBatch::iter_all(res.bytes) {
                        let b = b.expect("a reader saw a torn or corrupt batch");
                        for rec in b.records().unwrap() {
                            let rec = rec.unwrap();
                            assert_eq!(rec.offset, seen, "offsets must be dense and in order");
                            let want = format!("b{}-{}", seen / PER_BATCH, seen % PER_BATCH);
                            assert_eq!(rec.value.as_deref(), Some(want.as_bytes()));
                            seen += 1;
                        }
                    }
                    offset = res.next_offset;
                }
                seen
            })
        })
        .collect();

    for i in 0..BATCHES {
        log.append(&batch(&format!("b{i}"), PER_BATCH as usize, 0, i as i64))
            .unwrap();
    }
    for r in readers {
        assert_eq!(r.join().unwrap(), total);
    }
    assert!(
        log.segment_bases().len() > 10,
        "the writer should have rolled while readers read"
    );
}
