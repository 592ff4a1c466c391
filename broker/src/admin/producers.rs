//! Producer ids for idempotent producers (`InitProducerId`). An anonymous producer gets the next id
//! of a block this broker holds (epoch 0): a block of [`BLOCK`] ids costs one metadata write, an
//! init none. A named producer's init is a metadata command: the name keeps its id and its epoch
//! goes up by one, which fences every earlier holder at the partitions it writes to.
//!
//! Ids are never handed out twice: a block is taken from the metadata group's allocator before any
//! of its ids is used, and a restarted broker takes a new block (the rest of the old one is lost).

use std::time::Duration;

use sluice_protocol::wire::ErrorCode;

use crate::broker::Broker;
use crate::cluster::state::Command;
use crate::error::{Result, ServiceError};

/// Producer ids a broker takes from the allocator at once.
pub const BLOCK: u32 = 1000;

/// How long an init waits to see its own metadata command applied on this broker.
const READ_BACK: Duration = Duration::from_secs(10);

/// A token no other init or allocation of this cluster is likely to carry (time and a counter).
fn token() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(48)
}

impl Broker {
    /// The producer id and epoch for a producer named `name` (empty: anonymous).
    pub async fn init_producer_id(&self, name: &str) -> Result<(i64, i16)> {
        if name.is_empty() {
            return Ok((self.next_anonymous_id().await?, 0));
        }
        let token = token();
        self.cluster
            .propose_anywhere(&Command::InitProducer {
                name: name.to_string(),
                token,
            })
            .await?;
        self.read_back(|s| {
            s.recent_inits
                .iter()
                .find(|(t, _, _)| *t == token)
                .map(|&(_, id, epoch)| (id, epoch))
        })
        .await
    }

    async fn next_anonymous_id(&self) -> Result<i64> {
        let mut block = self.producer_ids.lock().await;
        if block.0 >= block.1 {
            let token = token();
            let broker = self.config.node_id;
            self.cluster
                .propose_anywhere(&Command::AllocateProducerIds {
                    count: BLOCK,
                    broker,
                    token,
                })
                .await?;
            let (first, end) = self
                .read_back(|s| match s.producer_blocks.get(&broker) {
                    Some(&(t, first, end)) if t == token => Some((first, end)),
                    _ => None,
                })
                .await?;
            *block = (first, end);
        }
        let id = block.0;
        block.0 += 1;
        debug_assert!(block.0 <= block.1, "postcondition: within the block");
        Ok(id)
    }

    /// Waits until this broker's copy of the cluster state answers `find` (the command the caller
    /// proposed is applied here too).
    async fn read_back<T>(
        &self,
        find: impl Fn(&crate::cluster::state::ClusterState) -> Option<T>,
    ) -> Result<T> {
        let deadline = tokio::time::Instant::now() + READ_BACK;
        loop {
            if let Some(v) = find(&self.cluster.metadata.state()) {
                return Ok(v);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ServiceError::new(
                    ErrorCode::REQUEST_TIMED_OUT,
                    "the producer id was allocated but not yet seen by this broker; retry",
                ));
            }
            self.cluster.wait_for_metadata_applied().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
