//! Unit tests of the consumer: decoding and checking fetched batches, the predicted position the
//! prefetch asks for, the assignment keeping positions, and the public futures being `Send`. None
//! needs a broker.

use sluice_protocol::batch::patch_position;
use sluice_protocol::{BatchBuilder, Compression};

use super::fetcher::{decode_partition, next_position};
use super::*;

fn batch(base: u64, values: &[&str], control: bool, compression: Compression) -> Vec<u8> {
    let mut b = BatchBuilder::new(compression);
    if control {
        b = b.control();
    }
    for (i, v) in values.iter().enumerate() {
        b.append(1000 + i as i64, Some(b"k"), Some(v.as_bytes()), &[]);
    }
    let mut bytes = b.seal().expect("seal").to_vec();
    patch_position(&mut bytes, base, 1, 1).expect("patch");
    bytes
}

fn decode(from: u64, bytes: Vec<u8>) -> Result<(u64, Vec<ConsumerRecord>)> {
    let mut out = Vec::new();
    let next = decode_partition(&Arc::from("t"), 0, from, Bytes::from(bytes), &mut out)?;
    Ok((next, out))
}

#[test]
fn skips_records_below_position_and_control_batches() {
    let mut all = batch(10, &["a", "b", "c"], false, Compression::None);
    all.extend(batch(13, &["ctl"], true, Compression::None));
    all.extend(batch(14, &["d", "e"], false, Compression::Lz4));
    let (next, records) = decode(11, all).expect("decode");
    assert_eq!(next, 16);
    let got: Vec<(u64, &[u8])> = records
        .iter()
        .map(|r| (r.offset, r.value.as_deref().unwrap_or_default()))
        .collect();
    assert_eq!(
        got,
        vec![(11, &b"b"[..]), (12, b"c"), (14, b"d"), (15, b"e")]
    );
    assert_eq!(records[0].timestamp_ms, 1001);
    assert_eq!(&*records[0].topic, "t");
}

#[test]
fn predicted_position_matches_decoded_one() {
    let mut all = batch(10, &["a", "b", "c"], false, Compression::None);
    all.extend(batch(13, &["ctl"], true, Compression::None));
    all.extend(batch(14, &["d", "e"], false, Compression::Lz4));
    for from in [0, 10, 12, 14, 15, 16, 20] {
        let (next, _) = decode(from, all.clone()).expect("decode");
        assert_eq!(next_position(from, &all), next, "from {from}");
    }
    assert_eq!(next_position(7, &[]), 7);
    // A cut last batch is not counted (decoding it fails, and the prediction is discarded).
    assert_eq!(next_position(10, &all[..all.len() - 1]), 14);
}

#[test]
fn batches_entirely_below_position_are_skipped() {
    let mut all = batch(0, &["a", "b"], false, Compression::None);
    all.extend(batch(2, &["c"], false, Compression::None));
    let (next, records) = decode(2, all).expect("decode");
    assert_eq!(next, 3);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].offset, 2);
}

#[test]
fn empty_answer_keeps_position() {
    let (next, records) = decode(7, Vec::new()).expect("decode");
    assert_eq!(next, 7);
    assert!(records.is_empty());
}

#[test]
fn flipped_bit_is_corrupt() {
    let mut all = batch(0, &["a", "b"], false, Compression::None);
    let good_len = all.len();
    all.extend(batch(2, &["hello world"], false, Compression::None));
    let last = all.len() - 3;
    all[last] ^= 0x40;
    let err = decode(0, all.clone()).expect_err("corrupt");
    assert!(
        matches!(
            err,
            ClientError::Corrupt {
                offset: 2,
                partition: 0,
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_retriable());
    // A flipped bit in the header (base offset is covered by the header CRC) too.
    let mut header_flip = all[..good_len].to_vec();
    header_flip[9] ^= 1;
    assert!(matches!(
        decode(0, header_flip),
        Err(ClientError::Corrupt { .. })
    ));
}

#[test]
fn truncated_batch_is_corrupt() {
    let all = batch(0, &["a", "b"], false, Compression::None);
    let cut = all[..all.len() - 1].to_vec();
    assert!(matches!(decode(0, cut), Err(ClientError::Corrupt { .. })));
}

fn assert_send<T: Send>(_: &T) {}

#[test]
fn public_futures_are_send() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut c = Consumer::new("127.0.0.1:1", ConsumerConfig::default()).expect("consumer");
    assert_send(&c.poll(Duration::ZERO));
    assert_send(&c.seek("t", 0, SeekTo::Earliest));
    let admin = crate::Admin::new("127.0.0.1:1").expect("admin");
    assert_send(&admin.create_topic("t", 1, 1, &[]));
    assert_send(&admin.list_offsets("t", 0, crate::OffsetSpec::Latest));
    let p = crate::Producer::new("127.0.0.1:1", Default::default()).expect("producer");
    assert_send(&p.send(crate::ProducerRecord::new("t", "v")));
    assert_send(&p.flush());
    assert_send(&p.close());
}

#[test]
fn assign_keeps_positions_of_kept_partitions() {
    let mut c = Consumer::new("127.0.0.1:1", ConsumerConfig::default()).expect("consumer");
    c.assign(&[("a", 0), ("a", 1)]);
    c.positions.set_position(0, 5);
    c.assign(&[
        ("a".to_string(), 0),
        ("b".to_string(), 0),
        ("a".to_string(), 0),
    ]);
    assert_eq!(c.position("a", 0), Some(5));
    assert_eq!(c.position("b", 0), None);
    assert_eq!(c.position("a", 1), None);
    assert_eq!(c.assignment(), vec![("a".into(), 0), ("b".into(), 0)]);
}
