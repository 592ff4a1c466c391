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

use super::group::Group;
use super::state::{ClusterState, Command};
use crate::partition::CodedError;
use crate::raft::state_machine::Applier;
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
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn changed(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// Applies metadata commands to the shared state.
#[derive(Debug)]
pub struct MetadataApplier {
    pub shared: Arc<MetadataShared>,
}

fn broker_ids(m: &Membership) -> Vec<u32> {
    m.nodes()
        .filter_map(|(id, _)| u32::try_from(*id).ok())
        .collect()
}

impl Applier for MetadataApplier {
    fn apply(&mut self, batch: &RecordBatch, membership: &Membership) {
        let brokers = broker_ids(membership);
        let Ok(records) = batch.records() else {
            tracing::error!("metadata batch cannot be decoded; skipped on every broker alike");
            return;
        };
        let mut state = self.shared.state.write().unwrap_or_else(|p| p.into_inner());
        for record in records.flatten() {
            let value = record.value.unwrap_or_default();
            match serde_json::from_slice::<Command>(&value) {
                Ok(cmd) => {
                    if let Err((code, msg)) = state.apply(&cmd, &brokers) {
                        tracing::debug!(%code, msg, "metadata command refused at apply");
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
        *self.shared.state.write().unwrap_or_else(|p| p.into_inner()) = s;
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
    pub async fn propose(&self, cmd: &Command) -> Result<(), CodedError> {
        let brokers: Vec<u32> = self.brokers().keys().copied().collect();
        self.state().check(cmd, &brokers)?;
        if !self.group.is_leader() {
            return Err(not_leader(self.group.leader_addr()));
        }
        let json = serde_json::to_vec(cmd)
            .map_err(|e| (ErrorCode::UNKNOWN, format!("encoding command: {e}")))?;
        let mut b = BatchBuilder::with_capacity(Compression::None, json.len() + 64);
        b.append(now_ms(), None, Some(&json), &[]);
        let batch = b
            .seal()
            .and_then(|bytes| RecordBatch::decode(&bytes).map(|(b, _)| b))
            .map_err(|e| (ErrorCode::UNKNOWN, format!("encoding command: {e}")))?;
        match self.group.raft.client_write(Proposal::new(batch)).await {
            Ok(_) => Ok(()),
            Err(e) => match e.forward_to_leader() {
                Some(f) => Err(not_leader(f.leader_node.as_ref().map(|n| n.addr.clone()))),
                None => Err((ErrorCode::BROKER_SHUTTING_DOWN, e.to_string())),
            },
        }
    }
}

pub fn not_leader(addr: Option<String>) -> CodedError {
    (
        ErrorCode::NOT_LEADER,
        match addr {
            Some(a) => format!("not the leader; the leader is at {a}"),
            None => "not the leader; no leader is known yet".into(),
        },
    )
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
