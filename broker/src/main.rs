//! The `sluice` binary: `sluice broker` runs a broker; the other commands are a command-line client
//! of a running broker.

mod broker_cmd;
mod cli;
mod power_hook;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Sluice: a durable, replicated event-log broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the broker's arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker (single node; data in ./data and a loopback listener unless told otherwise).
    Broker(broker_cmd::BrokerArgs),
    /// Create, list, describe, alter and delete topics.
    Topic(cli::topic::TopicArgs),
    /// Produce records read from stdin (or a file), one per line.
    Produce(cli::ProduceArgs),
    /// Print records of a topic to stdout, one per line.
    Consume(cli::ConsumeArgs),
    /// Show the brokers, the controller and every partition.
    Cluster(cli::ClusterArgs),
    /// List, describe, reset the offsets of and delete consumer groups.
    Group(cli::group::GroupArgs),
    /// Create, list, describe, pause, resume and delete window operators.
    Operator(cli::operator::OperatorArgs),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Broker(args) => broker_cmd::run(args),
        Command::Topic(args) => cli::run(cli::topic::run(args)),
        Command::Produce(args) => cli::run(cli::produce::run(args)),
        Command::Consume(args) => cli::run(cli::consume::run(args)),
        Command::Cluster(args) => cli::run(cli::cluster::run(args)),
        Command::Group(args) => cli::run(cli::group::run(args)),
        Command::Operator(args) => cli::run(cli::operator::run(args)),
    };
    std::process::exit(code);
}
