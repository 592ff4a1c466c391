//! One TCP connection to one broker, shared by every request going to that broker.
//!
//! A connection is two tasks and a table. The **writer task** takes encoded request frames from a
//! bounded channel and writes them in the order they were submitted, coalescing whatever is queued into
//! one flush. The **reader task** reads `u32`-LE length-prefixed response frames, refuses any longer
//! than the configured maximum (which closes the connection), and hands each to the waiter registered
//! under its correlation id in the pending table (`HashMap<u32, oneshot::Sender>`). A semaphore bounds
//! the requests in flight: a permit is taken before a request is queued and given back when its answer
//! arrives (or, for a request without answer, once it is written).
//!
//! Produce requests with `Acks::None` get no answer from the broker, so they register no waiter
//! ([`Connection::submit_oneway`]). When either task fails, the connection is marked closed, every
//! waiter gets the error, and the owner ([`crate::Client`]) drops it so the next request reconnects.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sluice_protocol::wire::{
    decode_response, encode_request, response_correlation_id, ApiKey, Request, Response,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, trace};

use crate::error::{ClientError, Result};

/// Socket buffer sizes of the reader and the writer.
const IO_BUFFER: usize = 64 << 10;

/// Settings of one connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionConfig {
    pub connect_timeout: Duration,
    pub max_in_flight: usize,
    pub max_frame: usize,
    pub local_ip: Option<std::net::IpAddr>,
}

/// Locks a mutex, recovering the data if a thread panicked while holding it (the tables guarded here
/// stay consistent across any single operation).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A request waiting for its answer.
struct Waiter {
    api: ApiKey,
    tx: oneshot::Sender<Result<Response>>,
    _permit: OwnedSemaphorePermit,
}

#[derive(Default)]
struct Table {
    pending: HashMap<u32, Waiter>,
    /// Set once, when the connection fails or is closed; later requests get this error.
    closed: Option<ClientError>,
}

/// State shared by the handle and both tasks.
struct Shared {
    addr: String,
    table: Mutex<Table>,
    in_flight: Arc<Semaphore>,
    closed: watch::Sender<bool>,
}

impl Shared {
    /// Marks the connection closed with `error` and fails every waiter. Idempotent: the first error
    /// wins.
    fn fail(&self, error: ClientError) {
        let drained: Vec<Waiter> = {
            let mut t = lock(&self.table);
            if t.closed.is_some() {
                return;
            }
            debug!(addr = %self.addr, %error, "connection closed");
            t.closed = Some(error.clone());
            t.pending.drain().map(|(_, w)| w).collect()
        };
        self.in_flight.close();
        self.closed.send_replace(true);
        for w in drained {
            let _ = w.tx.send(Err(error.clone()));
        }
    }

    fn closed_error(&self) -> ClientError {
        lock(&self.table)
            .closed
            .clone()
            .unwrap_or_else(|| self.connection_closed("closed"))
    }

    fn connection_closed(&self, reason: &str) -> ClientError {
        ClientError::Connection {
            addr: self.addr.clone(),
            reason: reason.to_string(),
        }
    }
}

/// A frame for the writer task.
struct Outgoing {
    chunks: Vec<Bytes>,
    /// For requests without answer: told once the frame is written (and holds the in-flight permit
    /// until then).
    written: Option<(oneshot::Sender<Result<()>>, OwnedSemaphorePermit)>,
}

/// One connection to one broker. Cheap to share behind an `Arc`; closed when the last handle drops.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Outgoing>,
    next_correlation: AtomicU32,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.shared.addr)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Connects to `addr`, from `local_ip` when one is given (a broker's peer connections leave from
/// its own address, so a network rule about that address applies to them).
async fn open(addr: &str, local_ip: Option<std::net::IpAddr>) -> std::io::Result<TcpStream> {
    let Some(ip) = local_ip else {
        return TcpStream::connect(addr).await;
    };
    let mut last = None;
    for target in tokio::net::lookup_host(addr).await? {
        let socket = if target.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.bind(std::net::SocketAddr::new(ip, 0))?;
        match socket.connect(target).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other(format!("{addr} resolves to nothing"))))
}

impl Connection {
    /// Connects to `addr` and starts the reader and writer tasks. Must be called inside a tokio
    /// runtime.
    pub(crate) async fn connect(addr: &str, config: &ConnectionConfig) -> Result<Arc<Connection>> {
        let stream = tokio::time::timeout(config.connect_timeout, open(addr, config.local_ip))
            .await
            .map_err(|_| ClientError::Timeout(config.connect_timeout))?
            .map_err(|e| ClientError::io(addr, e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| ClientError::io(addr, e))?;
        debug!(addr, "connected");
        let (rd, wr) = stream.into_split();
        let max_in_flight = config.max_in_flight.max(1);
        let (closed, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            addr: addr.to_string(),
            table: Mutex::new(Table::default()),
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            closed,
        });
        let (tx, rx) = mpsc::channel(max_in_flight);

        let s = shared.clone();
        let mut closed_rx = shared.closed.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                e = write_loop(&s, rx, wr) => s.fail(e),
                _ = closed_rx.wait_for(|c| *c) => {}
            }
        });
        let s = shared.clone();
        let mut closed_rx = shared.closed.subscribe();
        let max_frame = config.max_frame;
        tokio::spawn(async move {
            tokio::select! {
                e = read_loop(&s, rd, max_frame) => s.fail(e),
                _ = closed_rx.wait_for(|c| *c) => {}
            }
        });
        Ok(Arc::new(Connection {
            shared,
            tx,
            next_correlation: AtomicU32::new(1),
        }))
    }

    /// The address this connection went to.
    pub(crate) fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// Whether the connection failed or was closed; a closed connection never reopens.
    pub(crate) fn is_closed(&self) -> bool {
        *self.shared.closed.borrow()
    }

    /// Queues `request` and returns the future of its answer. Requests submitted one after another
    /// are written in that order. Waits for an in-flight slot first.
    pub(crate) async fn submit(self: &Arc<Self>, request: &Request) -> Result<ResponseFuture> {
        let permit = self
            .shared
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| self.shared.closed_error())?;
        let correlation = self.next_correlation.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut t = lock(&self.shared.table);
            if let Some(e) = &t.closed {
                return Err(e.clone());
            }
            t.pending.insert(
                correlation,
                Waiter {
                    api: request.api_key(),
                    tx,
                    _permit: permit,
                },
            );
        }
        // From here on the guard removes the waiter if the caller gives up.
        let fut = ResponseFuture {
            rx,
            conn: self.clone(),
            correlation,
        };
        let chunks = encode_request(request, correlation);
        trace!(addr = %self.shared.addr, correlation, api = ?request.api_key(), "request");
        self.tx
            .send(Outgoing {
                chunks,
                written: None,
            })
            .await
            .map_err(|_| self.shared.closed_error())?;
        Ok(fut)
    }

    /// Queues a request the broker does not answer (produce with `Acks::None`); the returned future
    /// resolves once the frame is written to the socket.
    pub(crate) async fn submit_oneway(
        &self,
        request: &Request,
    ) -> Result<impl Future<Output = Result<()>> + Send + 'static> {
        let permit = self
            .shared
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| self.shared.closed_error())?;
        if let Some(e) = &lock(&self.shared.table).closed {
            return Err(e.clone());
        }
        let correlation = self.next_correlation.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Outgoing {
                chunks: encode_request(request, correlation),
                written: Some((tx, permit)),
            })
            .await
            .map_err(|_| self.shared.closed_error())?;
        let shared = self.shared.clone();
        Ok(async move {
            match rx.await {
                Ok(r) => r,
                Err(_) => Err(shared.closed_error()),
            }
        })
    }

    /// Sends `request` and waits up to `timeout` for its answer.
    pub(crate) async fn request(
        self: &Arc<Self>,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response> {
        let fut = self.submit(request).await?;
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    /// Closes the connection: both tasks stop and every waiter fails with [`ClientError::Closed`].
    pub(crate) fn close(&self) {
        self.shared.fail(ClientError::Closed);
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.fail(ClientError::Closed);
    }
}

/// The answer to one request. Dropping it abandons the request: its waiter is removed, and an answer
/// that still arrives is discarded.
#[must_use = "dropping the future abandons the request's answer"]
#[derive(Debug)]
pub struct ResponseFuture {
    rx: oneshot::Receiver<Result<Response>>,
    /// Keeps the connection open while the answer is awaited.
    conn: Arc<Connection>,
    correlation: u32,
}

impl Future for ResponseFuture {
    type Output = Result<Response>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(r)) => Poll::Ready(r),
            Poll::Ready(Err(_)) => Poll::Ready(Err(self.conn.shared.closed_error())),
        }
    }
}

impl Drop for ResponseFuture {
    fn drop(&mut self) {
        // Usually the reader already removed the waiter; this only matters for abandoned requests.
        lock(&self.conn.shared.table)
            .pending
            .remove(&self.correlation);
    }
}

/// Writes queued frames until the channel closes or a write fails. Returns why it stopped.
async fn write_loop(
    shared: &Shared,
    mut rx: mpsc::Receiver<Outgoing>,
    wr: OwnedWriteHalf,
) -> ClientError {
    let mut w = BufWriter::with_capacity(IO_BUFFER, wr);
    let mut written = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut result = Ok(());
        // Write everything already queued, then flush once.
        while let Some(out) = next.take() {
            for chunk in &out.chunks {
                if let Err(e) = w.write_all(chunk).await {
                    result = Err(e);
                    break;
                }
            }
            if let Some(done) = out.written {
                written.push(done);
            }
            if result.is_err() {
                break;
            }
            next = rx.try_recv().ok();
        }
        if result.is_ok() {
            result = w.flush().await;
        }
        match result {
            Ok(()) => {
                for (tx, _permit) in written.drain(..) {
                    let _ = tx.send(Ok(()));
                }
            }
            Err(e) => {
                let err = ClientError::io(&shared.addr, e);
                for (tx, _permit) in written.drain(..) {
                    let _ = tx.send(Err(err.clone()));
                }
                return err;
            }
        }
    }
    // Every handle is gone: nothing more will be sent.
    let _ = w.shutdown().await;
    ClientError::Closed
}

/// Reads response frames and routes them to their waiters until the socket fails or a frame is
/// invalid. Returns why it stopped.
async fn read_loop(shared: &Shared, rd: OwnedReadHalf, max_frame: usize) -> ClientError {
    let mut r = BufReader::with_capacity(IO_BUFFER, rd);
    // Frames are read into one buffer and split off it: once the frames taken from it are dropped,
    // `reserve` reuses its memory. A new allocation per frame (a MiB per fetch) landed in fresh
    // pages each time, with a page fault per page and, on VMs, a slow first touch.
    let mut pool = BytesMut::new();
    loop {
        let len = match r.read_u32_le().await {
            Ok(n) => n as usize,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return shared.connection_closed("closed by the broker");
            }
            Err(e) => return ClientError::io(&shared.addr, e),
        };
        if len > max_frame {
            return ClientError::FrameTooLarge {
                addr: shared.addr.clone(),
                len,
                max: max_frame,
            };
        }
        pool.reserve(len);
        while pool.len() < len {
            let mut limited = (&mut r).take((len - pool.len()) as u64);
            match limited.read_buf(&mut pool).await {
                Ok(0) => return shared.connection_closed("closed by the broker mid-frame"),
                Ok(_) => {}
                Err(e) => return ClientError::io(&shared.addr, e),
            }
        }
        let frame = pool.split_to(len).freeze();
        let correlation = match response_correlation_id(&frame) {
            Ok(c) => c,
            Err(e) => return ClientError::Protocol(e),
        };
        let waiter = lock(&shared.table).pending.remove(&correlation);
        let Some(waiter) = waiter else {
            debug!(addr = %shared.addr, correlation, "answer to an abandoned request dropped");
            continue;
        };
        let result = match decode_response(waiter.api, frame) {
            Ok((_, Ok(response))) => Ok(response),
            Ok((_, Err(top))) => Err(ClientError::broker(top.code, top.message)),
            Err(e) => Err(ClientError::Protocol(e)),
        };
        trace!(addr = %shared.addr, correlation, ok = result.is_ok(), "response");
        let _ = waiter.tx.send(result);
    }
}
