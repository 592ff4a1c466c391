//! One client or peer connection: a reader loop that enforces the frame and in-flight bounds and
//! dispatches in arrival order, and a writer task that sends answers as chunks (a fetch's record
//! bytes are the segment map's `Bytes`, written without a user-space copy).

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use sluice_protocol::wire::{self, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::api::{self, Answer, Pending};
use crate::broker::Broker;
use crate::metrics::{Bound, Held, Rejection};

/// One answer on its way to the socket, holding the request's in-flight bytes until written.
struct Outgoing {
    chunks: Vec<Bytes>,
    _permit: Inflight,
}

/// A request's in-flight bytes: its share of the connection's bound, and of the broker-wide gauge.
struct Inflight {
    _permit: OwnedSemaphorePermit,
    _held: Held,
}

fn encode(corr: u32, answer: Answer) -> Vec<Bytes> {
    match answer {
        Ok(resp) => wire::encode_response(corr, &resp),
        Err(e) => wire::encode_error_response(corr, e.code, &e.message),
    }
}

pub async fn run(stream: TcpStream, broker: Arc<Broker>, stop: CancellationToken) {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    let (mut rd, wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Outgoing>(1024);
    let writer = tokio::spawn(async move {
        let mut w = BufWriter::with_capacity(64 * 1024, wr);
        while let Some(out) = rx.recv().await {
            for c in &out.chunks {
                w.write_all(c).await?;
            }
            drop(out);
            if rx.is_empty() {
                w.flush().await?;
            }
        }
        w.flush().await?;
        w.shutdown().await
    });
    let max_frame = broker.config.max_frame_bytes;
    let mut conn = api::Connection {
        peer,
        ..api::Connection::default()
    };
    let inflight = Arc::new(Semaphore::new(
        broker.config.max_inflight_bytes_per_connection,
    ));
    loop {
        let len = tokio::select! {
            _ = stop.cancelled() => break,
            r = rd.read_u32_le() => match r {
                Ok(n) => n as usize,
                Err(_) => break, // peer closed
            },
        };
        if len > max_frame || len < wire::REQUEST_HEADER_LEN {
            broker.metrics.rejected(Rejection::FrameTooLarge);
            tracing::warn!(
                ?peer,
                len,
                max_frame,
                "closing connection: frame length out of bounds"
            );
            break;
        }
        // Reserve the frame's bytes before reading it: a client with too much in flight waits here,
        // and TCP pushes back on it.
        let permit = match inflight.clone().try_acquire_many_owned(len as u32) {
            Ok(p) => p,
            Err(_) => {
                broker.metrics.waited(Bound::ConnectionInflight);
                let Ok(p) = inflight.clone().acquire_many_owned(len as u32).await else {
                    break;
                };
                p
            }
        };
        let permit = Inflight {
            _permit: permit,
            _held: broker.metrics.inflight(len),
        };
        // Read into spare capacity (no zeroing of up to a frame's worth of memory first).
        let mut buf = BytesMut::with_capacity(len);
        let mut eof = false;
        while buf.len() < len {
            let mut limited = (&mut rd).take((len - buf.len()) as u64);
            match limited.read_buf(&mut buf).await {
                Ok(0) | Err(_) => {
                    eof = true;
                    break;
                }
                Ok(_) => {}
            }
        }
        if eof {
            break;
        }
        let (header, request) = match wire::decode_request(buf.freeze()) {
            Ok(v) => v,
            Err(_) => {
                broker.metrics.rejected(Rejection::MalformedFrame);
                break;
            }
        };
        let corr = header.correlation_id;
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                broker.metrics.rejected(Rejection::MalformedRequest);
                tracing::debug!(?peer, error = %e, "bad request");
                let chunks = wire::encode_error_response(corr, ErrorCode::from(&e), &e.to_string());
                if tx
                    .send(Outgoing {
                        chunks,
                        _permit: permit,
                    })
                    .await
                    .is_err()
                {
                    break;
                }
                continue;
            }
        };
        conn.frame_len = len;
        let started = Instant::now();
        let latency = broker.metrics.request_latency(request.api_key());
        match api::dispatch(&broker, &mut conn, request).await {
            Pending::Ready(answer) => {
                let out = Outgoing {
                    chunks: encode(corr, answer),
                    _permit: permit,
                };
                latency.record(started.elapsed());
                if tx.send(out).await.is_err() {
                    break;
                }
            }
            Pending::Later(rest) => {
                let tx = tx.clone();
                let latency = latency.clone();
                tokio::spawn(async move {
                    // The permit is held until the answer is queued (or there is none).
                    let answer = rest.await;
                    latency.record(started.elapsed());
                    if let Some(answer) = answer {
                        let _ = tx
                            .send(Outgoing {
                                chunks: encode(corr, answer),
                                _permit: permit,
                            })
                            .await;
                    }
                });
            }
        }
    }
    drop(tx);
    match writer.await {
        Ok(Err(e)) => tracing::debug!(?peer, error = %e, "connection write failed"),
        Err(e) => tracing::debug!(?peer, error = %e, "connection writer ended abnormally"),
        Ok(Ok(())) => {}
    }
}
