//! The topics this broker hosts: their settings, their partitions' logs, and their directories
//! (`<data dir>/topics/<name>/topic.json` and one directory per partition beside it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use sluice_protocol::wire::ErrorCode;
use sluice_storage::{FlushPolicy, LogConfig, PartitionLog};

use crate::partition::{CodedError, Partition};

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
        ]
    }

    pub fn log_config(
        &self,
        flush: FlushPolicy,
        page_cache_window_bytes: Option<u64>,
    ) -> LogConfig {
        LogConfig {
            page_cache_window_bytes,
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            retention_bytes: self.retention_bytes,
            retention_ms: self.retention_ms,
            flush,
            ..LogConfig::default()
        }
    }
}

/// What `topic.json` holds.
#[derive(Debug, Serialize, Deserialize)]
struct TopicFile {
    partitions: u32,
    configs: Vec<(String, String)>,
}

/// A topic and its partitions.
#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub settings: TopicSettings,
    pub partitions: Vec<Arc<Partition>>,
}

/// Every topic on this broker.
#[derive(Debug)]
pub struct Topics {
    dir: PathBuf,
    flush: FlushPolicy,
    cache_window: Option<u64>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    any_append: Arc<tokio::sync::watch::Sender<u64>>,
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

fn io_err(context: &str, path: &Path, e: impl std::fmt::Display) -> CodedError {
    (
        ErrorCode::STORAGE_ERROR,
        format!("{context} {}: {e}", path.display()),
    )
}

impl Topics {
    /// Opens every topic under `<data_dir>/topics`.
    pub fn load(
        data_dir: &Path,
        flush: FlushPolicy,
        cache_window: Option<u64>,
    ) -> Result<Topics, CodedError> {
        let dir = data_dir.join("topics");
        std::fs::create_dir_all(&dir).map_err(|e| io_err("create", &dir, e))?;
        let mut topics = HashMap::new();
        let any_append = Arc::new(tokio::sync::watch::channel(0u64).0);
        let entries = std::fs::read_dir(&dir).map_err(|e| io_err("list", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_err("list", &dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.path().join("topic.json");
            if validate_name(&name).is_err() || !meta.exists() {
                continue;
            }
            let text = std::fs::read_to_string(&meta).map_err(|e| io_err("read", &meta, e))?;
            let file: TopicFile =
                serde_json::from_str(&text).map_err(|e| io_err("parse", &meta, e))?;
            let settings = TopicSettings::from_pairs(&file.configs)
                .map_err(|e| io_err("settings in", &meta, e))?;
            let topic = open_topic(
                &entry.path(),
                &name,
                file.partitions,
                settings.log_config(flush, cache_window),
                settings,
                &any_append,
            )?;
            tracing::info!(topic = %name, partitions = file.partitions, "opened topic");
            topics.insert(name, Arc::new(topic));
        }
        Ok(Topics {
            dir,
            flush,
            cache_window,
            topics: RwLock::new(topics),
            any_append,
        })
    }

    /// Changes whenever any partition is appended to.
    pub fn subscribe_appends(&self) -> tokio::sync::watch::Receiver<u64> {
        self.any_append.subscribe()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    pub fn list(&self) -> Vec<Arc<Topic>> {
        let mut v: Vec<_> = self
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>, CodedError> {
        self.get(topic)
            .and_then(|t| t.partitions.get(partition as usize).cloned())
            .ok_or_else(|| {
                (
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("unknown topic or partition {topic}/{partition}"),
                )
            })
    }

    /// Creates a topic (blocking file I/O).
    pub fn create(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
        configs: &[(String, String)],
    ) -> Result<(), CodedError> {
        validate_name(name).map_err(|m| (ErrorCode::INVALID_TOPIC, m))?;
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err((
                ErrorCode::INVALID_PARTITIONS,
                format!("partitions must be 1 to {MAX_PARTITIONS}"),
            ));
        }
        if replication_factor != 1 {
            return Err((
                ErrorCode::INVALID_REPLICATION_FACTOR,
                format!("replication factor {replication_factor} needs {replication_factor} brokers; this cluster has 1"),
            ));
        }
        let settings =
            TopicSettings::from_pairs(configs).map_err(|m| (ErrorCode::INVALID_CONFIG, m))?;
        let mut map = self.topics.write().unwrap_or_else(|p| p.into_inner());
        if map.contains_key(name) {
            return Err((
                ErrorCode::TOPIC_ALREADY_EXISTS,
                format!("topic {name} already exists"),
            ));
        }
        let tdir = self.dir.join(name);
        if tdir.exists() {
            // Leftovers of a topic whose creation or deletion was interrupted.
            std::fs::remove_dir_all(&tdir).map_err(|e| io_err("remove", &tdir, e))?;
        }
        std::fs::create_dir_all(&tdir).map_err(|e| io_err("create", &tdir, e))?;
        let topic = open_topic(
            &tdir,
            name,
            partitions,
            settings.log_config(self.flush, self.cache_window),
            settings.clone(),
            &self.any_append,
        )?;
        // topic.json last: a directory without it is an unfinished creation and is ignored on load.
        let meta = tdir.join("topic.json");
        let tmp = tdir.join("topic.json.tmp");
        let body = serde_json::to_vec_pretty(&TopicFile {
            partitions,
            configs: settings.to_pairs(),
        })
        .map_err(|e| io_err("encode", &meta, e))?;
        write_durably(&tmp, &meta, &body).map_err(|e| io_err("write", &meta, e))?;
        map.insert(name.to_string(), Arc::new(topic));
        tracing::info!(topic = name, partitions, "created topic");
        Ok(())
    }

    /// Deletes a topic and its data (blocking file I/O).
    pub fn delete(&self, name: &str) -> Result<(), CodedError> {
        let topic = {
            let mut map = self.topics.write().unwrap_or_else(|p| p.into_inner());
            map.remove(name).ok_or_else(|| {
                (
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("unknown topic {name}"),
                )
            })?
        };
        for p in &topic.partitions {
            let _ = p.log().close();
        }
        let tdir = self.dir.join(name);
        // Remove topic.json first so a crash midway leaves an ignored directory, not half a topic.
        let _ = std::fs::remove_file(tdir.join("topic.json"));
        std::fs::remove_dir_all(&tdir).map_err(|e| io_err("remove", &tdir, e))?;
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Flushes and cleanly closes every log (shutdown).
    pub fn close_all(&self) {
        for t in self.list() {
            for p in &t.partitions {
                if let Err(e) = p.log().close() {
                    tracing::error!(topic = %t.name, partition = p.id, error = %e, "closing partition failed");
                }
            }
        }
    }
}

fn open_topic(
    dir: &Path,
    name: &str,
    partitions: u32,
    cfg: LogConfig,
    settings: TopicSettings,
    any_append: &Arc<tokio::sync::watch::Sender<u64>>,
) -> Result<Topic, CodedError> {
    let mut parts = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        let pdir = dir.join(p.to_string());
        let (log, report) = PartitionLog::open(&pdir, cfg.clone())
            .map_err(|e| io_err("open partition", &pdir, e))?;
        if report.truncated.is_some() {
            tracing::warn!(
                topic = name,
                partition = p,
                ?report,
                "partition recovered with a truncated tail"
            );
        }
        parts.push(Arc::new(Partition::new(
            name.to_string(),
            p,
            log,
            any_append.clone(),
        )));
    }
    Ok(Topic {
        name: name.to_string(),
        settings,
        partitions: parts,
    })
}

fn write_durably(tmp: &Path, path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    std::fs::rename(tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}
