//! [`Client`]: the shared handle the producer, consumer and admin client are built on. It owns the
//! connections (one per broker address, opened lazily and reopened after a failure) and a cache of
//! topic metadata (partition counts and leaders).
//!
//! Connection failures drop the failed connection, so the next request to that address reconnects.
//! Metadata is fetched on first use of a topic and again after it is invalidated, which callers do
//! on `UNKNOWN_TOPIC_OR_PARTITION`, `NOT_LEADER` and connection errors. The cluster is a single broker
//! for now: a partition's leader address is the `host:port` of the broker in the metadata whose node id
//! is the partition's leader, falling back to the bootstrap address.
//!
//! The methods that send a caller's own [`Request`] and hand back the raw [`Response`]
//! (`request`, `request_to`, `request_to_with_timeout`, `submit_to`) are in `crate::raw`: they are
//! the broker's transport between brokers, hidden from the documentation and not a stable API.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use sluice_protocol::wire::{
    ErrorCode, ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic, MetadataRequest,
    MetadataResponse, PartitionMetadata, Request, Response, TopicMetadata, DEFAULT_MAX_FRAME,
};
use tracing::{debug, warn};

use crate::connection::{lock, Connection, ConnectionConfig};
use crate::error::{ClientError, Result};

/// Settings shared by everything built on one [`Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of a broker to start from, or several, comma-separated (tried in order).
    pub bootstrap: String,
    /// Longest a TCP connect may take. Default 10 s.
    pub connect_timeout: Duration,
    /// Longest to wait for an answer (a fetch waits this long on top of its long-poll time).
    /// Default 30 s.
    pub request_timeout: Duration,
    /// Requests in flight per connection; more wait for a slot. Default 5.
    pub max_in_flight: usize,
    /// Largest response frame accepted; a longer one closes the connection. Default
    /// [`DEFAULT_MAX_FRAME`].
    pub max_frame: usize,
    /// Times an idempotent request (metadata, list offsets, admin) is retried on a retriable error.
    /// Default 3.
    pub retries: u32,
    /// First backoff between retries; doubles per attempt up to `retry_backoff_max`. Default 100 ms.
    pub retry_backoff: Duration,
    /// Cap on the backoff. Default 1 s.
    pub retry_backoff_max: Duration,
    /// Local address connections leave from (default: chosen by the system).
    pub local_ip: Option<std::net::IpAddr>,
}

impl ClientConfig {
    /// Defaults with `bootstrap` as the broker to start from.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        ClientConfig {
            bootstrap: bootstrap.into(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_in_flight: 5,
            max_frame: DEFAULT_MAX_FRAME,
            retries: 3,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            local_ip: None,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(ClientError::InvalidConfig(m.to_string()));
        if self.bootstrap.is_empty() {
            return bad("bootstrap address is empty");
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight must be at least 1");
        }
        if self.max_frame < 16 {
            return bad("max_frame is too small");
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return bad("timeouts must be positive");
        }
        Ok(())
    }
}

/// The backoff before retry number `attempt` (1-based): `base * 2^(attempt-1)`, at most `max`.
pub(crate) fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(max.max(base))
}

/// What the client knows about one topic.
#[derive(Debug, Clone)]
pub(crate) struct TopicInfo {
    /// Leader node id per partition (index = partition id), -1 if none.
    leaders: Vec<i32>,
}

impl TopicInfo {
    fn from_metadata(partitions: &[PartitionMetadata]) -> TopicInfo {
        let count = partitions
            .iter()
            .map(|p| p.partition as usize + 1)
            .max()
            .unwrap_or(0);
        let mut leaders = vec![-1; count];
        for p in partitions {
            if let Some(l) = leaders.get_mut(p.partition as usize) {
                *l = p.leader;
            }
        }
        TopicInfo { leaders }
    }

    /// Number of partitions.
    pub(crate) fn partition_count(&self) -> u32 {
        self.leaders.len() as u32
    }
}

#[derive(Debug, Default)]
struct MetadataCache {
    /// Node id -> `host:port`.
    brokers: HashMap<u32, String>,
    topics: HashMap<String, Arc<TopicInfo>>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    connections: Mutex<HashMap<String, Arc<Connection>>>,
    metadata: RwLock<MetadataCache>,
    /// Bumped on every change of the metadata cache (an update or an invalidation), so a user of
    /// the cache (the producer) can keep what it looked up until this moves.
    generation: AtomicU64,
    /// Serialises metadata fetches for missing topics, so a burst of sends after an invalidation
    /// makes one request, not one each.
    refresh: tokio::sync::Mutex<()>,
}

/// A cheap-to-clone handle on connections and metadata, shared by [`crate::Producer`],
/// [`crate::Consumer`] and [`crate::Admin`]. Creating one opens nothing; connections open on first
/// use. Needs a tokio runtime (with the `time` and `net` drivers) when used.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// A client for the cluster reachable at `config.bootstrap`.
    pub fn new(config: ClientConfig) -> Result<Client> {
        config.validate()?;
        Ok(Client {
            inner: Arc::new(Inner {
                config,
                connections: Mutex::new(HashMap::new()),
                metadata: RwLock::new(MetadataCache::default()),
                generation: AtomicU64::new(0),
                refresh: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The settings this client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The bootstrap address.
    pub fn bootstrap(&self) -> &str {
        &self.inner.config.bootstrap
    }

    /// The open connection to `addr`, or a new one.
    pub(crate) async fn connection(&self, addr: &str) -> Result<Arc<Connection>> {
        if let Some(c) = lock(&self.inner.connections).get(addr) {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let cfg = ConnectionConfig {
            connect_timeout: self.inner.config.connect_timeout,
            max_in_flight: self.inner.config.max_in_flight,
            max_frame: self.inner.config.max_frame,
            local_ip: self.inner.config.local_ip,
        };
        let conn = Connection::connect(addr, &cfg).await?;
        let mut map = lock(&self.inner.connections);
        // Another task may have connected meanwhile; keep one.
        if let Some(existing) = map.get(addr) {
            if !existing.is_closed() {
                conn.close();
                return Ok(existing.clone());
            }
        }
        map.insert(addr.to_string(), conn.clone());
        Ok(conn)
    }

    /// Forgets `conn` if it is still the connection for its address, so the next request reconnects.
    pub(crate) fn drop_connection(&self, conn: &Arc<Connection>) {
        let mut map = lock(&self.inner.connections);
        if let Some(c) = map.get(conn.addr()) {
            if Arc::ptr_eq(c, conn) {
                map.remove(conn.addr());
            }
        }
        conn.close();
    }

    /// The `host:port` of every broker the cached metadata names.
    pub(crate) fn known_broker_addrs(&self) -> Vec<String> {
        self.inner
            .metadata
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .brokers
            .values()
            .cloned()
            .collect()
    }

    /// The bootstrap addresses, in the order given.
    pub fn bootstrap_addrs(&self) -> Vec<String> {
        self.inner
            .config
            .bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Runs `op` until it succeeds, fails with an error that is not retriable, or has been retried
    /// `config.retries` times, backing off between attempts.
    pub(crate) async fn retrying<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let cfg = &self.inner.config;
        let mut attempt = 0;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retriable() && attempt < cfg.retries => {
                    attempt += 1;
                    let wait = backoff(cfg.retry_backoff, cfg.retry_backoff_max, attempt);
                    warn!(what, attempt, error = %e, ?wait, "retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Fetches metadata of `topics` (every topic when `None`) from the bootstrap broker, updates the
    /// cache, and returns the answer. Retries retriable errors.
    pub async fn metadata(&self, topics: Option<Vec<String>>) -> Result<MetadataResponse> {
        let request = Request::Metadata(MetadataRequest {
            topics: topics.clone(),
        });
        let response = self.retrying("metadata", || self.request(&request)).await?;
        let Response::Metadata(m) = response else {
            return Err(unexpected("metadata"));
        };
        self.update_cache(&m, topics.is_none());
        Ok(m)
    }

    pub(crate) fn update_cache(&self, m: &MetadataResponse, all: bool) {
        let mut cache = self
            .inner
            .metadata
            .write()
            .unwrap_or_else(|e| e.into_inner());
        cache.brokers = m
            .brokers
            .iter()
            .map(|b| (b.node_id, format!("{}:{}", b.host, b.port)))
            .collect();
        if all {
            cache.topics.clear();
        }
        for t in &m.topics {
            if t.error.is_ok() && !t.partitions.is_empty() {
                cache.topics.insert(
                    t.name.clone(),
                    Arc::new(TopicInfo::from_metadata(&t.partitions)),
                );
            } else {
                cache.topics.remove(&t.name);
            }
        }
        self.inner.generation.fetch_add(1, Ordering::Release);
    }

    /// A number that changes whenever the metadata cache does: metadata read from the cache while it
    /// still returns the same value is current.
    pub(crate) fn metadata_generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    fn cached_topic(&self, name: &str) -> Option<Arc<TopicInfo>> {
        self.inner
            .metadata
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .topics
            .get(name)
            .cloned()
    }

    /// The cached metadata of `name`, fetched if missing. An unknown topic is
    /// [`ClientError::Broker`] with `UNKNOWN_TOPIC_OR_PARTITION`.
    pub(crate) async fn topic(&self, name: &str) -> Result<Arc<TopicInfo>> {
        if let Some(t) = self.cached_topic(name) {
            return Ok(t);
        }
        let _guard = self.inner.refresh.lock().await;
        if let Some(t) = self.cached_topic(name) {
            return Ok(t);
        }
        let m = self.metadata(Some(vec![name.to_string()])).await?;
        match m.topics.iter().find(|t| t.name == name) {
            Some(t) if t.error.is_ok() && !t.partitions.is_empty() => {
                Ok(Arc::new(TopicInfo::from_metadata(&t.partitions)))
            }
            Some(t) if !t.error.is_ok() => Err(ClientError::broker(
                t.error,
                format!("metadata of topic {name:?}"),
            )),
            _ => Err(ClientError::broker(
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                format!("topic {name:?} not in metadata"),
            )),
        }
    }

    /// Number of partitions of `topic` (from the cache when known).
    pub async fn partition_count(&self, topic: &str) -> Result<u32> {
        Ok(self.topic(topic).await?.partition_count())
    }

    /// Forgets the cached metadata of `topic`; the next use fetches it again.
    pub fn invalidate_topic(&self, topic: &str) {
        debug!(topic, "metadata invalidated");
        let mut cache = self
            .inner
            .metadata
            .write()
            .unwrap_or_else(|e| e.into_inner());
        cache.topics.remove(topic);
        self.inner.generation.fetch_add(1, Ordering::Release);
    }

    /// The `host:port` of the leader of `topic`/`partition`: the broker whose node id is the leader,
    /// or the bootstrap address if the metadata names no such broker.
    pub async fn leader_for(&self, topic: &str, partition: u32) -> Result<String> {
        let info = self.topic(topic).await?;
        let Some(&leader) = info.leaders.get(partition as usize) else {
            return Err(ClientError::broker(
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                format!("topic {topic:?} has no partition {partition}"),
            ));
        };
        let cache = self
            .inner
            .metadata
            .read()
            .unwrap_or_else(|e| e.into_inner());
        Ok(u32::try_from(leader)
            .ok()
            .and_then(|id| cache.brokers.get(&id).cloned())
            .or_else(|| self.bootstrap_addrs().into_iter().next())
            .unwrap_or_default())
    }

    /// Resolves an offset of `topic`/`partition` on its leader: `spec` is
    /// [`sluice_protocol::wire::LATEST`], [`sluice_protocol::wire::EARLIEST`] or a timestamp in ms.
    /// Returns -1 when no record is at or after the timestamp. Retries retriable errors, refreshing
    /// metadata on the way.
    pub(crate) async fn list_offset(&self, topic: &str, partition: u32, spec: i64) -> Result<i64> {
        let request = Request::ListOffsets(ListOffsetsRequest {
            topics: vec![ListOffsetsTopic {
                name: topic.to_string(),
                partitions: vec![ListOffsetsPartition { partition, spec }],
            }],
        });
        self.retrying("list offsets", || async {
            let result = self.list_offset_once(topic, partition, &request).await;
            if let Err(e) = &result {
                if e.invalidates_metadata() {
                    self.invalidate_topic(topic);
                }
            }
            result
        })
        .await
    }

    async fn list_offset_once(
        &self,
        topic: &str,
        partition: u32,
        request: &Request,
    ) -> Result<i64> {
        let addr = self.leader_for(topic, partition).await?;
        let Response::ListOffsets(r) = self.request_to(&addr, request).await? else {
            return Err(unexpected("list offsets"));
        };
        let p = r
            .topics
            .iter()
            .filter(|t| t.name == topic)
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition == partition)
            .ok_or(ClientError::Protocol(
                sluice_protocol::wire::ProtocolError::Invalid(
                    "list offsets answer lacks partition",
                ),
            ))?;
        if !p.error.is_ok() {
            return Err(ClientError::broker(
                p.error,
                format!("list offsets of {topic}/{partition}"),
            ));
        }
        Ok(p.offset)
    }

    /// Fetches the metadata of one topic (also refreshing the cache); an error code on the topic
    /// comes back as [`ClientError::Broker`].
    pub(crate) async fn describe(&self, topic: &str) -> Result<TopicMetadata> {
        let m = self.metadata(Some(vec![topic.to_string()])).await?;
        let t = m
            .topics
            .into_iter()
            .find(|t| t.name == topic)
            .ok_or_else(|| {
                ClientError::broker(
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("topic {topic:?} not in metadata"),
                )
            })?;
        if !t.error.is_ok() {
            return Err(ClientError::broker(t.error, format!("topic {topic:?}")));
        }
        Ok(t)
    }

    /// Closes every open connection; requests in flight fail with [`ClientError::Closed`]. The client
    /// stays usable: the next request reconnects.
    pub fn close_connections(&self) {
        let conns: Vec<_> = lock(&self.inner.connections).drain().collect();
        for (_, c) in conns {
            c.close();
        }
    }
}

/// The error for an answer of the wrong type.
pub(crate) fn unexpected(what: &'static str) -> ClientError {
    ClientError::Protocol(sluice_protocol::wire::ProtocolError::Invalid(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Duration::from_millis(100);
        let m = Duration::from_secs(1);
        assert_eq!(backoff(b, m, 1), Duration::from_millis(100));
        assert_eq!(backoff(b, m, 2), Duration::from_millis(200));
        assert_eq!(backoff(b, m, 4), Duration::from_millis(800));
        assert_eq!(backoff(b, m, 5), m);
        assert_eq!(backoff(b, m, 1000), m);
    }

    #[test]
    fn topic_info_indexes_leaders_by_partition() {
        let p = |partition, leader| PartitionMetadata {
            error: ErrorCode::NONE,
            partition,
            leader,
            replicas: vec![],
            high_watermark: 0,
            log_start_offset: 0,
        };
        let info = TopicInfo::from_metadata(&[p(1, 7), p(0, 3), p(2, -1)]);
        assert_eq!(info.partition_count(), 3);
        assert_eq!(info.leaders, vec![3, 7, -1]);
    }

    #[test]
    fn config_validation() {
        assert!(Client::new(ClientConfig::new("127.0.0.1:1")).is_ok());
        assert!(Client::new(ClientConfig::new("")).is_err());
        let mut c = ClientConfig::new("127.0.0.1:1");
        c.max_in_flight = 0;
        assert!(matches!(Client::new(c), Err(ClientError::InvalidConfig(_))));
    }

    #[tokio::test]
    async fn connect_refused_is_retriable_io() {
        // Bind then drop a listener so the port is (almost certainly) closed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let mut cfg = ClientConfig::new(format!("127.0.0.1:{port}"));
        cfg.retries = 0;
        let client = Client::new(cfg).expect("client");
        let err = client
            .request(&Request::ApiVersions)
            .await
            .expect_err("nothing listens");
        assert!(err.is_retriable(), "{err}");
        assert!(err.is_connection_error(), "{err}");
    }
}
