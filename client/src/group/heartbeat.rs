//! The heartbeat task of a group consumer: a background tokio task (so a slow handler between two
//! `poll`s does not miss its session) that joins the group, then heartbeats at the interval the
//! coordinator gives, and at once when woken (the final commit of revoked partitions finished, so
//! they are released; the consumer extended its deadline; a loss wants a rejoin). One request in
//! flight at a time: a wake while one is out is served right after its answer.
//!
//! Each heartbeat carries the subscription (the coordinator takes it from every heartbeat), the
//! partitions the consumer owns now or is still releasing ([`Membership::reported`]) and the time
//! left until its processing deadline. The answer
//! goes to [`Shared`]: the assignment for `poll` to reconcile, or a loss (`UNKNOWN_MEMBER_ID`,
//! `FENCED_MEMBER_EPOCH`, or no answer within the session), after which it joins again with epoch
//! 0 — unless the processing deadline has passed: then it waits for the next `poll` (a member that
//! does not poll must not keep joining and rebalancing the group). Coordinator errors find the
//! coordinator again with backoff; any other error stops the task and `poll` returns it.
//!
//! It never touches the fetching consumer, never commits and never calls the listener.

use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::wire::{
    ErrorCode, GroupHeartbeatRequest, Request, Response, LEAVE_EPOCH, STATIC_LEAVE_EPOCH,
};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::config::{GroupConsumerConfig, Subscription};
use super::coordinator::CoordinatorLink;
use super::membership::{by_topic, deadline_ms, Membership, Shared};
use crate::client::{backoff, unexpected};
use crate::error::{ClientError, Result};

/// The parts of every heartbeat that come from the configuration.
#[derive(Debug, Clone)]
pub(super) struct Spec {
    group: String,
    instance_id: String,
    client_id: String,
    topics: Vec<String>,
    regex: String,
    assignor: String,
    session_ms: u32,
}

impl Spec {
    pub(super) fn new(config: &GroupConsumerConfig) -> Spec {
        let (topics, regex) = match &config.subscription {
            Subscription::Topics(t) => (t.clone(), String::new()),
            Subscription::Pattern(p) => (Vec::new(), p.clone()),
        };
        Spec {
            group: config.group.clone(),
            instance_id: config.instance_id.clone().unwrap_or_default(),
            client_id: config.client_id.clone(),
            topics,
            regex,
            assignor: config.assignor.clone().unwrap_or_default(),
            session_ms: config.session_ms(),
        }
    }

    pub(super) fn is_static(&self) -> bool {
        !self.instance_id.is_empty()
    }

    /// The heartbeat (or join, at epoch 0) for the membership as it is at `now`.
    pub(super) fn heartbeat(&self, m: &Membership, now: Instant) -> GroupHeartbeatRequest {
        GroupHeartbeatRequest {
            group: self.group.clone(),
            member_id: m.member_id.clone(),
            member_epoch: m.epoch,
            instance_id: self.instance_id.clone(),
            client_id: self.client_id.clone(),
            topics: self.topics.clone(),
            regex: self.regex.clone(),
            assignor: self.assignor.clone(),
            session_timeout_ms: self.session_ms,
            deadline_ms: deadline_ms(m.deadline, now),
            owned: by_topic(&m.reported()),
        }
    }

    /// Leaving for good, or (a static member) for a restart: it keeps its assignment for the
    /// session.
    pub(super) fn leave(&self, member_id: &str) -> Request {
        Request::GroupHeartbeat(GroupHeartbeatRequest {
            group: self.group.clone(),
            member_id: member_id.to_string(),
            member_epoch: if self.is_static() {
                STATIC_LEAVE_EPOCH
            } else {
                LEAVE_EPOCH
            },
            instance_id: self.instance_id.clone(),
            client_id: self.client_id.clone(),
            ..GroupHeartbeatRequest::default()
        })
    }
}

/// What a heartbeat answer's error code means for the member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Ok,
    /// The membership is gone: drop the partitions, join again.
    Lost,
    /// Try again after a backoff (finding the coordinator again if it moved).
    Retry,
    /// Nothing a retry fixes (bad group id, unknown assignor, bad pattern, full group...).
    Fail,
}

pub(super) fn verdict(code: ErrorCode) -> Verdict {
    match code {
        ErrorCode::NONE => Verdict::Ok,
        ErrorCode::UNKNOWN_MEMBER_ID | ErrorCode::FENCED_MEMBER_EPOCH => Verdict::Lost,
        c if c.is_retriable() => Verdict::Retry,
        _ => Verdict::Fail,
    }
}

/// What the task does next.
enum Next {
    /// Heartbeat at this time (or sooner if woken).
    At(Instant),
    /// Only when woken.
    Woken,
}

/// The task: runs until aborted, or until a failure it hands to `poll`.
pub(super) async fn run(shared: Arc<Shared>, link: Arc<CoordinatorLink>, spec: Arc<Spec>) {
    let cfg = link.client().config().clone();
    let mut failures = 0u32;
    let mut last_ok = Instant::now();
    // Join at once.
    let mut next = Next::At(Instant::now());
    loop {
        match next {
            Next::At(at) => tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = shared.wake.notified() => {}
            },
            Next::Woken => shared.wake.notified().await,
        }
        let now = Instant::now();
        let (request, lost, joined, session, interval) = {
            let m = shared.lock();
            if m.epoch == 0 && m.deadline <= now {
                debug!(group = %spec.group, "processing deadline passed; not joining until the next poll");
                next = Next::Woken;
                continue;
            }
            (
                spec.heartbeat(&m, now),
                m.lost,
                m.epoch > 0,
                m.session,
                m.interval,
            )
        };
        // No answer within the session: the coordinator has evicted this member by now (or will
        // before an answer could say otherwise), so its partitions may already be someone else's.
        if let Some(s) = session.filter(|s| joined && now.duration_since(last_ok) > *s) {
            shared.lose(
                lost,
                &format!("no heartbeat answered within the session ({s:?})"),
            );
            next = Next::At(now);
            continue;
        }
        let timeout = session
            .unwrap_or(cfg.request_timeout)
            .min(cfg.request_timeout);
        let outcome = send(&link, request, timeout).await;
        let code = match &outcome {
            Ok(r) => r.error,
            Err(e) => e.code().unwrap_or(ErrorCode::REQUEST_TIMED_OUT),
        };
        let retry_after = |failures: u32| {
            let wait = backoff(cfg.retry_backoff, cfg.retry_backoff_max, failures);
            Next::At(Instant::now() + wait.min(interval.max(cfg.retry_backoff)))
        };
        next = match (outcome, verdict(code)) {
            (Ok(r), Verdict::Ok) => {
                failures = 0;
                if shared.answered(lost, &r) {
                    last_ok = now;
                }
                let interval = shared.lock().interval;
                Next::At(now + interval)
            }
            (Ok(r), Verdict::Lost) => {
                failures = 0;
                shared.lose(lost, &format!("{}: {}", r.error, r.message));
                Next::At(Instant::now())
            }
            (Ok(r), Verdict::Retry) => {
                failures += 1;
                warn!(group = %spec.group, error = %r.error, message = %r.message, "heartbeat refused; retrying");
                retry_after(failures)
            }
            (Err(e), _) if e.is_retriable() => {
                failures += 1;
                warn!(group = %spec.group, error = %e, "heartbeat failed; retrying");
                retry_after(failures)
            }
            (Ok(r), Verdict::Fail) => {
                let e = ClientError::broker(
                    r.error,
                    format!("heartbeat of group {}: {}", spec.group, r.message),
                );
                warn!(group = %spec.group, error = %e, "heartbeat failed; stopping");
                shared.fail(e);
                return;
            }
            (Err(e), _) => {
                warn!(group = %spec.group, error = %e, "heartbeat failed; stopping");
                shared.fail(e);
                return;
            }
        };
    }
}

/// One heartbeat to the coordinator.
async fn send(
    link: &CoordinatorLink,
    request: GroupHeartbeatRequest,
    timeout: Duration,
) -> Result<sluice_protocol::wire::GroupHeartbeatResponse> {
    match link
        .send_once(&Request::GroupHeartbeat(request), timeout)
        .await?
    {
        Response::GroupHeartbeat(r) => Ok(r),
        _ => Err(unexpected("answer to heartbeat")),
    }
}
