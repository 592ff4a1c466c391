//! Property tests of the raft codecs, which read bytes from the network and from files: append
//! requests (normal entries carrying generated record batches, blank and membership entries), append
//! responses, vote requests and responses, snapshot chunks and the snapshot-done message, the bare
//! vote, membership, the `raft.meta` file and the `raft.snapshot` file. Each encoded value decodes to
//! the original (record keys and values and whole batches compared byte for byte); every proper
//! prefix of an encoding and every encoding with bytes appended is an error; random bytes never
//! panic; a burst of up to 4 changed bytes in a CRC-covered file is always detected.
//!
//! Checked to fail: with the consecutive-index check of `codec::decode_append` computing
//! `prev.index + 1` unchecked (as it did), `append_with_last_index_is_an_error_not_a_panic` panicked
//! with an overflow; with `r.finish()` removed from `decode_vote_response` the trailing-bytes case of
//! `small_messages_round_trip_and_refuse_truncation` failed; with the CRC check of `decode_snapshot`
//! removed the burst case of `snapshot_file_round_trips` failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest, VoteResponse};
use openraft::vote::RaftLeaderId;
use openraft::{BasicNode, EntryPayload};
use proptest::prelude::*;
use sluice_broker::raft::codec::*;
use sluice_broker::raft::entry::{
    decode_membership, encode_membership, entry_from_batch, join, KEY_MEMBERSHIP,
};
use sluice_broker::raft::meta_file::RaftMeta;
use sluice_broker::raft::state_machine::{decode_snapshot, encode_snapshot, SnapshotState};
use sluice_broker::raft::{
    log_id, Entry, LogId, Membership, Proposal, SnapshotMeta, StoredMembership, TypeConfig, Vote,
};
use sluice_protocol::batch::patch_position;
use sluice_protocol::wire::codec::Reader;
use sluice_protocol::{BatchBuilder, Compression, RecordBatch};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn vote() -> impl Strategy<Value = Vote> {
    (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(term, node, committed)| {
        openraft::impls::Vote {
            leader_id: openraft::impls::leader_id_std::LeaderId::new(term, node),
            committed,
        }
    })
}

fn some_log_id() -> impl Strategy<Value = Option<LogId>> {
    proptest::option::of((any::<u64>(), any::<u64>()).prop_map(|(t, i)| log_id(t, i)))
}

/// A valid membership: 1 or 2 non-empty voter sets, every voter a node, plus some learners.
fn membership() -> impl Strategy<Value = Membership> {
    (
        proptest::collection::vec(proptest::collection::btree_set(0u64..8, 1..4), 1..3),
        proptest::collection::btree_set(0u64..16, 0..4),
        proptest::collection::vec(".{0,24}", 16),
    )
        .prop_map(|(configs, learners, addrs)| {
            let ids: BTreeSet<u64> = configs.iter().flatten().chain(&learners).copied().collect();
            let nodes: BTreeMap<u64, BasicNode> = ids
                .into_iter()
                .map(|id| (id, BasicNode::new(addrs[id as usize].clone())))
                .collect();
            Membership::new(configs, nodes).unwrap()
        })
}

type Rec = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

fn records() -> impl Strategy<Value = Vec<Rec>> {
    proptest::collection::vec(
        (
            any::<i64>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        ),
        0..6,
    )
}

/// What one generated entry holds.
#[derive(Debug, Clone)]
enum Kind {
    Normal(Vec<Rec>, Compression, u64),
    Blank,
    Member(Membership),
}

fn kind() -> impl Strategy<Value = Kind> {
    let codec = prop_oneof![
        Just(Compression::None),
        Just(Compression::Lz4),
        Just(Compression::Zstd)
    ];
    prop_oneof![
        4 => (records(), codec, 0u64..u64::MAX / 2).prop_map(|(r, c, b)| Kind::Normal(r, c, b)),
        1 => Just(Kind::Blank),
        1 => membership().prop_map(Kind::Member),
    ]
}

/// A stored batch of `recs` (offsets patched in, as a leader sends them).
fn batch_of(recs: &[Rec], codec: Compression, base: u64, term: u64, index: u64) -> RecordBatch {
    let mut b = BatchBuilder::new(codec);
    for (ts, k, v) in recs {
        b.append(*ts, k.as_deref(), v.as_deref(), &[]);
    }
    let mut bytes = b.seal().unwrap().to_vec();
    patch_position(&mut bytes, base, term, index).unwrap();
    RecordBatch::decode(&Bytes::from(bytes)).unwrap().0
}

fn entry(kind: &Kind, term: u64, index: u64) -> Entry {
    let payload = match kind {
        Kind::Normal(recs, codec, base) => {
            EntryPayload::Normal(Proposal::stored(batch_of(recs, *codec, *base, term, index)))
        }
        Kind::Blank => EntryPayload::Blank,
        Kind::Member(m) => EntryPayload::Membership(m.clone()),
    };
    Entry {
        log_id: log_id(term, index),
        payload,
    }
}

/// Asserts that `back` is `sent` after a trip over the wire: same log id, same kind, a normal
/// entry's batch byte for byte and its records' keys and values equal to `kind`'s.
fn assert_same_entry(back: &Entry, sent: &Entry, kind: &Kind) {
    assert_eq!(back.log_id, sent.log_id);
    match (&back.payload, &sent.payload, kind) {
        (EntryPayload::Normal(b), EntryPayload::Normal(s), Kind::Normal(recs, ..)) => {
            assert_eq!(b.batch.as_bytes(), s.batch.as_bytes());
            assert!(b.stored, "a received batch keeps its stored offsets");
            let got: Vec<_> = b.batch.records().unwrap().map(|r| r.unwrap()).collect();
            assert_eq!(got.len(), recs.len());
            for (g, (ts, k, v)) in got.iter().zip(recs) {
                assert_eq!(g.timestamp_ms, *ts);
                assert_eq!(g.key.as_deref(), k.as_deref());
                assert_eq!(g.value.as_deref(), v.as_deref());
            }
        }
        (EntryPayload::Blank, EntryPayload::Blank, Kind::Blank) => {}
        (EntryPayload::Membership(b), EntryPayload::Membership(s), Kind::Member(_)) => {
            assert_eq!(b, s)
        }
        other => panic!("entry kind changed: {other:?}"),
    }
}

/// `decode` refuses every proper prefix of `bytes` (at most `limit` of them, spread over the whole
/// length) and `bytes` with anything appended.
fn refuses_cuts_and_tails<T>(
    bytes: &Bytes,
    limit: usize,
    decode: impl Fn(Bytes) -> Result<T, String>,
) {
    let step = bytes.len().div_ceil(limit).max(1);
    let cuts = (0..bytes.len())
        .step_by(step)
        .chain([bytes.len().saturating_sub(1)]);
    for n in cuts.filter(|n| *n < bytes.len()) {
        assert!(
            decode(bytes.slice(..n)).is_err(),
            "a cut at {n} of {} decoded",
            bytes.len()
        );
    }
    for tail in [&[0u8][..], &[1, 2, 3], &[0xff; 9]] {
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(tail);
        assert!(
            decode(Bytes::from(longer)).is_err(),
            "trailing {tail:?} accepted"
        );
    }
}

fn e<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn append_requests_round_trip(v in vote(), commit in some_log_id(),
                                  prev in proptest::option::of((any::<u64>(), 0u64..u64::MAX / 2)),
                                  first in 0u64..u64::MAX / 2,
                                  kinds in proptest::collection::vec((kind(), any::<u64>()), 0..5),
                                  flip in any::<proptest::sample::Index>()) {
        let prev_log_id = prev.map(|(t, i)| log_id(t, i));
        let start = prev.map_or(first, |(_, i)| i + 1);
        let entries: Vec<Entry> = kinds
            .iter()
            .enumerate()
            .map(|(i, (k, term))| entry(k, *term, start + i as u64))
            .collect();
        let req = AppendEntriesRequest::<TypeConfig> { vote: v, prev_log_id, leader_commit: commit, entries };
        let bytes = join(encode_append(&req).unwrap());
        let back = decode_append(bytes.clone()).unwrap();
        prop_assert_eq!(back.vote, req.vote);
        prop_assert_eq!(back.prev_log_id, req.prev_log_id);
        prop_assert_eq!(back.leader_commit, req.leader_commit);
        prop_assert_eq!(back.entries.len(), req.entries.len());
        for ((b, s), (k, _)) in back.entries.iter().zip(&req.entries).zip(&kinds) {
            assert_same_entry(b, s, k);
        }
        refuses_cuts_and_tails(&bytes, 64, |b| e(decode_append(b)));
        // A changed byte anywhere inside any entry's batch is caught by the batch CRCs.
        let header = 17 + 2 * 17 + 4;
        let batches: Vec<usize> = entry_batch_ranges(&bytes[header..]).into_iter().flatten().collect();
        if !batches.is_empty() {
            let at = header + batches[flip.index(batches.len())];
            let mut bad = bytes.to_vec();
            bad[at] ^= 0x5a;
            prop_assert!(decode_append(Bytes::from(bad)).is_err(), "changed byte {} accepted", at);
        }
    }

    #[test]
    fn small_messages_round_trip_and_refuse_truncation(v in vote(), last in some_log_id(),
                                                        flag in any::<bool>(), tag in 0u8..4,
                                                        seq in any::<u64>(), start in any::<u64>(),
                                                        payload in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut req = VoteRequest::<TypeConfig>::new(v, last);
        req.leadership_transfer = flag;
        let bytes = encode_vote(&req);
        prop_assert_eq!(decode_vote(bytes.clone()).unwrap(), req);
        refuses_cuts_and_tails(&bytes, 64, |b| e(decode_vote(b)));

        let resp = VoteResponse::<TypeConfig>::new(v, last, flag);
        let bytes = encode_vote_response(&resp);
        prop_assert_eq!(decode_vote_response(bytes.clone()).unwrap(), resp);
        refuses_cuts_and_tails(&bytes, 64, |b| e(decode_vote_response(b)));

        let resp = match tag {
            0 => AppendEntriesResponse::<TypeConfig>::Success,
            1 => AppendEntriesResponse::PartialSuccess(last),
            2 => AppendEntriesResponse::Conflict,
            _ => AppendEntriesResponse::HigherVote(v),
        };
        let bytes = encode_append_response(&resp);
        prop_assert_eq!(decode_append_response(bytes.clone()).unwrap(), resp);
        refuses_cuts_and_tails(&bytes, 64, |b| e(decode_append_response(b)));

        let chunk = SnapshotChunk { vote: v, seq, start_offset: start, batches: Bytes::from(payload.clone()) };
        let bytes = join(encode_snapshot_chunk(&chunk));
        let back = decode_snapshot_chunk(bytes.clone()).unwrap();
        prop_assert_eq!(&back.batches[..], &payload[..]);
        prop_assert_eq!(back, chunk);
        refuses_cuts_and_tails(&bytes, 64, |b| e(decode_snapshot_chunk(b)));

        let snap = Bytes::from(payload.clone());
        let bytes = join(encode_snapshot_done(&v, &snap));
        let (bv, bs) = decode_snapshot_done(bytes.clone()).unwrap();
        prop_assert_eq!((bv, &bs[..]), (v, &payload[..]));
        refuses_cuts_and_tails(&bytes, 64, |b| e(decode_snapshot_done(b)));

        let bytes = encode_vote_only(&v);
        prop_assert_eq!(decode_vote_only(bytes.clone()).unwrap(), v);
        refuses_cuts_and_tails(&bytes, 64, |b| e(decode_vote_only(b)));
    }

    #[test]
    fn membership_round_trips_in_entries_and_alone(m in membership(), term in any::<u64>(), index in any::<u64>()) {
        let bytes = encode_membership(&m);
        prop_assert_eq!(&decode_membership(&mut Reader::new(bytes.clone())).unwrap(), &m);
        let cut = |b: Bytes| {
            let mut r = Reader::new(b);
            let m = e(decode_membership(&mut r))?;
            e(r.finish()).map(|_| m)
        };
        refuses_cuts_and_tails(&bytes, 256, cut);
        // Through a stored control batch, as followers and a reopened log read it.
        let sent = entry(&Kind::Member(m.clone()), term, index);
        let stored = sluice_broker::raft::entry::batch_for(&sent.payload).unwrap();
        let mut raw = stored.as_bytes().to_vec();
        patch_position(&mut raw, 3, term, index).unwrap();
        let back = entry_from_batch(RecordBatch::decode(&Bytes::from(raw)).unwrap().0).unwrap();
        assert_same_entry(&back, &sent, &Kind::Member(m));
    }

    #[test]
    fn meta_file_round_trips(v in proptest::option::of(vote()), purged in some_log_id(),
                             start in 0usize..48, len in 1usize..=4, xor in any::<[u8; 4]>()) {
        let meta = RaftMeta { vote: v, purged };
        let bytes = meta.encode();
        prop_assert_eq!(RaftMeta::decode(&bytes).unwrap(), meta);
        let b = Bytes::copy_from_slice(&bytes);
        refuses_cuts_and_tails(&b, 48, |b| RaftMeta::decode(&b));
        let mut bad = bytes;
        prop_assert!(burst(&mut bad, start, len, xor));
        prop_assert!(RaftMeta::decode(&bad).is_err(), "burst at {} of {} undetected", start, len);
    }

    #[test]
    fn snapshot_file_round_trips(last in some_log_id(), mid in some_log_id(),
                                 m in prop_oneof![1 => Just(Membership::default()), 4 => membership()],
                                 hw in any::<u64>(), lso in any::<u64>(),
                                 applier in proptest::collection::vec(any::<u8>(), 0..300),
                                 start in any::<proptest::sample::Index>(), len in 1usize..=4,
                                 xor in any::<[u8; 4]>()) {
        let meta = SnapshotMeta { last_log_id: last, last_membership: StoredMembership::new(mid, m) };
        let state = SnapshotState { high_watermark: hw, log_start_offset: lso, applier: Bytes::from(applier) };
        let bytes = encode_snapshot(&meta, &state);
        let (bm, bs) = decode_snapshot(bytes.clone()).unwrap();
        prop_assert_eq!(bm, meta);
        prop_assert_eq!(bs, state);
        // Cut with the CRC left as it was, and cut with a CRC made to match (the layout itself
        // refuses every prefix).
        refuses_cuts_and_tails(&bytes, 128, |b| e(decode_snapshot(b)));
        let body = bytes.slice(..bytes.len() - 4);
        refuses_cuts_and_tails(&body, 128, |b| e(decode_snapshot(with_crc(&b))));
        let mut bad = bytes.to_vec();
        let at = start.index(bad.len());
        prop_assert!(burst(&mut bad, at, len, xor));
        prop_assert!(decode_snapshot(Bytes::from(bad)).is_err(), "burst at {} undetected", at);
    }

    #[test]
    fn garbage_never_panics(junk in proptest::collection::vec(any::<u8>(), 0..400), kind in 0u8..3) {
        // Plain garbage, garbage behind a plausible prefix, garbage under a valid CRC.
        let prefixed: Vec<u8> = match kind {
            0 => junk.clone(),
            1 => [&[0u8; 17][..], &[1], &[0; 16], &[0], &[0; 16], &junk].concat(),
            _ => [&b"SLRS"[..], &junk].concat(),
        };
        for b in [Bytes::from(junk.clone()), Bytes::from(prefixed.clone())] {
            let _ = decode_append(b.clone());
            let _ = decode_append_response(b.clone());
            let _ = decode_vote(b.clone());
            let _ = decode_vote_response(b.clone());
            let _ = decode_snapshot_chunk(b.clone());
            let _ = decode_snapshot_done(b.clone());
            let _ = decode_vote_only(b.clone());
            let _ = decode_membership(&mut Reader::new(b.clone()));
            let _ = RaftMeta::decode(&b);
            let _ = decode_snapshot(b.clone());
            let _ = decode_snapshot(with_crc(&b));
        }
        // A raft control batch whose membership value is garbage: an error or a membership.
        let mut cb = BatchBuilder::new(Compression::None).control();
        cb.append(-1, Some(KEY_MEMBERSHIP), Some(&junk), &[]);
        let _ = entry_from_batch(RecordBatch::decode(&cb.seal().unwrap()).unwrap().0);
    }
}

/// The byte ranges (relative to the first entry) of each entry's batch in an append's entries.
fn entry_batch_ranges(mut entries: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    while entries.len() >= 20 {
        let len = u32::from_le_bytes(entries[16..20].try_into().unwrap()) as usize;
        out.push(at + 20..at + 20 + len);
        at += 20 + len;
        entries = &entries[(20 + len).min(entries.len())..];
    }
    out
}

/// XORs up to `len` bytes from `start` with the non-zero bytes of `xor` (a zero becomes 0x01), so
/// every byte of the burst changes; false if nothing fits.
fn burst(bytes: &mut [u8], start: usize, len: usize, xor: [u8; 4]) -> bool {
    let end = (start + len).min(bytes.len());
    for (b, x) in bytes[start..end].iter_mut().zip(xor) {
        *b ^= x.max(1);
    }
    end > start
}

/// `body` followed by its CRC-32, as the snapshot file stores it.
fn with_crc(body: &[u8]) -> Bytes {
    let mut v = body.to_vec();
    v.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    Bytes::from(v)
}

/// An append whose previous log id is the last index there is cannot be followed by an entry: an
/// error, never an overflow panic (the consecutive-index check once added 1 unchecked).
#[test]
fn append_with_last_index_is_an_error_not_a_panic() {
    let v = openraft::impls::Vote {
        leader_id: openraft::impls::leader_id_std::LeaderId::new(1, 1),
        committed: true,
    };
    for last in [u64::MAX, u64::MAX - 1] {
        let mut entries = vec![entry(&Kind::Blank, 1, last)];
        if last < u64::MAX {
            entries.push(entry(&Kind::Blank, 1, last + 1));
        }
        let req = AppendEntriesRequest::<TypeConfig> {
            vote: v,
            prev_log_id: Some(log_id(1, u64::MAX)),
            leader_commit: None,
            entries,
        };
        let bytes = join(encode_append(&req).unwrap());
        assert!(decode_append(bytes).is_err());
    }
    // Entries alone (no previous id) running past the last index: an error too.
    let req = AppendEntriesRequest::<TypeConfig> {
        vote: v,
        prev_log_id: None,
        leader_commit: None,
        entries: vec![entry(&Kind::Blank, 1, u64::MAX), entry(&Kind::Blank, 1, 0)],
    };
    assert!(decode_append(join(encode_append(&req).unwrap())).is_err());
}
