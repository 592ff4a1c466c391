//! Synchronisation primitives of the crate: atomics that are loom's under `--cfg loom` (so the
//! publication protocol can be model-checked), and the lock helpers every `Mutex`/`RwLock` in storage
//! goes through.
//!
//! A poisoned lock is a programmer error here: it means a thread panicked while holding the lock,
//! possibly half-way through an update (a segment list swapped but the watermarks not moved, an index
//! cursor advanced for a batch that was not written). Carrying on could serve that half-updated
//! state, so the helpers panic loudly instead of recovering the guard. They never see file content.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::{
    Condvar, LockResult, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use std::time::Duration;

/// The one place a poisoned lock is turned into a panic.
fn unpoisoned<G>(r: LockResult<G>, what: &str) -> G {
    match r {
        Ok(g) => g,
        Err(_) => panic!(
            "sluice-storage: {what} is poisoned (a thread panicked while holding it, possibly \
             mid-update); refusing to continue on a half-updated state"
        ),
    }
}

/// Locks `m`; panics if it is poisoned.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    unpoisoned(m.lock(), "a mutex")
}

/// Read-locks `l`; panics if it is poisoned.
pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    unpoisoned(l.read(), "a read-write lock")
}

/// Write-locks `l`; panics if it is poisoned.
pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    unpoisoned(l.write(), "a read-write lock")
}

/// `cv.wait(g)`; panics if the mutex was poisoned meanwhile.
pub(crate) fn wait<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    unpoisoned(cv.wait(g), "a mutex (condvar wait)")
}

/// `cv.wait_timeout(g, d)`, returning the guard; panics if the mutex was poisoned meanwhile.
pub(crate) fn wait_timeout<'a, T>(
    cv: &Condvar,
    g: MutexGuard<'a, T>,
    d: Duration,
) -> MutexGuard<'a, T> {
    unpoisoned(cv.wait_timeout(g, d), "a mutex (condvar wait)").0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "poisoned")]
    fn a_poisoned_lock_panics_instead_of_serving_the_state() {
        let m = std::sync::Arc::new(Mutex::new(0u32));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = lock(&m2);
            panic!("panic while holding the lock");
        })
        .join();
        let _g = lock(&m);
    }
}
