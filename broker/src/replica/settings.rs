//! Per-topic settings (the `configs` pairs a topic is created with) and topic names: parsing and
//! validation only, no I/O.

use sluice_storage::{FlushPolicy, LogConfig, RetentionLimits};

/// Longest topic name (same as Kafka's).
pub const MAX_TOPIC_NAME: usize = 249;
/// Most partitions one topic may have.
pub const MAX_PARTITIONS: u32 = 10_000;

/// Per-topic settings, from `configs` pairs on create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSettings {
    pub retention_ms: Option<i64>,
    pub retention_bytes: Option<u64>,
    pub segment_bytes: u64,
    pub segment_ms: Option<i64>,
    pub compact: bool,
    /// An idempotent producer idle this long (on the partition's log time) is forgotten.
    pub producer_expiration_ms: i64,
    /// Producer ids a partition tracks at most; a new one past it is refused.
    pub max_producer_ids: usize,
}

impl TopicSettings {
    /// What retention deletes the topic's segments by.
    pub fn retention(&self) -> RetentionLimits {
        RetentionLimits {
            ms: self.retention_ms,
            bytes: self.retention_bytes,
        }
    }

    /// The idempotent-producer limits of the topic's partitions.
    pub fn producer_limits(&self) -> crate::replica::producers::Limits {
        crate::replica::producers::Limits {
            max_producers: self.max_producer_ids,
            expire_after_ms: self.producer_expiration_ms,
        }
    }
}

impl Default for TopicSettings {
    fn default() -> Self {
        let d = LogConfig::default();
        TopicSettings {
            retention_ms: d.retention_ms,
            retention_bytes: d.retention_bytes,
            segment_bytes: d.segment_bytes,
            segment_ms: d.segment_ms,
            compact: false,
            producer_expiration_ms: crate::replica::producers::Limits::default().expire_after_ms,
            max_producer_ids: crate::replica::producers::Limits::default().max_producers,
        }
    }
}

fn parse_i64(key: &str, v: &str) -> Result<i64, String> {
    v.parse::<i64>()
        .map_err(|_| format!("{key} must be an integer, got {v:?}"))
}

/// `-1` means unlimited, like Kafka.
fn optional(key: &str, v: &str) -> Result<Option<i64>, String> {
    match parse_i64(key, v)? {
        -1 => Ok(None),
        n if n > 0 => Ok(Some(n)),
        n => Err(format!("{key} must be positive or -1, got {n}")),
    }
}

impl TopicSettings {
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<TopicSettings, String> {
        let mut s = TopicSettings::default();
        for (k, v) in pairs {
            match k.as_str() {
                "retention.ms" => s.retention_ms = optional(k, v)?,
                "retention.bytes" => s.retention_bytes = optional(k, v)?.map(|n| n as u64),
                "segment.ms" => s.segment_ms = optional(k, v)?,
                "segment.bytes" => {
                    let n = parse_i64(k, v)?;
                    if n < 4096 || n as u64 > sluice_storage::MAX_SEGMENT_BYTES {
                        return Err(format!(
                            "segment.bytes must be in [4096, {}]",
                            sluice_storage::MAX_SEGMENT_BYTES
                        ));
                    }
                    s.segment_bytes = n as u64;
                }
                "cleanup.policy" => {
                    s.compact = match v.as_str() {
                        "delete" => false,
                        "compact" => true,
                        _ => {
                            return Err(format!(
                                "cleanup.policy must be delete or compact, got {v:?}"
                            ))
                        }
                    }
                }
                "producer.id.expiration.ms" => match parse_i64(k, v)? {
                    n if n > 0 => s.producer_expiration_ms = n,
                    n => return Err(format!("{k} must be positive, got {n}")),
                },
                "producer.ids.max" => match parse_i64(k, v)? {
                    n if (1..=1_000_000).contains(&n) => s.max_producer_ids = n as usize,
                    n => return Err(format!("{k} must be in [1, 1000000], got {n}")),
                },
                _ => return Err(format!("unknown topic config {k:?}")),
            }
        }
        Ok(s)
    }

    pub fn to_pairs(&self) -> Vec<(String, String)> {
        let opt = |v: Option<i64>| v.map_or("-1".to_string(), |n| n.to_string());
        vec![
            (
                "cleanup.policy".into(),
                if self.compact { "compact" } else { "delete" }.into(),
            ),
            (
                "retention.bytes".into(),
                opt(self.retention_bytes.map(|n| n as i64)),
            ),
            ("retention.ms".into(), opt(self.retention_ms)),
            ("segment.bytes".into(), self.segment_bytes.to_string()),
            ("segment.ms".into(), opt(self.segment_ms)),
            (
                "producer.id.expiration.ms".into(),
                self.producer_expiration_ms.to_string(),
            ),
            ("producer.ids.max".into(), self.max_producer_ids.to_string()),
        ]
    }

    /// The flush policy a replicated log runs with, from the broker's `flush` setting. Raft fsyncs
    /// a group's log after every round of appends (before it counts them), so the log itself
    /// needs no flusher: `External` (no thread per log). Only `always` adds something raft does not:
    /// the leader's own append is fsynced before acks `leader` is answered, so it stays.
    pub fn replicated_flush(configured: FlushPolicy) -> FlushPolicy {
        match configured {
            FlushPolicy::Always => FlushPolicy::Always,
            FlushPolicy::Never | FlushPolicy::Interval { .. } | FlushPolicy::External => {
                FlushPolicy::External
            }
        }
    }

    pub fn log_config(&self, flush: FlushPolicy, cache: &CacheSettings) -> LogConfig {
        LogConfig {
            page_cache_window_bytes: cache.page_cache_window_bytes,
            cold_reads: cache.cold_reads.clone(),
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            retention_bytes: self.retention_bytes,
            retention_ms: self.retention_ms,
            flush: TopicSettings::replicated_flush(flush),
            ..LogConfig::default()
        }
    }
}

/// How a broker's partition logs use the page cache: the window of newest data kept cached, and
/// the shared cold-read pool that serves what lies behind it (see `sluice_storage::ColdReads`).
#[derive(Debug, Clone, Default)]
pub struct CacheSettings {
    pub page_cache_window_bytes: Option<u64>,
    pub cold_reads: Option<std::sync::Arc<sluice_storage::ColdReads>>,
}

/// Whether a topic is internal (named `__...`, like `__consumer_offsets`): created and written by
/// the broker itself; clients may read it but not create, delete or produce to it.
pub fn is_internal(name: &str) -> bool {
    name.starts_with("__")
}

/// Why a client may not create, delete or alter internal topic `name`.
pub fn internal_topic_message(name: &str) -> String {
    format!("{name} is an internal topic (names starting with \"__\" are the broker's own)")
}

pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_TOPIC_NAME {
        return Err(format!(
            "topic name must be 1 to {MAX_TOPIC_NAME} characters"
        ));
    }
    if name == "." || name == ".." {
        return Err("topic name cannot be '.' or '..'".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(format!(
            "topic name {name:?} may only contain ASCII letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}
