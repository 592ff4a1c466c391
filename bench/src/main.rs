//! `sluice-bench`: benchmarks that print figures, each next to a baseline measured in the same run.
//!
//! - `storage`: appends through `sluice-storage` against a plain sequential file write of the same bytes
//!   under the same flush policy, then reads the log back against a memcpy of the same volume.
//!
//! The load generator against a live broker (`produce`, `consume`, `e2e`) comes with the broker.

mod storage;

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
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Storage(args) => storage::run(args),
    };
    if let Err(e) = result {
        eprintln!("sluice-bench: {e}");
        std::process::exit(1);
    }
}
