//! The `sluice` binary: `sluice broker` runs a broker; the other commands are a command-line client
//! of a running broker.

mod broker_cmd;

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

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker (single node; data in ./data and a loopback listener unless told otherwise).
    Broker(broker_cmd::BrokerArgs),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Broker(args) => broker_cmd::run(args),
    };
    std::process::exit(code);
}
