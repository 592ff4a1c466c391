//! Any bytes into every raft decoder the broker runs on network or file input: the append, vote,
//! pre-vote and snapshot messages and their answers, membership, a stored entry batch, the
//! `raft.meta` file and the `raft.snapshot` file (as read, and under a matching CRC so the layout
//! decoder itself meets the bytes); and append requests whose entries are valid batches built from
//! the input ([`append_with_valid_batches`]). Decoding never panics; what decodes re-encodes to
//! bytes that decode to the same value.
//!
//! Checked to fail: against `decode_append` as it was before its consecutive-index check used
//! `checked_add`, this target found the overflow panic within two minutes
//! (`broker/tests/raft_codec_props.rs` keeps such an input as a unit test).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use openraft::raft::AppendEntriesRequest;
use sluice_broker::raft::codec::*;
use sluice_broker::raft::entry::{
    decode_membership, encode_membership, entry_from_batch, join, KEY_BLANK, KEY_MEMBERSHIP,
};
use sluice_broker::raft::meta_file::RaftMeta;
use sluice_broker::raft::state_machine::{decode_snapshot, encode_snapshot};
use sluice_broker::raft::TypeConfig;
use sluice_protocol::wire::codec::{Reader, Writer};
use sluice_protocol::{BatchBuilder, Compression, RecordBatch};

/// An append request whose entries are valid batches built from the input (normal, blank,
/// membership with fuzzed bytes, a foreign control batch), so the checks after the batch CRCs
/// (entry kinds, membership, consecutive indexes) meet fuzzed values: random bytes almost never
/// carry a batch with a valid CRC.
fn append_with_valid_batches(data: &[u8]) -> Option<Bytes> {
    let (head, mut rest) = data.split_at_checked(51)?; // vote, previous log id, leader commit
    let mut entries = Writer::new();
    let mut n = 0;
    while let Some((fixed, tail)) = rest.split_at_checked(18) {
        let len = usize::from(fixed[17]).min(tail.len());
        let (value, tail) = tail.split_at(len);
        let key: Option<&[u8]> = match fixed[16] % 4 {
            0 => None,
            1 => Some(KEY_BLANK),
            2 => Some(KEY_MEMBERSHIP),
            _ => Some(b"other"),
        };
        let mut b = BatchBuilder::new(Compression::None);
        if key.is_some() {
            b = b.control();
        }
        b.append(-1, key, Some(value), &[]);
        let batch = b.seal().ok()?;
        entries.u64(u64::from_le_bytes(fixed[..8].try_into().ok()?));
        entries.u64(u64::from_le_bytes(fixed[8..16].try_into().ok()?));
        entries.bytes(&batch);
        n += 1;
        rest = tail;
    }
    let mut w = Writer::new();
    w.count(n);
    let mut out = head.to_vec();
    out.extend_from_slice(&join(w.finish()));
    out.extend_from_slice(&join(entries.finish()));
    Some(Bytes::from(out))
}

fuzz_target!(|data: &[u8]| {
    if let Some(body) = append_with_valid_batches(data) {
        let _ = decode_append(body);
    }
    let b = Bytes::copy_from_slice(data);
    if let Ok(req) = decode_append(b.clone()) {
        // Blank and membership entries are rebuilt as fresh control batches: compare log ids.
        if let Ok(chunks) = encode_append(&req) {
            let again = decode_append(join(chunks)).expect("a decoded append re-encodes");
            let ids = |r: &AppendEntriesRequest<TypeConfig>| -> Vec<_> {
                r.entries.iter().map(|e| e.log_id).collect()
            };
            assert_eq!(ids(&again), ids(&req));
            assert_eq!((again.vote, again.prev_log_id), (req.vote, req.prev_log_id));
        }
    }
    if let Ok(r) = decode_append_response(b.clone()) {
        assert_eq!(
            decode_append_response(encode_append_response(&r)).ok(),
            Some(r)
        );
    }
    if let Ok(r) = decode_vote(b.clone()) {
        assert_eq!(decode_vote(encode_vote(&r)).ok(), Some(r));
    }
    if let Ok(r) = decode_vote_response(b.clone()) {
        assert_eq!(decode_vote_response(encode_vote_response(&r)).ok(), Some(r));
    }
    if let Ok(c) = decode_snapshot_chunk(b.clone()) {
        assert_eq!(
            decode_snapshot_chunk(join(encode_snapshot_chunk(&c))).ok(),
            Some(c)
        );
    }
    if let Ok((v, s)) = decode_snapshot_done(b.clone()) {
        assert_eq!(
            decode_snapshot_done(join(encode_snapshot_done(&v, &s))).ok(),
            Some((v, s))
        );
    }
    if let Ok(v) = decode_vote_only(b.clone()) {
        assert_eq!(decode_vote_only(encode_vote_only(&v)).ok(), Some(v));
    }
    if let Ok(m) = decode_membership(&mut Reader::new(b.clone())) {
        assert_eq!(
            decode_membership(&mut Reader::new(encode_membership(&m))).ok(),
            Some(m)
        );
    }
    if let Ok((batch, _)) = RecordBatch::decode(&b) {
        let _ = entry_from_batch(batch);
    }
    if let Ok(m) = RaftMeta::decode(data) {
        assert_eq!(RaftMeta::decode(&m.encode()).ok(), Some(m));
    }
    let _ = decode_snapshot(b.clone());
    // The same bytes under a CRC that matches, so the snapshot layout decoder reads them.
    let mut file = data.to_vec();
    file.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    if let Ok((meta, state)) = decode_snapshot(Bytes::from(file)) {
        let again = decode_snapshot(encode_snapshot(&meta, &state)).expect("re-encoded snapshot");
        assert_eq!(again, (meta, state));
    }
});
