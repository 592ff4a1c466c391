//! The operator against a brute-force model of the window semantics, over many random keyed,
//! out-of-order streams with late records, bad values and watermark advances. The model keeps every
//! accepted record of every window in a list and recomputes results from them; it shares nothing
//! with the operator but the record reading (`extract`, tested on its own). Per sink key the
//! **sequence** of sink records must be equal, and so must the late and bad records: a result
//! written twice, lost, or written early or late shows up as a difference.
//!
//! `SLUICE_WINDOW_SEEDS=N` runs N seeds (default 300 in the suite).
//!
//! Seen failing with each of: the allowed lateness left out of acceptance, or of dropping; updates
//! of fired windows not written; session tombstones left out; sliding windows firing once per slice
//! instead of once per window. (Checking acceptance before or after the record's own watermark move
//! cannot differ: each of its windows ends after its time.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_window::acc::sink_key;
use sluice_window::extract;
use sluice_window::{
    Aggregate, Input, Operator, Output, Spec, TimeSource, ValueSource, WindowKind,
};

/// One step of a stream.
#[derive(Debug, Clone)]
enum Step {
    Record {
        offset: u64,
        time: i64,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Advance(i64),
}

#[derive(Debug, Clone)]
struct MWin {
    key: Vec<u8>,
    start: i64,
    end: i64,
    /// (time, offset, value) of every accepted record.
    records: Vec<(i64, u64, f64)>,
}

/// What the model writes, comparable with the operator's outputs.
#[derive(Debug, Clone, PartialEq)]
enum Out {
    /// key -> (value JSON parsed, or None for a tombstone)
    Sink(Vec<u8>, Option<serde_json::Value>, i64),
    Late(u64),
    Bad(u64),
}

struct Model {
    spec: Spec,
    watermark: Option<i64>,
    max_time: Option<i64>,
    windows: Vec<MWin>,
}

fn result(spec: &Spec, w: &MWin) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("key".into(), String::from_utf8_lossy(&w.key).into());
    m.insert("window_start".into(), w.start.into());
    m.insert("window_end".into(), w.end.into());
    let vals: Vec<f64> = w.records.iter().map(|r| r.2).collect();
    let sum: f64 = vals.iter().sum();
    let first = w.records.iter().min_by_key(|r| (r.0, r.1)).map(|r| r.2);
    let last = w.records.iter().max_by_key(|r| (r.0, r.1)).map(|r| r.2);
    for a in &spec.aggregates {
        let v: serde_json::Value = match a {
            Aggregate::Count => (vals.len() as u64).into(),
            Aggregate::Sum => sum.into(),
            Aggregate::Min => vals.iter().cloned().fold(f64::INFINITY, f64::min).into(),
            Aggregate::Max => vals
                .iter()
                .cloned()
                .fold(f64::NEG_INFINITY, f64::max)
                .into(),
            Aggregate::Avg => (sum / vals.len() as f64).into(),
            Aggregate::First => first.into(),
            Aggregate::Last => last.into(),
        };
        m.insert(a.name().into(), v);
    }
    // Through text, as the operator's results are read back: serde_json's default float parsing
    // may land one ulp off, the same way for both sides.
    let text = serde_json::Value::Object(m).to_string();
    serde_json::from_str(&text).expect("JSON")
}

impl Model {
    fn emit(&self, w: &MWin, out: &mut Vec<Out>) {
        out.push(Out::Sink(
            sink_key(&w.key, w.start),
            Some(result(&self.spec, w)),
            w.end - 1,
        ));
    }

    /// Fires the windows (not `touched`) whose end is in (old, new], then drops closed ones.
    fn fire_and_drop(&mut self, old: Option<i64>, touched: &[(Vec<u8>, i64)], out: &mut Vec<Out>) {
        let Some(new) = self.watermark else { return };
        let mut due: Vec<&MWin> = self
            .windows
            .iter()
            .filter(|w| old.is_none_or(|o| w.end > o) && w.end <= new)
            .filter(|w| !touched.contains(&(w.key.clone(), w.start)))
            .collect();
        due.sort_by(|a, b| (a.end, &a.key, a.start).cmp(&(b.end, &b.key, b.start)));
        for w in due {
            self.emit(w, out);
        }
        let l = self.spec.allowed_lateness_ms;
        self.windows.retain(|w| w.end + l > new);
    }

    fn step(&mut self, s: &Step, out: &mut Vec<Out>) {
        let (offset, time, key, value) = match s {
            Step::Advance(to) => {
                let old = self.watermark;
                if old.is_some_and(|w| w >= *to) {
                    return;
                }
                self.watermark = Some(*to);
                self.fire_and_drop(old, &[], out);
                return;
            }
            Step::Record {
                offset,
                time,
                key,
                value,
            } => (*offset, *time, key, value),
        };
        let read = extract::read(
            &self.spec.time,
            &self.spec.value,
            self.spec.needs_value(),
            time,
            0,
            Some(value),
        );
        let Ok(read) = read else {
            out.push(Out::Bad(offset));
            return;
        };
        let t = read.time_ms;
        let v = read.value.unwrap_or(0.0);
        let l = self.spec.allowed_lateness_ms;
        let before = self.watermark;
        let open = |end: i64| before.is_none_or(|w| end + l > w);
        let mut touched: Vec<(Vec<u8>, i64)> = Vec::new();
        let candidates: Vec<(i64, i64)> = match self.spec.window {
            WindowKind::Tumbling { size_ms } => {
                let s = t.div_euclid(size_ms) * size_ms;
                vec![(s, s + size_ms)]
            }
            WindowKind::Sliding { size_ms, slide_ms } => {
                let mut v = Vec::new();
                let mut s = t.div_euclid(slide_ms) * slide_ms;
                while s + size_ms > t {
                    v.push((s, s + size_ms));
                    s -= slide_ms;
                }
                v.reverse();
                v
            }
            WindowKind::Session { gap_ms } => vec![(t, t + gap_ms)],
        };
        let accepted: Vec<(i64, i64)> = candidates.into_iter().filter(|(_, e)| open(*e)).collect();
        if accepted.is_empty() {
            out.push(Out::Late(offset));
        }
        match self.spec.window {
            WindowKind::Session { .. } => {
                if let Some(&(s, e)) = accepted.first() {
                    let mut merged = MWin {
                        key: key.clone(),
                        start: s,
                        end: e,
                        records: vec![(t, offset, v)],
                    };
                    let (absorbed, rest): (Vec<MWin>, Vec<MWin>) =
                        std::mem::take(&mut self.windows)
                            .into_iter()
                            .partition(|w| &w.key == key && w.start <= e && s <= w.end);
                    self.windows = rest;
                    let mut absorbed = absorbed;
                    absorbed.sort_by_key(|w| w.start);
                    for w in &absorbed {
                        merged.start = merged.start.min(w.start);
                        merged.end = merged.end.max(w.end);
                        merged.records.extend(w.records.iter().cloned());
                    }
                    for w in &absorbed {
                        let fired = before.is_some_and(|wm| w.end <= wm);
                        if fired && w.start != merged.start {
                            out.push(Out::Sink(sink_key(key, w.start), None, w.end - 1));
                        }
                    }
                    touched.push((key.clone(), merged.start));
                    self.windows.push(merged);
                }
            }
            _ => {
                for (s, e) in accepted {
                    match self
                        .windows
                        .iter_mut()
                        .find(|w| &w.key == key && w.start == s)
                    {
                        Some(w) => w.records.push((t, offset, v)),
                        None => self.windows.push(MWin {
                            key: key.clone(),
                            start: s,
                            end: e,
                            records: vec![(t, offset, v)],
                        }),
                    }
                    touched.push((key.clone(), s));
                }
            }
        }
        self.max_time = Some(self.max_time.map_or(t, |m| m.max(t)));
        let w = t - self.spec.out_of_orderness_ms;
        self.watermark = Some(before.map_or(w, |b| b.max(w)));
        let now = self.watermark.unwrap_or(i64::MIN);
        for (k, s) in &touched {
            if let Some(win) = self.windows.iter().find(|w| &w.key == k && w.start == *s) {
                if win.end <= now {
                    self.emit(win, out);
                }
            }
        }
        self.fire_and_drop(before, &touched, out);
    }
}

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
        steps.push(Step::Record {
            offset,
            time,
            key: format!("k{}", rng.gen_range(0..keys)).into_bytes(),
            value,
        });
    }
    steps
}

/// Per sink key, the operator's sequence and the model's; and the late/bad offsets of each.
#[allow(clippy::type_complexity)]
fn run(spec: &Spec, steps: &[Step]) -> (Vec<Out>, Vec<Out>) {
    let mut op = Operator::new(spec.clone());
    let mut model = Model {
        spec: spec.clone(),
        watermark: None,
        max_time: None,
        windows: Vec::new(),
    };
    let (mut got, mut want) = (Vec::new(), Vec::new());
    let mut outs = Vec::new();
    for s in steps {
        outs.clear();
        match s {
            Step::Record {
                offset,
                time,
                key,
                value,
            } => op.process(
                Input {
                    offset: *offset,
                    timestamp_ms: *time,
                    processing_ms: 0,
                    key: Some(key),
                    value: Some(value),
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

fn per_key(outs: &[Out]) -> BTreeMap<Vec<u8>, Vec<(Option<serde_json::Value>, i64)>> {
    let mut m: BTreeMap<Vec<u8>, Vec<_>> = BTreeMap::new();
    for o in outs {
        if let Out::Sink(k, v, ts) = o {
            m.entry(k.clone()).or_default().push((v.clone(), *ts));
        }
    }
    m
}

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
        let (g, w) = (per_key(&got), per_key(&want));
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
