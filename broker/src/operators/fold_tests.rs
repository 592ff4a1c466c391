//! The fold's determinism, which exactly-once output rests on: the same log folded in one pass,
//! or in random pieces, or silently up to a mark and then from a checkpoint taken there, writes
//! byte-identical target batches with the same sequence numbers. Random logs of keyed JSON
//! records (out of order, late, bad) with marks as clock ticks in between, for each window kind
//! with an idle timeout.
//!
//! Seen failing with the checkpoint leaving out the fold's clock and idle bookkeeping (a restored
//! fold advanced idle partitions at other marks than the one-pass fold), and with target batches
//! sealed per read instead of per log entry (pieces gave other batch boundaries).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use sluice_protocol::batch::patch_position;
use sluice_protocol::{BatchBuilder, Compression};
use sluice_window::spec::{parse_time, parse_value, parse_window};
use sluice_window::{Aggregate, Operator, Spec};

use super::fold::{Fold, Outbox, Targets};
use crate::replica::marks::Mark;

const PID: i64 = 4242;

fn spec(window: &str) -> Spec {
    Spec {
        window: parse_window(window).unwrap(),
        time: parse_time("field:ts").unwrap(),
        value: parse_value("field:v").unwrap(),
        aggregates: vec![Aggregate::Count, Aggregate::Sum, Aggregate::Last],
        out_of_orderness_ms: 50,
        allowed_lateness_ms: 100,
        idle_timeout_ms: Some(300),
        max_state_bytes: 64 << 20,
    }
}

fn targets() -> Targets {
    Targets {
        source_partition: 1,
        sink: ("sink".into(), 3),
        late: Some(("late".into(), 2)),
        dead_letter: Some(("dlq".into(), 2)),
    }
}

/// One log entry: a batch of (key, ts, value) records, or a mark at a clock time.
#[derive(Debug, Clone)]
enum Entry {
    Records(Vec<(u8, i64, Option<i64>)>),
    Tick(i64),
}

/// The log bytes, entries at consecutive offsets from 0, and each entry's end offset.
fn log(entries: &[Entry]) -> (Bytes, Vec<u64>) {
    let mut out = BytesMut::new();
    let mut ends = Vec::new();
    let mut offset = 0u64;
    for (i, e) in entries.iter().enumerate() {
        let (bytes, n) = match e {
            Entry::Records(rs) => {
                let mut b = BatchBuilder::new(Compression::None);
                for (k, ts, v) in rs {
                    let value = match v {
                        Some(v) => format!("{{\"ts\":{ts},\"v\":{v}}}"),
                        None => format!("{{\"ts\":{ts},\"v\":\"x\"}}"),
                    };
                    b.append(
                        *ts,
                        Some(format!("k{k}").as_bytes()),
                        Some(value.as_bytes()),
                        &[],
                    );
                }
                (b.seal().unwrap(), rs.len() as u64)
            }
            Entry::Tick(now) => {
                let m = Mark {
                    producer_id: PID,
                    through: offset,
                    now_ms: *now,
                    seqs: Vec::new(),
                    checkpoint: None,
                };
                (m.to_batch(), 1)
            }
        };
        let mut bytes = BytesMut::from(&bytes[..]);
        patch_position(&mut bytes, offset, 1, i as u64 + 1).unwrap();
        out.extend_from_slice(&bytes);
        offset += n;
        ends.push(offset);
    }
    (out.freeze(), ends)
}

fn entries() -> impl Strategy<Value = Vec<Entry>> {
    let record = (0u8..6, -400i64..400, prop::option::weighted(0.9, 0i64..100));
    let entry = prop_oneof![
        2 => prop::collection::vec(record, 1..6).prop_map(Entry::Records),
        // Runs of ticks far apart: idle advances.
        1 => (0i64..1000).prop_map(Entry::Tick),
    ];
    prop::collection::vec(entry, 1..60).prop_map(|mut es| {
        // Time moves forward: shift records and ticks along the entry index.
        for (i, e) in es.iter_mut().enumerate() {
            let base = 1_000 + 100 * i as i64;
            match e {
                Entry::Records(rs) => rs.iter_mut().for_each(|r| r.1 += base),
                Entry::Tick(t) => *t += base,
            }
        }
        es
    })
}

/// Folds `bytes` in one pass from a fresh state.
fn one_pass(spec: &Spec, bytes: &Bytes, end: u64) -> (Outbox, Fold) {
    let mut fold = Fold::new(Operator::new(spec.clone()), PID, 0);
    let mut out = Outbox::default();
    fold.read(bytes.clone(), end, &targets(), Some(&mut out))
        .unwrap();
    (out, fold)
}

fn window_kind() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("tumbling:200ms"),
        Just("sliding:200ms:50ms"),
        Just("session:120ms")
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Pieces: reads that stop at random offsets give the same batches as one pass.
    #[test]
    fn pieces_give_the_same_batches(es in entries(), kind in window_kind(), cuts in prop::collection::vec(0u64..400, 0..6)) {
        let spec = spec(kind);
        let (bytes, ends) = log(&es);
        let end = *ends.last().unwrap();
        let (want, _) = one_pass(&spec, &bytes, end);
        let mut fold = Fold::new(Operator::new(spec.clone()), PID, 0);
        let mut got = Outbox::default();
        let mut cuts: Vec<u64> = cuts.into_iter().map(|c| c % (end + 1)).collect();
        cuts.sort_unstable();
        cuts.push(end);
        for until in cuts {
            fold.read(bytes.clone(), until, &targets(), Some(&mut got)).unwrap();
        }
        prop_assert_eq!(got.batches, want.batches);
    }

    /// A follower's silent fold to a mark, a checkpoint there, and a new leader restored from it:
    /// what it writes after the mark equals what the one-pass fold wrote after it.
    #[test]
    fn a_checkpoint_resumes_with_the_same_batches(es in entries(), kind in window_kind(), at in 0usize..60) {
        let spec = spec(kind);
        let (bytes, ends) = log(&es);
        let end = *ends.last().unwrap();
        let through = ends[at % ends.len()];
        // The one pass, split at the mark so its batches after it can be compared.
        let mut whole = Fold::new(Operator::new(spec.clone()), PID, 0);
        let mut before = Outbox::default();
        whole.read(bytes.clone(), through, &targets(), Some(&mut before)).unwrap();
        let mark = Mark {
            producer_id: PID,
            through,
            now_ms: 0,
            seqs: whole.mark_seqs(),
            checkpoint: Some(whole.checkpoint()),
        };
        let mut after = Outbox::default();
        whole.read(bytes.clone(), end, &targets(), Some(&mut after)).unwrap();

        let mut follower = Fold::new(Operator::new(spec.clone()), PID, 0);
        follower.read(bytes.clone(), through, &targets(), None).unwrap();
        follower.adopt_seqs(&mark);
        let mut restored = Fold::restore(spec.clone(), PID, &mark).unwrap();
        for f in [&mut follower, &mut restored] {
            let mut got = Outbox::default();
            f.read(bytes.clone(), end, &targets(), Some(&mut got)).unwrap();
            prop_assert_eq!(&got.batches, &after.batches);
        }
    }
}

/// An output too large for one batch is an error of the fold (the driver fails that partition),
/// never a panic: a 40 MiB key gives a result whose key and JSON value each hold it, past the
/// 64 MiB batch limit.
#[test]
fn an_output_too_large_for_a_batch_is_an_error() {
    let spec = spec("tumbling:200ms");
    let key = "k".repeat(40 << 20);
    let mut b = BatchBuilder::new(Compression::None);
    b.append(
        1000,
        Some(key.as_bytes()),
        Some(br#"{"ts":1000,"v":1}"#),
        &[],
    );
    // Moves the watermark past the first window's end: it fires.
    b.append(5000, Some(b"other"), Some(br#"{"ts":5000,"v":1}"#), &[]);
    let mut bytes = BytesMut::from(&b.seal().unwrap()[..]);
    patch_position(&mut bytes, 0, 1, 1).unwrap();
    let mut fold = Fold::new(Operator::new(spec), PID, 0);
    let mut out = Outbox::default();
    let err = fold
        .read(bytes.freeze(), 2, &targets(), Some(&mut out))
        .unwrap_err();
    assert!(
        matches!(err, super::fold::FoldError::Output { offset: 1, .. }),
        "{err}"
    );
}
