//! Reaching a consumer group's coordinator for [`Admin`]'s group calls: FindCoordinator (any
//! broker answers; the first call of a cluster creates the offsets topic), and running a request
//! on the coordinator, finding it again whenever the answer is `NOT_COORDINATOR` /
//! `COORDINATOR_NOT_AVAILABLE` or the connection fails, for up to [`COORDINATOR_WAIT`]. It sends
//! nothing but FindCoordinator itself and interprets no other answer.

use std::future::Future;
use std::time::Duration;

use sluice_protocol::wire::{ErrorCode, FindCoordinatorRequest, Request, Response};
use tokio::time::Instant;
use tracing::debug;

use super::Admin;
use crate::client::{backoff, unexpected};
use crate::error::{ClientError, Result};

/// How long a group request keeps looking for the group's coordinator (while the offsets topic
/// is created, or a new coordinator takes over) before giving up.
pub const COORDINATOR_WAIT: Duration = Duration::from_secs(20);

/// The cluster has no coordinator for the group at the moment (or this broker stopped being it).
fn no_coordinator(e: &ClientError) -> bool {
    matches!(
        e.code(),
        Some(ErrorCode::NOT_COORDINATOR | ErrorCode::COORDINATOR_NOT_AVAILABLE)
    )
}

/// An error code in an answer's body as a result.
pub(super) fn body_error(code: ErrorCode, message: String) -> Result<()> {
    if code.is_ok() {
        Ok(())
    } else {
        Err(ClientError::broker(code, message))
    }
}

impl Admin {
    /// The `host:port` of the broker coordinating `group`. Retries while the cluster has no
    /// coordinator for it (the first call creates the offsets topic), up to [`COORDINATOR_WAIT`].
    pub async fn find_coordinator(&self, group: &str) -> Result<String> {
        let deadline = Instant::now() + COORDINATOR_WAIT;
        self.find_coordinator_until(group, deadline).await
    }

    /// FindCoordinator until it names one or `deadline` passes. Transport failures are retried
    /// only as often as any request is ([`crate::ClientConfig::retries`]): a cluster that cannot
    /// be reached fails fast.
    async fn find_coordinator_until(&self, group: &str, deadline: Instant) -> Result<String> {
        let request = Request::FindCoordinator(FindCoordinatorRequest {
            group: group.to_string(),
        });
        let request = &request;
        let mut attempt = 0;
        loop {
            let found = self
                .client
                .retrying("find coordinator", || async {
                    let Response::FindCoordinator(r) = self.client.request(request).await? else {
                        return Err(unexpected("answer to find coordinator"));
                    };
                    body_error(r.error, r.message)?;
                    Ok(r.host)
                })
                .await;
            match found {
                Err(e) if no_coordinator(&e) && Instant::now() < deadline => {
                    attempt += 1;
                    self.pause("find coordinator", &e, attempt, deadline).await;
                }
                other => return other,
            }
        }
    }

    /// Sleeps before retry number `attempt` (the client's backoff), never past `deadline`.
    async fn pause(&self, what: &str, e: &ClientError, attempt: u32, deadline: Instant) {
        let cfg = self.client.config();
        let wait = backoff(cfg.retry_backoff, cfg.retry_backoff_max, attempt)
            .min(deadline.saturating_duration_since(Instant::now()));
        debug!(what, attempt, error = %e, ?wait, "retrying");
        tokio::time::sleep(wait).await;
    }

    /// Runs `op` with the address of `group`'s coordinator, finding it again (up to
    /// [`COORDINATOR_WAIT`]) when the answer says the coordinator moved or the connection to it
    /// failed. A failure to find one is final.
    pub(super) async fn on_coordinator<T, F, Fut>(
        &self,
        group: &str,
        what: &str,
        op: F,
    ) -> Result<T>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + COORDINATOR_WAIT;
        let mut attempt = 0;
        loop {
            let addr = self.find_coordinator_until(group, deadline).await?;
            match op(addr).await {
                Err(e)
                    if (no_coordinator(&e) || e.is_connection_error())
                        && Instant::now() < deadline =>
                {
                    attempt += 1;
                    self.pause(what, &e, attempt, deadline).await;
                }
                other => return other,
            }
        }
    }
}
