//! `sluice broker`: builds the configuration (defaults < `--config` file < environment < flags), starts
//! the server, and exits 0 after a graceful shutdown on SIGTERM or ctrl-c.

use std::path::PathBuf;

use sluice_broker::config::{
    parse_admin_listen, parse_flush, parse_listen, parse_peers, BrokerConfig, ConfigError,
    FileConfig, GroupConfig, DEFAULT_LISTEN,
};

#[derive(Debug, clap::Args)]
pub struct BrokerArgs {
    /// TOML file with broker settings (keys as the long flags, with underscores).
    #[arg(long, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// Where topics and their logs live.
    #[arg(long, env = "SLUICE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on, HOST:PORT (port 0 picks a free one; the bound address is printed).
    #[arg(long, env = "SLUICE_LISTEN", help = format!("Address to listen on, HOST:PORT [default: {DEFAULT_LISTEN}]"))]
    listen: Option<String>,
    /// This broker's node id.
    #[arg(long, env = "SLUICE_NODE_ID")]
    node_id: Option<u32>,
    /// Partition log flush policy: never, interval or always (acks=all waits for an fsync regardless).
    #[arg(long, env = "SLUICE_FLUSH")]
    flush: Option<String>,
    /// With --flush interval: fsync at least this often (ms).
    #[arg(long, env = "SLUICE_FLUSH_INTERVAL_MS")]
    flush_interval_ms: Option<u64>,
    /// Largest request frame accepted, in bytes.
    #[arg(long, env = "SLUICE_MAX_FRAME_BYTES")]
    max_frame_bytes: Option<usize>,
    /// Request bytes one connection may have in flight.
    #[arg(long, env = "SLUICE_MAX_INFLIGHT_BYTES")]
    max_inflight_bytes_per_connection: Option<usize>,
    /// Keep this many MiB of each partition's newest flushed data in the page cache and drop the rest
    /// after each flush; 0 keeps everything [default: 1536].
    #[arg(long, env = "SLUICE_PAGE_CACHE_WINDOW_MB")]
    page_cache_window_mb: Option<u64>,
    /// Read-ahead (MiB) each sequential reader of data behind the page-cache window may hold
    /// [default: 16].
    #[arg(long, env = "SLUICE_COLD_READ_AHEAD_MB")]
    cold_read_ahead_mb: Option<u64>,
    /// Read-ahead (MiB) all readers of data behind the page-cache window may hold together; 0 reads
    /// that data through the segment maps instead (no direct reads) [default: 256].
    #[arg(long, env = "SLUICE_COLD_READ_BUDGET_MB")]
    cold_read_budget_mb: Option<u64>,
    /// MiB/s served, all together, to consumers replaying a backlog (more than 64 MiB behind) while
    /// producers are active, in 1 MiB slices, so live traffic goes first; 0 never paces them
    /// [default: 256].
    #[arg(long, env = "SLUICE_CATCH_UP_RATE_MB")]
    catch_up_rate_mb: Option<u64>,
    /// How often retention and compaction run (ms).
    #[arg(long, env = "SLUICE_MAINTENANCE_INTERVAL_MS")]
    maintenance_interval_ms: Option<u64>,
    /// Every broker of the cluster, this one included: ID@HOST:PORT,ID@HOST:PORT,... (absent: a
    /// one-broker cluster).
    #[arg(long, env = "SLUICE_PEERS")]
    peers: Option<String>,
    /// Join a running cluster through this broker (HOST:PORT) instead of forming one; give this
    /// broker's own address with --peers ID@HOST:PORT.
    #[arg(long, env = "SLUICE_JOIN")]
    join: Option<String>,
    /// Raft heartbeat period (ms) [default: 150].
    #[arg(long, env = "SLUICE_RAFT_HEARTBEAT_MS")]
    raft_heartbeat_ms: Option<u64>,
    /// Raft election timeout (ms; randomized up to twice it) [default: 1000].
    #[arg(long, env = "SLUICE_RAFT_ELECTION_TIMEOUT_MS")]
    raft_election_timeout_ms: Option<u64>,
    /// Snapshot each raft group every this many entries [default: 1000].
    #[arg(long, env = "SLUICE_RAFT_SNAPSHOT_ENTRIES")]
    raft_snapshot_entries: Option<u64>,
    /// Entries kept behind a snapshot for slightly lagging followers [default: 1000].
    #[arg(long, env = "SLUICE_RAFT_KEEP_ENTRIES")]
    raft_keep_entries: Option<u64>,
    /// Segment size of the metadata log; sealed segments raft has purged are deleted
    /// [default: 16 MiB].
    #[arg(long, env = "SLUICE_META_SEGMENT_BYTES")]
    meta_segment_bytes: Option<u64>,
    /// HTTP admin API address, HOST:PORT, or `off` [default: the listen host, its port + 1; port 0
    /// picks a free one and prints it]. A non-loopback address needs an admin token.
    #[arg(long, env = "SLUICE_ADMIN_LISTEN")]
    admin_listen: Option<String>,
    /// File holding the admin API's bearer token (also `SLUICE_ADMIN_TOKEN`, or `admin_token` in the
    /// config file; a flag would show the secret in `ps`).
    #[arg(long, env = "SLUICE_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Move each partition's leadership back to its preferred replica (its first) once that replica
    /// is up and in sync: true or false [default: true].
    #[arg(long, env = "SLUICE_AUTO_LEADER_REBALANCE", value_name = "BOOL")]
    auto_leader_rebalance: Option<bool>,
    /// How long a partition is led elsewhere, its preferred replica up, before leadership moves
    /// back (ms) [default: 5000].
    #[arg(long, env = "SLUICE_AUTO_LEADER_REBALANCE_DELAY_MS")]
    auto_leader_rebalance_delay_ms: Option<u64>,
    /// Tests only (a build with the feature `power-loss-hook`): SIGUSR1 cuts the power, leaving
    /// what the data directory held durably in `<data dir>.power-cut`.
    #[arg(long, hide = true)]
    power_loss_hook: bool,
}

/// Applies the cold-read settings (per-reader read-ahead, per-broker budget; budget 0 turns direct
/// reads off).
fn cold_reads(
    c: &mut BrokerConfig,
    ahead_mb: Option<u64>,
    budget_mb: Option<u64>,
) -> Result<(), ConfigError> {
    if budget_mb == Some(0) {
        c.cold_reads = None;
        return Ok(());
    }
    let mut cold = c.cold_reads.unwrap_or_default();
    let bytes = |mb: u64| usize::try_from(mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
    if let Some(mb) = ahead_mb {
        cold.reader_bytes = bytes(mb);
        cold.chunk_bytes = cold.chunk_bytes.min(cold.reader_bytes);
    }
    if let Some(mb) = budget_mb {
        cold.budget_bytes = bytes(mb);
    }
    cold.validate().map_err(|e| ConfigError::Invalid {
        key: "cold_read_ahead_mb / cold_read_budget_mb",
        message: e.to_string(),
    })?;
    c.cold_reads = Some(cold);
    Ok(())
}

fn build(args: BrokerArgs) -> Result<BrokerConfig, ConfigError> {
    let file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let mut c = BrokerConfig {
        groups: group_config(&file)?,
        ..BrokerConfig::default()
    };
    if let Some(v) = args.node_id.or(file.node_id) {
        c.node_id = v;
    }
    if let Some(v) = args.data_dir.or(file.data_dir) {
        c.data_dir = v;
    }
    if let Some(v) = args.listen.or(file.listen) {
        c.listen = parse_listen(&v)?;
    }
    if let Some(v) = args.max_frame_bytes.or(file.max_frame_bytes) {
        c.max_frame_bytes = v;
    }
    if let Some(v) = args
        .max_inflight_bytes_per_connection
        .or(file.max_inflight_bytes_per_connection)
    {
        c.max_inflight_bytes_per_connection = v;
    }
    if let Some(v) = file.max_produce_bytes {
        c.max_produce_bytes = v;
    }
    if let Some(v) = file.max_fetch_response_bytes {
        c.max_fetch_response_bytes = v;
    }
    if let Some(v) = file.default_partitions {
        c.default_partitions = v;
    }
    let interval_ms = args.flush_interval_ms.or(file.flush_interval_ms);
    if let Some(v) = args.flush.or(file.flush) {
        c.flush = parse_flush(&v, interval_ms, file.flush_interval_bytes)?;
    }
    if let Some(mb) = args.page_cache_window_mb.or(file.page_cache_window_mb) {
        c.page_cache_window_bytes = (mb > 0).then_some(mb << 20);
    }
    cold_reads(
        &mut c,
        args.cold_read_ahead_mb.or(file.cold_read_ahead_mb),
        args.cold_read_budget_mb.or(file.cold_read_budget_mb),
    )?;
    if let Some(mb) = args.catch_up_rate_mb.or(file.catch_up_rate_mb) {
        c.catch_up_rate_bytes = (mb > 0).then(|| mb.saturating_mul(1 << 20));
    }
    if let Some(ms) = args
        .maintenance_interval_ms
        .or(file.maintenance_interval_ms)
    {
        c.maintenance_interval = std::time::Duration::from_millis(ms.max(10));
    }
    if let Some(v) = args.peers.or(file.peers) {
        c.peers = parse_peers(&v)?;
        if !c.peers.iter().any(|(id, _)| *id == c.node_id) {
            return Err(ConfigError::Invalid {
                key: "peers",
                message: format!("this broker's node id {} is not among the peers", c.node_id),
            });
        }
    }
    if let Some(j) = args.join.or(file.join) {
        parse_listen(&j).map_err(|_| ConfigError::Invalid {
            key: "join",
            message: format!("{j:?} is not HOST:PORT"),
        })?;
        c.join = Some(j);
    }
    if let Some(ms) = args.raft_heartbeat_ms.or(file.raft_heartbeat_ms) {
        c.raft_heartbeat = std::time::Duration::from_millis(ms.max(10));
    }
    if let Some(ms) = args
        .raft_election_timeout_ms
        .or(file.raft_election_timeout_ms)
    {
        c.raft_election_timeout = std::time::Duration::from_millis(ms.max(20));
    }
    if let Some(n) = args.raft_snapshot_entries.or(file.raft_snapshot_entries) {
        c.raft_snapshot_entries = n.max(1);
    }
    if let Some(n) = args.raft_keep_entries.or(file.raft_keep_entries) {
        c.raft_keep_entries = n;
    }
    if let Some(n) = args.meta_segment_bytes.or(file.meta_segment_bytes) {
        // A segment holds at least a few entries, whatever is asked.
        c.meta_segment_bytes = n.max(4096);
    }
    if let Some(on) = args.auto_leader_rebalance.or(file.auto_leader_rebalance) {
        c.auto_leader_rebalance = on;
    }
    if let Some(ms) = args
        .auto_leader_rebalance_delay_ms
        .or(file.auto_leader_rebalance_delay_ms)
    {
        c.auto_leader_rebalance_delay = std::time::Duration::from_millis(ms);
    }
    if let Some(ms) = file.replication_timeout_ms {
        c.replication_timeout = std::time::Duration::from_millis(ms.max(1));
    }
    // A bound of 0 would refuse every produce: a mistake, not a setting.
    for (key, value) in [
        ("max_message_bytes", file.max_message_bytes),
        ("max_pending_produces", file.max_pending_produces),
    ] {
        if value == Some(0) {
            return Err(ConfigError::Invalid {
                key,
                message: "must be at least 1 (leave it out for no bound)".into(),
            });
        }
    }
    c.max_message_bytes = file.max_message_bytes;
    c.max_pending_produces = file.max_pending_produces;
    if let Some(v) = args.admin_listen.or(file.admin_listen) {
        c.admin.listen = parse_admin_listen(&v)?;
    }
    c.admin.token = admin_token(args.admin_token_file.as_deref(), file.admin_token)?;
    Ok(c)
}

/// The admin token: from `--admin-token-file`, else `SLUICE_ADMIN_TOKEN`, else the config file.
/// Surrounding whitespace (a file's trailing newline) is not part of it; an empty one is refused,
/// since it would look like protection and be none.
fn admin_token(
    file_path: Option<&std::path::Path>,
    in_config: Option<String>,
) -> Result<Option<String>, ConfigError> {
    let token = match file_path {
        Some(p) => Some(
            std::fs::read_to_string(p).map_err(|e| ConfigError::Invalid {
                key: "admin_token_file",
                message: format!("cannot read {}: {e}", p.display()),
            })?,
        ),
        None => std::env::var("SLUICE_ADMIN_TOKEN").ok().or(in_config),
    };
    match token.map(|t| t.trim().to_string()) {
        Some(t) if t.is_empty() => Err(ConfigError::Invalid {
            key: "admin_token",
            message: "is empty".into(),
        }),
        t => Ok(t),
    }
}

/// The consumer-group keys of the TOML file over the defaults, checked for consistency.
fn group_config(file: &FileConfig) -> Result<GroupConfig, ConfigError> {
    use std::time::Duration;
    let mut g = GroupConfig::default();
    let ms = Duration::from_millis;
    if let Some(n) = file.offsets_topic_partitions {
        if n == 0 || n > sluice_broker::replica::settings::MAX_PARTITIONS {
            return Err(ConfigError::Invalid {
                key: "offsets_topic_partitions",
                message: format!(
                    "must be 1 to {}",
                    sluice_broker::replica::settings::MAX_PARTITIONS
                ),
            });
        }
        g.offsets_partitions = n;
    }
    if let Some(v) = file.group_min_session_timeout_ms {
        g.min_session_timeout = ms(v.max(1));
    }
    if let Some(v) = file.group_max_session_timeout_ms {
        g.max_session_timeout = ms(v.max(1));
    }
    if let Some(v) = file.group_session_timeout_ms {
        g.session_timeout = ms(v.max(1));
    }
    if let Some(v) = file.group_heartbeat_interval_ms {
        g.heartbeat_interval = ms(v.max(1));
    }
    if let Some(v) = file.offsets_retention_ms {
        g.offsets_retention = ms(v.max(1));
    }
    if let Some(v) = file.group_max_size {
        if v == 0 {
            return Err(ConfigError::Invalid {
                key: "group_max_size",
                message: "must be at least 1".into(),
            });
        }
        g.max_size = v;
    }
    if g.min_session_timeout > g.max_session_timeout
        || g.session_timeout < g.min_session_timeout
        || g.session_timeout > g.max_session_timeout
    {
        return Err(ConfigError::Invalid {
            key: "group_session_timeout_ms",
            message: "needs group_min_session_timeout_ms <= group_session_timeout_ms <= group_max_session_timeout_ms".into(),
        });
    }
    // A member must be able to heartbeat at least twice within the shortest session.
    if g.heartbeat_interval * 2 > g.min_session_timeout.max(g.session_timeout) {
        return Err(ConfigError::Invalid {
            key: "group_heartbeat_interval_ms",
            message: "must be at most half the group session timeout".into(),
        });
    }
    Ok(g)
}

/// Request frames (a produce batch, a raft append: a MiB or more each) are malloc'd and freed
/// all the time. glibc serves blocks that large with a fresh mmap, or trims freed heap back to the
/// kernel, so every frame landed in new memory: a page fault per page, zeroing, and on VMs that
/// hand free memory back to the host a slow first touch (measured: ~5 % of a 3-broker cluster's
/// CPU in page faults under recv). Keeping freed blocks up to 32 MiB in the heap reuses warm pages;
/// the heap then holds up to its peak use, which the in-flight bounds already limit.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

pub fn run(args: BrokerArgs) -> i32 {
    keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let power_loss_hook = args.power_loss_hook;
    let config = match build(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice broker: {e}");
            return 2;
        }
    };
    // Blocking work (each raft group's fsync round, opening logs, saving votes) runs on tokio's
    // blocking pool, which by default grows to 512 threads: hundreds of partitions flushing at once
    // would briefly run a thread each. Bounded, they queue instead (fsyncs of one disk gain little
    // from more threads than this).
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice broker: cannot start the runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        let data_dir = config.data_dir.clone();
        if power_loss_hook {
            if let Err(e) = crate::power_hook::install(&data_dir) {
                eprintln!("sluice broker: {e}");
                return 2;
            }
        }
        match sluice_broker::node::start(config, shutdown_signal()).await {
            Ok(started) => {
                let addr = started.addr;
                tracing::info!(%addr, data_dir = %data_dir.display(), "sluice broker listening");
                // Machine-readable lines on stdout, for scripts and tests that use port 0: the
                // protocol listener first, then the admin listener.
                println!("sluice broker listening on {addr}");
                if let Some(admin) = started.admin_addr {
                    tracing::info!(%admin, "sluice admin listening");
                    println!("sluice admin listening on {admin}");
                }
                started.serving.await;
                0
            }
            Err(e) => {
                eprintln!("sluice broker: {e}");
                1
            }
        }
    })
}

/// Threads of tokio's blocking pool at most (see where the runtime is built).
const MAX_BLOCKING_THREADS: usize = 32;

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown signal received");
}
