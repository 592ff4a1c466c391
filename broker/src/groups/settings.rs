//! A group's own settings over the coordinator broker's defaults, pure like the rest of the
//! decisions: the session a member gets, how often members heartbeat, and `AlterGroupConfig`
//! (`consumer.session.timeout.ms`, `consumer.heartbeat.interval.ms`, after KIP-848's group
//! configs), checked against the broker's bounds.

use sluice_protocol::wire::ErrorCode;

use super::reconcile::{check_group_id, refresh, Env};
use crate::config::GroupConfig;
use crate::error::{Result, ServiceError};
use crate::replica::groups::model::GroupModel;

fn ms(d: std::time::Duration) -> u32 {
    d.as_millis().min(u32::MAX as u128) as u32
}

/// The session a member gets: what it asked for within the broker's bounds, else the group's
/// setting, else the broker's default.
pub(super) fn session_ms(asked: u32, g: &GroupModel, config: &GroupConfig) -> u32 {
    let group = g.meta.as_ref().map_or(0, |m| m.session_timeout_ms);
    match (asked, group) {
        (0, 0) => ms(config.session_timeout),
        (0, group) => group,
        (asked, _) => asked.clamp(
            ms(config.min_session_timeout),
            ms(config.max_session_timeout),
        ),
    }
}

/// How often members of `g` heartbeat: the group's setting, else the broker's.
pub fn heartbeat_interval_ms(g: &GroupModel, config: &GroupConfig) -> u32 {
    match g.meta.as_ref().map_or(0, |m| m.heartbeat_interval_ms) {
        0 => ms(config.heartbeat_interval),
        group => group,
    }
}

/// How often a member that waits for partitions other members still have to release heartbeats:
/// a fifth of the group's interval, at least 50 ms (never more than the interval). It hears that
/// they are free within that instead of at its next regular heartbeat, so a moved partition resumes
/// within about `interval + interval / 5` of the join, not up to two intervals (the old owner's
/// next heartbeat, then the newcomer's). Only members in a rebalance ask this often.
pub fn waiting_interval_ms(interval_ms: u32) -> u32 {
    (interval_ms / WAITING_DIVISOR)
        .max(MIN_WAITING_INTERVAL_MS)
        .min(interval_ms)
}

const WAITING_DIVISOR: u32 = 5;
const MIN_WAITING_INTERVAL_MS: u32 = 50;

/// Sets the group's own settings (`consumer.session.timeout.ms`, `consumer.heartbeat.interval.ms`;
/// an empty value: back to the broker's default), checked against the broker's bounds: a session
/// within them, and a heartbeat interval at most half the group's session.
pub fn alter_config(
    model: &GroupModel,
    group: &str,
    configs: &[(String, String)],
    env: &Env,
) -> Result<GroupModel> {
    use sluice_protocol::wire::{GROUP_HEARTBEAT_INTERVAL, GROUP_SESSION_TIMEOUT};
    check_group_id(group)?;
    let invalid = |m: String| ServiceError::new(ErrorCode::INVALID_CONFIG, m);
    let mut g = model.clone();
    if g.meta.is_none() {
        refresh(&mut g, group, env, false);
    }
    let Some(meta) = g.meta.as_mut() else {
        unreachable!("refresh always leaves a group record")
    };
    for (k, v) in configs {
        let value = if v.is_empty() {
            0
        } else {
            v.parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid(format!("{k} must be a positive number of ms, got {v:?}")))?
        };
        match k.as_str() {
            GROUP_SESSION_TIMEOUT => meta.session_timeout_ms = value,
            GROUP_HEARTBEAT_INTERVAL => meta.heartbeat_interval_ms = value,
            other => {
                return Err(invalid(format!(
                    "unknown group setting {other:?} (known: {GROUP_SESSION_TIMEOUT}, {GROUP_HEARTBEAT_INTERVAL})"
                )))
            }
        }
    }
    let (lo, hi) = (
        ms(env.config.min_session_timeout),
        ms(env.config.max_session_timeout),
    );
    if meta.session_timeout_ms != 0 && !(lo..=hi).contains(&meta.session_timeout_ms) {
        return Err(invalid(format!(
            "{GROUP_SESSION_TIMEOUT} must be within the broker's bounds {lo}..={hi} ms"
        )));
    }
    let session = match meta.session_timeout_ms {
        0 => ms(env.config.session_timeout),
        s => s,
    };
    let interval = match meta.heartbeat_interval_ms {
        0 => ms(env.config.heartbeat_interval),
        h => h,
    };
    if u64::from(interval) * 2 > u64::from(session) {
        return Err(invalid(format!(
            "the heartbeat interval ({interval} ms) must be at most half the group's session ({session} ms)"
        )));
    }
    Ok(g)
}
