//! The metadata group: a raft group on every broker (group 0) whose state machine holds the
//! [`ClusterState`]. Brokers are the group's raft nodes; topic changes are commands in its log.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use sluice_protocol::wire::ErrorCode;
use sluice_protocol::{BatchBuilder, Compression, RecordBatch};
use tokio::sync::watch;

use super::state::{ClusterState, Command};
use crate::error::ServiceError;
use crate::raft::group::Group;
use crate::raft::partition_state::PartitionState;
use crate::raft::{Membership, Proposal};

/// The state shared between the state machine (writer) and the broker (readers).
#[derive(Debug)]
pub struct MetadataShared {
    state: RwLock<ClusterState>,
    /// Bumped after every applied change.
    version: watch::Sender<u64>,
}

impl MetadataShared {
    pub fn new() -> Arc<MetadataShared> {
        Arc::new(MetadataShared {
            state: RwLock::new(ClusterState::default()),
            version: watch::channel(0).0,
        })
    }

    pub fn state(&self) -> ClusterState {
        self.with_state(ClusterState::clone)
    }

    /// Runs `f` on the applied state under its read lock, for a caller that needs a few values
    /// and not a copy of the whole state (keep `f` short: applying waits for it).
    pub fn with_state<R>(&self, f: impl FnOnce(&ClusterState) -> R) -> R {
        match self.state.read() {
            Ok(s) => f(&s),
            Err(_) => poisoned(),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ClusterState> {
        match self.state.write() {
            Ok(s) => s,
            Err(_) => poisoned(),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn changed(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// The metadata group's replicated state: applies committed commands to the shared state (it
/// reads only committed entries, so it tracks no appends).
#[derive(Debug)]
pub struct MetadataState {
    pub shared: Arc<MetadataShared>,
}

fn broker_ids(m: &Membership) -> Vec<u32> {
    m.nodes()
        .filter_map(|(id, _)| u32::try_from(*id).ok())
        .collect()
}

impl PartitionState for MetadataState {
    fn tracks_appends(&self) -> bool {
        false
    }

    fn committed(&mut self, batch: &RecordBatch, membership: &Membership) {
        let brokers = broker_ids(membership);
        let Ok(records) = batch.records() else {
            tracing::error!("metadata batch cannot be decoded; skipped on every broker alike");
            return;
        };
        let mut state = self.shared.write();
        for record in records.flatten() {
            let value = record.value.unwrap_or_default();
            match serde_json::from_slice::<Command>(&value) {
                Ok(cmd) => {
                    if let Err(e) = state.apply(&cmd, &brokers) {
                        tracing::debug!(error = %e, "metadata command refused at apply");
                    }
                }
                Err(e) => tracing::error!(error = %e, "unreadable metadata command skipped"),
            }
        }
        drop(state);
        self.shared.changed();
    }

    fn snapshot(&self) -> io::Result<Bytes> {
        serde_json::to_vec(&self.shared.state())
            .map(Bytes::from)
            .map_err(|e| io::Error::other(format!("encoding the metadata snapshot: {e}")))
    }

    fn restore(&mut self, state: &[u8]) -> io::Result<()> {
        let s = if state.is_empty() {
            ClusterState::default()
        } else {
            serde_json::from_slice(state)
                .map_err(|e| io::Error::other(format!("metadata snapshot: {e}")))?
        };
        *self.shared.write() = s;
        self.shared.changed();
        Ok(())
    }
}

/// The running metadata group.
#[derive(Debug, Clone)]
pub struct MetadataGroup {
    pub group: Group,
    pub shared: Arc<MetadataShared>,
}

impl MetadataGroup {
    pub fn state(&self) -> ClusterState {
        self.shared.state()
    }

    /// [`MetadataShared::with_state`].
    pub fn with_state<R>(&self, f: impl FnOnce(&ClusterState) -> R) -> R {
        self.shared.with_state(f)
    }

    /// Broker id -> `host:port`: the metadata group's nodes.
    pub fn brokers(&self) -> BTreeMap<u32, String> {
        let m = self.group.raft.metrics().borrow_watched().clone();
        m.membership_config
            .membership()
            .nodes()
            .filter_map(|(id, n)| Some((u32::try_from(*id).ok()?, n.addr.clone())))
            .collect()
    }

    /// Proposes `cmd` on this broker, which must lead the group; returns once it is applied here.
    /// Checked against the current state first, so the usual refusals come back with their code.
    pub async fn propose(&self, cmd: &Command) -> Result<(), ServiceError> {
        let brokers: Vec<u32> = self.brokers().keys().copied().collect();
        self.state().check(cmd, &brokers)?;
        if !self.group.is_leader() {
            return Err(ServiceError::not_leader(self.group.leader_addr()));
        }
        let json = serde_json::to_vec(cmd)
            .map_err(|e| ServiceError::new(ErrorCode::UNKNOWN, format!("encoding command: {e}")))?;
        let mut b = BatchBuilder::with_capacity(Compression::None, json.len() + 64);
        b.append(now_ms(), None, Some(&json), &[]);
        let batch = b
            .seal()
            .and_then(|bytes| RecordBatch::decode(&bytes).map(|(b, _)| b))
            .map_err(|e| ServiceError::new(ErrorCode::UNKNOWN, format!("encoding command: {e}")))?;
        match self.group.raft.client_write(Proposal::new(batch)).await {
            Ok(_) => Ok(()),
            Err(e) => match e.forward_to_leader() {
                Some(f) => Err(ServiceError::not_leader(
                    f.leader_node.as_ref().map(|n| n.addr.clone()),
                )),
                None => Err(ServiceError::new(
                    ErrorCode::BROKER_SHUTTING_DOWN,
                    e.to_string(),
                )),
            },
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A poisoned lock means a panic mid-apply: the cluster state may be half-changed and would differ
/// from every other broker's, so stop loudly.
fn poisoned() -> ! {
    panic!("cluster state lock poisoned: a panic happened mid-apply")
}
