//! The reference model of the window semantics (docs/operators.md), brute force: **for tests
//! only, never used by the broker**.
//!
//! It keeps every accepted record of every open window in a list and recomputes a window's result
//! from that list whenever the result is written. It shares nothing with [`crate::operator`] (no
//! slices, accumulators, timers, queues, sink-key or result encoding of its own crate): the one
//! piece it takes from the crate is [`crate::extract::read`], so that a record's event time and
//! value are read exactly as the operator reads them (the reader is tested on its own). It is slow
//! (every step scans every open window) and meant to be: it is the rules written down as plainly
//! as they are stated.
//!
//! Use it by feeding one source partition's records in log order ([`Model::step`], or [`run`] for
//! a whole stream) and comparing what comes out per sink key ([`per_key`]), and the late and bad
//! source offsets ([`late`], [`bad`]), with what the operator wrote. Equal *sequences* per sink
//! key, not only equal final values: a result written twice, lost, or written early or late shows
//! up as a difference.

use std::collections::BTreeMap;

use crate::extract;
use crate::spec::{Aggregate, Spec, WindowKind};

/// A source record as the model reads it: its offset in the source partition, its timestamp, the
/// processing time the log assigns it (only read with `--time processing`), key and value. A
/// record without a key is the empty key, as for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub processing_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// One step of a source partition's stream, in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Record(Record),
    /// A watermark advance (an idle partition's, as it reached the log).
    Advance(i64),
}

/// What the model writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// A sink record: its key, its value as parsed JSON (`None`: a tombstone) and its timestamp.
    Sink(Vec<u8>, Option<serde_json::Value>, i64),
    /// The source record at this offset was too late for every window it falls into.
    Late(u64),
    /// The source record at this offset could not be read.
    Bad(u64),
}

/// One open window of one key, with every record it accepted.
#[derive(Debug, Clone)]
struct MWin {
    key: Vec<u8>,
    start: i64,
    end: i64,
    /// (event time, offset, value) of every accepted record.
    records: Vec<(i64, u64, f64)>,
}

/// The model's state for one source partition.
#[derive(Debug, Clone)]
pub struct Model {
    spec: Spec,
    watermark: Option<i64>,
    windows: Vec<MWin>,
}

/// The sink key: the source key's bytes, `@`, the window start in decimal ms.
pub fn sink_key(key: &[u8], start: i64) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(b'@');
    k.extend_from_slice(start.to_string().as_bytes());
    k
}

/// A window's result, recomputed from all its records, as parsed JSON.
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
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("the model's result is not JSON: {e}"))
}

impl Model {
    /// A model of one source partition under `spec` (which should pass [`Spec::check`]), before
    /// its first record: watermark −∞, no window.
    pub fn new(spec: Spec) -> Model {
        Model {
            spec,
            watermark: None,
            windows: Vec::new(),
        }
    }

    /// The watermark now (`None`: −∞).
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

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
            .filter(|w| !touched.iter().any(|(k, s)| *k == w.key && *s == w.start))
            .collect();
        // Across keys the order is not compared (the operator's follows its fire queue); per key,
        // ascending end.
        due.sort_by(|a, b| (a.end, &a.key, a.start).cmp(&(b.end, &b.key, b.start)));
        for w in due {
            self.emit(w, out);
        }
        let l = self.spec.allowed_lateness_ms;
        self.windows.retain(|w| w.end + l > new);
    }

    /// Reads one step and appends what it causes to `out`.
    pub fn step(&mut self, s: &Step, out: &mut Vec<Out>) {
        let rec = match s {
            Step::Advance(to) => {
                let old = self.watermark;
                if old.is_some_and(|w| w >= *to) {
                    return;
                }
                self.watermark = Some(*to);
                self.fire_and_drop(old, &[], out);
                return;
            }
            Step::Record(r) => r,
        };
        let offset = rec.offset;
        let key: Vec<u8> = rec.key.clone().unwrap_or_default();
        let read = extract::read(
            &self.spec.time,
            &self.spec.value,
            self.spec.needs_value(),
            rec.timestamp_ms,
            rec.processing_ms,
            rec.value.as_deref(),
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
        // Every window the record falls into (sessions: its own, before merging).
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
                    let (mut absorbed, rest): (Vec<MWin>, Vec<MWin>) =
                        std::mem::take(&mut self.windows)
                            .into_iter()
                            .partition(|w| w.key == key && w.start <= e && s <= w.end);
                    self.windows = rest;
                    absorbed.sort_by_key(|w| w.start);
                    for w in &absorbed {
                        merged.start = merged.start.min(w.start);
                        merged.end = merged.end.max(w.end);
                        merged.records.extend(w.records.iter().cloned());
                    }
                    for w in &absorbed {
                        let fired = before.is_some_and(|wm| w.end <= wm);
                        if fired && w.start != merged.start {
                            out.push(Out::Sink(sink_key(&key, w.start), None, w.end - 1));
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
                        .find(|w| w.key == key && w.start == s)
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

/// Everything a whole stream makes, in order.
pub fn run(spec: &Spec, steps: &[Step]) -> Vec<Out> {
    let mut model = Model::new(spec.clone());
    let mut out = Vec::new();
    for s in steps {
        model.step(s, &mut out);
    }
    out
}

/// The sink records per sink key, each key's in the order written: (value, or `None` for a
/// tombstone; timestamp).
#[allow(clippy::type_complexity)]
pub fn per_key(outs: &[Out]) -> BTreeMap<Vec<u8>, Vec<(Option<serde_json::Value>, i64)>> {
    let mut m: BTreeMap<Vec<u8>, Vec<_>> = BTreeMap::new();
    for o in outs {
        if let Out::Sink(k, v, ts) = o {
            m.entry(k.clone()).or_default().push((v.clone(), *ts));
        }
    }
    m
}

/// The source offsets of the too-late records, in order.
pub fn late(outs: &[Out]) -> Vec<u64> {
    outs.iter()
        .filter_map(|o| match o {
            Out::Late(offset) => Some(*offset),
            _ => None,
        })
        .collect()
}

/// The source offsets of the records that could not be read, in order.
pub fn bad(outs: &[Out]) -> Vec<u64> {
    outs.iter()
        .filter_map(|o| match o {
            Out::Bad(offset) => Some(*offset),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{parse_aggregates, parse_window, TimeSource, ValueSource};

    fn rec(offset: u64, key: &str, value: &str) -> Step {
        Step::Record(Record {
            offset,
            timestamp_ms: 0,
            processing_ms: 0,
            key: Some(key.as_bytes().to_vec()),
            value: Some(value.as_bytes().to_vec()),
        })
    }

    /// A worked example from the rules: a tumbling window fires when the watermark reaches its
    /// end, a late-but-accepted record rewrites it, a record past the lateness is late, a bad one
    /// bad.
    #[test]
    fn a_small_tumbling_stream_by_hand() {
        let spec = Spec {
            window: parse_window("tumbling:10ms").unwrap_or_else(|e| panic!("{e}")),
            time: TimeSource::Field("ts".into()),
            value: ValueSource::Field("v".into()),
            aggregates: parse_aggregates("count,sum").unwrap_or_else(|e| panic!("{e}")),
            out_of_orderness_ms: 0,
            allowed_lateness_ms: 5,
            idle_timeout_ms: None,
            max_state_bytes: 1 << 20,
        };
        let steps = [
            rec(0, "a", r#"{"ts": 1, "v": 2}"#),
            rec(1, "a", r#"{"ts": 12, "v": 3}"#),
            rec(2, "a", r#"{"ts": 4, "v": 5}"#),
            rec(3, "a", r#"{"ts": 16, "v": 1}"#),
            rec(4, "a", r#"{"ts": 3, "v": 1}"#),
            rec(5, "a", r#"{"ts": 20, "v": "x"}"#),
        ];
        let out = run(&spec, &steps);
        let json = |s: &str| Some(serde_json::from_str::<serde_json::Value>(s).unwrap_or_default());
        assert_eq!(
            per_key(&out).get(b"a@0".as_slice()),
            Some(&vec![
                (
                    json(r#"{"key":"a","window_start":0,"window_end":10,"count":1,"sum":2.0}"#),
                    9
                ),
                (
                    json(r#"{"key":"a","window_start":0,"window_end":10,"count":2,"sum":7.0}"#),
                    9
                ),
            ])
        );
        assert_eq!(late(&out), [4]);
        assert_eq!(bad(&out), [5]);
    }
}
