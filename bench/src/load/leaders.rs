//! `sluice-bench leaders`: what balanced partition leadership is worth. On N spawned brokers (the
//! automatic leader return off, so each arrangement stays as set up) each pair runs the same
//! produce load (replication factor N, acks `all`) twice: into a topic whose partitions are led one
//! per broker (their preferred leaders, as the assignment spreads them), and into a topic whose
//! partitions all prefer, and are all led by, broker 1 (replicas reordered with a replica move,
//! then `balance_leaders`). Pairs alternate in the same invocation, as in `replication`, because
//! this machine's page-cache state moves single runs by 10-30 %; the summary is the median ratio
//! balanced / skewed. Each run's topic is deleted after it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_client::{Admin, LeaderOutcome};

use super::spawn::SpawnedBroker;
use super::{median, report::round3, AcksArg, Args, Error, Mode};

#[derive(Debug, Clone, clap::Args)]
pub struct LeadersArgs {
    /// Brokers to spawn (the replication factor, and the partitions, too).
    #[arg(long, default_value_t = 3)]
    brokers: u32,
    /// Pairs of runs (balanced, then all leaders on broker 1), alternating.
    #[arg(long, default_value_t = 3)]
    pairs: u32,
    /// Seconds each run produces for.
    #[arg(long, default_value_t = 15.0)]
    duration: f64,
    /// Bytes of value per record.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Producers of each run (each writes to every partition).
    #[arg(long, default_value_t = 3)]
    producers: usize,
    /// Producer batch size in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    batch_bytes: usize,
    /// The `sluice` binary [default: `sluice` next to this executable].
    #[arg(long)]
    sluice_bin: Option<PathBuf>,
}

/// How long setting up one arrangement of leaders may take.
const SETUP_WAIT: Duration = Duration::from_secs(60);

pub fn run(a: LeadersArgs) -> Result<(), Box<dyn std::error::Error>> {
    run_checked(a).map_err(|e| e as Box<dyn std::error::Error>)
}

fn run_checked(a: LeadersArgs) -> Result<(), Error> {
    if a.brokers < 2 {
        return Err("--brokers must be at least 2".into());
    }
    if a.pairs == 0 {
        return Err("--pairs must be at least 1".into());
    }
    let bin = match &a.sluice_bin {
        Some(p) => p.clone(),
        None => super::spawn::default_bin()?,
    };
    // The brokers share this machine's memory: together they keep what one broker keeps.
    let window = (1536 / a.brokers).to_string();
    let extra: Vec<String> = ["--auto-leader-rebalance", "false", "--page-cache-window-mb"]
        .iter()
        .map(|s| s.to_string())
        .chain([window])
        .collect();
    let brokers = SpawnedBroker::start_cluster(&bin, None, a.brokers, &extra)?;
    let addr = brokers
        .iter()
        .map(|b| b.addr().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let result = pairs(&a, &addr);
    for b in brokers {
        if let Err(e) = b.stop() {
            eprintln!("sluice-bench: warning: {e}");
        }
    }
    let (balanced, skewed) = result?;
    report(&a, &balanced, &skewed);
    Ok(())
}

/// Every pair's (balanced, skewed) MiB/s.
fn pairs(a: &LeadersArgs, addr: &str) -> Result<(Vec<f64>, Vec<f64>), Error> {
    let (mut balanced, mut skewed) = (Vec::new(), Vec::new());
    for pair in 1..=a.pairs {
        let b = one_run(a, addr, false)?;
        let s = one_run(a, addr, true)?;
        eprintln!(
            "sluice-bench: pair {pair}/{}: balanced {b:.1} / all on broker 1 {s:.1} MiB/s = {:.3}",
            a.pairs,
            if s > 0.0 { b / s } else { 0.0 }
        );
        balanced.push(b);
        skewed.push(s);
    }
    Ok((balanced, skewed))
}

/// Sets up a fresh topic (leaders spread, or all on broker 1), produces into it, deletes it.
fn one_run(a: &LeadersArgs, addr: &str, skew: bool) -> Result<f64, Error> {
    let topic = format!(
        "bench-leaders-{}-{:08x}",
        if skew { "skewed" } else { "balanced" },
        super::random_u64() as u32
    );
    let n = a.brokers;
    super::until_interrupted(arrange(addr, &topic, n, skew))?;
    let load = Args {
        producers: a.producers,
        batch_bytes: a.batch_bytes,
        broker: addr.to_string(),
        topic: Some(topic.clone()),
        ..Args::produce_for(a.duration, a.record_size, n, AcksArg::All)
    };
    let mb = super::run_report(Mode::Produce, load)?.mb_per_s()?;
    super::until_interrupted(async {
        let admin = Admin::new(addr).map_err(|e| e.to_string())?;
        admin
            .delete_topic(&topic)
            .await
            .map_err(|e| format!("delete topic {topic}: {e}"))?;
        Ok(())
    })?;
    Ok(mb)
}

/// Creates `topic` with `n` partitions and replication factor `n`, and waits until its leaders
/// are spread one per broker, or (`skew`) until broker 1 is every partition's preferred leader
/// and leads them all.
async fn arrange(addr: &str, topic: &str, n: u32, skew: bool) -> Result<(), Error> {
    let admin = Admin::new(addr).map_err(|e| e.to_string())?;
    let n16 = u16::try_from(n).map_err(|_| "too many brokers")?;
    let deadline = Instant::now() + SETUP_WAIT;
    let late = |what: &str| -> Error { format!("{what} not done within {SETUP_WAIT:?}").into() };
    while let Err(e) = admin.create_topic(topic, n, n16, &[]).await {
        if Instant::now() > deadline {
            return Err(format!("create topic {topic}: {e}").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if skew {
        let t = admin
            .describe_topic(topic)
            .await
            .map_err(|e| e.to_string())?;
        for p in &t.partitions {
            let mut replicas = p.replicas.clone();
            replicas.sort_by_key(|r| (*r != 1, *r));
            admin
                .reassign_partition(topic, p.partition, &replicas)
                .await
                .map_err(|e| format!("reorder the replicas of {topic}/{}: {e}", p.partition))?;
        }
        // The reorder is recorded once each partition's leader has carried the move out.
        loop {
            let t = admin
                .describe_topic(topic)
                .await
                .map_err(|e| e.to_string())?;
            if t.partitions.iter().all(|p| p.replicas.first() == Some(&1)) {
                break;
            }
            if Instant::now() > deadline {
                return Err(late("reordering the replicas"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Every partition on its preferred leader, as every answer of the cluster says.
    loop {
        let rows = admin
            .balance_leaders()
            .await
            .map_err(|e| format!("balance leaders: {e}"))?;
        let mine: Vec<_> = rows.iter().filter(|r| r.topic == topic).collect();
        if mine.len() == n as usize
            && mine
                .iter()
                .all(|r| r.outcome != LeaderOutcome::Skipped && r.leader == r.preferred)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(late("placing the leaders"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn report(a: &LeadersArgs, balanced: &[f64], skewed: &[f64]) {
    let n = a.brokers;
    let ratios: Vec<f64> = balanced
        .iter()
        .zip(skewed)
        .map(|(b, s)| if *s > 0.0 { b / s } else { 0.0 })
        .collect();
    println!(
        "leaders: {} pairs of {} s produce runs, {} B records, {} producer(s), {n} partitions, \
         RF {n} acks all on {n} brokers: leaders one per broker vs all on broker 1",
        a.pairs, a.duration, a.record_size, a.producers
    );
    println!(
        "{:<6} {:>18} {:>22} {:>8}",
        "pair", "balanced MiB/s", "all on broker 1 MiB/s", "ratio"
    );
    for (i, ((b, s), q)) in balanced.iter().zip(skewed).zip(&ratios).enumerate() {
        println!("{:<6} {:>18.1} {:>22.1} {:>8.3}", i + 1, b, s, q);
    }
    let med = median(&ratios);
    println!("median ratio {med:.3}");
    let line: Value = json!({
        "mode": "leaders",
        "brokers": n,
        "pairs": a.pairs,
        "duration": a.duration,
        "record_size": a.record_size,
        "producers": a.producers,
        "batch_bytes": a.batch_bytes,
        "balanced_mb_per_s": balanced,
        "skewed_mb_per_s": skewed,
        "ratios": ratios.iter().map(|r| round3(*r)).collect::<Vec<_>>(),
        "median_ratio": round3(med),
    });
    println!("{line}");
}
