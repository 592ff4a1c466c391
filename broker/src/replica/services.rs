//! Leader services: work that runs on a replica only while it leads its group.
//!
//! A [`LeaderService`] is started, with the term, when the replica's leadership watch says it leads,
//! and cancelled (its [`CancellationToken`]) as soon as the watch says otherwise or the term changes;
//! the next term starts a fresh run. The leader report to the metadata group is the first service;
//! a consumer group's coordinator and the window operator are the next. This module only runs and
//! cancels services; what a service does is its own business, and it must return soon after its
//! token is cancelled (a service that outlives its term would act on a log it no longer leads).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::leadership::Leadership;

/// The partition and term a service run belongs to.
#[derive(Debug, Clone)]
pub struct LeaderContext {
    pub topic: Arc<str>,
    pub topic_id: u32,
    pub partition: u32,
    /// The term this replica leads in; the run ends when the term does.
    pub term: u64,
    /// Cancelled when this replica stops leading in `term` (or the replica closes).
    pub cancel: CancellationToken,
}

/// A boxed service run.
pub type ServiceRun = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Something to run on every partition leader (of the topics it is registered for).
pub trait LeaderService: Send + Sync + std::fmt::Debug + 'static {
    /// A short stable name, for logs.
    fn name(&self) -> &'static str;
    /// One run for one term. It should return once `ctx.cancel` is cancelled.
    fn start(&self, ctx: LeaderContext) -> ServiceRun;
}

/// Runs `services` on the replica while `leadership` says it leads; stops when `closed` is
/// cancelled (the replica closes), cancelling any run and waiting for it to end.
pub fn supervise(
    services: Vec<Arc<dyn LeaderService>>,
    mut leadership: watch::Receiver<Leadership>,
    base: LeaderContext,
    closed: CancellationToken,
) {
    if services.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let tracker = TaskTracker::new();
        // The run of the current term, if this replica leads.
        let mut running: Option<(u64, CancellationToken)> = None;
        loop {
            let now = leadership.borrow_and_update().clone();
            let want = match now {
                Leadership::Leader { term } => Some(term),
                _ => None,
            };
            if running.as_ref().map(|(t, _)| *t) != want {
                if let Some((term, cancel)) = running.take() {
                    cancel.cancel();
                    tracing::info!(topic = %base.topic, partition = base.partition, term, "leader services stopped");
                }
                if let Some(term) = want {
                    let cancel = closed.child_token();
                    for s in &services {
                        let ctx = LeaderContext {
                            term,
                            cancel: cancel.clone(),
                            ..base.clone()
                        };
                        tracing::debug!(service = s.name(), term, "starting leader service");
                        tracker.spawn(s.start(ctx));
                    }
                    tracing::info!(topic = %base.topic, partition = base.partition, term, "leader services started");
                    running = Some((term, cancel));
                }
            }
            tokio::select! {
                _ = closed.cancelled() => break,
                changed = leadership.changed() => if changed.is_err() { break },
            }
        }
        if let Some((term, cancel)) = running.take() {
            cancel.cancel();
            tracing::info!(topic = %base.topic, partition = base.partition, term, "leader services stopped");
        }
        tracker.close();
        tracker.wait().await;
    });
}
