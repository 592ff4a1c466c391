//! Property tests of the batch format: round trips, corruption detection, and decoders fed garbage.

use super::*;
use crate::Compression;
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Rec {
    ts: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

fn rec() -> impl Strategy<Value = Rec> {
    (
        any::<i64>(),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        proptest::collection::vec(
            (
                proptest::collection::vec(any::<u8>(), 0..10),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..10)),
            ),
            0..3,
        ),
    )
        .prop_map(|(ts, key, value, headers)| Rec {
            ts,
            key,
            value,
            headers,
        })
}

fn codec() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Lz4),
        Just(Compression::Zstd)
    ]
}

fn headers_of(r: &Rec) -> Vec<Header> {
    r.headers
        .iter()
        .map(|(k, v)| Header {
            key: Bytes::copy_from_slice(k),
            value: v.as_deref().map(Bytes::copy_from_slice),
        })
        .collect()
}

fn build(recs: &[Rec], codec: Compression) -> Bytes {
    let mut b = BatchBuilder::new(codec).producer(7, 3, 11);
    for r in recs {
        b.append(r.ts, r.key.as_deref(), r.value.as_deref(), &headers_of(r));
    }
    b.seal().unwrap()
}

/// Wraps arbitrary bytes as the records section of a batch with correct CRCs, so the record decoder
/// itself (not the CRC check) meets garbage.
fn wrap_garbage(body: &[u8], count: u32, codec: Compression) -> Bytes {
    let mut buf = vec![0u8; HEADER_LEN];
    buf.extend_from_slice(body);
    buf[OFF_VERSION] = VERSION;
    buf[OFF_ATTRIBUTES] = attributes(codec, false, false);
    let len = buf.len() as u32;
    buf[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&len.to_le_bytes());
    buf[OFF_RECORD_COUNT..OFF_RECORD_COUNT + 4].copy_from_slice(&count.to_le_bytes());
    let crc = body_crc(&buf);
    buf[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    patch_position(&mut buf, 0, 0, 0).unwrap();
    Bytes::from(buf)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn any_batch_round_trips(recs in proptest::collection::vec(rec(), 0..20), codec in codec(),
                             base in 0u64..u64::MAX / 2, term in any::<u64>(), index in any::<u64>()) {
        let sealed = build(&recs, codec);
        let mut stored = sealed.to_vec();
        patch_position(&mut stored, base, term, index).unwrap();
        let stored = Bytes::from(stored);
        let (batch, rest) = RecordBatch::decode(&stored).unwrap();
        prop_assert!(rest.is_empty());
        let h = batch.header();
        prop_assert_eq!(h.base_offset, base);
        prop_assert_eq!(h.raft_term, term);
        prop_assert_eq!(h.raft_index, index);
        prop_assert_eq!(h.record_count as usize, recs.len());
        prop_assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (7, 3, 11));
        prop_assert_eq!(h.compression().unwrap(), codec);
        if let Some(max) = recs.iter().map(|r| r.ts).max() {
            prop_assert_eq!(h.max_timestamp_ms, max);
            prop_assert_eq!(h.first_timestamp_ms, recs[0].ts);
        }
        let decoded: Vec<Record> = batch.records().unwrap().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(decoded.len(), recs.len());
        for (i, (d, r)) in decoded.iter().zip(&recs).enumerate() {
            prop_assert_eq!(d.offset, base + i as u64);
            prop_assert_eq!(d.timestamp_ms, r.ts);
            prop_assert_eq!(d.key.as_deref(), r.key.as_deref());
            prop_assert_eq!(d.value.as_deref(), r.value.as_deref());
            prop_assert_eq!(&d.headers, &headers_of(r));
        }
    }

    #[test]
    fn any_flipped_bit_is_detected(recs in proptest::collection::vec(rec(), 1..8), codec in codec(),
                                   bit in any::<proptest::sample::Index>()) {
        let sealed = build(&recs, codec);
        let mut bytes = sealed.to_vec();
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(check(&bytes).is_err(), "flipped bit {} went unnoticed", bit);
        prop_assert!(RecordBatch::decode(&Bytes::from(bytes)).is_err());
    }

    /// A valid batch cut short at any length is refused by every decoder, never accepted as a
    /// shorter batch. Checked to fail: with `check`'s `buf.len() < len` test removed, every cut past
    /// the header panicked on the out-of-range slice instead of returning an error.
    #[test]
    fn any_truncation_is_refused(recs in proptest::collection::vec(rec(), 1..6), codec in codec()) {
        let sealed = build(&recs, codec);
        for n in 0..sealed.len() {
            let cut = sealed.slice(..n);
            prop_assert!(check(&cut).is_err(), "cut at {} of {} passed check", n, sealed.len());
            prop_assert!(RecordBatch::decode(&cut).is_err());
            prop_assert!(RecordBatch::decode_verified(&cut).is_err());
            let all: Vec<_> = RecordBatch::iter_all(cut).collect();
            prop_assert!(all.iter().all(|b| b.is_err()), "cut at {} yielded a batch", n);
        }
    }

    /// A burst of 2 to 64 consecutive changed bytes anywhere in a batch (every byte of it differs
    /// from the original) is caught by the header checks or the CRCs. CRC-32 catches every burst of
    /// up to 32 bits; a longer one slips through with probability 2^-32 per case. Checked to fail:
    /// with the body CRC comparison in `verify_body` removed, bursts after the header CRC passed.
    #[test]
    fn any_burst_is_detected(recs in proptest::collection::vec(rec(), 1..8), codec in codec(),
                             start in any::<proptest::sample::Index>(), len in 2usize..=64,
                             xor in proptest::collection::vec(1u8..=255, 64)) {
        let sealed = build(&recs, codec);
        let mut bytes = sealed.to_vec();
        // At least two bytes change, even at the very end.
        let start = start.index(bytes.len() - 1);
        let end = (start + len).min(bytes.len());
        for (b, x) in bytes[start..end].iter_mut().zip(&xor) {
            *b ^= x;
        }
        prop_assert!(check(&bytes).is_err(), "burst {}..{} of {} went unnoticed", start, end, bytes.len());
        let bytes = Bytes::from(bytes);
        prop_assert!(RecordBatch::decode(&bytes).is_err());
        prop_assert!(RecordBatch::iter_all(bytes).any(|b| b.is_err()));
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let bytes = Bytes::from(bytes);
        let _ = BatchHeader::decode(&bytes);
        let _ = check(&bytes);
        for batch in RecordBatch::iter_all(bytes.clone()).flatten() {
            if let Ok(records) = batch.records() {
                for _ in records {}
            }
        }
    }

    #[test]
    fn garbage_records_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256),
                                   count in 0u32..64, codec in codec()) {
        let batch = wrap_garbage(&body, count, codec);
        let (batch, _) = RecordBatch::decode(&batch).unwrap();
        if let Ok(records) = batch.records() {
            let n = records.count();
            prop_assert!(n <= count as usize + 1);
        }
    }
}

#[test]
fn empty_builder_seals_to_a_valid_batch() {
    let sealed = BatchBuilder::new(Compression::None).seal().unwrap();
    let (batch, _) = RecordBatch::decode(&sealed).unwrap();
    assert_eq!(batch.header().record_count, 0);
    assert_eq!(batch.records().unwrap().count(), 0);
}

#[test]
fn zero_tail_reads_as_empty() {
    assert_eq!(BatchHeader::decode(&[0u8; 100]), Err(BatchError::Empty));
    assert_eq!(BatchHeader::decode(&[0u8; 10]), Err(BatchError::Empty));
}

#[test]
fn huge_declared_decompressed_size_is_refused_without_allocating() {
    // An lz4 section claiming 4 GiB decompressed.
    let mut body = u32::MAX.to_le_bytes().to_vec();
    body.extend_from_slice(&[0u8; 16]);
    let batch = wrap_garbage(&body, 1, Compression::Lz4);
    let (batch, _) = RecordBatch::decode(&batch).unwrap();
    assert!(matches!(
        batch.records(),
        Err(BatchError::Compression(CompressionError::TooLarge { .. }))
    ));
}

#[test]
fn count_mismatch_is_an_error() {
    let sealed = build(
        &[Rec {
            ts: 1,
            key: None,
            value: Some(b"v".to_vec()),
            headers: vec![],
        }],
        Compression::None,
    );
    let body = &sealed[HEADER_LEN..];
    let batch = wrap_garbage(body, 2, Compression::None);
    let (batch, _) = RecordBatch::decode(&batch).unwrap();
    let results: Vec<_> = batch.records().unwrap().collect();
    assert_eq!(results.len(), 2);
    assert!(matches!(results[1], Err(BatchError::RecordCount { .. })));
}

#[test]
fn append_at_rejects_non_increasing_deltas() {
    let mut b = BatchBuilder::new(Compression::None);
    assert!(b.append_at(5, 0, None, Some(b"a"), &[]));
    assert!(!b.append_at(5, 0, None, Some(b"b"), &[]));
    assert!(b.append_at(9, 0, None, Some(b"c"), &[]));
    let sealed = b.seal().unwrap();
    let (batch, _) = RecordBatch::decode(&sealed).unwrap();
    let offsets: Vec<u64> = batch
        .records()
        .unwrap()
        .map(|r| r.unwrap().offset)
        .collect();
    assert_eq!(offsets, vec![5, 9]);
    assert_eq!(batch.header().last_offset_delta, 9);
}

fn batch_at(base: u64, timestamps: &[i64]) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    for ts in timestamps {
        b.append(*ts, None, Some(b"v"), &[]);
    }
    let bytes = b.seal().unwrap();
    let mut v = bytes.to_vec();
    patch_position(&mut v, base, 1, 1).unwrap();
    Bytes::from(v)
}

fn control_at(base: u64) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None).control();
    b.append(0, None, None, &[]);
    let mut v = b.seal().unwrap().to_vec();
    patch_position(&mut v, base, 1, 1).unwrap();
    Bytes::from(v)
}

#[test]
fn first_timestamp_takes_the_first_record_at_or_after_the_offset() {
    let mut all = control_at(0).to_vec();
    all.extend_from_slice(&batch_at(1, &[100, 200, 300]));
    let all = Bytes::from(all);
    // The fetch returns the whole batch holding offset 2: records before it are skipped.
    assert_eq!(first_timestamp(2, all.clone()).unwrap(), (Some(200), 2));
    assert_eq!(first_timestamp(0, all.clone()).unwrap(), (Some(100), 1));
    // Past everything: no record, and the position after the last batch.
    assert_eq!(first_timestamp(4, all).unwrap(), (None, 4));
    // Only a control batch: step over it.
    assert_eq!(first_timestamp(0, control_at(0)).unwrap(), (None, 1));
    assert!(first_timestamp(0, Bytes::from_static(b"garbage garbage garbage")).is_err());
}
