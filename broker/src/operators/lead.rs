//! The leader's part of a driver: bring the state to the latest mark, then read, write the output
//! (the next read folds while the previous output is being acknowledged) and mark; clock ticks
//! for idle timeouts and processing time; checkpoints. See [`super::driver`] for the invariants.

use std::time::{Duration, Instant};

use sluice_window::TimeSource;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::driver::{
    Driver, Stop, CHECKPOINT_INTERVAL, CHECKPOINT_MIN_BYTES, MARK_INTERVAL, MARK_TIMEOUT,
    MAX_CHECKPOINT_BYTES,
};
use super::fold::{Fold, Outbox};
use super::send::{SendError, Sender};
use super::stats::EmitLatency;
use crate::cluster::metadata::now_ms;
use crate::replica::marks::Mark;
use crate::replica::Leadership;

impl Driver {
    /// Leads in `term`: brings the state to the latest mark, then reads, writes and marks.
    pub(super) async fn lead(
        &self,
        fold: &mut Option<Fold>,
        term: u64,
        leadership: &watch::Receiver<Leadership>,
    ) -> Result<(), Stop> {
        self.replica.settle().await;
        let mark = self.latest_mark();
        let through = mark.as_ref().map(|m| m.through);
        let ahead = match (&*fold, through) {
            (Some(f), Some(t)) => f.position > t,
            // Read past its start with no mark: nothing of it is confirmed written.
            (Some(f), None) => f.position > self.replica.log_start_offset() && f.records_read > 0,
            (None, _) => false,
        };
        if fold.is_none() || ahead {
            *fold = Some(self.load()?);
        }
        let Some(f) = fold.as_mut() else {
            unreachable!()
        };
        if let Some(mark) = &mark {
            self.read(f, mark.through, None, false).await?;
            if f.position != mark.through {
                return Err(Stop::Failed(format!(
                    "the source log ends at {} before the operator's mark at {}",
                    f.position, mark.through
                )));
            }
            f.adopt_seqs(mark);
        }
        tracing::info!(operator = %self.name, partition = self.targets.source_partition, term, position = f.position, "window operator leading");
        let mut latency = EmitLatency::new();
        let mut run = LeaderRun {
            last_mark: Instant::now(),
            records_at_mark: f.records_read,
            unmarked_output: false,
            checkpoint_bytes_at: f.bytes_read,
            checkpoint_at: Instant::now(),
            last_checkpoint_len: 0,
            warned_large: false,
            marked_to: f.position,
        };
        // The send of the last read's output runs beside the next read (on the other core), so
        // folding and the targets' appends overlap; one send at a time keeps each target's
        // batches in order. `clean_to`: everything below it is read and its output acknowledged
        // (what a mark may say).
        let mut in_flight: Option<InFlight> = None;
        let mut clean_to = f.position;
        loop {
            if self.cancel.is_cancelled() {
                return Err(Stop::Cancelled);
            }
            if *leadership.borrow() != (Leadership::Leader { term }) {
                return Ok(());
            }
            let hw = self.replica.high_watermark();
            if f.position < hw {
                let start = f.position;
                let mut outbox = Outbox::default();
                let read_at = Instant::now();
                self.read(f, hw, Some(&mut outbox), true).await?;
                if !outbox.is_empty() {
                    if let Some(prev) = in_flight.take() {
                        if !self.finish(prev, term, leadership, &mut latency).await? {
                            return Ok(());
                        }
                        run.unmarked_output = true;
                    }
                    clean_to = start;
                    in_flight = Some(InFlight::start(&self.sender, outbox, read_at, &self.cancel));
                } else if in_flight.is_none() {
                    clean_to = f.position;
                }
            }
            let caught_up = f.position >= self.replica.high_watermark();
            if caught_up {
                if let Some(prev) = in_flight.take() {
                    if !self.finish(prev, term, leadership, &mut latency).await? {
                        return Ok(());
                    }
                    run.unmarked_output = true;
                    clean_to = f.position;
                }
            }
            let progressed = run.unmarked_output || f.records_read > run.records_at_mark;
            let tick_due = self.tick_due(f) && run.last_mark.elapsed() >= self.tick_interval();
            let mark_due = (progressed
                && (caught_up || run.last_mark.elapsed() >= MARK_INTERVAL)
                && clean_to > run.marked_to)
                || tick_due;
            if mark_due && !self.write_mark(f, clean_to, &mut run).await? {
                return Ok(());
            }
            self.report(f, true, latency.p99_ms());
            if caught_up {
                let wait = if self.tick_due(f) {
                    self.tick_interval()
                } else {
                    Duration::from_secs(1)
                };
                tokio::select! {
                    _ = self.cancel.cancelled() => return Err(Stop::Cancelled),
                    _ = self.replica.wait_beyond(f.position, Instant::now() + wait) => {}
                }
            } else {
                // Folding is CPU work between awaits: let the broker's other tasks run.
                tokio::task::yield_now().await;
            }
        }
    }

    /// Waits for a send to be acknowledged; `false`: this replica stopped leading `term` first (a
    /// deposed leader stops sending; its successor resends the same bytes).
    async fn finish(
        &self,
        mut sent: InFlight,
        term: u64,
        leadership: &watch::Receiver<Leadership>,
        latency: &mut EmitLatency,
    ) -> Result<bool, Stop> {
        let mut watch = leadership.clone();
        let lost = async move {
            while *watch.borrow_and_update() == (Leadership::Leader { term }) {
                if watch.changed().await.is_err() {
                    return;
                }
            }
        };
        let result = tokio::select! {
            r = &mut sent.handle => r,
            _ = lost => return Ok(false),
        };
        match result {
            Ok((Ok(()), acked_at)) => {
                let waited = acked_at.saturating_duration_since(sent.read_at);
                latency.record(waited.as_micros() as u64, sent.sink_records);
                Ok(true)
            }
            Ok((Err(SendError::Cancelled), _)) => Err(Stop::Cancelled),
            Ok((Err(e), _)) => Err(Stop::Failed(e.to_string())),
            Err(e) => Err(Stop::Failed(format!("the send task ended: {e}"))),
        }
    }

    /// Whether the leader must write marks as clock ticks: an idle timeout with windows still
    /// open, or processing time.
    fn tick_due(&self, f: &Fold) -> bool {
        (self.spec.idle_timeout_ms.is_some() && f.op.stats().windows > 0)
            || matches!(self.spec.time, TimeSource::Processing)
    }

    fn tick_interval(&self) -> Duration {
        let idle = self.spec.idle_timeout_ms.unwrap_or(1000).max(0) as u64;
        Duration::from_millis((idle / 4).clamp(50, 1000))
    }

    /// Writes a mark at the fold's position (with a checkpoint when due). `false`: this replica
    /// no longer leads.
    async fn write_mark(&self, f: &Fold, through: u64, run: &mut LeaderRun) -> Result<bool, Stop> {
        assert!(through <= f.position, "a mark past what the fold has read");
        let since = f.bytes_read - run.checkpoint_bytes_at;
        // The first mark always has one: it fixes where every replica starts (their log starts
        // may differ), so no replica ever folds from its own log start but the first leader.
        let first = self.with_marks(|m| m.checkpoint(self.producer_id).is_none());
        // A checkpoint is the state at `through`: only when nothing read is still unacknowledged.
        let want_checkpoint = through == f.position
            && ((first && !run.warned_large)
                || (f.records_read > 0
                    && (since >= CHECKPOINT_MIN_BYTES.max(4 * run.last_checkpoint_len as u64)
                        || (since > 0 && run.checkpoint_at.elapsed() >= CHECKPOINT_INTERVAL))));
        let checkpoint = if want_checkpoint {
            // Skip states too large to write (without encoding them when the in-memory size
            // already says so), and count the skip as a checkpoint: trying again at every mark
            // would encode the whole state each time for nothing.
            let estimate = f.op.stats().state_bytes as usize;
            let state = (estimate <= 2 * MAX_CHECKPOINT_BYTES).then(|| f.checkpoint());
            match state {
                Some(state) if state.len() <= MAX_CHECKPOINT_BYTES => Some(state),
                _ => {
                    if !run.warned_large {
                        tracing::warn!(operator = %self.name, partition = self.targets.source_partition, bytes = estimate, "window state too large to checkpoint; a restarted replica refolds from the last checkpoint");
                        run.warned_large = true;
                    }
                    run.checkpoint_bytes_at = f.bytes_read;
                    run.checkpoint_at = Instant::now();
                    run.last_checkpoint_len = estimate;
                    None
                }
            }
        } else {
            None
        };
        let mark = Mark {
            producer_id: self.producer_id,
            through,
            now_ms: now_ms(),
            seqs: f.mark_seqs(),
            checkpoint,
        };
        let written = match self.replica.propose_control(&mark.to_batch()).await {
            Ok(pending) => pending.wait(MARK_TIMEOUT).await,
            Err(e) => Err(e),
        };
        match written {
            Ok(_) => {
                if let Some(c) = &mark.checkpoint {
                    run.checkpoint_bytes_at = f.bytes_read;
                    run.checkpoint_at = Instant::now();
                    run.last_checkpoint_len = c.len();
                }
                run.last_mark = Instant::now();
                run.marked_to = through;
                run.records_at_mark = f.records_read;
                run.unmarked_output = false;
                Ok(true)
            }
            Err(e) if !self.replica.is_leader() => {
                tracing::info!(operator = %self.name, error = %e.message, "mark not written: leadership lost");
                Ok(false)
            }
            Err(e) => {
                tracing::warn!(operator = %self.name, error = %e.message, "mark not written; trying again");
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(true)
            }
        }
    }
}

/// Bookkeeping of one leader run.
struct LeaderRun {
    last_mark: Instant,
    records_at_mark: u64,
    /// Output was written since the last mark.
    unmarked_output: bool,
    checkpoint_bytes_at: u64,
    checkpoint_at: Instant,
    last_checkpoint_len: usize,
    /// The state-too-large warning was logged in this run.
    warned_large: bool,
    /// The `through` of the last mark written in this run.
    marked_to: u64,
}

/// A send of one read's output, running on its own task.
struct InFlight {
    /// The outcome, and when the targets acknowledged (the results became readable).
    handle: tokio::task::JoinHandle<(Result<(), SendError>, Instant)>,
    read_at: Instant,
    sink_records: u64,
}

impl InFlight {
    fn start(
        sender: &Sender,
        outbox: Outbox,
        read_at: Instant,
        cancel: &CancellationToken,
    ) -> InFlight {
        let sender = sender.clone();
        let cancel = cancel.clone();
        let sink_records = outbox.sink_records;
        InFlight {
            handle: tokio::spawn(async move {
                let r = sender.send(&outbox, &cancel).await;
                (r, Instant::now())
            }),
            read_at,
            sink_records,
        }
    }
}

impl Drop for InFlight {
    /// A run that ends (deposed, failed, cancelled) stops its send: the next leader resends.
    fn drop(&mut self) {
        self.handle.abort();
    }
}
