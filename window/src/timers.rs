//! When windows fire and when their state goes: per key, the ends of its windows that have not fired
//! yet (`pending`), and two queues ordered by watermark where each key waits at most once — at its
//! smallest pending end (to fire) and at its first window's drop time. A key is re-armed only when
//! that minimum changes, so the queues cost a push per window rather than one per (window, key) pair
//! kept in a global ordered set (which cost the engine a third of its time in key comparisons).
//! Entries a key no longer waits at stay in the queue and are skipped when they come up.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::acc::Acc;
use crate::operator::{Operator, Output};
use crate::spec::{Spec, WindowKind};

/// One window (tumbling or session) or slice (sliding), by start.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Win {
    pub(crate) end: i64,
    pub(crate) acc: Acc,
}

/// What the operator keeps of one key.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct KeyState {
    pub(crate) windows: BTreeMap<i64, Win>,
    /// Ends of this key's windows that have not fired, all above the watermark.
    pub(crate) pending: BTreeSet<i64>,
    /// Where the key waits in the fire queue: its smallest pending end.
    pub(crate) armed: Option<i64>,
    /// Where it waits in the drop queue: its first window's drop time.
    pub(crate) drop_armed: Option<i64>,
}

/// When a window (slice) at `start` can go: once no open window needs it.
fn drop_time(spec: &Spec, start: i64, win: &Win) -> i64 {
    let last_end = match spec.window {
        WindowKind::Sliding { size_ms, .. } => start.saturating_add(size_ms),
        _ => win.end,
    };
    last_end.saturating_add(spec.allowed_lateness_ms)
}

/// A queue by watermark: at each time, the keys waiting there, in arrival order.
pub(crate) type Queue = BTreeMap<i64, Vec<Bytes>>;

/// Per key: its map entries and handles.
pub(crate) const KEY_BYTES: u64 = 96;
/// Per window or slice: accumulator, bounds, map entry.
pub(crate) const WIN_BYTES: u64 = crate::acc::ACC_BYTES + 48;
/// Per queue entry and per pending end.
pub(crate) const TIMER_BYTES: u64 = 32;

impl Operator {
    /// When the state of `key`'s window (slice) at `start` can go: once no open window needs it.
    pub(crate) fn drop_time(&self, start: i64, win: &Win) -> i64 {
        drop_time(&self.spec, start, win)
    }

    /// `end` of a window of `key` is to fire (unless the watermark passed it already).
    pub(crate) fn pend(&mut self, key: &Bytes, end: i64) {
        self.pend_every(key, end, end, 1);
    }

    /// Every `step` from `first` to `last` (inclusive) is the end of a window of `key` to fire;
    /// those the watermark passed already are left out. One map lookup for all of them.
    pub(crate) fn pend_every(&mut self, key: &Bytes, first: i64, last: i64, step: i64) {
        debug_assert!(step > 0 && first <= last);
        let Some(ks) = self.keys.get_mut(key) else {
            return;
        };
        let mut end = match self.watermark {
            // The first end above the watermark, on the grid.
            Some(w) if first <= w => {
                let steps = (w - first) / step + 1;
                first.saturating_add(steps.saturating_mul(step))
            }
            _ => first,
        };
        while end <= last {
            if ks.pending.insert(end) {
                self.bytes += TIMER_BYTES;
            }
            end = end.saturating_add(step);
        }
    }

    /// Puts `key` in the queues at its current minimums, if they changed.
    pub(crate) fn rearm(&mut self, key: &Bytes) {
        let Operator {
            keys,
            fire_at,
            drop_at,
            bytes,
            spec,
            ..
        } = self;
        let Some(ks) = keys.get_mut(key) else { return };
        let fire = ks.pending.first().copied();
        let drop = ks
            .windows
            .first_key_value()
            .map(|(start, w)| drop_time(spec, *start, w));
        if fire != ks.armed {
            if let Some(at) = fire {
                fire_at.entry(at).or_default().push(key.clone());
                *bytes += TIMER_BYTES;
            }
            ks.armed = fire;
        }
        if drop != ks.drop_armed {
            if let Some(at) = drop {
                drop_at.entry(at).or_default().push(key.clone());
                *bytes += TIMER_BYTES;
            }
            ks.drop_armed = drop;
        }
    }

    /// Fires every window whose end the watermark reached (but those of `touched` for `key`,
    /// written already), then drops what can no longer change.
    pub(crate) fn fire_and_drop(
        &mut self,
        touched: Option<(&Bytes, &[(i64, i64)])>,
        out: &mut Vec<Output>,
    ) {
        let Some(w) = self.watermark else { return };
        while let Some(entry) = self.fire_at.first_entry() {
            if *entry.key() > w {
                break;
            }
            let (at, keys) = entry.remove_entry();
            self.bytes -= TIMER_BYTES * keys.len() as u64;
            for key in keys {
                let Some(ks) = self.keys.get_mut(&key) else {
                    continue;
                };
                if ks.armed != Some(at) {
                    continue;
                }
                ks.armed = None;
                let due: Vec<i64> = ks.pending.range(..=w).copied().collect();
                for end in &due {
                    ks.pending.remove(end);
                }
                self.bytes -= TIMER_BYTES * due.len() as u64;
                for end in due {
                    for start in self.starts_ending_at(&key, end) {
                        let written =
                            touched.is_some_and(|(k, t)| *k == key && t.contains(&(start, end)));
                        if !written {
                            self.emit(&key, start, end, out);
                        }
                    }
                }
                self.rearm(&key);
            }
        }
        while let Some(entry) = self.drop_at.first_entry() {
            if *entry.key() > w {
                break;
            }
            let (at, keys) = entry.remove_entry();
            self.bytes -= TIMER_BYTES * keys.len() as u64;
            for key in keys {
                if self
                    .keys
                    .get(&key)
                    .is_some_and(|ks| ks.drop_armed == Some(at))
                {
                    self.drop_closed(&key, w);
                }
            }
        }
    }

    /// The starts of `key`'s windows that end at `end`.
    fn starts_ending_at(&self, key: &Bytes, end: i64) -> Vec<i64> {
        match self.spec.window {
            WindowKind::Tumbling { size_ms } | WindowKind::Sliding { size_ms, .. } => {
                vec![end.saturating_sub(size_ms)]
            }
            WindowKind::Session { .. } => self.keys.get(key).map_or_else(Vec::new, |ks| {
                ks.windows
                    .iter()
                    .filter(|(_, win)| win.end == end)
                    .map(|(s, _)| *s)
                    .collect()
            }),
        }
    }

    /// Drops `key`'s windows (slices) that no open window needs, and the key if none is left.
    fn drop_closed(&mut self, key: &Bytes, w: i64) {
        let Some(mut ks) = self.keys.remove(key) else {
            return;
        };
        let before = ks.windows.len() as u64;
        ks.windows
            .retain(|start, win| self.drop_time(*start, win) > w);
        let dropped = before - ks.windows.len() as u64;
        self.windows -= dropped;
        self.bytes -= WIN_BYTES * dropped;
        ks.drop_armed = None;
        self.keys.insert(key.clone(), ks);
        self.rearm(key);
        self.forget_if_empty(key);
    }

    /// Removes `key` if it holds nothing (a window-less key is only made by a late record).
    pub(crate) fn forget_if_empty(&mut self, key: &Bytes) {
        let empty = self
            .keys
            .get(key)
            .is_some_and(|ks| ks.windows.is_empty() && ks.pending.is_empty());
        if empty {
            self.keys.remove(key);
            self.bytes -= key.len() as u64 + KEY_BYTES;
        }
    }
}
