//! The coordinator's decisions, as pure functions of a group's committed state: a heartbeat (join,
//! leave, owned partitions), an offset commit, an offset reset, eviction, deletion and expiry each
//! take a [`GroupModel`] and return the group as it must become. The caller writes the difference
//! ([`diff`]) through raft and answers once it is committed. No I/O, no clock (the caller passes
//! `now_ms`), no liveness (the coordinator's timers decide who is evicted; this only removes them).
//!
//! The reconciliation rules (after KIP-848):
//! - any change of membership, subscriptions, subscribed topics' partitions, assignor or pending
//!   resets bumps the group epoch and recomputes every member's target with the assignor;
//! - a member first gives up what its target no longer holds (`revoking`, still its own until its
//!   heartbeat no longer lists them as owned), and only then is it moved to the group epoch and
//!   given the target partitions that nobody owns; the rest it gets on a later heartbeat, once their
//!   old owner released them (or was evicted). So a partition never has two owners.

use std::collections::{BTreeMap, BTreeSet};

use sluice_protocol::wire::{
    ErrorCode, JOIN_EPOCH, LEAVE_EPOCH, MAX_GROUP_ID_BYTES, STATIC_LEAVE_EPOCH,
};

use super::assign::{self, Assignor, MemberSpec};
use super::{settings, subscription};
use crate::config::GroupConfig;
use crate::error::{Result, ServiceError};
use crate::replica::groups::model::{GroupModel, Tp};
use crate::replica::groups::records::{GroupValue, Key, MemberValue, OffsetValue, Value};

/// One record to write (`None`: a tombstone).
pub type Write = (Key, Option<Value>);

/// What the decisions need to know of the world.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    pub now_ms: i64,
    /// Every topic and its partition count, from the cluster metadata.
    pub topics: &'a BTreeMap<String, u32>,
    pub config: &'a GroupConfig,
}

/// A member's heartbeat, as the coordinator reads it.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: String,
    pub client_id: String,
    pub host: String,
    pub topics: Vec<String>,
    pub regex: String,
    pub assignor: String,
    pub session_timeout_ms: u32,
    pub owned: BTreeSet<Tp>,
}

/// What a heartbeat answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    pub member_id: String,
    pub member_epoch: i32,
    pub session_timeout_ms: u32,
    /// How often the member heartbeats: the group's setting, else the broker's.
    pub heartbeat_interval_ms: u32,
    /// What the member may own now.
    pub assignment: BTreeSet<Tp>,
}

/// Checks a group id: 1 to [`MAX_GROUP_ID_BYTES`] bytes.
pub fn check_group_id(group: &str) -> Result<()> {
    if group.is_empty() || group.len() > MAX_GROUP_ID_BYTES {
        return Err(ServiceError::new(
            ErrorCode::INVALID_GROUP_ID,
            format!("a group id must be 1 to {MAX_GROUP_ID_BYTES} bytes"),
        ));
    }
    Ok(())
}

use super::settings::session_ms;
pub use super::settings::{alter_config, heartbeat_interval_ms};

/// Handles one heartbeat. `new_member_id` names a joining member. Returns the group as it must be
/// and the answer (valid once the difference is committed).
pub fn heartbeat(
    model: &GroupModel,
    group: &str,
    hb: &Heartbeat,
    new_member_id: &str,
    env: &Env,
) -> Result<(GroupModel, HeartbeatAnswer)> {
    check_group_id(group)?;
    if !hb.assignor.is_empty() && Assignor::from_name(&hb.assignor).is_none() {
        return Err(ServiceError::new(
            ErrorCode::UNSUPPORTED_ASSIGNOR,
            format!(
                "no assignor named {:?} (this coordinator has \"uniform\" and \"range\")",
                hb.assignor
            ),
        ));
    }
    if !hb.regex.is_empty() {
        subscription::compiled(&hb.regex)?;
    }
    let mut g = model.clone();
    let session = session_ms(hb.session_timeout_ms, model, env.config);
    let interval = heartbeat_interval_ms(model, env.config);
    // The record a static member took over, as it was (its subscription decides whether the
    // target must be recomputed).
    let mut took_over: Option<MemberValue> = None;
    let member_id = match hb.member_epoch {
        JOIN_EPOCH => {
            if hb.topics.is_empty() && hb.regex.is_empty() {
                return Err(ServiceError::invalid(
                    "a joining member must subscribe to topics or a pattern",
                ));
            }
            // A static member back within its session takes over its predecessor's assignment
            // (KIP-345): the old id is gone, so a zombie of the old process is fenced.
            let previous = (!hb.instance_id.is_empty())
                .then(|| {
                    g.members
                        .iter()
                        .find(|(_, m)| m.instance_id == hb.instance_id)
                        .map(|(id, _)| id.clone())
                })
                .flatten();
            let mut m = match previous.and_then(|id| g.members.remove(&id)) {
                Some(m) => {
                    took_over = Some(m.clone());
                    m
                }
                None => {
                    if g.members.len() >= env.config.max_size {
                        return Err(ServiceError::new(
                            ErrorCode::GROUP_MAX_SIZE_REACHED,
                            format!(
                                "group {group} has {} members, the most it may have",
                                env.config.max_size
                            ),
                        ));
                    }
                    MemberValue::default()
                }
            };
            m.instance_id = hb.instance_id.clone();
            set_subscription(&mut m, hb, session);
            g.members.insert(new_member_id.to_string(), m);
            new_member_id.to_string()
        }
        LEAVE_EPOCH | STATIC_LEAVE_EPOCH => {
            if !g.members.contains_key(&hb.member_id) {
                return Err(unknown_member(group, &hb.member_id));
            }
            if hb.member_epoch == LEAVE_EPOCH {
                g.members.remove(&hb.member_id);
                refresh(&mut g, group, env, true);
            }
            // A static leave changes nothing here: the coordinator's session timer evicts the
            // member unless its instance comes back first.
            return Ok((
                g,
                HeartbeatAnswer {
                    member_id: hb.member_id.clone(),
                    member_epoch: hb.member_epoch,
                    session_timeout_ms: session,
                    heartbeat_interval_ms: interval,
                    assignment: BTreeSet::new(),
                },
            ));
        }
        epoch => {
            let Some(m) = g.members.get_mut(&hb.member_id) else {
                return Err(unknown_member(group, &hb.member_id));
            };
            let held: BTreeSet<Tp> = owned_now(m);
            // An older epoch is accepted when the member owns nothing it was not given (its
            // answer with the new epoch was lost); anything else is a fenced zombie.
            if epoch > m.epoch || (epoch < m.epoch && !hb.owned.is_subset(&held)) || epoch < 0 {
                return Err(ServiceError::new(
                    ErrorCode::FENCED_MEMBER_EPOCH,
                    format!(
                        "member {} of group {group} is at epoch {}, not {epoch}: rejoin",
                        hb.member_id, m.epoch
                    ),
                ));
            }
            set_subscription(m, hb, session);
            // Revoked partitions the member no longer lists are released.
            m.revoking
                .retain(|(t, p, _)| hb.owned.contains(&(t.clone(), *p)));
            hb.member_id.clone()
        }
    };
    // A new member and a changed subscription recompute the target; a plain heartbeat only
    // reconciles, and so does a static member taking over its own assignment unchanged (KIP-345:
    // a restart within the session is no rebalance).
    let force = match &took_over {
        Some(prev) => g.members.get(&member_id).is_none_or(|m| {
            prev.topics != m.topics || prev.regex != m.regex || prev.assignor != m.assignor
        }),
        None => subscription_changed(model, &g, &member_id),
    };
    refresh(&mut g, group, env, force);
    reconcile(&mut g, &member_id);
    let m = &g.members[&member_id];
    let waiting = m.target.len() > m.assigned.len();
    let answer = HeartbeatAnswer {
        member_id: member_id.clone(),
        member_epoch: m.epoch,
        session_timeout_ms: m.session_timeout_ms,
        heartbeat_interval_ms: if waiting {
            settings::waiting_interval_ms(interval)
        } else {
            interval
        },
        assignment: m.assigned.iter().map(|(t, p, _)| (t.clone(), *p)).collect(),
    };
    Ok((g, answer))
}

pub(super) fn unknown_member(group: &str, member: &str) -> ServiceError {
    ServiceError::new(
        ErrorCode::UNKNOWN_MEMBER_ID,
        format!("group {group} has no member {member:?} (it left or was evicted): rejoin"),
    )
}

/// A member's details from its heartbeat (the instance id is fixed at join).
fn set_subscription(m: &mut MemberValue, hb: &Heartbeat, session: u32) {
    m.client_id = hb.client_id.clone();
    m.host = hb.host.clone();
    let mut topics = hb.topics.clone();
    topics.sort();
    topics.dedup();
    m.topics = topics;
    m.regex = hb.regex.clone();
    m.assignor = hb.assignor.clone();
    m.session_timeout_ms = session;
}

/// Whether `member`'s subscription differs between `before` and `after`.
fn subscription_changed(before: &GroupModel, after: &GroupModel, member: &str) -> bool {
    match (before.members.get(member), after.members.get(member)) {
        (Some(a), Some(b)) => {
            a.topics != b.topics || a.regex != b.regex || a.assignor != b.assignor
        }
        (None, Some(_)) | (Some(_), None) => true,
        (None, None) => false,
    }
}

/// What a member holds now: assigned plus not yet released.
fn owned_now(m: &MemberValue) -> BTreeSet<Tp> {
    m.assigned
        .iter()
        .chain(&m.revoking)
        .map(|(t, p, _)| (t.clone(), *p))
        .collect()
}

/// Brings the group's own record up to date: finished resets written, emptiness tracked, and the
/// target assignment recomputed (with a new group epoch) when `force` or when the subscribed
/// topics' partitions changed.
pub fn refresh(g: &mut GroupModel, group: &str, env: &Env, mut force: bool) {
    let _ = group;
    let mut meta = g.meta.clone().unwrap_or_else(|| GroupValue {
        assignor: Assignor::DEFAULT.name().to_string(),
        empty_since_ms: -1,
        ..GroupValue::default()
    });
    // Resets whose partitions nobody owns any more are written now, and handed back below.
    let mut still = Vec::new();
    for (t, p, o) in std::mem::take(&mut meta.resetting) {
        if g.owner_of(&t, p).is_some() {
            still.push((t, p, o));
        } else {
            g.offsets.insert(
                (t, p),
                OffsetValue {
                    offset: o,
                    metadata: String::new(),
                    commit_ms: env.now_ms,
                    epoch: -1,
                },
            );
            force = true;
        }
    }
    meta.resetting = still;
    // The subscribed topics and their partition counts, as the assignor would see them now.
    let mut subscribed: BTreeMap<String, u32> = BTreeMap::new();
    let mut specs = Vec::with_capacity(g.members.len());
    for (id, m) in &g.members {
        let topics = subscription::resolve(&m.topics, &m.regex, env.topics);
        for t in &topics {
            subscribed.insert(t.clone(), env.topics[t]);
        }
        specs.push(MemberSpec {
            member_id: id.clone(),
            topics,
        });
    }
    let seen: BTreeMap<String, u32> = meta.topics.iter().cloned().collect();
    if seen != subscribed {
        force = true;
    }
    // The group's assignor: the one most members ask for (ties: the first by name), else the
    // one it has.
    let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
    for m in g.members.values().filter(|m| !m.assignor.is_empty()) {
        *votes.entry(m.assignor.as_str()).or_default() += 1;
    }
    if let Some((name, _)) = votes
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
    {
        if meta.assignor != *name {
            meta.assignor = name.to_string();
            force = true;
        }
    }
    if force {
        meta.epoch += 1;
        meta.topics = subscribed.iter().map(|(t, n)| (t.clone(), *n)).collect();
        let previous: BTreeMap<String, BTreeSet<Tp>> = g
            .members
            .iter()
            .map(|(id, m)| (id.clone(), m.target.iter().cloned().collect()))
            .collect();
        let excluded: BTreeSet<Tp> = meta
            .resetting
            .iter()
            .map(|(t, p, _)| (t.clone(), *p))
            .collect();
        let assignor = Assignor::from_name(&meta.assignor).unwrap_or(Assignor::DEFAULT);
        let target = assign::assign(assignor, &specs, &subscribed, &previous, &excluded);
        for (id, m) in g.members.iter_mut() {
            m.target = target
                .get(id)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
        }
    }
    if g.members.is_empty() {
        if meta.empty_since_ms < 0 {
            meta.empty_since_ms = env.now_ms;
        }
    } else {
        meta.empty_since_ms = -1;
    }
    g.meta = Some(meta);
}

/// Moves `member` one step towards its target: revoke first; once nothing is left to revoke, move
/// it to the group epoch and give it the target partitions nobody owns.
pub fn reconcile(g: &mut GroupModel, member: &str) {
    let epoch = g.epoch();
    let Some(m) = g.members.get(member) else {
        return;
    };
    if !m.revoking.is_empty() {
        return;
    }
    let target: BTreeSet<Tp> = m.target.iter().cloned().collect();
    let (keep, revoke): (Vec<_>, Vec<_>) = m
        .assigned
        .iter()
        .cloned()
        .partition(|(t, p, _)| target.contains(&(t.clone(), *p)));
    if !revoke.is_empty() {
        if let Some(m) = g.members.get_mut(member) {
            m.assigned = keep;
            m.revoking = revoke;
        }
        return;
    }
    let mine: BTreeSet<Tp> = m.assigned.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
    let free: Vec<Tp> = target
        .iter()
        .filter(|tp| !mine.contains(*tp) && g.owner_of(&tp.0, tp.1).is_none())
        .cloned()
        .collect();
    if let Some(m) = g.members.get_mut(member) {
        m.epoch = epoch;
        m.assigned
            .extend(free.into_iter().map(|(t, p)| (t, p, epoch)));
        m.assigned.sort();
    }
    debug_assert!(no_two_owners(g), "a partition has two owners");
}

/// Every partition is held (assigned or revoking) by at most one member.
pub fn no_two_owners(g: &GroupModel) -> bool {
    let mut seen = BTreeSet::new();
    g.members
        .values()
        .flat_map(|m| m.assigned.iter().chain(&m.revoking))
        .all(|(t, p, _)| seen.insert((t.clone(), *p)))
}

/// Removes members (evicted: session timed out, deadline passed, revocation never acknowledged)
/// and recomputes the target. Their partitions are free at once.
pub fn remove_members(model: &GroupModel, group: &str, ids: &[String], env: &Env) -> GroupModel {
    let mut g = model.clone();
    for id in ids {
        g.members.remove(id);
    }
    refresh(&mut g, group, env, true);
    g
}

pub use super::offsets::{commit, delete, expire, reset, reset_pending, CommitOutcome};

/// The records that turn `before` into `after` for `group`: changed or new records, and
/// tombstones for removed ones.
pub fn diff(group: &str, before: &GroupModel, after: &GroupModel) -> Vec<Write> {
    let mut out = Vec::new();
    let gkey = || Key::Group {
        group: group.to_string(),
    };
    match (&before.meta, &after.meta) {
        (a, Some(b)) if a.as_ref() != Some(b) => out.push((gkey(), Some(Value::Group(b.clone())))),
        (Some(_), None) => out.push((gkey(), None)),
        _ => {}
    }
    let mkey = |id: &String| Key::Member {
        group: group.to_string(),
        member_id: id.clone(),
    };
    for (id, m) in &after.members {
        if before.members.get(id) != Some(m) {
            out.push((mkey(id), Some(Value::Member(m.clone()))));
        }
    }
    for id in before.members.keys() {
        if !after.members.contains_key(id) {
            out.push((mkey(id), None));
        }
    }
    let okey = |(t, p): &Tp| Key::Offset {
        group: group.to_string(),
        topic: t.clone(),
        partition: *p,
    };
    for (tp, o) in &after.offsets {
        if before.offsets.get(tp) != Some(o) {
            out.push((okey(tp), Some(Value::Offset(o.clone()))));
        }
    }
    for tp in before.offsets.keys() {
        if !after.offsets.contains_key(tp) {
            out.push((okey(tp), None));
        }
    }
    out
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
