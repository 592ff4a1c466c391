//! Liveness of group members on a coordinator run: when each was last heard from, its processing
//! deadline and since when it owes a revocation, and the tick that evicts members past any of them,
//! writes resets whose partitions were released, picks up new partitions of subscribed topics and
//! expires offsets. Nothing here is replicated: a new coordinator gives every member a fresh
//! session (a member cannot be evicted for a failover it could not see).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::coordinator::{read, Cx};
use super::reconcile;

/// A member's timers on this coordinator.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timers {
    pub(super) last_seen: Instant,
    /// The member promised progress until then (`extend_deadline`); `None`: no promise.
    pub(super) deadline: Option<Instant>,
    /// Since when the member owes a revocation.
    pub(super) revoking_since: Option<Instant>,
}

impl Timers {
    pub(super) fn fresh(now: Instant) -> Timers {
        Timers {
            last_seen: now,
            deadline: None,
            revoking_since: None,
        }
    }
}

pub(super) type Live = HashMap<(String, String), Timers>;
/// Evictions, finished resets, new partitions and offset expiry, for every group of the run
/// (as this round's earlier decisions left them).
pub(super) fn tick(cx: &mut Cx<'_>) {
    let now = Instant::now();
    let mut names: Vec<String> = read(cx.replica, |g| g.groups.keys().cloned().collect());
    names.extend(cx.round.touched().map(str::to_string));
    names.sort();
    names.dedup();
    let mut present = HashSet::new();
    for name in &names {
        let before = cx.group(name);
        let mut evict = Vec::new();
        for (id, m) in &before.members {
            present.insert((name.clone(), id.clone()));
            let t = cx
                .live
                .entry((name.clone(), id.clone()))
                .or_insert_with(|| Timers::fresh(now));
            let session = Duration::from_millis(m.session_timeout_ms.into());
            let why = if now.duration_since(t.last_seen) > session {
                Some("session timed out")
            } else if t.deadline.is_some_and(|d| now > d) {
                Some("processing deadline passed")
            } else if t
                .revoking_since
                .is_some_and(|s| now.duration_since(s) > session)
            {
                Some("revocation not acknowledged within the session timeout")
            } else {
                None
            };
            if let Some(why) = why {
                tracing::info!(group = %name, member = %id, why, "evicting group member");
                evict.push(id.clone());
            }
        }
        let env = cx.env();
        let after = if evict.is_empty() {
            let mut g = before.clone();
            // Members: new partitions of their topics; resets: released partitions; no group
            // record yet (offsets committed by an admin): start its retention clock.
            if !g.members.is_empty() || g.meta.as_ref().is_none_or(|m| !m.resetting.is_empty()) {
                reconcile::refresh(&mut g, name, &env, false);
            }
            reconcile::expire(&g, &env).unwrap_or(g)
        } else {
            reconcile::remove_members(&before, name, &evict, &env)
        };
        if after != before {
            cx.round.decide(name, after);
        }
    }
    cx.live.retain(|k, _| present.contains(k));
}
