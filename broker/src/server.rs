//! The TCP server: accepts connections, reads length-prefixed frames with every bound enforced,
//! dispatches requests, writes responses (record bytes straight from the segment maps), and shuts
//! down gracefully.
//!
//! Bounds per connection: a frame longer than `max_frame_bytes` closes the connection before its body
//! is read; request bytes in flight (read but not yet answered) are capped by a semaphore, so a client
//! that sends faster than the broker answers is pushed back through TCP.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sluice_protocol::wire::{self, Acks, ErrorCode, RaftResponse, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::cluster::Cluster;
use crate::config::BrokerConfig;
use crate::handlers::{finish_produce, Broker};
use crate::raft::append_pipeline::AppendPipelines;
use crate::raft::codec::KIND_APPEND;
use crate::topics::Topics;

/// Why the broker could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the data directory: {0}")]
    Data(String),
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// One response on its way to the socket, holding the request's in-flight bytes until written.
struct Outgoing {
    chunks: Vec<Bytes>,
    _permit: Option<OwnedSemaphorePermit>,
}

/// Opens the data, binds the listener and returns the bound address and the serving future, which
/// resolves after `shutdown` fires and in-flight requests are answered and the logs closed.
pub async fn start(
    config: BrokerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl Future<Output = ()>), ServerError> {
    if config.max_produce_bytes > Semaphore::MAX_PERMITS
        || config.max_inflight_bytes_per_connection > Semaphore::MAX_PERMITS
        || config.max_frame_bytes > u32::MAX as usize
    {
        return Err(ServerError::Config("byte limits are too large".into()));
    }
    if config.max_inflight_bytes_per_connection < config.max_frame_bytes {
        return Err(ServerError::Config(
            "max_inflight_bytes_per_connection must be at least max_frame_bytes".into(),
        ));
    }
    let topics = Topics::new(
        &config.data_dir,
        config.flush,
        config.page_cache_window_bytes,
    )
    .map_err(|(_, m)| ServerError::Data(m))?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    // This broker's address as the cluster knows it: its entry in the peers, or the bound address.
    let advertised = config
        .peers
        .iter()
        .find(|(id, _)| *id == config.node_id)
        .map_or_else(|| addr.to_string(), |(_, a)| a.clone());
    let cluster = Cluster::start(&config, &advertised)
        .await
        .map_err(ServerError::Data)?;
    if config.peers.len() <= 1 && config.join.is_none() {
        // Alone, the metadata group elects itself at once: wait for that, so the first request
        // finds a leader. A cluster waits for its peers in the background instead.
        cluster
            .wait_for_metadata_leader(config.raft_election_timeout * 4)
            .await;
    }
    let broker = Arc::new_cyclic(|me| Broker {
        produce_budget: Arc::new(Semaphore::new(config.max_produce_bytes)),
        config,
        topics,
        advertised: addr,
        cluster,
        me: me.clone(),
    });
    if let Some(join) = broker.config.join.clone() {
        tokio::spawn(ask_to_join(broker.clone(), join));
    } else if broker.config.peers.len() <= 1 {
        // Alone, this broker can bring up its replicas before it answers anyone: a client that saw
        // a topic before a restart finds it again at once.
        broker.cluster.wait_for_metadata_applied().await;
        crate::cluster::reconcile::reconcile_once(&broker).await;
        broker
            .topics
            .wait_for_leaders(broker.config.raft_election_timeout * 4)
            .await;
    }
    Ok((addr, serve(listener, broker, shutdown)))
}

async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let maintenance = tokio::spawn(maintain(broker.clone(), stop_rx.clone()));
    let reconciler = tokio::spawn(crate::cluster::reconcile::run(
        broker.clone(),
        stop_rx.clone(),
    ));
    let pinger = tokio::spawn(crate::cluster::quiesce::ping_peers(
        broker.clone(),
        stop_rx.clone(),
    ));
    let quiescer = tokio::spawn(crate::cluster::quiesce::run(
        broker.clone(),
        stop_rx.clone(),
    ));
    let mut conns = JoinSet::new();
    let mut stop = stop_rx.clone();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, "connection accepted");
                    conns.spawn(connection(stream, broker.clone(), stop_rx.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    let grace = broker.config.shutdown_grace;
    if tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within {grace:?}; closing anyway");
        conns.abort_all();
    }
    maintenance.abort();
    reconciler.abort();
    pinger.abort();
    quiescer.abort();
    broker.topics.close_all(&broker.cluster.ctx).await;
    broker.cluster.shutdown().await;
    tracing::info!("broker stopped; logs flushed and closed");
}

/// Retention and compaction, every `maintenance_interval`.
async fn maintain(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(broker.config.maintenance_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            if let Err(e) = b.cluster.apply_metadata_retention() {
                tracing::warn!(error = %e, "metadata log retention failed");
            }
            for t in b.topics.list() {
                for p in t.partitions.values() {
                    // Raft may still need everything from its first retained entry on.
                    p.group.log.with_retention_limit(|limit| {
                        if let Err(e) = p.log().apply_retention_below(now, limit) {
                            tracing::warn!(topic = %t.name, partition = p.id, error = %e, "retention failed");
                        }
                        if t.settings.compact {
                            if let Err(e) = p.log().compact_below(now, limit) {
                                tracing::warn!(topic = %t.name, partition = p.id, error = %e, "compaction failed");
                            }
                        }
                    });
                }
            }
        })
        .await;
    }
}

async fn connection(stream: TcpStream, broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
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
    // Raft appends from a peer keep their order per group (pipelined replication).
    let mut appends = AppendPipelines::new();
    let inflight = Arc::new(Semaphore::new(
        broker.config.max_inflight_bytes_per_connection,
    ));
    loop {
        let len = tokio::select! {
            _ = stop.changed() => break,
            r = rd.read_u32_le() => match r {
                Ok(n) => n as usize,
                Err(_) => break, // peer closed
            },
        };
        if len > max_frame || len < wire::REQUEST_HEADER_LEN {
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
        let Ok(permit) = inflight.clone().acquire_many_owned(len as u32).await else {
            break;
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
            Err(_) => break,
        };
        let corr = header.correlation_id;
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(?peer, error = %e, "bad request");
                let chunks = wire::encode_error_response(corr, ErrorCode::from(&e), &e.to_string());
                if tx
                    .send(Outgoing {
                        chunks,
                        _permit: Some(permit),
                    })
                    .await
                    .is_err()
                {
                    break;
                }
                continue;
            }
        };
        if !dispatch(&broker, request, corr, permit, &tx, len, &mut appends).await {
            break;
        }
    }
    drop(tx);
    match writer.await {
        Ok(Err(e)) => tracing::debug!(?peer, error = %e, "connection write failed"),
        Err(e) => tracing::debug!(?peer, error = %e, "connection writer ended abnormally"),
        Ok(Ok(())) => {}
    }
}

/// Handles one request; returns false if the connection should close.
async fn dispatch(
    broker: &Arc<Broker>,
    request: Request,
    corr: u32,
    permit: OwnedSemaphorePermit,
    tx: &mpsc::Sender<Outgoing>,
    frame_len: usize,
    appends: &mut AppendPipelines,
) -> bool {
    let respond = move |resp: Response, permit| Outgoing {
        chunks: wire::encode_response(corr, &resp),
        _permit: Some(permit),
    };
    match request {
        Request::ApiVersions => tx
            .send(respond(broker.api_versions(), permit))
            .await
            .is_ok(),
        Request::Metadata(m) => tx.send(respond(broker.metadata(&m), permit)).await.is_ok(),
        Request::ListOffsets(l) => tx
            .send(respond(broker.list_offsets(&l), permit))
            .await
            .is_ok(),
        Request::Produce(p) => {
            // Produce bytes of all connections together are bounded too: past the bound this
            // connection stops reading until earlier produces are answered.
            let Ok(budget) = broker
                .produce_budget
                .clone()
                .acquire_many_owned(frame_len.min(broker.config.max_produce_bytes) as u32)
                .await
            else {
                return false;
            };
            // Proposals happen here, in the connection's request order.
            let pending = broker.produce_propose(&p).await;
            let timeout = broker.config.replication_timeout;
            let tx = tx.clone();
            tokio::spawn(async move {
                let _budget = budget;
                let resp = finish_produce(pending, timeout).await;
                if p.acks != Acks::None {
                    let _ = tx.send(respond(Response::Produce(resp), permit)).await;
                }
            });
            true
        }
        Request::Fetch(f) => {
            let broker = broker.clone();
            answer_later(tx, corr, permit, async move { broker.fetch(&f).await });
            true
        }
        Request::CreateTopics(c) => {
            let broker = broker.clone();
            answer_later(
                tx,
                corr,
                permit,
                async move { broker.create_topics(c).await },
            );
            true
        }
        Request::MetadataCommand(m) => {
            let broker = broker.clone();
            answer_later(
                tx,
                corr,
                permit,
                async move { broker.metadata_command(m).await },
            );
            true
        }
        Request::AlterReplicas(a) => {
            let broker = broker.clone();
            answer_later(
                tx,
                corr,
                permit,
                async move { broker.alter_replicas(a).await },
            );
            true
        }
        Request::AddBroker(a) => {
            let broker = broker.clone();
            answer_later(tx, corr, permit, async move { broker.add_broker(a).await });
            true
        }
        Request::Raft(r) if r.kind == KIND_APPEND => {
            // Queued here, in the connection's frame order; answered when raft has flushed it.
            let answer = appends.submit(&broker.cluster.ctx.registry, r);
            let tx = tx.clone();
            tokio::spawn(async move {
                let answer = match answer {
                    Ok(rx) => rx.await.unwrap_or_else(|_| {
                        Err((
                            ErrorCode::BROKER_SHUTTING_DOWN,
                            "the group's replication stream ended before this append".into(),
                        ))
                    }),
                    Err(e) => Err(e),
                };
                let chunks = match answer {
                    Ok(body) => wire::encode_response(corr, &Response::Raft(RaftResponse { body })),
                    Err((code, msg)) => wire::encode_error_response(corr, code, &msg),
                };
                let _ = tx
                    .send(Outgoing {
                        chunks,
                        _permit: Some(permit),
                    })
                    .await;
            });
            true
        }
        Request::Raft(r) => {
            let broker = broker.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let chunks = match broker.cluster.ctx.registry.handle(r).await {
                    Ok(body) => wire::encode_response(corr, &Response::Raft(RaftResponse { body })),
                    Err((code, msg)) => wire::encode_error_response(corr, code, &msg),
                };
                let _ = tx
                    .send(Outgoing {
                        chunks,
                        _permit: Some(permit),
                    })
                    .await;
            });
            true
        }
        Request::DeleteTopics(d) => {
            let broker = broker.clone();
            answer_later(
                tx,
                corr,
                permit,
                async move { broker.delete_topics(d).await },
            );
            true
        }
    }
}

/// Answers a request from its own task (it may wait: long polls, raft, forwarding), holding the
/// request's in-flight bytes until the answer is queued.
fn answer_later(
    tx: &mpsc::Sender<Outgoing>,
    corr: u32,
    permit: OwnedSemaphorePermit,
    answer: impl Future<Output = Response> + Send + 'static,
) {
    let tx = tx.clone();
    tokio::spawn(async move {
        let chunks = wire::encode_response(corr, &answer.await);
        let _ = tx
            .send(Outgoing {
                chunks,
                _permit: Some(permit),
            })
            .await;
    });
}

/// A broker started with `--join`: asks the cluster (through `via`) to add it, until it is a member.
async fn ask_to_join(broker: Arc<Broker>, via: String) {
    let me = broker.cluster.ctx.node_id;
    let address = broker
        .config
        .peers
        .iter()
        .find(|(id, _)| u64::from(*id) == me)
        .map_or_else(|| broker.advertised.to_string(), |(_, a)| a.clone());
    let request = Request::AddBroker(wire::AddBrokerRequest {
        node_id: me as u32,
        address,
    });
    loop {
        if broker.cluster.metadata.brokers().contains_key(&(me as u32)) {
            tracing::info!("joined the cluster");
            return;
        }
        match broker
            .cluster
            .ctx
            .peers
            .client()
            .request_to(&via, &request)
            .await
        {
            Ok(Response::AddBroker(r)) if r.error.is_ok() => {}
            Ok(Response::AddBroker(r)) => {
                tracing::warn!(%via, error = %r.error, message = r.message, "join refused; retrying");
            }
            Ok(_) => tracing::warn!(%via, "unexpected answer to a join request"),
            Err(e) => tracing::warn!(%via, error = %e, "cannot ask to join; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
