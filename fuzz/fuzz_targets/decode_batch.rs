//! Any bytes as stored record batches: checking and iterating never panics and never allocates past
//! the decompression limit.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_protocol::RecordBatch;

fuzz_target!(|data: &[u8]| {
    for batch in RecordBatch::iter_all(Bytes::copy_from_slice(data)).flatten() {
        if let Ok(records) = batch.records_with_limit(1 << 20) {
            for r in records {
                if r.is_err() {
                    break;
                }
            }
        }
    }
});
