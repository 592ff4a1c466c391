//! `sluice-bench`: benchmarks that print figures, each next to a baseline measured in the same run.
//!
//! - `storage`: appends through `sluice-storage` against a plain sequential file write of the same bytes
//!   under the same flush policy, then reads the log back against a memcpy of the same volume.
//! - `produce`, `consume`, `e2e`: the load generator against a live broker (or one it spawns), see
//!   [`load`]: throughput and produce-ack, poll or end-to-end latency percentiles; `--spawn-cluster N`
//!   runs them against N replicating brokers.
//! - `replication`: alternating pairs of produce runs, RF N acks all on N spawned brokers against
//!   acks leader on one, and their median throughput ratio.
//! - `leaders`: N partitions (RF N, acks all) on N spawned brokers with their leaders one per broker,
//!   against the same with every leader on broker 1, as the median ratio of alternating pairs.
//! - `group`: consumer groups on one broker: a backlog drained by a group against one plain consumer,
//!   how long a leaving member's partitions take to flow again, and what one member joining a
//!   group of 100 does to the partitions that stay and to those that move, in heartbeat intervals.
//! - `idle`: CPU per broker of an idle cluster holding many replicated partitions, against the same
//!   cluster with no topic.
//! - `window`: the window operator's engine alone, events/s per window kind against parsing only.
//! - `operator`: a window operator inside a broker over a backlog of keyed JSON events, events/s
//!   against a plain consumer reading the same backlog, with its state and emit p99.

mod idle;
mod load;
mod operator;
mod storage;
mod window;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "sluice-bench", about = "Sluice benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Storage engine append/read throughput against raw file writes and memcpy.
    Storage(storage::Args),
    /// Producers against a broker: records/s, MiB/s and produce-ack latency.
    Produce(load::Args),
    /// Fill a backlog, then consumers read it as fast as they can: records/s and MiB/s.
    Consume(load::Args),
    /// Producers and consumers at once: end-to-end (produce to consume) and produce-ack latency.
    E2e(load::Args),
    /// The cost of replication: RF N acks all on N spawned brokers against acks leader on one,
    /// as the median ratio of alternating pairs of produce runs.
    Replication(load::replication::ReplicationArgs),
    /// What scraping `/metrics` costs: produce runs on one spawned broker with and without a
    /// scraper, as the median ratio of alternating pairs.
    Scrape(load::scrape::ScrapeArgs),
    /// Balanced partition leadership: RF N acks all into N partitions led one per broker against
    /// the same with every leader on one broker, as the median ratio of alternating pairs.
    Leaders(load::leaders::LeadersArgs),
    /// Consumer groups: drain throughput against a plain consumer, a member leaving, a member
    /// joining a group of 100, in heartbeat intervals.
    Group(load::group::GroupArgs),
    /// CPU an idle cluster with many replicated partitions uses, per broker.
    Idle(idle::Args),
    /// The window operator's engine alone: events/s into tumbling, sliding and session windows
    /// against parsing the events only.
    Window(window::Args),
    /// A window operator running in a broker over a backlog of keyed JSON events: events/s against
    /// a plain consumer of the same backlog, state and emit p99.
    Operator(operator::Args),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return;
        }
        Err(e) => {
            let text = e.render().to_string();
            eprint!(
                "sluice-bench: {}",
                text.strip_prefix("error: ").unwrap_or(&text)
            );
            std::process::exit(1);
        }
    };
    let result = match cli.command {
        Command::Storage(args) => storage::run(args),
        Command::Produce(args) => load::run(load::Mode::Produce, args),
        Command::Consume(args) => load::run(load::Mode::Consume, args),
        Command::E2e(args) => load::run(load::Mode::E2e, args),
        Command::Replication(args) => load::replication::run(args),
        Command::Scrape(args) => load::scrape::run(args),
        Command::Leaders(args) => load::leaders::run(args),
        Command::Group(args) => load::group::run(args),
        Command::Idle(args) => idle::run(args),
        Command::Window(args) => window::run(args).map_err(Into::into),
        Command::Operator(args) => operator::run(args),
    };
    if let Err(e) = result {
        eprintln!("sluice-bench: {e}");
        std::process::exit(1);
    }
}
