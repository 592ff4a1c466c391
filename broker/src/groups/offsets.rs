//! The coordinator's decisions about committed offsets, pure like the rest of
//! [`super::reconcile`]: a commit (fenced by membership, member epoch and the partition's
//! assignment epoch), an offset reset (written at once on an empty group, else after the owners
//! released the partitions), deletion of an empty group, and offset retention.

use std::collections::BTreeSet;

use sluice_protocol::wire::{ErrorCode, MAX_COMMIT_METADATA_BYTES};

use super::assign::Assignor;
use super::reconcile::{check_group_id, refresh, unknown_member, Env};
use super::subscription;
use crate::error::{Result, ServiceError};
use crate::replica::groups::model::GroupModel;
use crate::replica::groups::records::{GroupValue, OffsetValue};

/// One partition's commit outcome.
pub type CommitOutcome = (String, u32, Result<()>);

/// An offset commit: accepted per partition only from a current member that owns the partition
/// (assigned, or revoking and not yet released) at an epoch no older than the partition's
/// assignment and no newer than the member's; an admin commit (empty member id) only while the
/// group has no members. A whole-request error (unknown member) comes back as `Err`.
pub fn commit(
    model: &GroupModel,
    group: &str,
    member_id: &str,
    member_epoch: i32,
    offsets: &[(String, u32, u64, String)],
    env: &Env,
) -> Result<(GroupModel, Vec<CommitOutcome>)> {
    check_group_id(group)?;
    let member = if member_id.is_empty() {
        if !model.members.is_empty() {
            return Err(ServiceError::new(
                ErrorCode::NON_EMPTY_GROUP,
                format!(
                    "group {group} has members: only they commit (reset offsets with `sluice group reset-offsets`)"
                ),
            ));
        }
        None
    } else {
        Some(
            model
                .members
                .get(member_id)
                .ok_or_else(|| unknown_member(group, member_id))?,
        )
    };
    let mut g = model.clone();
    let mut out = Vec::with_capacity(offsets.len());
    for (topic, partition, offset, metadata) in offsets {
        let verdict = (|| {
            if metadata.len() > MAX_COMMIT_METADATA_BYTES {
                return Err(ServiceError::invalid(format!(
                    "commit metadata longer than {MAX_COMMIT_METADATA_BYTES} bytes"
                )));
            }
            if env.topics.get(topic).is_none_or(|n| partition >= n) {
                return Err(ServiceError::new(
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("no partition {topic}/{partition}"),
                ));
            }
            if let Some(m) = member {
                let held = m
                    .assigned
                    .iter()
                    .chain(&m.revoking)
                    .find(|(t, p, _)| t == topic && p == partition);
                match held {
                    Some((_, _, assigned_in))
                        if *assigned_in <= member_epoch && member_epoch <= m.epoch => {}
                    Some((_, _, assigned_in)) => {
                        return Err(ServiceError::new(
                            ErrorCode::STALE_MEMBER_EPOCH,
                            format!(
                                "member {member_id} commits {topic}/{partition} at epoch {member_epoch}, but holds it since epoch {assigned_in} and is at epoch {}",
                                m.epoch
                            ),
                        ))
                    }
                    None => {
                        return Err(ServiceError::new(
                            ErrorCode::STALE_MEMBER_EPOCH,
                            format!(
                                "member {member_id} does not own {topic}/{partition} in the current assignment"
                            ),
                        ))
                    }
                }
            }
            Ok(())
        })();
        if verdict.is_ok() {
            g.offsets.insert(
                (topic.clone(), *partition),
                OffsetValue {
                    offset: *offset,
                    metadata: metadata.clone(),
                    commit_ms: env.now_ms,
                    epoch: if member.is_some() { member_epoch } else { -1 },
                },
            );
        }
        out.push((topic.clone(), *partition, verdict));
    }
    if g.meta.is_none() && g.offsets.len() != model.offsets.len() {
        // An admin commit creates the group (empty, so its offsets expire in time).
        refresh(&mut g, group, env, false);
    }
    Ok((g, out))
}

/// Starts an offset reset: on a group without members the offsets are written at once; otherwise
/// the partitions are taken out of the target (their owners revoke them), and [`refresh`] writes
/// each offset once nobody owns its partition and hands it back.
pub fn reset(
    model: &GroupModel,
    group: &str,
    offsets: &[(String, u32, u64)],
    env: &Env,
) -> Result<GroupModel> {
    check_group_id(group)?;
    for (t, p, _) in offsets {
        if env.topics.get(t).is_none_or(|n| p >= n) {
            return Err(ServiceError::new(
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                format!("no partition {t}/{p}"),
            ));
        }
    }
    let mut g = model.clone();
    let mut meta = g.meta.clone().unwrap_or_else(|| GroupValue {
        assignor: Assignor::DEFAULT.name().to_string(),
        empty_since_ms: -1,
        ..GroupValue::default()
    });
    for (t, p, o) in offsets {
        meta.resetting.retain(|(tt, pp, _)| !(tt == t && pp == p));
        meta.resetting.push((t.clone(), *p, *o));
    }
    g.meta = Some(meta);
    // The partitions leave the target now; `refresh` writes those nobody holds.
    refresh(&mut g, group, env, true);
    Ok(g)
}

/// Whether any of `offsets` is still waiting to be written.
pub fn reset_pending(g: &GroupModel, offsets: &[(String, u32, u64)]) -> bool {
    g.meta.as_ref().is_some_and(|m| {
        m.resetting
            .iter()
            .any(|(t, p, _)| offsets.iter().any(|(tt, pp, _)| tt == t && pp == p))
    })
}

/// Deletes a group without members, offsets and all.
pub fn delete(model: Option<&GroupModel>, group: &str) -> Result<GroupModel> {
    check_group_id(group)?;
    let Some(g) = model else {
        return Err(ServiceError::new(
            ErrorCode::GROUP_ID_NOT_FOUND,
            format!("no group {group}"),
        ));
    };
    if !g.members.is_empty() {
        return Err(ServiceError::new(
            ErrorCode::NON_EMPTY_GROUP,
            format!(
                "group {group} has {} members; stop them first",
                g.members.len()
            ),
        ));
    }
    Ok(GroupModel::default())
}

/// Offset retention: a group empty for the retention time loses everything; a group with members
/// loses the offsets of topics none of them subscribes to, once those are as old as the retention.
/// `None` when nothing expires.
pub fn expire(g: &GroupModel, env: &Env) -> Option<GroupModel> {
    let retention = env.config.offsets_retention.as_millis() as i64;
    if g.members.is_empty() {
        let since = g.meta.as_ref().map_or(-1, |m| m.empty_since_ms);
        return (since >= 0 && env.now_ms.saturating_sub(since) >= retention)
            .then(GroupModel::default);
    }
    let subscribed: BTreeSet<String> = g
        .members
        .values()
        .flat_map(|m| subscription::resolve(&m.topics, &m.regex, env.topics))
        .collect();
    let mut after = g.clone();
    after.offsets.retain(|(t, _), o| {
        subscribed.contains(t) || env.now_ms.saturating_sub(o.commit_ms) < retention
    });
    (after.offsets.len() != g.offsets.len()).then_some(after)
}
