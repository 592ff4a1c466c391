//! The topic partitions this broker hosts (its replicas), their settings and their directories
//! (`<data dir>/topics/<name>/topic.json` and one directory per hosted partition beside it).
//!
//! Which topics exist is the cluster metadata's business (`cluster`); this registry only opens and
//! closes the local replicas the metadata assigns here (see `cluster::reconcile`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use sluice_protocol::wire::ErrorCode;
use sluice_storage::{FlushPolicy, LogConfig, PartitionLog};

use crate::partition::{CodedError, Partition};
use crate::raft::state_machine::NoState;

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

/// What `topic.json` holds: which incarnation of the topic the directory belongs to.
#[derive(Debug, Serialize, Deserialize)]
struct TopicFile {
    id: u32,
    configs: Vec<(String, String)>,
}

/// A topic with the partitions hosted here.
#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub id: u32,
    pub settings: TopicSettings,
    pub partitions: BTreeMap<u32, Arc<Partition>>,
}

/// The local replicas of every topic.
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
    pub fn new(
        data_dir: &Path,
        flush: FlushPolicy,
        cache_window: Option<u64>,
    ) -> Result<Topics, CodedError> {
        let dir = data_dir.join("topics");
        std::fs::create_dir_all(&dir).map_err(|e| io_err("create", &dir, e))?;
        Ok(Topics {
            dir,
            flush,
            cache_window,
            topics: RwLock::new(HashMap::new()),
            any_append: Arc::new(tokio::sync::watch::channel(0u64).0),
        })
    }

    /// Changes whenever any hosted partition's high watermark moves.
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
            .and_then(|t| t.partitions.get(&partition).cloned())
            .ok_or_else(|| {
                (
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("unknown topic or partition {topic}/{partition} (not hosted by this broker)"),
                )
            })
    }

    /// Opens the local replica of `name`/`partition` and starts its raft group (joining it with
    /// `members` if it is new).
    pub async fn open_partition(
        &self,
        ctx: &crate::cluster::group::RaftContext,
        name: &str,
        record: &crate::cluster::state::TopicRecord,
        partition: u32,
        members: Option<BTreeMap<u64, openraft::BasicNode>>,
    ) -> Result<(), CodedError> {
        let settings = TopicSettings::from_pairs(&record.configs)
            .map_err(|m| (ErrorCode::INVALID_CONFIG, m))?;
        let tdir = self.dir.join(name);
        let meta = tdir.join("topic.json");
        let pdir = tdir.join(partition.to_string());
        let cfg = settings.log_config(self.flush, self.cache_window);
        let file = TopicFile {
            id: record.id,
            configs: record.configs.clone(),
        };
        let (tdir2, meta2, pdir2) = (tdir.clone(), meta.clone(), pdir.clone());
        let log = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&tdir2).map_err(|e| io_err("create", &tdir2, e))?;
            if !meta2.exists() {
                let body = serde_json::to_vec_pretty(&file).map_err(|e| io_err("encode", &meta2, e))?;
                write_durably(&tdir2.join("topic.json.tmp"), &meta2, &body)
                    .map_err(|e| io_err("write", &meta2, e))?;
            }
            let (log, report) = PartitionLog::open(&pdir2, cfg)
                .map_err(|e| io_err("open partition", &pdir2, e))?;
            if report.truncated.is_some() {
                tracing::warn!(dir = %pdir2.display(), ?report, "partition recovered with a truncated tail");
            }
            Ok::<_, CodedError>(log)
        })
        .await
        .map_err(|e| (ErrorCode::UNKNOWN, e.to_string()))??;
        let group = crate::cluster::group::Group::start(
            ctx,
            record.group_id(partition),
            log,
            Box::new(NoState),
        )
        .await
        .map_err(|e| io_err("start raft group of", &pdir, e))?;
        if let Some(members) = members {
            group
                .initialize(members)
                .await
                .map_err(|e| io_err("initialize raft group of", &pdir, e))?;
        }
        let part = Arc::new(Partition::new(
            name.to_string(),
            partition,
            group,
            self.any_append.clone(),
        ));
        let mut map = self.topics.write().unwrap_or_else(|p| p.into_inner());
        let mut partitions = map
            .get(name)
            .filter(|t| t.id == record.id)
            .map(|t| t.partitions.clone())
            .unwrap_or_default();
        partitions.insert(partition, part);
        map.insert(
            name.to_string(),
            Arc::new(Topic {
                name: name.to_string(),
                id: record.id,
                settings,
                partitions,
            }),
        );
        tracing::info!(topic = name, partition, "hosting partition replica");
        Ok(())
    }

    /// Stops the local replicas of `name` and deletes their data.
    pub async fn remove(&self, ctx: &crate::cluster::group::RaftContext, name: &str) {
        let removed = self
            .topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Some(t) = removed {
            for p in t.partitions.values() {
                p.group.shutdown(&ctx.registry).await;
                p.poke();
            }
            let logs: Vec<_> = t.partitions.values().map(|p| p.log().clone()).collect();
            let tdir = self.dir.join(name);
            let _ = tokio::task::spawn_blocking(move || {
                for l in logs {
                    let _ = l.close();
                }
                let _ = std::fs::remove_file(tdir.join("topic.json"));
                if let Err(e) = std::fs::remove_dir_all(&tdir) {
                    tracing::warn!(dir = %tdir.display(), error = %e, "removing a deleted topic failed");
                }
            })
            .await;
            tracing::info!(topic = name, "removed local replicas of topic");
        }
    }

    /// Stops the local replica of one partition (moved away from this broker) and deletes its data.
    pub async fn remove_partition(
        &self,
        ctx: &crate::cluster::group::RaftContext,
        name: &str,
        partition: u32,
    ) {
        let removed = {
            let mut map = self.topics.write().unwrap_or_else(|p| p.into_inner());
            let Some(t) = map.get(name).cloned() else {
                return;
            };
            let mut partitions = t.partitions.clone();
            let removed = partitions.remove(&partition);
            map.insert(
                name.to_string(),
                Arc::new(Topic {
                    name: t.name.clone(),
                    id: t.id,
                    settings: t.settings.clone(),
                    partitions,
                }),
            );
            removed
        };
        let Some(p) = removed else { return };
        p.group.shutdown(&ctx.registry).await;
        p.poke();
        let log = p.log().clone();
        let dir = self.dir.join(name).join(partition.to_string());
        let _ = tokio::task::spawn_blocking(move || {
            let _ = log.close();
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "removing a moved replica failed");
            }
        })
        .await;
        tracing::info!(
            topic = name,
            partition,
            "replica moved away; local copy removed"
        );
    }

    /// Topic directories on disk and the topic id each belongs to (for leftovers of deletions that
    /// happened while this broker was down).
    pub fn on_disk(&self) -> Vec<(String, u32)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let text = std::fs::read_to_string(e.path().join("topic.json")).ok()?;
                let f: TopicFile = serde_json::from_str(&text).ok()?;
                Some((name, f.id))
            })
            .collect()
    }

    /// Whether the topic has a directory here (a removal finishes by deleting it).
    pub fn has_dir(&self, name: &str) -> bool {
        validate_name(name).is_ok() && self.dir.join(name).exists()
    }

    /// Removes the directory of a topic this broker does not host.
    pub fn remove_leftover(&self, name: &str) {
        if validate_name(name).is_err() || self.get(name).is_some() {
            return;
        }
        let tdir = self.dir.join(name);
        let _ = std::fs::remove_file(tdir.join("topic.json"));
        if std::fs::remove_dir_all(&tdir).is_ok() {
            tracing::info!(topic = name, "removed the data of a deleted topic");
        }
    }

    /// Waits up to `timeout` until every hosted replica knows its group's leader.
    pub async fn wait_for_leaders(&self, timeout: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            let all = self
                .list()
                .iter()
                .all(|t| t.partitions.values().all(|p| p.group.leader().is_some()));
            if all {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Stops every raft group and cleanly closes every log (shutdown).
    pub async fn close_all(&self, ctx: &crate::cluster::group::RaftContext) {
        for t in self.list() {
            for p in t.partitions.values() {
                p.group.shutdown(&ctx.registry).await;
            }
        }
        let logs: Vec<_> = self
            .list()
            .iter()
            .flat_map(|t| {
                t.partitions
                    .values()
                    .map(|p| p.log().clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for l in logs {
                if let Err(e) = l.close() {
                    tracing::error!(dir = %l.dir().display(), error = %e, "closing partition failed");
                }
            }
        })
        .await;
    }
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
