//! `sluice-bench scrape`: what a Prometheus scrape of `/metrics` costs a producing broker. One
//! spawned broker takes alternating produce runs, with and without a scraper that fetches
//! `/metrics` every `--interval-ms` over HTTP; each pair's throughputs give a ratio (with / without),
//! the order within a pair alternates so that the log's growth does not favour one side, and the
//! summary is the median ratio with the scrapes' latency and size. Measures; asserts nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::spawn::SpawnedBroker;
use super::{median, report::round3, AcksArg, Args, Error, Mode};

#[derive(Debug, Clone, clap::Args)]
pub struct ScrapeArgs {
    /// Pairs of runs (with and without the scraper).
    #[arg(long, default_value_t = 3)]
    pairs: u32,
    /// Seconds each run produces for.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Bytes of value per record.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Partitions of each run's topic (each run makes a new topic, deleted after it).
    #[arg(long, default_value_t = 3)]
    partitions: u32,
    /// How often the scraper fetches `/metrics` (ms); Prometheus' usual is 15000, 1000 is harsh.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// What a produce acknowledgement waits for.
    #[arg(long, value_enum, default_value_t = AcksArg::All)]
    acks: AcksArg,
    /// The `sluice` binary [default: `sluice` next to this executable].
    #[arg(long)]
    sluice_bin: Option<PathBuf>,
}

/// Scrapes done during one run: count, total time, and the last body's size.
#[derive(Debug, Default, Clone, Copy)]
struct Scrapes {
    count: u64,
    total: Duration,
    bytes: usize,
}

/// One `GET /metrics`, HTTP/1.1 by hand over a fresh connection (what Prometheus does without
/// keep-alive); returns the body's size.
fn scrape_once(admin: &str) -> Result<usize, Error> {
    let mut s = TcpStream::connect(admin)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let head_end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP header end in the /metrics answer")?;
    if !out.starts_with(b"HTTP/1.1 200") {
        return Err(format!(
            "/metrics answered {:?}",
            String::from_utf8_lossy(&out[..head_end])
        )
        .into());
    }
    Ok(out.len() - head_end - 4)
}

/// Runs the scraper until `stop`, every `interval`.
fn scraper(admin: String, interval: Duration, stop: Arc<AtomicBool>) -> Result<Scrapes, Error> {
    let mut s = Scrapes::default();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        s.bytes = scrape_once(&admin)?;
        s.total += t.elapsed();
        s.count += 1;
        let next = t + interval;
        while !stop.load(Ordering::Relaxed) && Instant::now() < next {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(s)
}

fn load(a: &ScrapeArgs, broker: &str) -> Args {
    Args {
        broker: broker.to_string(),
        ..Args::produce_for(a.duration, a.record_size, a.partitions, a.acks)
    }
}

/// One produce run, scraped or not: its MiB/s and the scrapes made.
fn run_one(a: &ScrapeArgs, b: &SpawnedBroker, scraped: bool) -> Result<(f64, Scrapes), Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let admin = b
        .admin_addr()
        .ok_or("the broker has no admin API")?
        .to_string();
    let interval = Duration::from_millis(a.interval_ms.max(1));
    let handle = scraped.then(|| {
        let stop = stop.clone();
        std::thread::spawn(move || scraper(admin, interval, stop))
    });
    let result = super::run_report(Mode::Produce, load(a, b.addr()));
    stop.store(true, Ordering::Relaxed);
    // Each run writes gigabytes: its topic goes before the next run, or the disk fills.
    delete_bench_topics(b.addr())?;
    let scrapes = match handle {
        Some(h) => h.join().map_err(|_| "the scraper panicked")??,
        None => Scrapes::default(),
    };
    Ok((result?.mb_per_s()?, scrapes))
}

/// Deletes the runs' `bench-*` topics.
fn delete_bench_topics(broker: &str) -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let admin = sluice_client::Admin::new(broker)?;
        for t in admin.list_topics().await? {
            if t.name.starts_with("bench-") {
                admin.delete_topic(&t.name).await?;
            }
        }
        Ok::<_, Error>(())
    })
}

pub fn run(a: ScrapeArgs) -> Result<(), Box<dyn std::error::Error>> {
    run_checked(a).map_err(|e| e as Box<dyn std::error::Error>)
}

fn run_checked(a: ScrapeArgs) -> Result<(), Error> {
    if a.pairs == 0 {
        return Err("--pairs must be at least 1".into());
    }
    let bin = match &a.sluice_bin {
        Some(p) => p.clone(),
        None => super::spawn::default_bin()?,
    };
    let broker = SpawnedBroker::start_with(&bin, None, "127.0.0.1:0", &[])?;
    let (mut with, mut without, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut scrapes = Scrapes::default();
    for pair in 1..=a.pairs {
        // Alternate which side goes first, so the growing log does not favour one.
        let (w, s, wo) = if pair % 2 == 1 {
            let (wo, _) = run_one(&a, &broker, false)?;
            let (w, s) = run_one(&a, &broker, true)?;
            (w, s, wo)
        } else {
            let (w, s) = run_one(&a, &broker, true)?;
            let (wo, _) = run_one(&a, &broker, false)?;
            (w, s, wo)
        };
        let ratio = if wo > 0.0 { w / wo } else { 0.0 };
        eprintln!(
            "sluice-bench: pair {pair}/{}: {w:.1} / {wo:.1} MiB/s = {ratio:.3}",
            a.pairs
        );
        scrapes.count += s.count;
        scrapes.total += s.total;
        scrapes.bytes = s.bytes;
        with.push(w);
        without.push(wo);
        ratios.push(ratio);
    }
    broker.stop()?;
    let med = median(&ratios);
    let mean_ms = if scrapes.count > 0 {
        scrapes.total.as_secs_f64() * 1000.0 / scrapes.count as f64
    } else {
        0.0
    };
    println!(
        "scrape: {} pairs of {} s produce runs ({} B records, {} partitions per run, acks {:?}), \
         with and without GET /metrics every {} ms",
        a.pairs, a.duration, a.record_size, a.partitions, a.acks, a.interval_ms
    );
    println!(
        "{:<6} {:>16} {:>16} {:>8}",
        "pair", "scraped MiB/s", "unscraped MiB/s", "ratio"
    );
    for (i, ((w, wo), r)) in with.iter().zip(&without).zip(&ratios).enumerate() {
        println!("{:<6} {:>16.1} {:>16.1} {:>8.3}", i + 1, w, wo, r);
    }
    println!(
        "median ratio {med:.3} (cost {:.1} %); {} scrapes, mean {mean_ms:.1} ms, last body {} bytes",
        (1.0 - med) * 100.0,
        scrapes.count,
        scrapes.bytes
    );
    let line: Value = json!({
        "mode": "scrape",
        "pairs": a.pairs,
        "duration": a.duration,
        "record_size": a.record_size,
        "partitions": a.partitions,
        "interval_ms": a.interval_ms,
        "scraped_mb_per_s": with,
        "unscraped_mb_per_s": without,
        "ratios": ratios.iter().map(|r| round3(*r)).collect::<Vec<_>>(),
        "median_ratio": round3(med),
        "scrapes": scrapes.count,
        "mean_scrape_ms": round3(mean_ms),
        "body_bytes": scrapes.bytes,
    });
    println!("{line}");
    Ok(())
}
