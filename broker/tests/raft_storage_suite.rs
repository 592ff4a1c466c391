//! openraft's own storage test suite (`openraft::testing::log::Suite`) run against the raft log
//! store over a real segment log and the group state machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::StorageError;
use sluice_broker::raft::log_store::{GroupLog, LogStore};
use sluice_broker::raft::state_machine::{GroupSm, NoState};
use sluice_broker::raft::TypeConfig;
use sluice_storage::{FlushPolicy, LogConfig, PartitionLog};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, GroupSm, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, GroupSm), StorageError<TypeConfig>> {
        let err = |e: &dyn std::fmt::Display| {
            StorageError::write(TypeConfig::err_from_string(e.to_string()))
        };
        let dir = tempfile::tempdir().map_err(|e| err(&e))?;
        let config = LogConfig {
            segment_bytes: 8192,
            flush: FlushPolicy::Never,
            ..LogConfig::default()
        };
        let (log, _) = PartitionLog::open(dir.path(), config).map_err(|e| err(&e))?;
        let group = GroupLog::open(log).map_err(|e| err(&e))?;
        let hw = Arc::new(tokio::sync::watch::channel(0u64).0);
        let sm = GroupSm::open(group.clone(), Box::new(NoState), hw).map_err(|e| err(&e))?;
        Ok((dir, LogStore { group }, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes() {
    Suite::test_all(Builder).await.unwrap();
}
