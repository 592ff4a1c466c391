//! The window operator of one source partition: records go in, in log order; sink records, late and
//! bad records come out. Deterministic: the same records (and watermark advances) in the same order
//! give the same outputs in the same order on every replica, so a replica can rebuild a leader's
//! state from the log alone.
//!
//! The rules (also in docs/operators.md; `tests/model.rs` checks them against a brute-force model):
//! - watermark `W` = largest event time read − out-of-orderness (−∞ before the first record), moved
//!   after each record, never back;
//! - a record is added to each window it falls into unless `end + allowed_lateness <= W` (before
//!   it moved); a record no window accepts is *late*;
//! - after the watermark moves: every window the record was added to whose end `W` has reached
//!   writes its result (a first firing or an update), then every other window whose end `W` just
//!   reached fires, then windows with `end + allowed_lateness <= W` are dropped;
//! - sessions: a record's `[t, t + gap)` merges with the key's windows it overlaps or touches; each
//!   absorbed window that had fired under another start gets a tombstone first.
//!
//! Timers keep the work per record constant: a window registers its end (to fire) and its drop time
//! once, when it is made; sliding windows keep slide-sized slices and register each window end
//! their slice belongs to once per slice.

use std::collections::HashMap;

use bytes::Bytes;

use crate::acc::{result_json, sink_key, Acc, Stamped};
use crate::extract::{self, Bad};
use crate::spec::{Spec, WindowKind};
use crate::timers::{KeyState, Queue, Win, KEY_BYTES, TIMER_BYTES, WIN_BYTES};

/// A source record as the operator reads it.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub offset: u64,
    pub timestamp_ms: i64,
    /// The processing time the log assigns it (used only with `--time processing`).
    pub processing_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// What the operator writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A window's result (`Some`), or a tombstone (`None`) for a session window merged away.
    Sink {
        key: Bytes,
        value: Option<Bytes>,
        timestamp_ms: i64,
    },
    /// The record at this source offset came too late for every window it falls into.
    Late { offset: u64 },
    /// The record at this source offset could not be read.
    Bad { offset: u64, reason: Bad },
}

/// The operator passed its state limit; it stays failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("window state of {bytes} bytes passed the limit of {limit} bytes")]
pub struct StateLimit {
    pub bytes: u64,
    pub limit: u64,
}

/// What describe shows of one source partition's operator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// `None`: −∞ (no record yet).
    pub watermark_ms: Option<i64>,
    pub keys: u64,
    pub windows: u64,
    pub state_bytes: u64,
    pub late: u64,
    pub bad: u64,
    /// Sink records written (results and tombstones).
    pub emitted: u64,
    pub failed: Option<String>,
}

/// The operator state of one source partition.
#[derive(Debug, Clone)]
pub struct Operator {
    pub(crate) spec: Spec,
    needs_value: bool,
    pub(crate) max_time: Option<i64>,
    pub(crate) watermark: Option<i64>,
    pub(crate) keys: HashMap<Bytes, KeyState>,
    /// Keys waiting for the watermark to reach their smallest pending window end (`timers.rs`).
    pub(crate) fire_at: Queue,
    /// Keys waiting for the watermark to reach their first window's drop time.
    pub(crate) drop_at: Queue,
    pub(crate) windows: u64,
    pub(crate) bytes: u64,
    pub(crate) late: u64,
    pub(crate) bad: u64,
    pub(crate) emitted: u64,
    pub(crate) failed: Option<StateLimit>,
}

impl Operator {
    /// A fresh operator. The spec must have passed [`Spec::check`] (a broken invariant otherwise).
    pub fn new(spec: Spec) -> Operator {
        assert!(spec.check().is_ok(), "an unchecked spec: {spec:?}");
        Operator {
            needs_value: spec.needs_value(),
            spec,
            max_time: None,
            watermark: None,
            keys: HashMap::new(),
            fire_at: Queue::new(),
            drop_at: Queue::new(),
            windows: 0,
            bytes: 0,
            late: 0,
            bad: 0,
            emitted: 0,
            failed: None,
        }
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    pub fn stats(&self) -> Stats {
        Stats {
            watermark_ms: self.watermark,
            keys: self.keys.len() as u64,
            windows: self.windows,
            state_bytes: self.bytes,
            late: self.late,
            bad: self.bad,
            emitted: self.emitted,
            failed: self.failed.as_ref().map(|e| e.to_string()),
        }
    }

    fn closed(&self, end: i64) -> bool {
        self.watermark
            .is_some_and(|w| end.saturating_add(self.spec.allowed_lateness_ms) <= w)
    }

    /// Reads one record (in log order) and appends what it causes to `out`.
    pub fn process(&mut self, rec: Input<'_>, out: &mut Vec<Output>) -> Result<(), StateLimit> {
        if let Some(f) = &self.failed {
            return Err(f.clone());
        }
        let read = match extract::read(
            &self.spec.time,
            &self.spec.value,
            self.needs_value,
            rec.timestamp_ms,
            rec.processing_ms,
            rec.value,
        ) {
            Ok(r) => r,
            Err(reason) => {
                self.bad += 1;
                out.push(Output::Bad {
                    offset: rec.offset,
                    reason,
                });
                return Ok(());
            }
        };
        let t = read.time_ms;
        let stamped = Stamped {
            time_ms: t,
            offset: rec.offset,
            value: read.value.unwrap_or(0.0),
        };
        if self.add_in_place(rec.key.unwrap_or_default(), stamped, out) {
            return self.check_limit();
        }
        let key = self.key_handle(rec.key.unwrap_or_default());
        let before = self.watermark;
        // The window the record went into (tumbling; sessions: the merged one), and whether any
        // window accepted it.
        let mut own: Option<(i64, i64)> = None;
        let accepted = match (self.spec.window, self.bucket(t)) {
            (WindowKind::Tumbling { .. }, Some((start, end, _))) => {
                let open = !self.closed(end);
                if open {
                    self.add(&key, start, end, stamped);
                    own = Some((start, end));
                }
                open
            }
            (WindowKind::Sliding { slide_ms, .. }, Some((slice, first_end, last_end))) => {
                // The newest window holding `t` closes last: if it is closed, all are.
                let open = !self.closed(last_end);
                if open && self.add(&key, slice, first_end, stamped) {
                    // A new slice: each window it belongs to fires at its end.
                    self.pend_every(&key, first_end, last_end, slide_ms);
                    self.rearm(&key);
                }
                open
            }
            (WindowKind::Session { gap_ms }, _) => {
                let end = t.saturating_add(gap_ms);
                let open = !self.closed(end);
                if open {
                    own = Some(self.merge_session(&key, t, end, stamped, out));
                }
                open
            }
            (_, None) => unreachable!("tumbling and sliding windows always have a bucket"),
        };
        if !accepted {
            self.late += 1;
            out.push(Output::Late { offset: rec.offset });
            self.forget_if_empty(&key);
        }
        let moved_to = self.moved_watermark(t);
        self.read_time(t, moved_to);
        // The windows the record went into whose end the watermark has reached write their result
        // now (first firing or update); the queues must not write them again.
        let mut touched: Vec<(i64, i64)> = Vec::new();
        match self.spec.window {
            WindowKind::Sliding { size_ms, slide_ms } if accepted => {
                let Some((slice, first_end, _)) = self.bucket(t) else {
                    unreachable!("sliding windows always have a bucket")
                };
                let lateness = self.spec.allowed_lateness_ms;
                // Only when the oldest window holding `t` has ended (rare: a late record).
                if first_end <= moved_to {
                    let mut start = first_end.saturating_sub(size_ms);
                    while start <= slice {
                        let end = start.saturating_add(size_ms);
                        let was_open = before.is_none_or(|b| end.saturating_add(lateness) > b);
                        if end <= moved_to && was_open {
                            touched.push((start, end));
                        }
                        start = start.saturating_add(slide_ms);
                    }
                }
            }
            _ => touched.extend(own.filter(|(_, end)| *end <= moved_to)),
        }
        for &(start, end) in &touched {
            self.emit(&key, start, end, out);
        }
        self.fire_and_drop(Some((&key, &touched)), out);
        self.check_limit()
    }

    /// The common case in one map lookup: the record goes into a window (slice) its key already
    /// has, and none of the windows it goes into ends at or below the watermark it moves to (so
    /// nothing of this record is written at once). Does the whole step and says so, or does
    /// nothing.
    fn add_in_place(&mut self, key: &[u8], s: Stamped, out: &mut Vec<Output>) -> bool {
        let t = s.time_ms;
        let moved_to = self.moved_watermark(t);
        let Some((bucket, first_end, last_end)) = self.bucket(t) else {
            return false;
        };
        if self.closed(last_end) || first_end <= moved_to {
            return false;
        }
        let Some(win) = self
            .keys
            .get_mut(key)
            .and_then(|ks| ks.windows.get_mut(&bucket))
        else {
            return false;
        };
        win.acc.add(s);
        self.read_time(t, moved_to);
        self.fire_and_drop(None, out);
        true
    }

    /// Where a record at `t` goes, for tumbling and sliding windows (`None` for sessions): the
    /// start of its window (slice), the end of the first window holding it and that of the last.
    fn bucket(&self, t: i64) -> Option<(i64, i64, i64)> {
        match self.spec.window {
            WindowKind::Tumbling { size_ms } => {
                let start = t.div_euclid(size_ms).saturating_mul(size_ms);
                let end = start.saturating_add(size_ms);
                Some((start, end, end))
            }
            WindowKind::Sliding { size_ms, slide_ms } => {
                let slice = t.div_euclid(slide_ms).saturating_mul(slide_ms);
                Some((
                    slice,
                    slice.saturating_add(slide_ms),
                    slice.saturating_add(size_ms),
                ))
            }
            WindowKind::Session { .. } => None,
        }
    }

    /// The watermark once a record at `t` has been read (it never moves back).
    fn moved_watermark(&self, t: i64) -> i64 {
        let w = t.saturating_sub(self.spec.out_of_orderness_ms);
        self.watermark.map_or(w, |old| old.max(w))
    }

    /// A record at `t` was read: the largest time and the watermark move.
    fn read_time(&mut self, t: i64, moved_to: i64) {
        self.max_time = Some(self.max_time.map_or(t, |m| m.max(t)));
        self.watermark = Some(moved_to);
    }

    /// Moves the watermark to `to` if that is later (an idle partition's advance, entered
    /// through the log), firing and dropping what that reaches.
    pub fn advance(&mut self, to: i64, out: &mut Vec<Output>) -> Result<(), StateLimit> {
        if let Some(f) = &self.failed {
            return Err(f.clone());
        }
        if self.watermark.is_some_and(|w| w >= to) {
            return Ok(());
        }
        self.watermark = Some(to);
        self.fire_and_drop(None, out);
        self.check_limit()
    }

    /// Recomputes the window count and the state size from the keys and queues (after a decode).
    pub(crate) fn recount(&mut self) {
        self.windows = self.keys.values().map(|k| k.windows.len() as u64).sum();
        let pending: u64 = self.keys.values().map(|k| k.pending.len() as u64).sum();
        let queued: u64 = self
            .fire_at
            .values()
            .chain(self.drop_at.values())
            .map(|v| v.len() as u64)
            .sum();
        self.bytes = self
            .keys
            .keys()
            .map(|k| k.len() as u64 + KEY_BYTES)
            .sum::<u64>()
            + self.windows * WIN_BYTES
            + (pending + queued) * TIMER_BYTES;
    }

    /// Marks the operator failed at a state of `bytes` (a decoded failure).
    pub(crate) fn fail_at(&mut self, bytes: u64) {
        self.failed = Some(StateLimit {
            bytes,
            limit: self.spec.max_state_bytes,
        });
    }

    fn check_limit(&mut self) -> Result<(), StateLimit> {
        if self.bytes > self.spec.max_state_bytes {
            let e = StateLimit {
                bytes: self.bytes,
                limit: self.spec.max_state_bytes,
            };
            self.failed = Some(e.clone());
            return Err(e);
        }
        Ok(())
    }

    /// The stored handle of `key` (made on first sight: the state never holds a slice of a
    /// source batch, which would pin the whole batch in memory).
    fn key_handle(&mut self, key: &[u8]) -> Bytes {
        if let Some((k, _)) = self.keys.get_key_value(key) {
            return k.clone();
        }
        let k = Bytes::copy_from_slice(key);
        self.keys.insert(k.clone(), KeyState::default());
        self.bytes += k.len() as u64 + KEY_BYTES;
        k
    }

    /// Adds to the window or slice of `key` at `start` (made if missing; a tumbling window then
    /// waits to fire at `end`, and the key is re-armed). Whether it was made.
    fn add(&mut self, key: &Bytes, start: i64, end: i64, s: Stamped) -> bool {
        let tumbling = matches!(self.spec.window, WindowKind::Tumbling { .. });
        let Some(ks) = self.keys.get_mut(key) else {
            unreachable!("a key is made before anything is added to it")
        };
        if let Some(w) = ks.windows.get_mut(&start) {
            w.acc.add(s);
            return false;
        }
        ks.windows.insert(
            start,
            Win {
                end,
                acc: Acc::of(s),
            },
        );
        self.windows += 1;
        self.bytes += WIN_BYTES;
        if tumbling {
            self.pend(key, end);
            self.rearm(key);
        }
        true
    }

    /// Merges `[t, end)` with the windows of `key` it overlaps or touches; tombstones for absorbed
    /// windows that had fired under another start. Returns the merged window.
    fn merge_session(
        &mut self,
        key: &Bytes,
        t: i64,
        end: i64,
        s: Stamped,
        out: &mut Vec<Output>,
    ) -> (i64, i64) {
        let watermark = self.watermark;
        let ks = self.keys.entry(key.clone()).or_default();
        let absorbed: Vec<i64> = ks
            .windows
            .range(..=end)
            .filter(|(_, w)| w.end >= t)
            .map(|(start, _)| *start)
            .collect();
        let (mut start, mut merged_end, mut acc) = (t, end, Acc::of(s));
        let mut fired = Vec::new();
        let mut unpended = 0;
        for a in &absorbed {
            let Some(w) = ks.windows.remove(a) else {
                unreachable!("absorbed windows were just listed")
            };
            if watermark.is_some_and(|wm| w.end <= wm) {
                fired.push((*a, w.end));
            }
            unpended += u64::from(ks.pending.remove(&w.end));
            start = start.min(*a);
            merged_end = merged_end.max(w.end);
            acc.merge(&w.acc);
        }
        ks.windows.insert(
            start,
            Win {
                end: merged_end,
                acc,
            },
        );
        self.windows = self.windows + 1 - absorbed.len() as u64;
        self.bytes =
            self.bytes + WIN_BYTES - WIN_BYTES * absorbed.len() as u64 - TIMER_BYTES * unpended;
        for (a, a_end) in fired.into_iter().filter(|(a, _)| *a != start) {
            self.emitted += 1;
            out.push(Output::Sink {
                key: Bytes::from(sink_key(key, a)),
                value: None,
                timestamp_ms: a_end.saturating_sub(1),
            });
        }
        self.pend(key, merged_end);
        self.rearm(key);
        (start, merged_end)
    }

    /// The result of `key`'s window `[start, end)` (sliding: merged from its slices); `None` if it
    /// holds nothing.
    fn result(&self, key: &Bytes, start: i64, end: i64) -> Option<Acc> {
        let windows = &self.keys.get(key)?.windows;
        match self.spec.window {
            WindowKind::Sliding { .. } => {
                let mut slices = windows.range(start..end).map(|(_, w)| &w.acc);
                let mut acc = slices.next()?.clone();
                for s in slices {
                    acc.merge(s);
                }
                Some(acc)
            }
            _ => windows
                .get(&start)
                .filter(|w| w.end == end)
                .map(|w| w.acc.clone()),
        }
    }

    pub(crate) fn emit(&mut self, key: &Bytes, start: i64, end: i64, out: &mut Vec<Output>) {
        let Some(acc) = self.result(key, start, end) else {
            return;
        };
        let value = result_json(key, start, end, &acc, &self.spec.aggregates);
        self.emitted += 1;
        out.push(Output::Sink {
            key: Bytes::from(sink_key(key, start)),
            value: Some(Bytes::from(value)),
            timestamp_ms: end.saturating_sub(1),
        });
    }
}
