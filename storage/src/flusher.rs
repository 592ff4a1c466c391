//! The interval flusher (`FlushPolicy::Interval` only): one thread per log that fsyncs once
//! `max_bytes` are unflushed or `max_delay` after the first unflushed append, and the signal appends
//! use to wake it. It never appends, never rolls and never decides durability on its own: it calls
//! the log's `flush_upto` like any owner would. `External` and the other policies run no thread.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::error::{Result, StorageError};
use crate::log::Inner;
use crate::sync::lock;

/// Wakes the interval flusher thread.
#[derive(Debug, Default)]
pub(crate) struct FlushSignal {
    state: Mutex<SignalState>,
    cv: Condvar,
    /// Appended bytes may be waiting for the flusher's delay. While it is clear the flusher sleeps
    /// without a timeout (an idle log costs no wake-ups: a broker holds hundreds of them); the
    /// append that sets it wakes the flusher, which then waits the delay.
    armed: AtomicBool,
}

impl FlushSignal {
    /// Called after an append published its end: arms the delay if it is not armed yet. One
    /// atomic load per append once armed.
    pub(crate) fn arm(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        if !self.armed.load(SeqCst) && !self.armed.swap(true, SeqCst) {
            let _s = lock(&self.state);
            self.cv.notify_one();
        }
    }

    /// Asks the flusher to flush now (`max_bytes` unflushed).
    pub(crate) fn request(&self) {
        let mut s = lock(&self.state);
        s.requested = true;
        self.cv.notify_one();
    }

    /// Ends the flusher (close, or the log dropped).
    pub(crate) fn stop(&self) {
        let mut s = lock(&self.state);
        s.stop = true;
        self.cv.notify_all();
    }
}

#[derive(Debug, Default)]
struct SignalState {
    requested: bool,
    stop: bool,
}

/// The interval flusher: a thread that fsyncs when enough bytes are unflushed or the delay passed
/// since it saw the first unflushed append; with nothing unflushed it sleeps until an append comes.
/// It holds only a weak reference while it waits, so dropping the log ends it.
pub(crate) fn spawn(inner: &Arc<Inner>, max_delay: Duration) -> Result<()> {
    use std::sync::atomic::Ordering::SeqCst;
    let weak = Arc::downgrade(inner);
    let signal = inner.signal.clone();
    std::thread::Builder::new()
        .name("sluice-flush".into())
        .spawn(move || loop {
            {
                let mut s = lock(&signal.state);
                // Idle: no timeout. `arm` notifies under this lock, so its wake-up is not lost.
                while !s.requested && !s.stop && !signal.armed.load(SeqCst) {
                    s = crate::sync::wait(&signal.cv, s);
                }
                // Armed: the full delay, unless asked sooner (max_bytes) or stopped. A wake-up
                // from a late `arm` notify or a spurious one does not cut the delay short.
                let deadline = std::time::Instant::now() + max_delay;
                while !s.requested && !s.stop {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    s = crate::sync::wait_timeout(&signal.cv, s, left);
                }
                if s.stop {
                    return;
                }
                s.requested = false;
            }
            let Some(inner) = weak.upgrade() else { return };
            // Cleared and the end read under the writer lock, which every append holds while it
            // publishes its end and releases before it arms: an append either is below `end` or
            // finds `armed` clear and arms it again. (Atomics alone would not order the two.)
            let end = {
                let _w = lock(&inner.writer);
                signal.armed.store(false, SeqCst);
                inner.log_end.load()
            };
            if end > inner.flushed.load() {
                if let Err(e) = inner.flush_upto(end) {
                    tracing::error!(error = %e, "interval flush failed; flusher stops");
                    return;
                }
            }
        })
        .map_err(|e| StorageError::Io {
            context: "spawn flusher thread",
            path: inner.dir.clone(),
            source: e,
        })?;
    Ok(())
}
