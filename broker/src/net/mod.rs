//! The binary protocol's socket side, and the only socket and framing code of the broker: accept
//! connections, read length-prefixed frames with every bound enforced, hand decoded requests to
//! [`crate::api::dispatch`], and write answers (record bytes straight from the segment maps).
//!
//! Bounds per connection: a frame longer than `max_frame_bytes` closes the connection before its
//! body is read; request bytes in flight (read but not yet answered) are capped by a semaphore, so a
//! client that sends faster than the broker answers is pushed back through TCP. A frame that does
//! not decode closes that one connection; a body that does not decode is answered with an error.
//! This module never interprets a request: what one means is `api/`'s business.

mod connection;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;

/// Accepts connections until `stop` is cancelled; each runs on `connections` (the caller waits
/// for them to drain). A connection stops reading when `stop` is cancelled and ends once its
/// in-flight requests are answered.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    connections: TaskTracker,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, "connection accepted");
                    connections.spawn(connection::run(stream, broker.clone(), stop.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}
