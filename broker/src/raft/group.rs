//! Starting and stopping one raft group over a segment log, campaigning for a new group's
//! leadership, and asking it who leads.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::async_runtime::WatchReceiver;
use openraft::BasicNode;
use sluice_storage::PartitionLog;
use tokio::sync::watch;

use super::log_store::{GroupLog, LogStore};
use super::network::{GroupEntry, NetworkFactory, Peers, RaftHandle, RaftRegistry};
use super::partition_state::PartitionState;
use super::state_machine::GroupSm;

/// How often the preferred replica of a new group asks for votes until a leader is known.
const CAMPAIGN_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// What every group on this broker shares.
#[derive(Debug, Clone)]
pub struct RaftContext {
    pub node_id: u64,
    pub peers: Peers,
    pub registry: Arc<RaftRegistry>,
    pub config: Arc<openraft::Config>,
}

/// A running raft group.
#[derive(Debug, Clone)]
pub struct Group {
    pub id: u64,
    pub node_id: u64,
    pub raft: RaftHandle,
    pub log: Arc<GroupLog>,
    /// The high watermark: the offset after the last applied (committed) entry.
    pub high_watermark: Arc<watch::Sender<u64>>,
    pub activity: Arc<super::activity::Activity>,
    /// How often the known leader became another node (counted by a task that follows raft's
    /// server metrics; read by the metrics scrape).
    pub leader_changes: Arc<AtomicU64>,
}

impl Group {
    /// Opens the group's raft state over `log` and starts its raft tasks (registered for RPCs).
    pub async fn start(
        ctx: &RaftContext,
        id: u64,
        log: PartitionLog,
        state: Box<dyn PartitionState>,
    ) -> io::Result<Group> {
        let glog = GroupLog::open_with_state(log, state)?;
        // Until the snapshot or an apply says more, everything below the log start is committed.
        let hw = Arc::new(watch::channel(glog.log.log_start_offset()).0);
        let sm = GroupSm::open(glog.clone(), hw.clone())?;
        let net = NetworkFactory {
            group: id,
            peers: ctx.peers.clone(),
            log: glog.clone(),
        };
        let raft = RaftHandle::new(
            ctx.node_id,
            ctx.config.clone(),
            net,
            LogStore {
                group: glog.clone(),
            },
            sm,
        )
        .await
        .map_err(|e| io::Error::other(format!("starting raft group {id}: {e}")))?;
        let activity = Arc::new(super::activity::Activity::default());
        ctx.registry.insert(
            id,
            Arc::new(GroupEntry::new(
                raft.clone(),
                glog.clone(),
                activity.clone(),
            )),
        );
        let leader_changes = Arc::new(AtomicU64::new(0));
        count_leader_changes(&raft, leader_changes.clone());
        Ok(Group {
            id,
            node_id: ctx.node_id,
            raft,
            log: glog,
            high_watermark: hw,
            activity,
            leader_changes,
        })
    }

    /// The group's raft state now.
    pub fn status(&self) -> super::RaftStatus {
        super::RaftStatus::of(&self.raft)
    }

    /// How often the group's known leader became another node, as this broker saw it.
    pub fn leader_changes(&self) -> u64 {
        self.leader_changes.load(Ordering::Relaxed)
    }

    /// Makes a new group's first membership (a no-op if the group was initialized before). Every
    /// replica calls this with the same members, so their first entries agree. True when this call
    /// made the group's first membership here (a new group).
    pub async fn initialize(&self, members: BTreeMap<u64, BasicNode>) -> io::Result<bool> {
        let alone = members.len() == 1 && members.contains_key(&self.node_id);
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        if initialized {
            if alone && self.voters() == [self.node_id] {
                // The only voter need not wait out an election timeout to lead again.
                let _ = self.raft.trigger().elect(false).await;
            }
            return Ok(false);
        }
        match self.raft.initialize(members).await {
            Ok(()) => Ok(true),
            Err(e) => match e.api_error() {
                // Someone (a leader's replication) got here first.
                Some(openraft::errors::InitializeError::NotAllowed(_)) => Ok(false),
                _ => Err(io::Error::other(format!(
                    "initializing group {}: {e}",
                    self.id
                ))),
            },
        }
    }

    /// Campaigns for leadership of a new group it just initialized: the preferred replica of a new
    /// partition does, so a new topic's leaders start where the assignment spread them.
    /// Initializing already starts an election, but the other replicas may not have opened the
    /// group yet (they answer that the group is unknown), so this asks again every
    /// [`CAMPAIGN_EVERY`], each time through a pre-vote, so it never deposes a leader another
    /// replica became; it stops once any leader is known, or after one election timeout (the other
    /// replicas then initialize and elect by themselves, and the preferred-leader rebalance moves
    /// leadership later).
    pub fn campaign(&self) {
        let raft = self.raft.clone();
        let group = self.id;
        let until = std::time::Duration::from_millis(raft.config().election_timeout_min);
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + until;
            while tokio::time::Instant::now() < deadline {
                if raft.metrics().borrow_watched().current_leader.is_some() {
                    return;
                }
                tracing::debug!(group, "campaigning for leadership of a new group");
                if raft.trigger().elect(true).await.is_err() {
                    return;
                }
                tokio::time::sleep(CAMPAIGN_EVERY).await;
            }
        });
    }

    /// Initializes a new group with `members` after `after`, unless it has been initialized by
    /// then (its leader's replication brings the membership along): what a replica that is not the
    /// partition's preferred one does. Only the preferred replica initializes a new group at once,
    /// because initializing makes a replica a candidate that votes for itself, and one that opened
    /// the group without initializing it grants the preferred replica its vote instead; the delayed
    /// start keeps a new partition available when its preferred replica's broker is down.
    pub fn initialize_later(&self, members: BTreeMap<u64, BasicNode>, after: std::time::Duration) {
        let group = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            // Initialized meanwhile, or stopped: nothing to do.
            if let Ok(false) = group.raft.is_initialized().await {
                tracing::info!(
                    group = group.id,
                    "no leader brought the new group in; initializing it here"
                );
                if let Err(e) = group.initialize(members).await {
                    tracing::warn!(group = group.id, error = %e, "initializing a new group failed");
                }
            }
        });
    }

    /// Records work on the group, waking it if it was quiesced.
    pub fn touch(&self) {
        self.activity.touch(&self.raft);
    }

    /// The current leader's id, if one is known.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().current_leader
    }

    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.node_id)
    }

    /// The leader's `host:port`, from the group's membership.
    pub fn leader_addr(&self) -> Option<String> {
        let m = self.raft.metrics().borrow_watched().clone();
        let leader = m.current_leader?;
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
    }

    /// Voter ids of the group's current membership.
    pub fn voters(&self) -> Vec<u64> {
        let m = self.raft.metrics().borrow_watched().clone();
        m.membership_config.membership().voter_ids().collect()
    }

    /// Stops the raft tasks and unregisters the group (the log stays open for the caller to close).
    pub async fn shutdown(&self, registry: &RaftRegistry) {
        registry.remove(self.id);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(group = self.id, error = %e, "raft group did not shut down cleanly");
        }
    }
}

/// Starts the task that counts in `changes` every time `raft`'s known leader becomes another node
/// (an unknown leader in between does not count; the first leader known does). It ends with raft.
fn count_leader_changes(raft: &RaftHandle, changes: Arc<AtomicU64>) {
    let mut watch = raft.server_metrics();
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let now = watch.borrow_watched().current_leader;
            if now.is_some() && now != last {
                changes.fetch_add(1, Ordering::Relaxed);
                last = now;
            }
            if watch.changed().await.is_err() {
                return;
            }
        }
    });
}

/// openraft settings from the broker's.
pub fn raft_config(config: &crate::config::BrokerConfig) -> Result<openraft::Config, String> {
    let election = config.raft_election_timeout.as_millis() as u64;
    openraft::Config {
        cluster_name: "sluice".into(),
        heartbeat_interval: config.raft_heartbeat.as_millis() as u64,
        election_timeout_min: election,
        election_timeout_max: election * 2,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.raft_snapshot_entries),
        max_in_snapshot_log_to_keep: config.raft_keep_entries,
        // Purge in batches, but never wait for more entries than a snapshot interval: a group
        // with small snapshot intervals (tests, tiny metadata logs) still frees its log.
        purge_batch_size: config.raft_snapshot_entries.clamp(1, 256),
        // A restarted leader must win an election again: the state machine is saved only in
        // snapshots, so resuming leadership from memory is not safe here.
        enable_leader_restore: Some(false),
        ..openraft::Config::default()
    }
    .validate()
    .map_err(|e| e.to_string())
}
