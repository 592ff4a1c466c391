//! The raw request transport: a caller's own wire-protocol [`Request`] sent to a broker it names
//! (or to a bootstrap broker), and the [`Response`] handed back as it came. The broker uses it for
//! its traffic between brokers (raft messages, forwarded requests, liveness pings).
//!
//! **Not a stable API.** It exposes the wire protocol itself, which changes with the broker, so it
//! is hidden from the documentation and may change or go away with any release. Applications use
//! [`Producer`](crate::Producer), [`Consumer`](crate::Consumer) and [`Admin`](crate::Admin).
//!
//! The methods are inherent methods of [`Client`] (`client.request_to(..)` needs no import); this
//! module holds them and [`ResponseFuture`], the answer of a request queued with
//! [`Client::submit_to`]. They never retry, never touch the metadata cache, and interpret nothing
//! of an answer but its top-level error code; a connection that fails under them is dropped, so
//! the next request reconnects.

use std::time::Duration;

use sluice_protocol::wire::{Request, Response};

use crate::client::Client;
use crate::error::{ClientError, Result};

pub use crate::connection::ResponseFuture;

impl Client {
    /// Raw transport for broker-to-broker traffic; not a stable API (see [`crate::raw`]).
    ///
    /// Sends `request` to `addr` and waits up to `timeout` for the answer. A top-level error code
    /// comes back as [`ClientError::Broker`]. A connection failure drops the connection.
    #[doc(hidden)]
    pub async fn request_to_with_timeout(
        &self,
        addr: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response> {
        let conn = self.connection(addr).await?;
        let result = conn.request(request, timeout).await;
        if let Err(e) = &result {
            if e.is_connection_error() {
                self.drop_connection(&conn);
            }
        }
        result
    }

    /// Raw transport for broker-to-broker traffic; not a stable API (see [`crate::raw`]).
    ///
    /// Queues `request` on the connection to `addr` and returns the future of its answer, without
    /// a timeout (the caller sets one). Requests submitted one after another (each call awaited
    /// before the next) are written in that order, so a caller can keep several in flight and
    /// still rely on the broker reading them in order, as raft replication streams do.
    #[doc(hidden)]
    pub async fn submit_to(&self, addr: &str, request: &Request) -> Result<ResponseFuture> {
        let conn = self.connection(addr).await?;
        let result = conn.submit(request).await;
        if let Err(e) = &result {
            if e.is_connection_error() {
                self.drop_connection(&conn);
            }
        }
        result
    }

    /// Raw transport for broker-to-broker traffic; not a stable API (see [`crate::raw`]).
    ///
    /// Sends `request` to `addr` with the configured request timeout.
    #[doc(hidden)]
    pub async fn request_to(&self, addr: &str, request: &Request) -> Result<Response> {
        self.request_to_with_timeout(addr, request, self.config().request_timeout)
            .await
    }

    /// Raw transport for broker-to-broker traffic; not a stable API (see [`crate::raw`]).
    ///
    /// Sends `request` to a bootstrap broker with the configured request timeout: the bootstrap
    /// addresses in order (`bootstrap` may list several, comma-separated), then every broker the
    /// metadata named, until one is reachable.
    #[doc(hidden)]
    pub async fn request(&self, request: &Request) -> Result<Response> {
        let mut candidates = self.bootstrap_addrs();
        for a in self.known_broker_addrs() {
            if !candidates.contains(&a) {
                candidates.push(a);
            }
        }
        let mut last = None;
        for addr in candidates {
            match self.request_to(&addr, request).await {
                Err(e) if e.is_connection_error() => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or(ClientError::Closed))
    }
}
