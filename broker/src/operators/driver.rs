//! One operator on one local replica of one source partition: the loop that folds the local log
//! into the operator's state and, while this replica leads, writes the output and the marks.
//!
//! Invariants (docs/operators.md, "How it runs"):
//! - a follower folds only up to the latest committed mark's `through` (everything before it is in
//!   the targets), so when it is elected it holds the state at that mark and resends nothing it
//!   need not;
//! - a leader starts at the latest mark (folding silently up to it, or reloading from the last
//!   checkpoint when its own state ran past it in an earlier term), then reads, writes the outputs
//!   of what it read, and only after every target acknowledged them writes a mark past them;
//! - the fold is deterministic ([`super::fold`]), so what a new leader writes again after the
//!   mark is byte-identical to what its predecessor may have written, and the targets drop it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_window::{Operator, Spec};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::fold::{Fold, FoldError, Outbox, Targets};
use super::send::Sender;
use super::stats::{PartitionStats, Registry};
use crate::cluster::metadata::now_ms;
use crate::replica::marks::Mark;
use crate::replica::topic_state::TopicState;
use crate::replica::{Leadership, Replica};

/// Source bytes read per step.
const READ_BYTES: usize = 1 << 20;
/// A leader marks progress at least this often while records arrive (followers trail by it).
pub(super) const MARK_INTERVAL: Duration = Duration::from_millis(50);
/// A checkpoint goes into a mark once this many source bytes were read since the last one (or
/// four times the last checkpoint's size, whichever is more)...
pub(super) const CHECKPOINT_MIN_BYTES: u64 = 8 << 20;
/// ...or once this long has passed with records read.
pub(super) const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(30);
/// Larger states are not checkpointed (a restarted replica then refolds from an older one).
pub(super) const MAX_CHECKPOINT_BYTES: usize = 16 << 20;
/// How long one write of a mark may take before the leader tries again.
pub(super) const MARK_TIMEOUT: Duration = Duration::from_secs(10);

/// What one driver works with.
#[derive(Debug)]
pub struct Driver {
    pub name: String,
    pub spec: Spec,
    pub producer_id: i64,
    pub targets: Targets,
    pub replica: Arc<Replica>,
    pub sender: Sender,
    pub stats: Arc<Registry>,
    pub cancel: CancellationToken,
}

/// Why a driver stopped for good (until the operator is restarted).
#[derive(Debug, thiserror::Error)]
pub(super) enum Stop {
    #[error("{0}")]
    Failed(String),
    #[error("cancelled")]
    Cancelled,
}

impl From<FoldError> for Stop {
    fn from(e: FoldError) -> Stop {
        Stop::Failed(e.to_string())
    }
}

impl Driver {
    pub async fn run(self) {
        let mut fold = None;
        let mut failed = None;
        // One view of the role: the leadership watch (raft's instantaneous state can disagree
        // with it for a moment, and deciding by one while waiting on the other spins).
        let mut watch = self.replica.leadership();
        loop {
            if self.cancel.is_cancelled() {
                break;
            }
            let role = watch.borrow_and_update().clone();
            let result = match role {
                Leadership::Leader { term } => self.lead(&mut fold, term, &watch).await,
                _ => self.follow(&mut fold, &mut watch).await,
            };
            match result {
                Ok(())
                    if matches!(role, Leadership::Leader { .. })
                        && !watch.has_changed().unwrap_or(true) =>
                {
                    // The run ended without the watch moving (raft said no while the watch still
                    // says leader): wait for the watch rather than start over at once.
                    tokio::select! {
                        _ = self.cancel.cancelled() => break,
                        _ = watch.changed() => {}
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
                Ok(()) => {}
                Err(Stop::Cancelled) => break,
                Err(Stop::Failed(why)) => {
                    tracing::error!(operator = %self.name, partition = self.targets.source_partition, %why, "window operator failed on this partition");
                    failed = Some(why);
                    break;
                }
            }
        }
        if let Some(why) = failed {
            // Stay visible in describe until the operator is deleted, paused or the broker stops.
            let mut s = self
                .stats
                .get(&self.name, self.targets.source_partition)
                .unwrap_or_default();
            s.failed = Some(why);
            self.stats.set(&self.name, self.targets.source_partition, s);
            self.cancel.cancelled().await;
        }
        self.stats.remove(&self.name, self.targets.source_partition);
    }

    pub(super) fn latest_mark(&self) -> Option<Mark> {
        self.with_marks(|m| m.latest(self.producer_id).cloned())
    }

    pub(super) fn with_marks<R>(&self, f: impl FnOnce(&crate::replica::marks::Marks) -> R) -> R {
        self.replica.with_state(|s| {
            let state = s
                .as_any()
                .and_then(|a| a.downcast_ref::<TopicState>())
                .unwrap_or_else(|| panic!("a data partition without topic state"));
            f(&state.marks)
        })
    }

    /// The fold at the last checkpoint, or a fresh one at the log start.
    pub(super) fn load(&self) -> Result<Fold, Stop> {
        let checkpoint = self.with_marks(|m| m.checkpoint(self.producer_id).cloned());
        let Some(mark) = checkpoint else {
            let op = Operator::new(self.spec.clone());
            return Ok(Fold::new(
                op,
                self.producer_id,
                self.replica.log_start_offset(),
            ));
        };
        Fold::restore(self.spec.clone(), self.producer_id, &mark).map_err(|e| {
            Stop::Failed(format!(
                "its checkpoint at offset {} cannot be read: {e}",
                mark.through
            ))
        })
    }

    /// Reads the local log from the fold's position up to `until` (or as much as one read gives
    /// when `one_read`), into `out` when given.
    pub(super) async fn read(
        &self,
        fold: &mut Fold,
        until: u64,
        mut out: Option<&mut Outbox>,
        one_read: bool,
    ) -> Result<(), Stop> {
        while fold.position < until {
            let start = fold.position;
            let read = self
                .replica
                .read_local_async(start, READ_BYTES)
                .await
                .map_err(|e| {
                    Stop::Failed(format!(
                        "cannot read source offset {start} (deleted by retention before the operator read it?): {}",
                        e.message
                    ))
                })?;
            fold.read(read.bytes, until, &self.targets, out.as_deref_mut())?;
            if fold.position == start {
                // Nothing more below the high watermark: an empty read means what is left is raft
                // housekeeping the read skips.
                fold.position = fold.position.max(read.next_offset.min(until));
                if fold.position == start {
                    break;
                }
            }
            if one_read {
                break;
            }
            // A long catch-up is CPU work between awaits: let the broker's other tasks run.
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    /// Follows: keeps the state at the latest mark until this replica leads or the run ends.
    async fn follow(
        &self,
        fold: &mut Option<Fold>,
        leadership: &mut watch::Receiver<Leadership>,
    ) -> Result<(), Stop> {
        loop {
            // A checkpoint ahead of the fold (a new one, or this replica fell behind): start
            // from it rather than fold up to it.
            let behind = |f: &Fold| {
                self.with_marks(|m| m.checkpoint(self.producer_id).map(|c| c.through))
                    .is_some_and(|through| through > f.position)
            };
            if fold.as_ref().is_none_or(behind) {
                *fold = Some(self.load()?);
            }
            let Some(f) = fold.as_mut() else {
                unreachable!()
            };
            if let Some(mark) = self.latest_mark() {
                if f.position < mark.through {
                    self.read(f, mark.through, None, false).await?;
                    if f.position == mark.through {
                        f.adopt_seqs(&mark);
                    }
                }
            }
            self.report(f, false, None);
            tokio::select! {
                _ = self.cancel.cancelled() => return Err(Stop::Cancelled),
                changed = leadership.changed() => {
                    if changed.is_err() { return Err(Stop::Cancelled) }
                    if leadership.borrow().is_leader() { return Ok(()) }
                }
                _ = self.replica.wait_beyond(self.replica.high_watermark(), Instant::now() + Duration::from_millis(500)) => {}
            }
        }
    }

    pub(super) fn report(&self, f: &Fold, leader: bool, emit_p99_ms: Option<f64>) {
        let hw = self.replica.high_watermark();
        let lag_ms = match f.last_record_ms {
            Some(t) if f.position < hw => now_ms().saturating_sub(t).max(0),
            _ => 0,
        };
        self.stats.set(
            &self.name,
            self.targets.source_partition,
            PartitionStats {
                leader,
                position: f.position,
                high_watermark: hw,
                lag_ms,
                window: f.op.stats(),
                emit_p99_ms,
                failed: None,
            },
        );
    }
}
