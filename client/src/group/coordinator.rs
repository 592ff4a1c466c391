//! The way to a consumer group's coordinator: FindCoordinator (asked of any bootstrap broker), the
//! coordinator's address cached, and requests sent to it. A connection failure, a timeout, or an
//! answer saying `NOT_COORDINATOR` or `COORDINATOR_NOT_AVAILABLE` forgets the address, so the next
//! request finds the coordinator again. Shared by the group consumer and the admin client's group
//! calls (`pub(crate)`).
//!
//! It interprets nothing of an answer but those two coordinator errors (returned as
//! [`ClientError::Broker`], retriable); every other error in an answer is the caller's. It keeps no
//! membership and never retries on its own except in [`CoordinatorLink::send_until`].

use std::sync::Mutex;
use std::time::Duration;

use sluice_protocol::wire::{ErrorCode, FindCoordinatorRequest, Request, Response};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::client::{backoff, unexpected, Client};
use crate::connection::lock;
use crate::error::{ClientError, Result};

/// A group's coordinator, found on demand and cached.
#[derive(Debug)]
pub(crate) struct CoordinatorLink {
    client: Client,
    group: String,
    /// `host:port` of the coordinator, while it is believed to be one.
    addr: Mutex<Option<String>>,
}

/// The group-level error an answer of a group API carries, if any (`NONE` is none).
pub(crate) fn answer_error(r: &Response) -> Option<(ErrorCode, &str)> {
    let (code, message) = match r {
        Response::FindCoordinator(a) => (a.error, a.message.as_str()),
        Response::GroupHeartbeat(a) => (a.error, a.message.as_str()),
        Response::OffsetCommit(a) => (a.error, a.message.as_str()),
        Response::OffsetFetch(a) => (a.error, a.message.as_str()),
        Response::ListGroups(a) => (a.error, a.message.as_str()),
        Response::DescribeGroup(a) => (a.error, a.message.as_str()),
        Response::ResetOffsets(a) | Response::DeleteGroup(a) | Response::AlterGroupConfig(a) => {
            (a.error, a.message.as_str())
        }
        _ => return None,
    };
    (!code.is_ok()).then_some((code, message))
}

/// Whether `code` sends the client back to FindCoordinator.
pub(crate) fn is_coordinator_error(code: ErrorCode) -> bool {
    code == ErrorCode::NOT_COORDINATOR || code == ErrorCode::COORDINATOR_NOT_AVAILABLE
}

impl CoordinatorLink {
    pub(crate) fn new(client: Client, group: impl Into<String>) -> CoordinatorLink {
        CoordinatorLink {
            client,
            group: group.into(),
            addr: Mutex::new(None),
        }
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn group(&self) -> &str {
        &self.group
    }

    /// Forgets the cached address: the next request asks FindCoordinator again.
    pub(crate) fn forget(&self) {
        if let Some(a) = lock(&self.addr).take() {
            debug!(group = %self.group, coordinator = %a, "forgetting the group coordinator");
        }
    }

    /// The coordinator's address: the cached one, or FindCoordinator asked of a bootstrap broker
    /// (then any broker the metadata named). One attempt: an error answer is returned as
    /// [`ClientError::Broker`] (`COORDINATOR_NOT_AVAILABLE` while the offsets topic is created).
    pub(crate) async fn address(&self) -> Result<String> {
        if let Some(a) = lock(&self.addr).clone() {
            return Ok(a);
        }
        let request = Request::FindCoordinator(FindCoordinatorRequest {
            group: self.group.clone(),
        });
        let Response::FindCoordinator(r) = self.client.request(&request).await? else {
            return Err(unexpected("answer to find coordinator"));
        };
        if !r.error.is_ok() {
            return Err(ClientError::broker(
                r.error,
                format!("find coordinator of group {}: {}", self.group, r.message),
            ));
        }
        if r.host.is_empty() {
            return Err(unexpected("find coordinator answered no address"));
        }
        debug!(group = %self.group, coordinator = %r.host, node = r.node_id, "found the group coordinator");
        *lock(&self.addr) = Some(r.host.clone());
        Ok(r.host)
    }

    /// Sends `request` to the coordinator once, waiting up to `timeout` for the answer. A
    /// connection failure or a timeout, and an answer whose group-level error is `NOT_COORDINATOR`
    /// or `COORDINATOR_NOT_AVAILABLE`, forget the coordinator and come back as a retriable error;
    /// any other answer comes back as it is.
    pub(crate) async fn send_once(&self, request: &Request, timeout: Duration) -> Result<Response> {
        let addr = self.address().await?;
        let response = match self
            .client
            .request_to_with_timeout(&addr, request, timeout)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                if e.is_retriable() {
                    self.forget();
                }
                return Err(e);
            }
        };
        if let Some((code, message)) = answer_error(&response) {
            if is_coordinator_error(code) {
                self.forget();
                return Err(ClientError::broker(
                    code,
                    format!("group {} at {addr}: {message}", self.group),
                ));
            }
        }
        Ok(response)
    }

    /// [`send_once`](Self::send_once), retrying retriable failures (finding the coordinator again
    /// as needed) with the client's backoff until `until`; the last failure when time is up.
    pub(crate) async fn send_until(&self, request: &Request, until: Instant) -> Result<Response> {
        let cfg = self.client.config();
        let mut attempt = 0;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let timeout = left.min(cfg.request_timeout).max(Duration::from_millis(1));
            match self.send_once(request, timeout).await {
                Err(e) if e.is_retriable() => {
                    attempt += 1;
                    let wait = backoff(cfg.retry_backoff, cfg.retry_backoff_max, attempt);
                    if Instant::now() + wait >= until {
                        return Err(e);
                    }
                    warn!(group = %self.group, api = ?request.api_key(), attempt, error = %e, ?wait, "coordinator request failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }
}
