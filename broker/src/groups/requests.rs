//! The coordinator's requests: each is a decision queued to its offsets partition's run (see
//! `coordinator.rs`), made on the round's working copy of the group by [`super::reconcile`], and
//! answered once the round is written. Reads (a group, the list) use the committed state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_protocol::wire::ErrorCode;

use super::coordinator::{not_coordinator, read, GroupCoordinator, Run};
use super::reconcile::{self, Heartbeat, HeartbeatAnswer};
use crate::error::{Result, ServiceError};
use crate::replica::groups::GroupModel;

impl GroupCoordinator {
    fn model(run: &Run, group: &str) -> GroupModel {
        read(&run.replica, |g| g.get(group).cloned().unwrap_or_default())
    }

    /// A member's heartbeat (join, leave, owned partitions). `deadline_ms`: the processing deadline
    /// it promises from now (0: none).
    pub async fn heartbeat(
        &self,
        group: &str,
        hb: Heartbeat,
        deadline_ms: u32,
    ) -> Result<HeartbeatAnswer> {
        let group = group.to_string();
        let new_id = self.new_member_id();
        self.submit(&group.clone(), move |cx| {
            let before = cx.group(&group);
            let (after, answer) = reconcile::heartbeat(&before, &group, &hb, &new_id, &cx.env())?;
            let now = Instant::now();
            // Timers of members that are gone (left, or replaced by their static successor).
            for gone in before
                .members
                .keys()
                .filter(|m| !after.members.contains_key(*m))
            {
                cx.live.remove(&(group.clone(), gone.clone()));
            }
            let leaving_static = hb.member_epoch == sluice_protocol::wire::STATIC_LEAVE_EPOCH;
            // A static member gone for now keeps only its session timer (from its last heartbeat).
            if let Some(m) = after
                .members
                .get(&answer.member_id)
                .filter(|_| !leaving_static)
            {
                let t = cx
                    .live
                    .update((group.clone(), answer.member_id.clone()), now);
                t.last_seen = now;
                t.deadline =
                    (deadline_ms > 0).then(|| now + Duration::from_millis(deadline_ms.into()));
                t.revoking_since = match (m.revoking.is_empty(), t.revoking_since) {
                    (true, _) => None,
                    (false, Some(since)) => Some(since),
                    (false, None) => Some(now),
                };
            }
            cx.round.decide(&group, after);
            Ok(answer)
        })
        .await
    }

    /// An offset commit; per-partition outcomes, or a whole-request error.
    pub async fn commit(
        &self,
        group: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: &[(String, u32, u64, String)],
    ) -> Result<Vec<reconcile::CommitOutcome>> {
        let (group, member_id, offsets) =
            (group.to_string(), member_id.to_string(), offsets.to_vec());
        self.submit(&group.clone(), move |cx| {
            let before = cx.group(&group);
            let (after, outcomes) = reconcile::commit(
                &before,
                &group,
                &member_id,
                member_epoch,
                &offsets,
                &cx.env(),
            )?;
            cx.round.decide(&group, after);
            Ok(outcomes)
        })
        .await
    }

    /// The committed groups of `group`'s partition, as they are (for fetch and describe).
    pub fn group(&self, group: &str) -> Result<Option<GroupModel>> {
        let run = self.run_for(group)?;
        Ok(read(&run.replica, |g| g.get(group).cloned()))
    }

    /// Every committed offset of the groups on the offsets partitions this broker leads, as
    /// (group, topic, partition, offset): what the metrics scrape computes lag from. Copies only
    /// those, under each partition's state lock.
    pub fn committed_offsets(&self) -> Vec<(String, String, u32, u64)> {
        let runs: Vec<Arc<Run>> = self.runs().values().cloned().collect();
        let mut out = Vec::new();
        for run in runs.iter().filter(|r| r.replica.is_leader()) {
            read(&run.replica, |g| {
                for (name, m) in &g.groups {
                    out.extend(
                        m.offsets
                            .iter()
                            .map(|((t, p), o)| (name.clone(), t.clone(), *p, o.offset)),
                    );
                }
            });
        }
        out
    }

    /// Every group on the offsets partitions this broker leads.
    pub fn list(&self) -> Vec<(String, GroupModel)> {
        let runs: Vec<Arc<Run>> = self.runs().values().cloned().collect();
        let mut out = Vec::new();
        for run in runs.iter().filter(|r| r.replica.is_leader()) {
            read(&run.replica, |g| {
                out.extend(g.groups.iter().map(|(n, m)| (n.clone(), m.clone())))
            });
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Moves the group's offsets; on a live group the partitions are revoked, moved and handed
    /// back. Answers once every offset is written, or `REQUEST_TIMED_OUT` if their owners did not
    /// release them in time (the reset then still completes when they do, or are evicted).
    pub async fn reset(&self, group: &str, offsets: &[(String, u32, u64)]) -> Result<()> {
        let run = self.run_for(group)?;
        let (name, wanted) = (group.to_string(), offsets.to_vec());
        self.submit(group, move |cx| {
            let before = cx.group(&name);
            let after = reconcile::reset(&before, &name, &wanted, &cx.env())?;
            cx.round.decide(&name, after);
            Ok(())
        })
        .await?;
        // Owners release the partitions on their next heartbeats; the tick writes each offset
        // once its partition is free (or its owner was evicted).
        let wait = self.config.session_timeout + self.config.heartbeat_interval * 2;
        let deadline = Instant::now() + wait;
        while reconcile::reset_pending(&Self::model(&run, group), offsets) {
            if Instant::now() >= deadline {
                return Err(ServiceError::new(
                    ErrorCode::REQUEST_TIMED_OUT,
                    format!("members of group {group} did not release the partitions within {wait:?}; the reset completes when they do"),
                ));
            }
            if !run.replica.is_leader() {
                return Err(not_coordinator(ServiceError::not_leader(None)));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Sets the group's own session timeout and heartbeat interval (`reconcile::alter_config`).
    /// Members get the new interval with their next heartbeat; a new session applies to members
    /// that join after it and ask for none.
    pub async fn alter_config(&self, group: &str, configs: &[(String, String)]) -> Result<()> {
        let (name, configs) = (group.to_string(), configs.to_vec());
        self.submit(group, move |cx| {
            let before = cx.group(&name);
            let after = reconcile::alter_config(&before, &name, &configs, &cx.env())?;
            cx.round.decide(&name, after);
            Ok(())
        })
        .await
    }

    /// Deletes a group without members.
    pub async fn delete(&self, group: &str) -> Result<()> {
        let name = group.to_string();
        self.submit(group, move |cx| {
            let before = cx.group(&name);
            let exists = before != GroupModel::default();
            let after = reconcile::delete(exists.then_some(&before), &name)?;
            cx.round.decide(&name, after);
            Ok(())
        })
        .await
    }
}
