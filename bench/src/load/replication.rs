//! `sluice-bench replication`: the cost of replication as one figure. Each pair runs a produce load
//! against N spawned brokers (replication factor N, acks `all`), then the same load against one
//! spawned broker (acks `leader`), and divides the two throughputs; several pairs alternate in the
//! same invocation, because this machine's page-cache state moves single runs by 10-30 %. The
//! summary is the median ratio, with every pair's figures in the table and in the JSON last line.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::{median, report::round3, AcksArg, Args, CompressionArg, Error, Mode, OnOff};

#[derive(Debug, Clone, clap::Args)]
pub struct ReplicationArgs {
    /// Brokers of the replicated side (the topic's replication factor too).
    #[arg(long, default_value_t = 3)]
    brokers: u32,
    /// Pairs of runs (replicated, then single broker), alternating.
    #[arg(long, default_value_t = 3)]
    pairs: u32,
    /// Seconds each run produces for.
    #[arg(long, default_value_t = 15.0)]
    duration: f64,
    /// Bytes of value per record.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Partitions of each run's topic.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Producer batch size in bytes, both sides.
    #[arg(long, default_value_t = 1 << 20)]
    batch_bytes: usize,
    /// Produce requests in flight per producer, both sides [default: the client's].
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// The `sluice` binary [default: `sluice` next to this executable].
    #[arg(long)]
    sluice_bin: Option<PathBuf>,
    /// Idempotent producers on both sides.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    idempotence: OnOff,
}

/// The produce load of one side of a pair.
fn side(a: &ReplicationArgs, replicated: bool) -> Args {
    Args {
        producers: 1,
        consumers: 1,
        partitions: Some(a.partitions),
        record_size: a.record_size,
        batch_bytes: a.batch_bytes,
        linger_ms: 0,
        max_in_flight: a.max_in_flight,
        acks: if replicated {
            AcksArg::All
        } else {
            AcksArg::Leader
        },
        idempotence: a.idempotence,
        rate: None,
        duration: Some(a.duration),
        count: None,
        compression: CompressionArg::None,
        broker: String::new(),
        topic: None,
        spawn_broker: !replicated,
        spawn_cluster: replicated.then_some(a.brokers),
        replication_factor: None,
        sluice_bin: a.sluice_bin.clone(),
        broker_flush: None,
        broker_page_cache_window_mb: None,
        cold: false,
        tail_rate: None,
        broker_data_dir: None,
    }
}

pub fn run(a: ReplicationArgs) -> Result<(), Box<dyn std::error::Error>> {
    run_checked(a).map_err(|e| e as Box<dyn std::error::Error>)
}

fn run_checked(a: ReplicationArgs) -> Result<(), Error> {
    if a.brokers < 2 {
        return Err("--brokers must be at least 2 (the replicated side)".into());
    }
    if a.pairs == 0 {
        return Err("--pairs must be at least 1".into());
    }
    let mut replicated = Vec::new();
    let mut single = Vec::new();
    let mut ratios = Vec::new();
    for pair in 1..=a.pairs {
        let r = super::run_report(Mode::Produce, side(&a, true))?.mb_per_s()?;
        let s = super::run_report(Mode::Produce, side(&a, false))?.mb_per_s()?;
        let ratio = if s > 0.0 { r / s } else { 0.0 };
        eprintln!(
            "sluice-bench: pair {pair}/{}: {r:.1} / {s:.1} MiB/s = {ratio:.3}",
            a.pairs
        );
        replicated.push(r);
        single.push(s);
        ratios.push(ratio);
    }
    let n = a.brokers;
    println!(
        "replication: {} pairs of {} s produce runs, {} B records, {} partition(s); \
         RF {n} acks all on {n} brokers vs acks leader on one",
        a.pairs, a.duration, a.record_size, a.partitions
    );
    println!(
        "{:<6} {:>22} {:>22} {:>8}",
        "pair",
        format!("RF {n} acks all MiB/s"),
        "1 broker leader MiB/s",
        "ratio"
    );
    for (i, ((r, s), q)) in replicated.iter().zip(&single).zip(&ratios).enumerate() {
        println!("{:<6} {:>22.1} {:>22.1} {:>8.3}", i + 1, r, s, q);
    }
    let med = median(&ratios);
    println!("median ratio {med:.3}");
    let line: Value = json!({
        "mode": "replication",
        "brokers": n,
        "pairs": a.pairs,
        "duration": a.duration,
        "record_size": a.record_size,
        "partitions": a.partitions,
        "batch_bytes": a.batch_bytes,
        "max_in_flight": a.max_in_flight,
        "replicated_mb_per_s": replicated,
        "single_mb_per_s": single,
        "ratios": ratios.iter().map(|r| round3(*r)).collect::<Vec<_>>(),
        "median_ratio": round3(med),
    });
    println!("{line}");
    Ok(())
}
