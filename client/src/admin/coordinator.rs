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

/// Whether a group request should find the coordinator again and retry.
fn coordinator_moved(e: &ClientError) -> bool {
    e.is_connection_error()
        || matches!(
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

    async fn find_coordinator_until(&self, group: &str, deadline: Instant) -> Result<String> {
        let request = Request::FindCoordinator(FindCoordinatorRequest {
            group: group.to_string(),
        });
        let request = &request;
        self.until(
            deadline,
            "find coordinator",
            ClientError::is_retriable,
            || async {
                let Response::FindCoordinator(r) = self.client.request(request).await? else {
                    return Err(unexpected("answer to find coordinator"));
                };
                body_error(r.error, r.message)?;
                Ok(r.host)
            },
        )
        .await
    }

    /// Runs `op` until it succeeds, fails with an error `retry` rejects, or `deadline` passed,
    /// backing off between attempts.
    async fn until<T, F, Fut>(
        &self,
        deadline: Instant,
        what: &str,
        retry: fn(&ClientError) -> bool,
        mut op: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let cfg = self.client.config();
        let mut attempt = 0;
        loop {
            match op().await {
                Err(e) if retry(&e) && Instant::now() < deadline => {
                    attempt += 1;
                    let wait = backoff(cfg.retry_backoff, cfg.retry_backoff_max, attempt)
                        .min(deadline.saturating_duration_since(Instant::now()));
                    debug!(what, attempt, error = %e, ?wait, "retrying");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    /// Runs `op` with the address of `group`'s coordinator, finding it again (up to
    /// [`COORDINATOR_WAIT`]) when the coordinator moved.
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
        let op = &op;
        self.until(deadline, what, coordinator_moved, || async move {
            let addr = self.find_coordinator_until(group, deadline).await?;
            op(addr).await
        })
        .await
    }
}
