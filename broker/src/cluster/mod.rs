//! The cluster: this broker's raft context, the metadata group every broker runs, and the
//! reconciler that opens and closes local partition replicas as the metadata assigns them.
//!
//! - [`state`]: the replicated cluster state and its commands (pure);
//! - [`metadata`]: the metadata raft group and proposing to it;
//! - [`forward`]: reaching the metadata leader from any broker;
//! - [`leader_report`]: the leader service that reports a partition's leader to the metadata;
//! - [`operators`]: window operator definitions in the cluster state, and their checks;
//! - [`topic_configs`]: which settings of a live topic may change, and how a change merges;
//! - [`reconcile`]: local replicas follow the metadata, and replica moves;
//! - [`quiesce`]: idle groups park their raft timers; peers watch each other for dead leaders;
//! - [`rebalance`]: leadership goes back to each partition's preferred replica (automatically and
//!   on demand).
//!
//! A broker started without peers is a one-voter cluster of itself, on the same code path.

pub mod forward;
pub mod leader_report;
pub mod metadata;
pub mod operators;
pub mod quiesce;
pub mod rebalance;
pub mod reconcile;
pub mod state;
pub mod topic_configs;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use sluice_storage::{FlushPolicy, LogConfig, PartitionLog};

use metadata::{MetadataGroup, MetadataShared, MetadataState};
use state::METADATA_GROUP;

use crate::config::BrokerConfig;
use crate::raft::group::{Group, RaftContext};
use crate::raft::network::{Peers, RaftRegistry};

/// This broker's place in the cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub ctx: RaftContext,
    pub metadata: MetadataGroup,
    pub liveness: Arc<quiesce::Liveness>,
    /// Groups whose replica move this broker is carrying out.
    pub moves: Arc<std::sync::Mutex<std::collections::HashSet<u64>>>,
}

pub use crate::raft::group::raft_config;

/// The initial members of the metadata group: the configured peers, or this broker alone.
pub fn initial_members(config: &BrokerConfig, advertised: &str) -> BTreeMap<u64, BasicNode> {
    if config.peers.is_empty() {
        return [(u64::from(config.node_id), BasicNode::new(advertised))]
            .into_iter()
            .collect();
    }
    config
        .peers
        .iter()
        .map(|(id, addr)| (u64::from(*id), BasicNode::new(addr.clone())))
        .collect()
}

impl Cluster {
    /// Opens the metadata log, starts the metadata group and joins it to its initial members.
    pub async fn start(config: &BrokerConfig, advertised: &str) -> Result<Cluster, String> {
        let raft = Arc::new(raft_config(config)?);
        let members = initial_members(config, advertised);
        let any_peer = members
            .values()
            .next()
            .map(|n| n.addr.clone())
            .unwrap_or_else(|| advertised.to_string());
        // Peer connections leave from this broker's own address (when it names an IP), so network
        // rules about a broker's address cover its outgoing links too.
        let local_ip = advertised
            .parse::<std::net::SocketAddr>()
            .ok()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified());
        let peers = Peers::new(&any_peer, local_ip).map_err(|e| e.to_string())?;
        let ctx = RaftContext {
            node_id: u64::from(config.node_id),
            peers,
            registry: Arc::new(RaftRegistry::default()),
            config: raft,
        };
        let dir = config.data_dir.join("meta");
        let log = open_log(&dir, config.flush, config.meta_segment_bytes).await?;
        let shared = MetadataShared::new();
        let group = Group::start(
            &ctx,
            METADATA_GROUP,
            log,
            Box::new(MetadataState {
                shared: shared.clone(),
            }),
        )
        .await
        .map_err(|e| e.to_string())?;
        if config.join.is_none() {
            group.initialize(members).await.map_err(|e| e.to_string())?;
        }
        Ok(Cluster {
            ctx,
            metadata: MetadataGroup { group, shared },
            liveness: Arc::new(quiesce::Liveness::default()),
            moves: Arc::default(),
        })
    }

    /// Waits up to `timeout` for the metadata group to know a leader.
    pub async fn wait_for_metadata_leader(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.metadata.group.leader().is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Waits (briefly) until the metadata group has applied everything in its log at this moment,
    /// so the state is as complete as this broker can know it.
    pub async fn wait_for_metadata_applied(&self) {
        let last = self
            .metadata
            .group
            .log
            .log_state()
            .last_log_id
            .map(|l| l.index);
        let _ = self
            .metadata
            .group
            .raft
            .wait(Some(Duration::from_secs(10)))
            .applied_index_at_least(last, "metadata applied")
            .await;
    }

    /// Deletes the metadata log's sealed segments that lie wholly below the first entry raft holds
    /// (raft purged them behind a snapshot, which carries the cluster state they built). Blocking:
    /// run it off the async workers.
    pub fn apply_metadata_retention(&self) -> Result<sluice_storage::RetentionReport, String> {
        let group = &self.metadata.group.log;
        group
            .with_retention_limit(|limit| group.log.apply_retention_below(0, limit))
            .map_err(|e| e.to_string())
    }

    /// Stops the metadata group and closes its log.
    pub async fn shutdown(&self) {
        self.metadata.group.shutdown(&self.ctx.registry).await;
        let log = self.metadata.group.log.log.clone();
        let _ = tokio::task::spawn_blocking(move || log.close()).await;
    }
}

/// Opens the metadata log. Its retention keeps nothing raft does not need: every sealed segment
/// below raft's first held entry goes (see [`Cluster::apply_metadata_retention`]), never by age.
async fn open_log(
    dir: &Path,
    flush: FlushPolicy,
    segment_bytes: u64,
) -> Result<PartitionLog, String> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let cfg = LogConfig {
            segment_bytes,
            flush: crate::replica::settings::TopicSettings::replicated_flush(flush),
            retention_bytes: Some(0),
            retention_ms: None,
            ..LogConfig::default()
        };
        PartitionLog::open(&dir, cfg)
            .map(|(l, _)| l)
            .map_err(|e| format!("opening {}: {e}", dir.display()))
    })
    .await
    .map_err(|e| e.to_string())?
}
