//! The settings of a [`GroupConsumer`](super::GroupConsumer): the group, what it subscribes to,
//! commits, where a partition without a committed offset starts, membership timing, and the
//! settings of the fetching consumer underneath. It owns the checks of those values
//! ([`GroupConsumerConfig::validate`]); it never talks to a broker and never decides anything at run
//! time.

use std::time::Duration;

use sluice_protocol::wire::MAX_GROUP_ID_BYTES;

use crate::consumer::{ConsumerConfig, OffsetReset};
use crate::error::{ClientError, Result};

/// What a group member reads: the coordinator resolves it against the topics that exist and
/// assigns the partitions among the members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// These topics (a topic that does not exist yet is picked up once it does).
    Topics(Vec<String>),
    /// Every topic whose whole name matches this regular expression (evaluated by the coordinator,
    /// which refuses one that does not compile with `INVALID_REGULAR_EXPRESSION`).
    Pattern(String),
}

/// Settings of a [`GroupConsumer`](super::GroupConsumer).
#[derive(Debug, Clone)]
pub struct GroupConsumerConfig {
    /// The group id: 1 to 255 bytes. No default (the empty default fails validation).
    pub group: String,
    /// What to read. No default (the empty default fails validation).
    pub subscription: Subscription,
    /// The assignor to ask the coordinator for (`"uniform"`, the default, or `"range"`); `None`:
    /// the group's.
    pub assignor: Option<String>,
    /// Commit the positions of owned partitions this often (from `poll`, without waiting for the
    /// answer), on revocation and on `close`. `None`: only explicit commits. Default 5 s.
    pub auto_commit: Option<Duration>,
    /// Where a partition without a committed offset starts. [`OffsetReset::None`]: `poll` fails
    /// naming it until it is [`seek`](super::GroupConsumer::seek)ed. Also used when a position
    /// falls out of the log. Replaces `consumer.auto_offset_reset`. Default
    /// [`OffsetReset::Earliest`].
    pub reset: OffsetReset,
    /// Static membership (KIP-345): a member that comes back with the same instance id within its
    /// session takes over its previous assignment, without a rebalance. `None`: a dynamic member.
    pub instance_id: Option<String>,
    /// The session to ask for: the coordinator evicts a member it has not heard from for this long
    /// (within the broker's bounds). `None`: the coordinator's default.
    pub session_timeout: Option<Duration>,
    /// The longest the application may take between two `poll`s (the processing deadline the
    /// member promises the coordinator; [`extend_deadline`](super::GroupConsumer::extend_deadline)
    /// pushes it further for one long step). A member past it is evicted. Default 5 min.
    pub max_processing: Duration,
    /// Sent to the coordinator in every heartbeat (shown by describe). Default `"sluice-client"`.
    pub client_id: String,
    /// The fetching consumer underneath (its `auto_offset_reset` is replaced by `reset`).
    pub consumer: ConsumerConfig,
}

impl Default for GroupConsumerConfig {
    fn default() -> Self {
        GroupConsumerConfig {
            group: String::new(),
            subscription: Subscription::Topics(Vec::new()),
            assignor: None,
            auto_commit: Some(Duration::from_secs(5)),
            reset: OffsetReset::Earliest,
            instance_id: None,
            session_timeout: None,
            max_processing: Duration::from_secs(300),
            client_id: "sluice-client".to_string(),
            consumer: ConsumerConfig::default(),
        }
    }
}

/// The longest string the wire carries (`u16` length).
const MAX_WIRE_STRING: usize = u16::MAX as usize;

impl GroupConsumerConfig {
    /// Defaults for `group` reading `subscription`.
    pub fn new(group: impl Into<String>, subscription: Subscription) -> Self {
        GroupConsumerConfig {
            group: group.into(),
            subscription,
            ..GroupConsumerConfig::default()
        }
    }

    /// Checks every value; the first bad one is [`ClientError::InvalidConfig`].
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ClientError::InvalidConfig(m));
        if self.group.is_empty() || self.group.len() > MAX_GROUP_ID_BYTES {
            return bad(format!(
                "group id must be 1 to {MAX_GROUP_ID_BYTES} bytes (got {})",
                self.group.len()
            ));
        }
        match &self.subscription {
            Subscription::Topics(topics) => {
                if topics.is_empty() {
                    return bad("subscription names no topic".into());
                }
                if let Some(t) = topics
                    .iter()
                    .find(|t| t.is_empty() || t.len() > MAX_WIRE_STRING)
                {
                    return bad(format!("bad topic name in subscription: {t:?}"));
                }
            }
            Subscription::Pattern(p) => {
                if p.is_empty() || p.len() > MAX_WIRE_STRING {
                    return bad("subscription pattern must be 1 to 65535 bytes".into());
                }
            }
        }
        for (what, v) in [
            ("assignor", &self.assignor),
            ("instance_id", &self.instance_id),
        ] {
            if let Some(s) = v {
                if s.is_empty() || s.len() > MAX_WIRE_STRING {
                    return bad(format!("{what} must be 1 to 65535 bytes when set"));
                }
            }
        }
        if self.client_id.len() > MAX_WIRE_STRING {
            return bad("client_id longer than 65535 bytes".into());
        }
        if self.auto_commit.is_some_and(|d| d.is_zero()) {
            return bad("auto_commit interval must be positive (None turns it off)".into());
        }
        if let Some(s) = self.session_timeout {
            if s.as_millis() == 0 || s.as_millis() > u32::MAX as u128 {
                return bad("session_timeout must be 1 ms to u32::MAX ms".into());
            }
        }
        if self.max_processing.as_millis() == 0
            || self.max_processing.as_millis() > u32::MAX as u128
        {
            return bad("max_processing must be 1 ms to u32::MAX ms".into());
        }
        Ok(())
    }

    /// The inner consumer's settings: `reset` decides where partitions without a position start.
    pub(super) fn inner_consumer(&self) -> ConsumerConfig {
        ConsumerConfig {
            auto_offset_reset: self.reset,
            ..self.consumer.clone()
        }
    }

    /// The session to ask for, in ms (0: the coordinator's default).
    pub(super) fn session_ms(&self) -> u32 {
        self.session_timeout
            .map_or(0, |d| d.as_millis().min(u32::MAX as u128) as u32)
    }
}
