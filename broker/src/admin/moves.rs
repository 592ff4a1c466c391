//! Partition replica moves: starting one (the metadata leader records the target) and completing
//! one (the partition's leader reports that the voters changed). The leader's side of a move, adding
//! learners and changing voters, is `cluster::reconcile`.

use crate::broker::Broker;
use crate::cluster::state::Command;
use crate::error::Result;

impl Broker {
    /// Starts a move of `topic`/`partition` to `replicas` (replacing a move under way). Answered
    /// once the metadata leader has recorded the target.
    pub async fn reassign_partition(
        &self,
        topic: String,
        partition: u32,
        replicas: Vec<u32>,
    ) -> Result<()> {
        self.cluster
            .propose_anywhere(&Command::ReassignPartition {
                topic,
                partition,
                replicas,
            })
            .await
    }

    /// Records a move as complete (refused unless it matches the move under way).
    pub async fn complete_reassignment(
        &self,
        topic: String,
        partition: u32,
        replicas: Vec<u32>,
    ) -> Result<()> {
        self.cluster
            .propose_anywhere(&Command::CompleteReassignment {
                topic,
                partition,
                replicas,
            })
            .await
    }
}
