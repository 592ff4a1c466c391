//! The running broker's shared services: configuration, the hosted replicas, this broker's place in
//! the cluster, the produce budget, catch-up pacing ([`catch_up`]) and the metrics. Adapters (`api/`, next `http/`) and typed services (`admin/`)
//! work through it; it never sees a wire request or response.

pub mod catch_up;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::cluster::Cluster;
use crate::config::BrokerConfig;
use crate::replica::Replicas;

/// Shared state of a running broker.
#[derive(Debug)]
pub struct Broker {
    pub config: BrokerConfig,
    pub replicas: Arc<Replicas>,
    /// The address clients are told to connect to.
    pub advertised: SocketAddr,
    /// Produce request bytes in flight across all connections (`max_produce_bytes`).
    pub produce_budget: Arc<tokio::sync::Semaphore>,
    /// Produce requests proposed and not yet answered (`max_pending_produces`; `None`: no bound).
    /// At the bound a produce is answered `THROTTLED` at once.
    pub produce_slots: Option<Arc<tokio::sync::Semaphore>>,
    pub cluster: Cluster,
    /// This broker's unused producer ids `[next, end)`, from a block the metadata group gave it
    /// (handed out by `admin::producers`).
    pub producer_ids: tokio::sync::Mutex<(i64, i64)>,
    /// The coordinator of the consumer groups on the offsets partitions this broker leads.
    pub groups: Arc<crate::groups::GroupCoordinator>,
    /// What this broker's window operator drivers report (describe reads it).
    pub operator_stats: Arc<crate::operators::stats::Registry>,
    /// Every metric of the broker (`render_metrics` in `admin::metrics` scrapes it).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Catch-up reads yield to live traffic (`catch_up_rate_mb`).
    pub catch_up: catch_up::CatchUp,
}
