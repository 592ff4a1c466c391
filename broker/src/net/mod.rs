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
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;

/// Accepts connections until `stop` is cancelled (a connection then stops reading), then waits up
/// to `grace` for in-flight requests to be answered and aborts the connections still open: nothing
/// of a connection runs once this returns.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    stop: CancellationToken,
    grace: Duration,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, "connection accepted");
                    let open = broker.metrics.connection();
                    let run = connection::run(stream, broker.clone(), stop.clone());
                    connections.spawn(async move {
                        run.await;
                        drop(open);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("in-flight requests did not finish within {grace:?}; closing anyway");
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}
