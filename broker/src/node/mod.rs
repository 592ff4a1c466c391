//! The node: starts a broker and owns everything it runs — the protocol and admin listeners, every
//! background task (maintenance, reconciler, peer pings, quiescer, preferred-leader rebalance) —
//! under one cancellation token, and stops them in order on shutdown: stop accepting and reading,
//! drain in-flight requests (bounded by `shutdown_grace`), stop background tasks, stop every raft
//! group and close every log cleanly.
//!
//! This module wires parts together; it never handles a request or touches a log itself.

mod maintenance;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::cluster::leader_report::LeaderReport;
use crate::cluster::{quiesce, reconcile, Cluster};
use crate::config::BrokerConfig;
use crate::replica::{LeaderService, Replicas};

/// Why the broker could not run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
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

fn check_limits(config: &BrokerConfig) -> Result<(), NodeError> {
    if config.max_produce_bytes > Semaphore::MAX_PERMITS
        || config.max_inflight_bytes_per_connection > Semaphore::MAX_PERMITS
        || config.max_frame_bytes > u32::MAX as usize
    {
        return Err(NodeError::Config("byte limits are too large".into()));
    }
    if config.max_inflight_bytes_per_connection < config.max_frame_bytes {
        return Err(NodeError::Config(
            "max_inflight_bytes_per_connection must be at least max_frame_bytes".into(),
        ));
    }
    Ok(())
}

/// A started broker: its bound addresses, and the future that serves until shutdown.
#[derive(Debug)]
pub struct Started<F> {
    pub addr: SocketAddr,
    /// The admin API's bound address; `None` when it is off.
    pub admin_addr: Option<SocketAddr>,
    /// Resolves after `shutdown` fires, in-flight requests are answered and the logs are closed.
    pub serving: F,
}

/// Binds `addr`, returning the listener and the address it got (port 0 picks one).
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), NodeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| NodeError::Bind { addr, source })?;
    Ok((listener, bound))
}

/// Opens the data, binds the listeners and returns them bound, with the serving future.
pub async fn start(
    config: BrokerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Started<impl Future<Output = ()>>, NodeError> {
    check_limits(&config)?;
    let admin_at = config
        .admin
        .bind_addr(config.listen)
        .map_err(|e| NodeError::Config(e.to_string()))?;
    if let Some(a) = admin_at {
        crate::http::check_exposure(a, config.admin.token.is_some()).map_err(NodeError::Config)?;
    }
    let (listener, addr) = bind(config.listen).await?;
    let admin = match admin_at {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let admin_addr = admin.as_ref().map(|(_, a)| *a);
    // This broker's address as the cluster knows it: its entry in the peers, or the bound address.
    let advertised = config
        .peers
        .iter()
        .find(|(id, _)| *id == config.node_id)
        .map_or_else(|| addr.to_string(), |(_, a)| a.clone());
    let cluster = Cluster::start(&config, &advertised)
        .await
        .map_err(NodeError::Data)?;
    let groups = Arc::new(crate::groups::GroupCoordinator::new(
        config.groups.clone(),
        cluster.clone(),
        config.replication_timeout,
    ));
    let services: Vec<Arc<dyn LeaderService>> = vec![
        Arc::new(LeaderReport {
            cluster: cluster.clone(),
        }),
        Arc::new(crate::groups::CoordinatorService(groups.clone())),
    ];
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let cold_reads = match config.cold_reads {
        Some(c) => {
            Some(sluice_storage::ColdReads::start(c).map_err(|e| NodeError::Data(e.to_string()))?)
        }
        None => None,
    };
    let cold_for_pacing = cold_reads.clone();
    let cache = crate::replica::settings::CacheSettings {
        page_cache_window_bytes: config.page_cache_window_bytes,
        cold_reads,
    };
    let replicas = Replicas::new(
        &config.data_dir,
        config.flush,
        cache,
        services,
        metrics.clone(),
    )
    .map_err(|e| NodeError::Data(e.message))?;
    if config.peers.len() <= 1 && config.join.is_none() {
        // Alone, the metadata group elects itself at once: wait for that, so the first request
        // finds a leader. A cluster waits for its peers in the background instead.
        cluster
            .wait_for_metadata_leader(config.raft_election_timeout * 4)
            .await;
    }
    let broker = Arc::new(Broker {
        produce_budget: Arc::new(Semaphore::new(config.max_produce_bytes)),
        catch_up: crate::broker::catch_up::CatchUp::new(
            config.catch_up_rate_bytes,
            cold_for_pacing,
        ),
        produce_slots: config
            .max_pending_produces
            .map(|n| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS)))),
        config,
        replicas: Arc::new(replicas),
        advertised: addr,
        cluster,
        producer_ids: Default::default(),
        groups,
        operator_stats: Default::default(),
        metrics,
    });
    broker.groups.attach(&broker.replicas);
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    if let Some(via) = broker.config.join.clone() {
        tasks.spawn(join(broker.clone(), via, stop.clone()));
    } else if broker.config.peers.len() <= 1 {
        // Alone, this broker can bring up its replicas before it answers anyone: a client that saw
        // a topic before a restart finds it again at once.
        broker.cluster.wait_for_metadata_applied().await;
        reconcile::reconcile_once(&broker.cluster, &broker.replicas).await;
        broker
            .replicas
            .wait_for_leaders(broker.config.raft_election_timeout * 4)
            .await;
    }
    if let Some((admin, _)) = admin {
        tasks.spawn(crate::http::serve(admin, broker.clone(), stop.clone()));
    }
    Ok(Started {
        addr,
        admin_addr,
        serving: run(listener, broker, shutdown, stop, tasks),
    })
}

async fn run(
    listener: TcpListener,
    broker: Arc<Broker>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    stop: CancellationToken,
    mut tasks: JoinSet<()>,
) {
    let c = &broker.cluster;
    tasks.spawn(maintenance::run(broker.clone(), stop.clone()));
    tasks.spawn(reconcile::run(
        c.clone(),
        broker.replicas.clone(),
        stop.clone(),
    ));
    tasks.spawn(quiesce::ping_peers(c.clone(), stop.clone()));
    tasks.spawn(crate::operators::run(
        c.clone(),
        broker.replicas.clone(),
        broker.operator_stats.clone(),
        broker.advertised.to_string(),
        broker.config.replication_timeout,
        stop.clone(),
    ));
    tasks.spawn(quiesce::run(
        c.clone(),
        broker.replicas.clone(),
        broker.config.raft_heartbeat,
        broker.config.raft_election_timeout,
        stop.clone(),
    ));
    if broker.config.auto_leader_rebalance {
        tasks.spawn(crate::cluster::rebalance::run(
            c.clone(),
            broker.replicas.clone(),
            broker.config.auto_leader_rebalance_delay,
            broker.config.raft_election_timeout,
            stop.clone(),
        ));
    }
    let accept = tokio::spawn(crate::net::serve(
        listener,
        broker.clone(),
        stop.clone(),
        broker.config.shutdown_grace,
    ));
    shutdown.await;
    stop.cancel();
    // Connections first: requests already read are answered (within the grace) while the replicas
    // still run.
    let _ = accept.await;
    // Background tasks end at their next cancellation check; one stuck past the bound is aborted,
    // so nothing opens a replica after they are all closed below.
    let stopped = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if stopped.is_err() {
        tracing::warn!("background tasks did not stop within 5 s; aborting them");
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    broker.replicas.close_all(&broker.cluster.ctx).await;
    broker.cluster.shutdown().await;
    tracing::info!("broker stopped; logs flushed and closed");
}

/// A broker started with `--join`: asks the cluster (through `via`) to add it, every second until
/// it is a member.
async fn join(broker: Arc<Broker>, via: String, stop: CancellationToken) {
    let me = broker.cluster.ctx.node_id;
    let address = broker
        .config
        .peers
        .iter()
        .find(|(id, _)| u64::from(*id) == me)
        .map_or_else(|| broker.advertised.to_string(), |(_, a)| a.clone());
    loop {
        if broker.cluster.metadata.brokers().contains_key(&(me as u32)) {
            tracing::info!("joined the cluster");
            return;
        }
        if let Err(e) = broker
            .cluster
            .ask_to_join(&via, me as u32, address.clone())
            .await
        {
            tracing::warn!(%via, error = %e, "cannot join yet; retrying");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
