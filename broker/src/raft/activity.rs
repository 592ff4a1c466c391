//! Quiescence bookkeeping of one group: when it last saw work, and whether its raft ticker is
//! parked. A quiesced group sends no heartbeats and runs no election timer (no wakeups at all);
//! any work — a proposal on the leader, entries or a vote arriving at a follower — wakes it first.
//! The decisions (when to park, when a dead leader must wake its followers) are in
//! `cluster::quiesce` and `Replica::review_idle`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use super::network::RaftHandle;

#[derive(Debug)]
pub struct Activity {
    origin: Instant,
    /// Milliseconds since `origin` of the last work seen.
    last_ms: AtomicU64,
    quiesced: AtomicBool,
    /// Serializes parking and waking.
    switch: std::sync::Mutex<()>,
    /// The raft term last seen by the quiescer (a new term is work too).
    pub last_term: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            quiesced: AtomicBool::new(false),
            switch: std::sync::Mutex::new(()),
            last_term: AtomicU64::new(0),
        }
    }
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Records work and wakes the group's ticker if it was parked.
    pub fn touch(&self, raft: &RaftHandle) {
        // Under the switch lock: a park that read an old idle time either finished before this
        // (and is undone here) or sees the new time and does not park.
        let _g = super::lock(&self.switch, "quiescence switch");
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
        if self.quiesced.swap(false, Ordering::AcqRel) {
            raft.runtime_config().tick(true);
        }
    }

    /// Parks the group's ticker, unless work arrived since `idle_ms` was read; true if this call
    /// parked it.
    pub fn quiesce(&self, raft: &RaftHandle, idle_at_least_ms: u64) -> bool {
        let _g = super::lock(&self.switch, "quiescence switch");
        if self.idle_ms() < idle_at_least_ms {
            return false;
        }
        if !self.quiesced.swap(true, Ordering::AcqRel) {
            raft.runtime_config().tick(false);
            return true;
        }
        false
    }

    pub fn is_quiesced(&self) -> bool {
        self.quiesced.load(Ordering::Acquire)
    }

    /// Milliseconds since the last work.
    pub fn idle_ms(&self) -> u64 {
        self.now_ms()
            .saturating_sub(self.last_ms.load(Ordering::Relaxed))
    }
}
