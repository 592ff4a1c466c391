//! The operator against the brute-force model of the window semantics (`sluice_window::model`),
//! over many random keyed, out-of-order streams with late records, bad values and watermark
//! advances. The model keeps every accepted record of every window in a list and recomputes results
//! from them; it shares nothing with the operator but the record reading (`extract`, tested on its
//! own). Per sink key the **sequence** of sink records must be equal, and so must the late and bad
//! records: a result written twice, lost, or written early or late shows up as a difference.
//!
//! `SLUICE_WINDOW_SEEDS=N` runs N seeds (default 300 in the suite).
//!
//! Seen failing with each of: the allowed lateness left out of acceptance, or of dropping; updates
//! of fired windows not written; session tombstones left out; sliding windows firing once per slice
//! instead of once per window. (Checking acceptance before or after the record's own watermark move
//! cannot differ: each of its windows ends after its time.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_window::model::{self, Out, Record, Step};
use sluice_window::{
    Aggregate, Input, Operator, Output, Spec, TimeSource, ValueSource, WindowKind,
};

fn random_spec(rng: &mut StdRng) -> Spec {
    let window = match rng.gen_range(0..3) {
        0 => WindowKind::Tumbling {
            size_ms: rng.gen_range(1..40),
        },
        1 => {
            let slide = rng.gen_range(1..15);
            WindowKind::Sliding {
                size_ms: slide * rng.gen_range(1..6),
                slide_ms: slide,
            }
        }
        _ => WindowKind::Session {
            gap_ms: rng.gen_range(1..30),
        },
    };
    let mut aggregates: Vec<Aggregate> = Aggregate::ALL
        .iter()
        .cloned()
        .filter(|_| rng.gen_bool(0.6))
        .collect();
    if aggregates.is_empty() {
        aggregates.push(Aggregate::Count);
    }
    Spec {
        window,
        time: TimeSource::Record,
        value: ValueSource::Number,
        aggregates,
        out_of_orderness_ms: rng.gen_range(0..20),
        allowed_lateness_ms: rng.gen_range(0..25),
        idle_timeout_ms: None,
        max_state_bytes: 1 << 30,
    }
}

fn random_stream(rng: &mut StdRng, n: usize) -> Vec<Step> {
    let keys = rng.gen_range(1..6);
    let mut base: i64 = rng.gen_range(-50..50);
    let mut steps = Vec::with_capacity(n);
    for offset in 0..n as u64 {
        base += rng.gen_range(0..4);
        if rng.gen_bool(0.03) {
            steps.push(Step::Advance(base + rng.gen_range(-10..30)));
        }
        // Mostly near the front, some out of order, a few far behind (late).
        let time = match rng.gen_range(0..100) {
            0..=69 => base,
            70..=94 => base - rng.gen_range(0..25),
            _ => base - rng.gen_range(25..120),
        };
        let value = if rng.gen_bool(0.04) {
            b"not a number".to_vec()
        } else {
            // Whole numbers: sums are exact, so any summing order gives the same result.
            rng.gen_range(-1000..1000i64).to_string().into_bytes()
        };
        steps.push(Step::Record(Record {
            offset,
            timestamp_ms: time,
            processing_ms: 0,
            key: Some(format!("k{}", rng.gen_range(0..keys)).into_bytes()),
            value: Some(value),
        }));
    }
    steps
}

/// Everything the operator writes and everything the model writes, in order.
fn run(spec: &Spec, steps: &[Step]) -> (Vec<Out>, Vec<Out>) {
    let mut op = Operator::new(spec.clone());
    let mut model = model::Model::new(spec.clone());
    let (mut got, mut want) = (Vec::new(), Vec::new());
    let mut outs = Vec::new();
    for s in steps {
        outs.clear();
        match s {
            Step::Record(r) => op.process(
                Input {
                    offset: r.offset,
                    timestamp_ms: r.timestamp_ms,
                    processing_ms: r.processing_ms,
                    key: r.key.as_deref(),
                    value: r.value.as_deref(),
                },
                &mut outs,
            ),
            Step::Advance(to) => op.advance(*to, &mut outs),
        }
        .expect("no state limit in these runs");
        for o in outs.drain(..) {
            got.push(match o {
                Output::Sink {
                    key,
                    value,
                    timestamp_ms,
                } => Out::Sink(
                    key.to_vec(),
                    value.map(|v| serde_json::from_slice(&v).expect("results are JSON")),
                    timestamp_ms,
                ),
                Output::Late { offset } => Out::Late(offset),
                Output::Bad { offset, .. } => Out::Bad(offset),
            });
        }
        model.step(s, &mut want);
    }
    (got, want)
}

/// The late and bad records, in order.
fn others(outs: &[Out]) -> Vec<Out> {
    outs.iter()
        .filter(|o| !matches!(o, Out::Sink(..)))
        .cloned()
        .collect()
}

#[test]
fn random_streams_give_the_models_sequence_per_sink_key() {
    let seeds: u64 = std::env::var("SLUICE_WINDOW_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut sink_records = 0;
    for seed in 0..seeds {
        let mut rng = StdRng::seed_from_u64(seed);
        let spec = random_spec(&mut rng);
        let steps = random_stream(&mut rng, 400);
        let (got, want) = run(&spec, &steps);
        let (g, w) = (model::per_key(&got), model::per_key(&want));
        for (k, seq) in &w {
            assert_eq!(
                g.get(k),
                Some(seq),
                "seed {seed}, sink key {}, spec {spec:?}",
                String::from_utf8_lossy(k)
            );
        }
        assert_eq!(g.len(), w.len(), "seed {seed}: sink keys the model has not");
        assert_eq!(
            others(&got),
            others(&want),
            "seed {seed}: late and bad records"
        );
        sink_records += w.values().map(Vec::len).sum::<usize>();
    }
    assert!(
        sink_records as u64 > seeds * 10,
        "the streams produce results"
    );
}
