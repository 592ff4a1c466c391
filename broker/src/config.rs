//! Broker configuration: embedded defaults, overridden by a TOML file (`--config`), then by
//! environment variables, then by command-line flags. Parsing only: nothing here binds or opens.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sluice_storage::FlushPolicy;

/// Default listener: loopback only, so a first run exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9492";

/// Settings of one broker process.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: u32,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Largest request frame accepted; a larger length prefix closes the connection unread.
    pub max_frame_bytes: usize,
    /// Request bytes one connection may have in flight before the broker stops reading from it.
    pub max_inflight_bytes_per_connection: usize,
    /// Produce bytes all connections together may have in flight.
    pub max_produce_bytes: usize,
    /// Cap on one fetch response's record bytes.
    pub max_fetch_response_bytes: usize,
    /// Longest a fetch may wait for data.
    pub max_fetch_wait: Duration,
    /// How a partition log flushes (acks `all` always waits for an fsync on top of this).
    pub flush: FlushPolicy,
    /// Page cache kept hot behind each partition's end (see `LogConfig::page_cache_window_bytes`).
    pub page_cache_window_bytes: Option<u64>,
    /// How data behind the page-cache window is read (direct reads ahead of each sequential reader,
    /// bounded per reader and per broker; `None`: through the segment maps, like the rest).
    pub cold_reads: Option<sluice_storage::ColdReadConfig>,
    /// Bytes per second served to fetches that are catching up while produce traffic is live
    /// (`broker::catch_up`); `None`: catch-up reads are never paced.
    pub catch_up_rate_bytes: Option<u64>,
    /// How often retention and compaction run.
    pub maintenance_interval: Duration,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    pub default_partitions: u32,
    /// The cluster's brokers (`id` -> `host:port`) when started as part of one; empty means a
    /// one-broker cluster of this broker alone.
    pub peers: Vec<(u32, String)>,
    /// A broker of a running cluster to ask for admission (this broker then joins it instead of
    /// forming a new cluster with `peers`).
    pub join: Option<String>,
    /// Raft heartbeat period of every group.
    pub raft_heartbeat: Duration,
    /// A follower that hears no leader for this long (up to twice it, randomized) starts an election.
    pub raft_election_timeout: Duration,
    /// A group snapshots its state every this many entries (then purges what is covered).
    pub raft_snapshot_entries: u64,
    /// Entries kept behind a snapshot for followers that lag a little.
    pub raft_keep_entries: u64,
    /// Segment size of the metadata group's log (`<data dir>/meta`). Maintenance deletes its
    /// sealed segments once raft has purged them (a snapshot holds their state).
    pub meta_segment_bytes: u64,
    /// Leadership of each partition goes back to its preferred replica (the first of its replicas)
    /// by itself, once that replica is up and in sync (like Kafka's
    /// `auto.leader.rebalance.enable`).
    pub auto_leader_rebalance: bool,
    /// How long a partition must have been led by another broker while its preferred replica was up
    /// before leadership moves back.
    pub auto_leader_rebalance_delay: Duration,
    /// Longest a produce with acks `leader` or `all` waits for the append / the quorum commit.
    pub replication_timeout: Duration,
    /// Largest record set (one partition's records in one produce request) accepted; a larger one
    /// is refused with `MESSAGE_TOO_LARGE`. `None`: only the frame bound applies.
    pub max_message_bytes: Option<usize>,
    /// Produce requests proposed and waiting for their acks at once; past it a produce is answered
    /// `THROTTLED` (retry after a backoff). `None`: no bound (the produce budget still applies).
    pub max_pending_produces: Option<usize>,
    /// Consumer groups: the offsets topic, sessions and retention.
    pub groups: GroupConfig,
    /// The HTTP admin listener (`docs/operations.md`).
    pub admin: AdminConfig,
}

/// Where the HTTP admin API listens and who may use it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdminConfig {
    pub listen: AdminListen,
    /// Every admin request must carry `Authorization: Bearer <token>` when set (`/healthz` and
    /// `/readyz` excepted, so probes need no secret).
    pub token: Option<String>,
}

/// The admin listener's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdminListen {
    /// The protocol listener's host and port + 1 (port 0 when the protocol port is 0).
    #[default]
    NextToProtocol,
    At(SocketAddr),
    /// No admin listener.
    Off,
}

impl AdminConfig {
    /// The address to bind, given the protocol listener's configured address; `None`: off.
    pub fn bind_addr(&self, listen: SocketAddr) -> Result<Option<SocketAddr>, ConfigError> {
        match self.listen {
            AdminListen::Off => Ok(None),
            AdminListen::At(a) => Ok(Some(a)),
            AdminListen::NextToProtocol if listen.port() == 0 => Ok(Some(listen)),
            AdminListen::NextToProtocol => match listen.port().checked_add(1) {
                Some(port) => Ok(Some(SocketAddr::new(listen.ip(), port))),
                None => Err(ConfigError::Invalid {
                    key: "admin_listen",
                    message:
                        "the listen port is 65535, so port + 1 does not exist; set admin_listen"
                            .into(),
                }),
            },
        }
    }
}

/// Consumer-group settings of a broker (the coordinator of a group applies its own broker's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// Partitions of `__consumer_offsets` when this broker creates it.
    pub offsets_partitions: u32,
    /// A member's session when it asks for none.
    pub session_timeout: Duration,
    /// Bounds on the session a member may ask for.
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
    /// How often members heartbeat (told to them in every heartbeat answer).
    pub heartbeat_interval: Duration,
    /// Offsets of a group expire once it has been empty this long (and offsets of a topic the group
    /// no longer subscribes to, this long after their last commit).
    pub offsets_retention: Duration,
    /// Members one group may have.
    pub max_size: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            offsets_partitions: 16,
            // Kafka's defaults (KIP-848: group.consumer.session.timeout.ms, heartbeat.interval.ms).
            session_timeout: Duration::from_secs(45),
            min_session_timeout: Duration::from_millis(100),
            max_session_timeout: Duration::from_secs(30 * 60),
            heartbeat_interval: Duration::from_secs(3),
            offsets_retention: Duration::from_secs(7 * 24 * 3600),
            max_size: 1000,
        }
    }
}

/// Default `catch_up_rate_mb`.
pub const CATCH_UP_RATE_MB: u64 = 256;

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            node_id: 1,
            data_dir: PathBuf::from("./data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 9492)),
            max_frame_bytes: sluice_protocol::wire::DEFAULT_MAX_FRAME,
            max_inflight_bytes_per_connection: 128 << 20,
            max_produce_bytes: 256 << 20,
            max_fetch_response_bytes: 64 << 20,
            max_fetch_wait: Duration::from_secs(30),
            flush: FlushPolicy::interval(),
            // Measured on these VMs: page-cache growth into fresh memory runs at ~0.4 GiB/s, recycled
            // pages at several GiB/s; 1.5 GiB keeps a partition's recent backlog hot (docs/benchmarks.md).
            page_cache_window_bytes: Some(1536 << 20),
            // Measured (docs/benchmarks.md, "Cold reads"): 4 MiB direct reads, two in flight.
            cold_reads: Some(sluice_storage::ColdReadConfig::default()),
            // Measured (docs/benchmarks.md, "Cold reads"): keeps a tailing consumer's p99 near its
            // own while a replay runs on these 2 cores.
            catch_up_rate_bytes: Some(CATCH_UP_RATE_MB << 20),
            maintenance_interval: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            default_partitions: 1,
            peers: Vec::new(),
            join: None,
            raft_heartbeat: Duration::from_millis(150),
            raft_election_timeout: Duration::from_millis(1000),
            raft_snapshot_entries: 1000,
            raft_keep_entries: 1000,
            meta_segment_bytes: 16 << 20,
            auto_leader_rebalance: true,
            auto_leader_rebalance_delay: Duration::from_secs(5),
            replication_timeout: Duration::from_secs(10),
            max_message_bytes: None,
            max_pending_produces: None,
            groups: GroupConfig::default(),
            admin: AdminConfig::default(),
        }
    }
}

/// The TOML file: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub node_id: Option<u32>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub max_frame_bytes: Option<usize>,
    pub max_inflight_bytes_per_connection: Option<usize>,
    pub max_produce_bytes: Option<usize>,
    pub max_fetch_response_bytes: Option<usize>,
    pub flush: Option<String>,
    pub flush_interval_ms: Option<u64>,
    pub flush_interval_bytes: Option<u64>,
    pub maintenance_interval_ms: Option<u64>,
    pub default_partitions: Option<u32>,
    pub page_cache_window_mb: Option<u64>,
    pub cold_read_ahead_mb: Option<u64>,
    pub cold_read_budget_mb: Option<u64>,
    pub catch_up_rate_mb: Option<u64>,
    pub peers: Option<String>,
    pub join: Option<String>,
    pub raft_heartbeat_ms: Option<u64>,
    pub raft_election_timeout_ms: Option<u64>,
    pub raft_snapshot_entries: Option<u64>,
    pub raft_keep_entries: Option<u64>,
    pub meta_segment_bytes: Option<u64>,
    pub auto_leader_rebalance: Option<bool>,
    pub auto_leader_rebalance_delay_ms: Option<u64>,
    pub replication_timeout_ms: Option<u64>,
    pub max_message_bytes: Option<usize>,
    pub max_pending_produces: Option<usize>,
    pub offsets_topic_partitions: Option<u32>,
    pub group_session_timeout_ms: Option<u64>,
    pub group_min_session_timeout_ms: Option<u64>,
    pub group_max_session_timeout_ms: Option<u64>,
    pub group_heartbeat_interval_ms: Option<u64>,
    pub offsets_retention_ms: Option<u64>,
    pub group_max_size: Option<usize>,
    pub admin_listen: Option<String>,
    pub admin_token: Option<String>,
}

/// Why a configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

/// Parses `never`, `interval` or `always`.
pub fn parse_flush(
    s: &str,
    interval_ms: Option<u64>,
    interval_bytes: Option<u64>,
) -> Result<FlushPolicy, ConfigError> {
    match s {
        "never" => Ok(FlushPolicy::Never),
        "always" => Ok(FlushPolicy::Always),
        "interval" => {
            let FlushPolicy::Interval {
                max_bytes,
                max_delay,
            } = FlushPolicy::interval()
            else {
                return Err(ConfigError::Invalid {
                    key: "flush",
                    message: "no interval default".into(),
                });
            };
            Ok(FlushPolicy::Interval {
                max_bytes: interval_bytes.unwrap_or(max_bytes).max(1),
                max_delay: interval_ms
                    .map(Duration::from_millis)
                    .unwrap_or(max_delay)
                    .max(Duration::from_millis(1)),
            })
        }
        other => Err(ConfigError::Invalid {
            key: "flush",
            message: format!("{other:?} is not one of never, interval, always"),
        }),
    }
}

pub fn parse_listen(s: &str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ConfigError::Invalid {
            key: "listen",
            message: format!("{s:?} is not HOST:PORT"),
        })
}

/// Parses the admin listener: `HOST:PORT` or `off`.
pub fn parse_admin_listen(s: &str) -> Result<AdminListen, ConfigError> {
    if s == "off" {
        return Ok(AdminListen::Off);
    }
    parse_listen(s)
        .map(AdminListen::At)
        .map_err(|_| ConfigError::Invalid {
            key: "admin_listen",
            message: format!("{s:?} is not HOST:PORT or off"),
        })
}

/// Parses `1@host:port,2@host:port,...` (ids unique, at least one).
pub fn parse_peers(s: &str) -> Result<Vec<(u32, String)>, ConfigError> {
    let bad = |message: String| ConfigError::Invalid {
        key: "peers",
        message,
    };
    let mut out: Vec<(u32, String)> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('@')
            .ok_or_else(|| bad(format!("{part:?} is not ID@HOST:PORT")))?;
        let id: u32 = id
            .parse()
            .map_err(|_| bad(format!("{id:?} is not a node id")))?;
        parse_listen(addr).map_err(|_| bad(format!("{addr:?} is not HOST:PORT")))?;
        if out.iter().any(|(i, _)| *i == id) {
            return Err(bad(format!("node id {id} appears twice")));
        }
        out.push((id, addr.to_string()));
    }
    if out.is_empty() {
        return Err(bad("no peers given".into()));
    }
    Ok(out)
}
