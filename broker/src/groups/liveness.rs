//! Liveness of group members on a coordinator run: when each was last heard from, its processing
//! deadline and since when it owes a revocation, and the tick that evicts members past any of them,
//! writes resets whose partitions were released, picks up new partitions of subscribed topics and
//! expires offsets. Nothing here is replicated: a new coordinator gives every member a fresh
//! session (a member cannot be evicted for a failover it could not see).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::coordinator::{read, Cx};
use super::reconcile;
use crate::replica::groups::GroupModel;

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

/// A member: its group and member id.
type MemberKey = (String, String);

/// The members' timers, and what the current round changed of them: a round whose write fails
/// puts them back, so that (say) a leave that was not written does not lose the member's session
/// timer, nor an unwritten revocation acknowledgement restart its clock.
#[derive(Debug, Default)]
pub(super) struct Live {
    timers: HashMap<MemberKey, Timers>,
    /// Entries as they were before the round first changed them (`None`: absent).
    undo: HashMap<MemberKey, Option<Timers>>,
}

impl Live {
    fn save(&mut self, k: &MemberKey) {
        if !self.undo.contains_key(k) {
            let old = self.timers.get(k).copied();
            self.undo.insert(k.clone(), old);
        }
    }

    /// The member's timers, to change (fresh ones if it has none).
    pub(super) fn update(&mut self, k: MemberKey, now: Instant) -> &mut Timers {
        self.save(&k);
        self.timers.entry(k).or_insert_with(|| Timers::fresh(now))
    }

    /// The member's timers, to read (fresh ones made if it has none).
    fn read(&mut self, k: MemberKey, now: Instant) -> Timers {
        if let Some(t) = self.timers.get(&k) {
            return *t;
        }
        self.save(&k);
        *self.timers.entry(k).or_insert_with(|| Timers::fresh(now))
    }

    /// Forgets the member's timers.
    pub(super) fn remove(&mut self, k: &MemberKey) {
        if self.timers.contains_key(k) {
            self.save(k);
            self.timers.remove(k);
        }
    }

    /// Keeps only the members `keep` says.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&MemberKey) -> bool) {
        let gone: Vec<MemberKey> = self.timers.keys().filter(|k| !keep(k)).cloned().collect();
        for k in gone {
            self.remove(&k);
        }
    }

    /// The round's write is committed: its changes stay.
    pub(super) fn commit(&mut self) {
        self.undo.clear();
    }

    /// The round's write failed: its changes are undone.
    pub(super) fn roll_back(&mut self) {
        for (k, old) in self.undo.drain() {
            match old {
                Some(t) => {
                    self.timers.insert(k, t);
                }
                None => {
                    self.timers.remove(&k);
                }
            }
        }
    }
}

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
        if before == GroupModel::default() {
            // Read this round by a request that failed, or deleted by one: nothing to look after
            // (and a group record written here would bring it back).
            continue;
        }
        let mut evict = Vec::new();
        for (id, m) in &before.members {
            present.insert((name.clone(), id.clone()));
            let t = cx.live.read((name.clone(), id.clone()), now);
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
    cx.live.retain(|k| present.contains(k));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(m: &str) -> MemberKey {
        ("g".into(), m.into())
    }

    /// Seen failing with `save` a no-op (a failed round's leave kept, its heartbeat's timer too).
    #[test]
    fn a_failed_round_leaves_the_timers_as_they_were() {
        let t0 = Instant::now();
        let mut live = Live::default();
        live.update(k("a"), t0);
        live.update(k("b"), t0);
        live.commit();
        let later = t0 + Duration::from_secs(5);
        live.update(k("a"), later).last_seen = later;
        live.update(k("c"), later);
        live.retain(|m| m.1 != "b");
        live.roll_back();
        assert_eq!(
            live.read(k("a"), later).last_seen,
            t0,
            "a's heartbeat undone"
        );
        assert!(live.timers.contains_key(&k("b")), "b's removal undone");
        assert!(!live.timers.contains_key(&k("c")), "c's arrival undone");
        live.update(k("a"), later).last_seen = later;
        live.commit();
        live.roll_back();
        assert_eq!(
            live.read(k("a"), later).last_seen,
            later,
            "committed changes stay"
        );
    }
}
