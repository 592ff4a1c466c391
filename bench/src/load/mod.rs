//! `sluice-bench produce|consume|e2e`: the load generator against a live broker (one given by
//! `--broker`, or a real `sluice` process started for the run with `--spawn-broker`). The three modes
//! share these flags (their names and the JSON keys of the last output line are an interface that
//! users script against): this module parses and checks them, prepares the broker and the topic, runs
//! the mode ([`produce`], [`consume`], [`e2e`]) on a multi-threaded tokio runtime, stops a spawned
//! broker, and prints the [`report`]: a table, then one JSON object as the last line.

mod backlog;
mod collector;
mod consume;
mod e2e;
pub(crate) mod group;
pub(crate) mod leaders;
mod produce;
pub(crate) mod replication;
mod report;
pub(crate) mod scrape;
pub(crate) mod spawn;
mod tail;

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use sluice_client::{Acks, Admin, ClientError, Compression, ErrorCode, OffsetSpec, ProducerConfig};

use crate::storage::Flush;

/// Errors of the load generator; `Send` so they cross tasks.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Which load generator runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Produce,
    Consume,
    E2e,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Produce => "produce",
            Mode::Consume => "consume",
            Mode::E2e => "e2e",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AcksArg {
    None,
    Leader,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    None,
    Lz4,
    Zstd,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Producer tasks, each with its own Producer (and so its own connection).
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Consumer tasks (consume and e2e), each with its own Consumer; partitions are split among them.
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Partitions of the topic created for the run [default: 1].
    #[arg(long)]
    partitions: Option<u32>,
    /// Bytes of value per record (random bytes; e2e puts an 8-byte send timestamp first).
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Producer batch size in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    batch_bytes: usize,
    /// Producer linger in ms. 0 (send as soon as the sender is free; batches still form while a
    /// request is in flight) gives the lowest latency and, here, no less throughput than 5.
    #[arg(long, default_value_t = 0)]
    linger_ms: u64,
    /// Produce requests each producer keeps outstanding (`ProducerConfig::max_in_flight`)
    /// [default: the client's].
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// What a produce acknowledgement waits for.
    #[arg(long, value_enum, default_value_t = AcksArg::Leader)]
    acks: AcksArg,
    /// Idempotent producers (`ProducerConfig::idempotence`).
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    idempotence: OnOff,
    /// Records per second across all producers [default: as fast as it can].
    #[arg(long)]
    rate: Option<u64>,
    /// Seconds to produce for [default: 10 unless --count is given].
    #[arg(long, conflicts_with = "count")]
    duration: Option<f64>,
    /// Records to produce (instead of --duration).
    #[arg(long)]
    count: Option<u64>,
    /// Codec of the producer's batches.
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    compression: CompressionArg,
    /// Broker to bootstrap from, HOST:PORT.
    #[arg(
        long,
        default_value = "127.0.0.1:9492",
        conflicts_with_all = ["spawn_broker", "spawn_cluster"]
    )]
    broker: String,
    /// Topic to use; created with --partitions if missing [default: a fresh bench-<random> topic].
    /// consume reads an existing non-empty topic as it is, without producing.
    #[arg(long)]
    topic: Option<String>,
    /// Start the real `sluice` binary on a free port with a temporary data directory under the
    /// current directory, and stop it (SIGTERM) at the end.
    #[arg(long, conflicts_with = "spawn_cluster")]
    spawn_broker: bool,
    /// Start N real `sluice` brokers (node ids 1..=N) on free loopback ports as one cluster, with
    /// temporary data directories under the current directory; stop them at the end.
    #[arg(long)]
    spawn_cluster: Option<u32>,
    /// Replication factor of the topic created for the run [default: N with --spawn-cluster N,
    /// else 1].
    #[arg(long)]
    replication_factor: Option<u16>,
    /// The `sluice` binary for --spawn-broker / --spawn-cluster [default: `sluice` next to this
    /// executable].
    #[arg(long)]
    sluice_bin: Option<PathBuf>,
    /// With --spawn-broker / --spawn-cluster: the brokers' --flush policy [default: the broker's].
    #[arg(long, value_enum)]
    broker_flush: Option<Flush>,
    /// With --spawn-broker / --spawn-cluster: each broker's --page-cache-window-mb [default: the
    /// broker's 1536 for one broker; 1536/N each for N brokers, which share this machine's memory,
    /// so together they keep what one broker keeps].
    #[arg(long)]
    broker_page_cache_window_mb: Option<u64>,
    /// consume: drop the backlog's pages from the page cache before reading it (a cold replay on
    /// purpose), and measure the baseline: the same segment files read with `pread` in 1 MiB blocks
    /// from a dropped cache. Needs the broker's data directory: --spawn-broker or --broker-data-dir.
    #[arg(long)]
    cold: bool,
    /// consume: then measure a consumer tailing a live producer at this many records/s, alone and
    /// while a second consumer replays the backlog (from a dropped cache with --cold).
    #[arg(long)]
    tail_rate: Option<u64>,
    /// The data directory of the --broker broker (for --cold and for the report of how the backlog
    /// compares with the broker's page-cache window; known for --spawn-broker).
    #[arg(long, conflicts_with_all = ["spawn_broker", "spawn_cluster"])]
    broker_data_dir: Option<PathBuf>,
}

impl Args {
    /// A produce load for `duration` seconds of `record_size`-byte records into `partitions`, for
    /// the benchmarks that compose runs (replication, leaders, scrape): one producer and consumer,
    /// 1 MiB batches, idempotent, no compression, a fresh topic, against no broker yet (the caller
    /// sets `broker` or a spawn field).
    pub(crate) fn produce_for(
        duration: f64,
        record_size: usize,
        partitions: u32,
        acks: AcksArg,
    ) -> Args {
        Args {
            producers: 1,
            consumers: 1,
            partitions: Some(partitions),
            record_size,
            batch_bytes: 1 << 20,
            linger_ms: 0,
            max_in_flight: None,
            acks,
            idempotence: OnOff::On,
            rate: None,
            duration: Some(duration),
            count: None,
            compression: CompressionArg::None,
            broker: String::new(),
            topic: None,
            spawn_broker: false,
            spawn_cluster: None,
            replication_factor: None,
            sluice_bin: None,
            broker_flush: None,
            broker_page_cache_window_mb: None,
            cold: false,
            tail_rate: None,
            broker_data_dir: None,
        }
    }
}

/// When producers stop.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stop {
    Duration(Duration),
    Count(u64),
}

/// Checked settings of a run.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub mode: Mode,
    pub producers: usize,
    pub consumers: usize,
    pub partitions: Option<u32>,
    pub record_size: usize,
    pub batch_bytes: usize,
    pub linger: Duration,
    pub max_in_flight: usize,
    pub acks: Acks,
    pub idempotence: bool,
    pub rate: Option<u64>,
    pub stop: Stop,
    /// Whether --duration or --count was given (consume of an existing topic ignores them).
    pub stop_given: bool,
    pub compression: Compression,
    pub topic: Option<String>,
    pub spawn_broker: bool,
    pub spawn_cluster: Option<u32>,
    pub replication_factor: u16,
    pub broker_flush: Option<Flush>,
    pub broker_window_mb: Option<u64>,
    /// consume: drop the backlog's cache first and measure the pread baseline.
    pub cold: bool,
    /// consume: tailing consumer's producer rate.
    pub tail_rate: Option<u64>,
    /// The broker's data directory, when known (spawned, or --broker-data-dir).
    pub broker_data_dir: Option<PathBuf>,
}

/// The bounds of the producer's batch size (see `ProducerConfig::batch_bytes`).
const MIN_BATCH_BYTES: usize = 81;
const MAX_BATCH_BYTES: usize = 64 << 20;
/// Bytes of the send timestamp at the start of each e2e value.
pub(crate) const STAMP_BYTES: usize = 8;

impl Settings {
    fn check(mode: Mode, a: Args) -> Result<Settings, Error> {
        let bad = |m: String| -> Result<Settings, Error> { Err(m.into()) };
        if a.producers == 0 {
            return bad("--producers must be at least 1".into());
        }
        if a.consumers == 0 {
            return bad("--consumers must be at least 1".into());
        }
        if a.partitions == Some(0) {
            return bad("--partitions must be at least 1".into());
        }
        if a.record_size == 0 {
            return bad("--record-size must be at least 1".into());
        }
        if mode == Mode::E2e && a.record_size < STAMP_BYTES {
            return bad(format!(
                "e2e needs --record-size of at least {STAMP_BYTES} (the send timestamp)"
            ));
        }
        if !(MIN_BATCH_BYTES..=MAX_BATCH_BYTES).contains(&a.batch_bytes) {
            return bad(format!(
                "--batch-bytes must be between {MIN_BATCH_BYTES} and {MAX_BATCH_BYTES}"
            ));
        }
        if a.rate.is_some_and(|r| r < a.producers as u64) {
            return bad(
                "--rate must be at least --producers (each producer paces its share)".into(),
            );
        }
        let stop = match (a.duration, a.count) {
            (Some(d), _) if !(d.is_finite() && d > 0.0 && d < 1e9) => {
                return bad("--duration must be a positive number of seconds".into())
            }
            (Some(d), _) => Stop::Duration(Duration::from_secs_f64(d)),
            (None, Some(0)) => return bad("--count must be at least 1".into()),
            (None, Some(n)) => Stop::Count(n),
            (None, None) => Stop::Duration(Duration::from_secs(10)),
        };
        if a.spawn_cluster == Some(0) {
            return bad("--spawn-cluster must be at least 1".into());
        }
        if a.replication_factor == Some(0) {
            return bad("--replication-factor must be at least 1".into());
        }
        if a.max_in_flight == Some(0) {
            return bad("--max-in-flight must be at least 1".into());
        }
        if (a.cold || a.tail_rate.is_some()) && mode != Mode::Consume {
            return bad("--cold and --tail-rate are options of consume".into());
        }
        if a.cold && a.spawn_cluster.is_some() {
            return bad(
                "--cold needs one broker's data directory: --spawn-broker or --broker-data-dir"
                    .into(),
            );
        }
        if a.cold && !a.spawn_broker && a.broker_data_dir.is_none() {
            return bad(
                "--cold needs the broker's data directory: --spawn-broker or --broker-data-dir"
                    .into(),
            );
        }
        if a.tail_rate == Some(0) {
            return bad("--tail-rate must be at least 1".into());
        }
        if a.topic.as_deref().is_some_and(str::is_empty) {
            return bad("--topic must not be empty".into());
        }
        Ok(Settings {
            mode,
            producers: a.producers,
            consumers: a.consumers,
            partitions: a.partitions,
            record_size: a.record_size,
            batch_bytes: a.batch_bytes,
            linger: Duration::from_millis(a.linger_ms),
            max_in_flight: a
                .max_in_flight
                .unwrap_or(ProducerConfig::default().max_in_flight),
            acks: match a.acks {
                AcksArg::None => Acks::None,
                AcksArg::Leader => Acks::Leader,
                AcksArg::All => Acks::All,
            },
            idempotence: a.idempotence == OnOff::On,
            rate: a.rate,
            stop,
            stop_given: a.duration.is_some() || a.count.is_some(),
            compression: match a.compression {
                CompressionArg::None => Compression::None,
                CompressionArg::Lz4 => Compression::Lz4,
                CompressionArg::Zstd => Compression::Zstd,
            },
            topic: a.topic,
            spawn_broker: a.spawn_broker,
            spawn_cluster: a.spawn_cluster,
            replication_factor: a.replication_factor.unwrap_or(
                a.spawn_cluster
                    .map_or(1, |n| n.min(u32::from(u16::MAX)) as u16),
            ),
            broker_flush: a.broker_flush,
            cold: a.cold,
            tail_rate: a.tail_rate,
            broker_data_dir: a.broker_data_dir,
            broker_window_mb: a.broker_page_cache_window_mb.or(a
                .spawn_cluster
                .filter(|n| *n > 1)
                .map(|n| 1536 / u64::from(n))),
        })
    }

    fn acks_name(&self) -> &'static str {
        match self.acks {
            Acks::None => "none",
            Acks::Leader => "leader",
            Acks::All => "all",
        }
    }

    fn compression_name(&self) -> &'static str {
        match self.compression {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// The topic a run uses.
#[derive(Debug, Clone)]
pub(crate) struct Topic {
    pub name: String,
    pub partitions: u32,
    /// It existed before the run (so it may hold records).
    pub existed: bool,
}

/// Runs one load generator and prints its report.
pub fn run(mode: Mode, args: Args) -> Result<(), Box<dyn std::error::Error>> {
    run_checked(mode, args).map_err(|e| e as Box<dyn std::error::Error>)
}

fn run_checked(mode: Mode, args: Args) -> Result<(), Error> {
    run_report(mode, args)?.print();
    Ok(())
}

/// Runs one load generator (starting and stopping any spawned brokers) and returns its report
/// unprinted.
pub(crate) fn run_report(mode: Mode, args: Args) -> Result<report::Report, Error> {
    let bin = match &args.sluice_bin {
        Some(p) => p.clone(),
        None if args.spawn_broker || args.spawn_cluster.is_some() => spawn::default_bin()?,
        None => PathBuf::new(),
    };
    let broker_arg = args.broker.clone();
    let mut settings = Settings::check(mode, args)?;
    let extra: Vec<String> = settings
        .broker_window_mb
        .map(|mb| vec!["--page-cache-window-mb".to_string(), mb.to_string()])
        .unwrap_or_default();
    let brokers = if settings.spawn_broker {
        vec![spawn::SpawnedBroker::start_with(
            &bin,
            settings.broker_flush,
            "127.0.0.1:0",
            &extra,
        )?]
    } else if let Some(n) = settings.spawn_cluster {
        spawn::SpawnedBroker::start_cluster(&bin, settings.broker_flush, n, &extra)?
    } else {
        Vec::new()
    };
    if settings.spawn_broker {
        settings.broker_data_dir = brokers.first().map(spawn::SpawnedBroker::data_dir);
    }
    let addr = if brokers.is_empty() {
        broker_arg
    } else {
        brokers
            .iter()
            .map(|b| b.addr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let result = until_interrupted(bench(&settings, &addr));
    for b in brokers {
        if let Err(e) = b.stop() {
            // The figures stand; say why the broker's exit was not clean.
            eprintln!("sluice-bench: warning: {e}");
        }
    }
    result
}

/// Longest the first connection to the broker may take.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// The median of `v` (the mean of the two middle values for an even count; 0 for none).
pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Runs `work` on a fresh multi-thread runtime until it ends or Ctrl-C. Ctrl-C ends it through the
/// same path as an error, so that the caller still stops its spawned brokers and removes their
/// data directories.
pub(crate) fn until_interrupted<T>(
    work: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    let result = runtime.block_on(async {
        tokio::select! {
            r = work => r,
            _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

async fn bench(s: &Settings, addr: &str) -> Result<report::Report, Error> {
    reach(addr).await?;
    let admin = Admin::new(addr).map_err(|e| format!("bad --broker {addr:?}: {e}"))?;
    let topic = prepare_topic(s, &admin, addr).await?;
    let mut report = match s.mode {
        Mode::Produce => produce::run(s, addr, &topic).await?,
        Mode::Consume => consume::run(s, addr, &topic, &admin).await?,
        Mode::E2e => e2e::run(s, addr, &topic, &admin).await?,
    };
    report.settings(s, addr, &topic);
    Ok(report)
}

/// One plain connection to the first broker of `addr`, so an unreachable broker fails at once and
/// plainly rather than through the client's retries.
pub(crate) async fn reach(addr: &str) -> Result<(), Error> {
    let first = addr.split(',').next().unwrap_or(addr);
    match tokio::time::timeout(CONNECT_WAIT, tokio::net::TcpStream::connect(first)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("cannot reach the broker at {addr}: {e}").into()),
        Err(_) => {
            Err(format!("cannot reach the broker at {addr}: no answer in {CONNECT_WAIT:?}").into())
        }
    }
}

/// A client error with a clearer word for an unreachable broker.
pub(crate) fn broker_error(addr: &str, what: &str, e: ClientError) -> Error {
    if e.is_connection_error() {
        format!("cannot reach the broker at {addr} ({what}): {e}").into()
    } else {
        format!("{what}: {e}").into()
    }
}

/// The topic named by --topic (created if missing), or a fresh `bench-<random>` one.
async fn prepare_topic(s: &Settings, admin: &Admin, addr: &str) -> Result<Topic, Error> {
    let partitions = s.partitions.unwrap_or(1);
    let name = match &s.topic {
        Some(name) => match admin.describe_topic(name).await {
            Ok(t) => {
                let n = u32::try_from(t.partitions.len()).unwrap_or(u32::MAX);
                if s.partitions.is_some_and(|p| p != n) {
                    eprintln!(
                        "sluice-bench: topic {name} exists with {n} partitions; --partitions ignored"
                    );
                }
                return Ok(Topic {
                    name: name.clone(),
                    partitions: n,
                    existed: true,
                });
            }
            Err(e) if e.code() == Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION) => name.clone(),
            Err(e) => return Err(broker_error(addr, &format!("describe topic {name}"), e)),
        },
        None => format!("bench-{:016x}", random_u64()),
    };
    // A cluster that just started may not have elected its metadata leader yet.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match admin
            .create_topic(&name, partitions, s.replication_factor, &[])
            .await
        {
            Ok(()) => break,
            Err(e)
                if e.code() == Some(ErrorCode::NOT_LEADER)
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(broker_error(addr, &format!("create topic {name}"), e)),
        }
    }
    Ok(Topic {
        name,
        partitions,
        existed: false,
    })
}

/// A random 64-bit number from the standard library's per-process hasher keys.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish()
}

/// The partitions consumer `index` of `consumers` reads: every `consumers`-th one.
pub(crate) fn partitions_of(index: usize, consumers: usize, partitions: u32) -> Vec<u32> {
    (0..partitions)
        .filter(|p| *p as usize % consumers == index)
        .collect()
}

/// The earliest or latest offset of every partition of `topic`.
pub(crate) async fn offsets(
    admin: &Admin,
    addr: &str,
    topic: &Topic,
    spec: OffsetSpec,
) -> Result<Vec<u64>, Error> {
    let mut out = Vec::with_capacity(topic.partitions as usize);
    for p in 0..topic.partitions {
        let o = admin
            .list_offsets(&topic.name, p, spec)
            .await
            .map_err(|e| broker_error(addr, &format!("list offsets of {}/{p}", topic.name), e))?;
        out.push(o.unwrap_or(0));
    }
    Ok(out)
}

/// End offsets once the log holds `expected` records past `starts` (acks none answers before the
/// broker appends, so the last records may still be on their way), or after `wait` with a warning.
pub(crate) async fn settled_end_offsets(
    admin: &Admin,
    addr: &str,
    topic: &Topic,
    starts: &[u64],
    expected: u64,
    wait: Duration,
) -> Result<Vec<u64>, Error> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let ends = offsets(admin, addr, topic, OffsetSpec::Latest).await?;
        let have: u64 = ends
            .iter()
            .zip(starts)
            .map(|(e, s)| e.saturating_sub(*s))
            .sum();
        if have >= expected {
            return Ok(ends);
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "sluice-bench: warning: {expected} records acknowledged but the log holds {have} \
                 after {wait:?}; reading what is there"
            );
            return Ok(ends);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_split_round_robin() {
        assert_eq!(partitions_of(0, 2, 5), vec![0, 2, 4]);
        assert_eq!(partitions_of(1, 2, 5), vec![1, 3]);
        assert_eq!(partitions_of(0, 1, 3), vec![0, 1, 2]);
        assert!(partitions_of(3, 4, 2).is_empty());
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[0.3, 0.1, 0.2]), 0.2);
        assert_eq!(median(&[0.4, 0.1, 0.3, 0.2]), 0.25);
        assert_eq!(median(&[]), 0.0);
    }
}
