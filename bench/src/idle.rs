//! `sluice-bench idle`: what an idle cluster costs. Spawns a cluster, creates a topic with many
//! replicated partitions, lets it settle, then measures each broker's CPU time (user + system, from
//! `/proc/<pid>/stat`) over a quiet interval. The baseline is the same measurement with no topic,
//! taken first in the same run, so the figure attributable to the partitions is the difference.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sluice_client::Admin;

use crate::load::spawn::SpawnedBroker;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Brokers in the cluster.
    #[arg(long, default_value_t = 3)]
    spawn_cluster: u32,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 300)]
    partitions: u32,
    /// Replication factor of the topic [default: the number of brokers].
    #[arg(long)]
    replication_factor: Option<u16>,
    /// Seconds to let elections settle and idle groups park before measuring.
    #[arg(long, default_value_t = 15.0)]
    settle: f64,
    /// Seconds of each measurement.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// The `sluice` binary [default: `sluice` next to this executable].
    #[arg(long)]
    sluice_bin: Option<PathBuf>,
}

/// CPU seconds (user + system) a process has used so far.
pub(crate) fn cpu_seconds(pid: u32) -> Result<f64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th fields.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("unreadable /proc stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).ok_or("no utime")?.parse::<f64>()?
        + f.get(12).ok_or("no stime")?.parse::<f64>()?;
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    Ok(ticks / 100.0)
}

/// Percent of one core each broker used over `secs`.
fn measure(brokers: &[SpawnedBroker], secs: f64) -> Result<Vec<f64>, Error> {
    let pids: Vec<u32> = brokers
        .iter()
        .map(|b| b.pid().ok_or("broker not running"))
        .collect::<Result<_, _>>()?;
    let before: Vec<f64> = pids
        .iter()
        .map(|p| cpu_seconds(*p))
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let elapsed = start.elapsed().as_secs_f64();
    let after: Vec<f64> = pids
        .iter()
        .map(|p| cpu_seconds(*p))
        .collect::<Result<_, _>>()?;
    Ok(before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a - b) / elapsed * 100.0)
        .collect())
}

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    run_checked(args).map_err(|e| e as Box<dyn std::error::Error>)
}

fn run_checked(a: Args) -> Result<(), Error> {
    if a.spawn_cluster == 0 || a.partitions == 0 {
        return Err("--spawn-cluster and --partitions must be at least 1".into());
    }
    if !(a.duration > 0.0 && a.settle >= 0.0) {
        return Err("--duration must be positive and --settle not negative".into());
    }
    let bin = match a.sluice_bin {
        Some(p) => p,
        None => crate::load::spawn::default_bin()?,
    };
    let brokers = SpawnedBroker::start_cluster(&bin, None, a.spawn_cluster, &[])?;
    let bootstrap = brokers
        .iter()
        .map(|b| b.addr().to_string())
        .collect::<Vec<_>>()
        .join(",");
    std::thread::sleep(Duration::from_secs_f64(a.settle));
    let baseline = measure(&brokers, a.duration)?;
    let rf = a
        .replication_factor
        .unwrap_or(a.spawn_cluster.min(u32::from(u16::MAX)) as u16);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let admin = Admin::new(bootstrap.clone())?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match admin.create_topic("idle", a.partitions, rf, &[]).await {
                Ok(()) => return Ok::<_, Error>(()),
                Err(e)
                    if e.code() == Some(sluice_client::ErrorCode::NOT_LEADER)
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(format!("create topic: {e}").into()),
            }
        }
    })?;
    drop(runtime);
    std::thread::sleep(Duration::from_secs_f64(a.settle));
    let loaded = measure(&brokers, a.duration)?;
    println!(
        "BROKER  IDLE CPU % (no topic)  IDLE CPU % ({} partitions, RF {rf})",
        a.partitions
    );
    for (i, (b, l)) in baseline.iter().zip(&loaded).enumerate() {
        println!("{:<7} {b:>24.2}  {l:>24.2}", i + 1);
    }
    let max = loaded.iter().cloned().fold(0.0, f64::max);
    let json = serde_json::json!({
        "mode": "idle",
        "brokers": a.spawn_cluster,
        "partitions": a.partitions,
        "replication_factor": rf,
        "duration": a.duration,
        "baseline_cpu_percent": baseline,
        "cpu_percent": loaded,
        "max_cpu_percent": max,
    });
    for b in brokers {
        if let Err(e) = b.stop() {
            eprintln!("sluice-bench: warning: {e}");
        }
    }
    println!("{json}");
    Ok(())
}
