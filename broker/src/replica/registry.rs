//! The partition replicas this broker hosts, their settings and their directories
//! (`<data dir>/topics/<name>/topic.json` and one directory per hosted partition beside it).
//!
//! Which topics exist is the cluster metadata's business; this registry only opens and closes the
//! local replicas the metadata assigns here (see `cluster::reconcile`), choosing each partition's
//! replicated state by topic kind and the leader services it runs, and brings a live topic's
//! changed settings to its open replicas.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use sluice_protocol::wire::ErrorCode;
use sluice_storage::{FlushPolicy, PartitionLog};

use super::services::LeaderService;
use super::settings::{validate_name, CacheSettings, TopicSettings};
use super::Replica;
use crate::error::{Result, ServiceError};
use crate::metrics::Metrics;
use crate::raft::group::{Group, RaftContext};

/// What `topic.json` holds: which incarnation of the topic the directory belongs to.
#[derive(Debug, Serialize, Deserialize)]
struct TopicFile {
    id: u32,
    configs: Vec<(String, String)>,
}

/// A topic with the partitions hosted here.
#[derive(Debug)]
pub struct HostedTopic {
    pub name: String,
    pub id: u32,
    pub settings: TopicSettings,
    pub partitions: BTreeMap<u32, Arc<Replica>>,
}

/// Which replica to open, as the metadata describes it.
#[derive(Debug)]
pub struct ReplicaSpec<'a> {
    pub topic: &'a str,
    pub topic_id: u32,
    /// The topic's `configs` pairs, as created.
    pub configs: &'a [(String, String)],
    pub partition: u32,
    pub group_id: u64,
    /// The group's first members, for a replica that initializes a new group (`None`: it waits for
    /// the leader to bring it in).
    pub members: Option<BTreeMap<u64, openraft::BasicNode>>,
    /// This replica is the partition's preferred leader: it initializes a new group at once and
    /// campaigns; the others initialize it only if no leader brought them in after a while.
    pub preferred: bool,
}

/// The local replicas of every topic.
#[derive(Debug)]
pub struct Replicas {
    dir: PathBuf,
    flush: FlushPolicy,
    cache: CacheSettings,
    topics: RwLock<HashMap<String, Arc<HostedTopic>>>,
    /// Run on every replica this broker leads.
    services: Vec<Arc<dyn LeaderService>>,
    any_append: Arc<tokio::sync::watch::Sender<u64>>,
    /// Where each replica's hot-path metrics come from.
    metrics: Arc<Metrics>,
}

fn io_err(context: &str, path: &Path, e: impl std::fmt::Display) -> ServiceError {
    ServiceError::new(
        ErrorCode::STORAGE_ERROR,
        format!("{context} {}: {e}", path.display()),
    )
}

/// Writes `topic.json` into `tdir` (creating it) unless it already holds `file`: durably, so a
/// restart opens the topic's replicas with the settings its maintenance already applied.
/// Blocking.
fn write_topic_file(tdir: &Path, file: &TopicFile) -> Result<()> {
    let meta = tdir.join("topic.json");
    let body = serde_json::to_vec_pretty(file).map_err(|e| io_err("encode", &meta, e))?;
    if std::fs::read(&meta).is_ok_and(|old| old == body) {
        return Ok(());
    }
    sluice_storage::create_dir_durably(tdir).map_err(|e| io_err("create", tdir, e))?;
    sluice_storage::write_file_durably(tdir, "topic.json", &body)
        .map_err(|e| io_err("write", &meta, e))
}

/// A read or write lock on the registry map. A poisoned lock means a panic mid-update of the map:
/// stop loudly rather than serve a half-updated registry.
fn poisoned() -> ! {
    panic!("replica registry lock poisoned: a panic happened mid-update")
}

impl Replicas {
    pub fn new(
        data_dir: &Path,
        flush: FlushPolicy,
        cache: CacheSettings,
        services: Vec<Arc<dyn LeaderService>>,
        metrics: Arc<Metrics>,
    ) -> Result<Replicas> {
        let dir = data_dir.join("topics");
        sluice_storage::create_dir_durably(&dir).map_err(|e| io_err("create", &dir, e))?;
        Ok(Replicas {
            dir,
            flush,
            cache,
            topics: RwLock::new(HashMap::new()),
            any_append: Arc::new(tokio::sync::watch::channel(0u64).0),
            services,
            metrics,
        })
    }

    /// Changes whenever any hosted partition's high watermark moves.
    pub fn subscribe_appends(&self) -> tokio::sync::watch::Receiver<u64> {
        self.any_append.subscribe()
    }

    pub fn get(&self, name: &str) -> Option<Arc<HostedTopic>> {
        self.topics
            .read()
            .unwrap_or_else(|_| poisoned())
            .get(name)
            .cloned()
    }

    pub fn list(&self) -> Vec<Arc<HostedTopic>> {
        let mut v: Vec<_> = self
            .topics
            .read()
            .unwrap_or_else(|_| poisoned())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The local replica of `topic`/`partition`, or `UNKNOWN_TOPIC_OR_PARTITION`.
    pub fn replica(&self, topic: &str, partition: u32) -> Result<Arc<Replica>> {
        self.get(topic)
            .and_then(|t| t.partitions.get(&partition).cloned())
            .ok_or_else(|| {
                ServiceError::new(
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("unknown topic or partition {topic}/{partition} (not hosted by this broker)"),
                )
            })
    }

    /// Opens the local replica `spec` names and starts its raft group (initializing it with the
    /// spec's members if it is new).
    pub async fn open_partition(&self, ctx: &RaftContext, spec: ReplicaSpec<'_>) -> Result<()> {
        let ReplicaSpec {
            topic: name,
            topic_id,
            configs,
            partition,
            group_id,
            members,
            preferred,
        } = spec;
        let settings = TopicSettings::from_pairs(configs)
            .map_err(|m| ServiceError::new(ErrorCode::INVALID_CONFIG, m))?;
        let tdir = self.dir.join(name);
        let pdir = tdir.join(partition.to_string());
        let cfg = settings.log_config(self.flush, &self.cache);
        let file = TopicFile {
            id: topic_id,
            configs: configs.to_vec(),
        };
        let (tdir2, pdir2) = (tdir.clone(), pdir.clone());
        let log = tokio::task::spawn_blocking(move || {
            write_topic_file(&tdir2, &file)?;
            let (log, report) = PartitionLog::open(&pdir2, cfg)
                .map_err(|e| io_err("open partition", &pdir2, e))?;
            if report.truncated.is_some() {
                tracing::warn!(dir = %pdir2.display(), ?report, "partition recovered with a truncated tail");
            }
            Ok::<_, ServiceError>(log)
        })
        .await
        .map_err(|e| ServiceError::unknown(e.to_string()))??;
        let group = Group::start(ctx, group_id, log, super::state::for_topic(name, &settings))
            .await
            .map_err(|e| io_err("start raft group of", &pdir, e))?;
        match members {
            Some(members) if preferred => {
                let new = group
                    .initialize(members)
                    .await
                    .map_err(|e| io_err("initialize raft group of", &pdir, e))?;
                if new {
                    group.campaign();
                }
            }
            // The preferred replica brings the others in; they start the group by themselves
            // only if it does not.
            Some(members) => {
                let timeout = std::time::Duration::from_millis(ctx.config.election_timeout_max);
                group.initialize_later(members, timeout * 2);
            }
            None => {}
        }
        let part = Arc::new(Replica::new(
            Arc::from(name),
            topic_id,
            partition,
            group,
            self.services.clone(),
            self.any_append.clone(),
            self.metrics.partition(group_id, name, partition),
        ));
        let mut map = self.topics.write().unwrap_or_else(|_| poisoned());
        let mut partitions = map
            .get(name)
            .filter(|t| t.id == topic_id)
            .map(|t| t.partitions.clone())
            .unwrap_or_default();
        partitions.insert(partition, part);
        map.insert(
            name.to_string(),
            Arc::new(HostedTopic {
                name: name.to_string(),
                id: topic_id,
                settings,
                partitions,
            }),
        );
        tracing::info!(topic = name, partition, "hosting partition replica");
        Ok(())
    }

    /// Gives the hosted replicas of topic `name` (incarnation `topic_id`) the settings `configs`
    /// say, without reopening them: `topic.json` first, then the settings maintenance reads.
    /// Returns whether they changed. What an open log cannot change (its segment size and age) is
    /// refused by the metadata before it gets here.
    pub async fn update_settings(
        &self,
        name: &str,
        topic_id: u32,
        configs: &[(String, String)],
    ) -> Result<bool> {
        let settings = TopicSettings::from_pairs(configs)
            .map_err(|m| ServiceError::new(ErrorCode::INVALID_CONFIG, m))?;
        let hosted = self.get(name).filter(|t| t.id == topic_id);
        if hosted.is_none_or(|t| t.settings == settings) {
            return Ok(false);
        }
        let tdir = self.dir.join(name);
        let file = TopicFile {
            id: topic_id,
            configs: configs.to_vec(),
        };
        tokio::task::spawn_blocking(move || write_topic_file(&tdir, &file))
            .await
            .map_err(|e| ServiceError::unknown(e.to_string()))??;
        let mut map = self.topics.write().unwrap_or_else(|_| poisoned());
        let Some(t) = map.get(name).filter(|t| t.id == topic_id).cloned() else {
            return Ok(false);
        };
        map.insert(
            name.to_string(),
            Arc::new(HostedTopic {
                name: t.name.clone(),
                id: t.id,
                settings,
                partitions: t.partitions.clone(),
            }),
        );
        tracing::info!(topic = name, ?configs, "topic settings changed");
        Ok(true)
    }

    /// Stops the local replicas of `name` and deletes their data.
    pub async fn remove(&self, ctx: &RaftContext, name: &str) {
        let removed = self
            .topics
            .write()
            .unwrap_or_else(|_| poisoned())
            .remove(name);
        if let Some(t) = removed {
            for p in t.partitions.values() {
                p.stop(&ctx.registry).await;
                self.metrics
                    .forget_partition(p.group_id(), name, p.partition());
            }
            self.metrics.forget_topic(name);
            let replicas: Vec<_> = t.partitions.values().cloned().collect();
            let tdir = self.dir.join(name);
            let _ = tokio::task::spawn_blocking(move || {
                for r in replicas {
                    let _ = r.close_log();
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
    pub async fn remove_partition(&self, ctx: &RaftContext, name: &str, partition: u32) {
        let removed = {
            let mut map = self.topics.write().unwrap_or_else(|_| poisoned());
            let Some(t) = map.get(name).cloned() else {
                return;
            };
            let mut partitions = t.partitions.clone();
            let removed = partitions.remove(&partition);
            map.insert(
                name.to_string(),
                Arc::new(HostedTopic {
                    name: t.name.clone(),
                    id: t.id,
                    settings: t.settings.clone(),
                    partitions,
                }),
            );
            removed
        };
        let Some(p) = removed else { return };
        p.stop(&ctx.registry).await;
        self.metrics.forget_partition(p.group_id(), name, partition);
        let dir = self.dir.join(name).join(partition.to_string());
        let _ = tokio::task::spawn_blocking(move || {
            let _ = p.close_log();
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

    /// Waits up to `timeout` until every hosted replica knows its group's leader and can serve.
    /// A replica this broker leads counts only once its high watermark has reached its log end as
    /// it was when it took over: a leader that has not yet applied its first entry of the term
    /// would serve a consumer nothing of what it holds (after a restart it applies everything
    /// again). Followers count once they know a leader.
    pub async fn wait_for_leaders(&self, timeout: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            let all = self.list().iter().all(|t| {
                t.partitions.values().all(|p| match p.leadership_now() {
                    super::Leadership::Leader { .. } => p.high_watermark() >= p.log_end_offset(),
                    super::Leadership::Follower { .. } => true,
                    super::Leadership::Unknown { .. } => false,
                })
            });
            if all {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Stops every raft group and cleanly closes every log (shutdown).
    pub async fn close_all(&self, ctx: &RaftContext) {
        let replicas: Vec<Arc<Replica>> = self
            .list()
            .iter()
            .flat_map(|t| t.partitions.values().cloned().collect::<Vec<_>>())
            .collect();
        for r in &replicas {
            r.stop(&ctx.registry).await;
        }
        let _ = tokio::task::spawn_blocking(move || {
            for r in replicas {
                if let Err(e) = r.close_log() {
                    tracing::error!(dir = %r.dir().display(), error = %e, "closing partition failed");
                }
            }
        })
        .await;
    }
}
