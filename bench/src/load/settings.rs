//! The load generator's flags and their checked form: the modes, the `sluice-bench
//! produce|consume|e2e` arguments (names and JSON keys are an interface users script against), and
//! [`Settings`], what a run uses after every flag was checked. Parsing and checking only; nothing
//! here talks to a broker.

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use sluice_client::{Acks, Compression, ProducerConfig};

use super::Error;
use crate::storage::Flush;

/// Which load generator runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Produce,
    Consume,
    E2e,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
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
    pub(crate) producers: usize,
    /// Consumer tasks (consume and e2e), each with its own Consumer; partitions are split among them.
    #[arg(long, default_value_t = 1)]
    pub(crate) consumers: usize,
    /// Partitions of the topic created for the run [default: 1].
    #[arg(long)]
    pub(crate) partitions: Option<u32>,
    /// Bytes of value per record (random bytes; e2e puts an 8-byte send timestamp first).
    #[arg(long, default_value_t = 1024)]
    pub(crate) record_size: usize,
    /// Producer batch size in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub(crate) batch_bytes: usize,
    /// Producer linger in ms. 0 (send as soon as the sender is free; batches still form while a
    /// request is in flight) gives the lowest latency and, here, no less throughput than 5.
    #[arg(long, default_value_t = 0)]
    pub(crate) linger_ms: u64,
    /// Produce requests each producer keeps outstanding (`ProducerConfig::max_in_flight`)
    /// [default: the client's].
    #[arg(long)]
    pub(crate) max_in_flight: Option<usize>,
    /// What a produce acknowledgement waits for.
    #[arg(long, value_enum, default_value_t = AcksArg::Leader)]
    pub(crate) acks: AcksArg,
    /// Idempotent producers (`ProducerConfig::idempotence`).
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub(crate) idempotence: OnOff,
    /// Records per second across all producers [default: as fast as it can].
    #[arg(long)]
    pub(crate) rate: Option<u64>,
    /// Seconds to produce for [default: 10 unless --count is given].
    #[arg(long, conflicts_with = "count")]
    pub(crate) duration: Option<f64>,
    /// Records to produce (instead of --duration).
    #[arg(long)]
    pub(crate) count: Option<u64>,
    /// Codec of the producer's batches.
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    pub(crate) compression: CompressionArg,
    /// Broker to bootstrap from, HOST:PORT.
    #[arg(
        long,
        default_value = "127.0.0.1:9492",
        conflicts_with_all = ["spawn_broker", "spawn_cluster"]
    )]
    pub(crate) broker: String,
    /// Topic to use; created with --partitions if missing [default: a fresh bench-<random> topic].
    /// consume reads an existing non-empty topic as it is, without producing.
    #[arg(long)]
    pub(crate) topic: Option<String>,
    /// Start the real `sluice` binary on a free port with a temporary data directory under the
    /// current directory, and stop it (SIGTERM) at the end.
    #[arg(long, conflicts_with = "spawn_cluster")]
    pub(crate) spawn_broker: bool,
    /// Start N real `sluice` brokers (node ids 1..=N) on free loopback ports as one cluster, with
    /// temporary data directories under the current directory; stop them at the end.
    #[arg(long)]
    pub(crate) spawn_cluster: Option<u32>,
    /// Replication factor of the topic created for the run [default: N with --spawn-cluster N,
    /// else 1].
    #[arg(long)]
    pub(crate) replication_factor: Option<u16>,
    /// The `sluice` binary for --spawn-broker / --spawn-cluster [default: `sluice` next to this
    /// executable].
    #[arg(long)]
    pub(crate) sluice_bin: Option<PathBuf>,
    /// With --spawn-broker / --spawn-cluster: the brokers' --flush policy [default: the broker's].
    #[arg(long, value_enum)]
    pub(crate) broker_flush: Option<Flush>,
    /// With --spawn-broker / --spawn-cluster: each broker's --page-cache-window-mb [default: the
    /// broker's 1536 for one broker; 1536/N each for N brokers, which share this machine's memory,
    /// so together they keep what one broker keeps].
    #[arg(long)]
    pub(crate) broker_page_cache_window_mb: Option<u64>,
    /// consume: drop the backlog's pages from the page cache before reading it (a cold replay on
    /// purpose), and measure the baseline: the same segment files read with `pread` in 1 MiB blocks
    /// from a dropped cache. Needs the broker's data directory: --spawn-broker or --broker-data-dir.
    #[arg(long)]
    pub(crate) cold: bool,
    /// consume: then measure a consumer tailing a live producer at this many records/s, alone and
    /// while a second consumer replays the backlog (from a dropped cache with --cold).
    #[arg(long)]
    pub(crate) tail_rate: Option<u64>,
    /// consume --tail-rate: pairs of tail phases (with the replay, then alone for as long), one
    /// after the other; the reported ratio is the median of the pairs' p99 ratios (this VM's tail
    /// p99 alone varies by 1.5x between runs, so one pair is a noisy figure).
    #[arg(long, default_value_t = 1)]
    pub(crate) tail_pairs: u32,
    /// The data directory of the --broker broker (for --cold and for the report of how the backlog
    /// compares with the broker's page-cache window; known for --spawn-broker).
    #[arg(long, conflicts_with_all = ["spawn_broker", "spawn_cluster"])]
    pub(crate) broker_data_dir: Option<PathBuf>,
}

impl Args {
    /// A produce load for `duration` seconds of `record_size`-byte records into `partitions`, for
    /// the benchmarks that compose runs (replication, leaders, scrape, group): one producer and
    /// consumer, 1 MiB batches, idempotent, no compression, a fresh topic, against no broker yet
    /// (the caller sets `broker` or a spawn field).
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
            tail_pairs: 1,
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
    /// consume: pairs of tail phases.
    pub tail_pairs: u32,
    /// The broker's data directory, when known (spawned, or --broker-data-dir).
    pub broker_data_dir: Option<PathBuf>,
}

/// The bounds of the producer's batch size (see `ProducerConfig::batch_bytes`).
const MIN_BATCH_BYTES: usize = 81;
const MAX_BATCH_BYTES: usize = 64 << 20;
/// Bytes of the send timestamp at the start of each e2e value.
pub(crate) const STAMP_BYTES: usize = 8;

impl Settings {
    pub(crate) fn check(mode: Mode, a: Args) -> Result<Settings, Error> {
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
        if a.tail_pairs == 0 || a.tail_pairs > 100 {
            return bad("--tail-pairs must be within 1..=100".into());
        }
        if a.tail_pairs != 1 && a.tail_rate.is_none() {
            return bad("--tail-pairs needs --tail-rate".into());
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
            tail_pairs: a.tail_pairs,
            broker_data_dir: a.broker_data_dir,
            broker_window_mb: a.broker_page_cache_window_mb.or(a
                .spawn_cluster
                .filter(|n| *n > 1)
                .map(|n| 1536 / u64::from(n))),
        })
    }

    pub(crate) fn acks_name(&self) -> &'static str {
        match self.acks {
            Acks::None => "none",
            Acks::Leader => "leader",
            Acks::All => "all",
        }
    }

    pub(crate) fn compression_name(&self) -> &'static str {
        match self.compression {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}
