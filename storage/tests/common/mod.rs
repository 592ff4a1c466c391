//! Helpers shared by the storage integration tests: batch construction and whole-log reads.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use sluice_protocol::{BatchBuilder, Compression, RecordBatch};
use sluice_storage::{FlushPolicy, LogConfig, PartitionLog};

/// A small-segment config so tests roll often.
pub fn small_config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 512,
        max_index_bytes: 64 * 1024,
        retention_ms: None,
        segment_ms: None,
        flush,
        ..LogConfig::default()
    }
}

/// A batch of `n` records whose values are `"{tag}-{i}"`, keys `k{i % keys}` when `keys > 0`.
pub fn batch(tag: &str, n: usize, keys: usize, ts: i64) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..n {
        let key = (keys > 0).then(|| format!("k{}", i % keys));
        let value = format!("{tag}-{i}");
        b.append(
            ts,
            key.as_deref().map(str::as_bytes),
            Some(value.as_bytes()),
            &[],
        );
    }
    b.seal().unwrap()
}

/// A one-record batch with the given key, value (None = tombstone) and timestamp.
pub fn record(key: &str, value: Option<&str>, ts: i64) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    b.append(ts, Some(key.as_bytes()), value.map(str::as_bytes), &[]);
    b.seal().unwrap()
}

/// Every record in the log as (offset, key, value), read through the public read API.
pub fn read_all(log: &PartitionLog) -> Vec<(u64, Option<String>, Option<String>)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let r = log.read(offset, 64 * 1024).unwrap();
        if r.bytes.is_empty() {
            break;
        }
        for b in RecordBatch::iter_all(r.bytes) {
            let b = b.unwrap();
            for rec in b.records().unwrap() {
                let rec = rec.unwrap();
                if rec.offset >= offset {
                    let s = |x: Option<Bytes>| x.map(|v| String::from_utf8(v.to_vec()).unwrap());
                    out.push((rec.offset, s(rec.key), s(rec.value)));
                }
            }
        }
        offset = r.next_offset;
    }
    out
}
