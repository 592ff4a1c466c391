//! `sluice-bench storage`: append and read throughput of a partition log, each against a baseline
//! measured in the same run on the same machine:
//! - append vs a plain sequential `write` of the same batch bytes to one file, under the same flush
//!   policy (`interval` = fdatasync every 4 MiB, `always` = fdatasync after every batch);
//! - read (reopened log, so every batch's CRC is checked on its first read) vs `memcpy` of the same
//!   number of bytes.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::ValueEnum;
use hdrhistogram::Histogram;
use sluice_protocol::{BatchBuilder, Compression};
use sluice_storage::{FlushPolicy, LogConfig, PartitionLog};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Flush {
    Never,
    Interval,
    Always,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bytes of value per record.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Records per batch.
    #[arg(long, default_value_t = 1000)]
    batch_records: usize,
    /// Total megabytes (MiB) to append.
    #[arg(long, default_value_t = 1024)]
    total_mb: u64,
    /// Flush policy of the log (and of the raw-write baseline).
    #[arg(long, value_enum, default_value_t = Flush::Interval)]
    flush: Flush,
    /// Drop page-cache pages of flushed bytes more than this many MiB behind the end (storage's
    /// `page_cache_window_bytes`). The raw baseline keeps its page cache.
    #[arg(long)]
    cache_window_mb: Option<u64>,
    /// Alternating (raw write, log append) pairs measured; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Directory for the temporary files (defaults to the current directory, the disk the broker
    /// would use; /tmp may be memory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

type BoxError = Box<dyn std::error::Error>;

fn policy(f: Flush) -> FlushPolicy {
    match f {
        Flush::Never => FlushPolicy::Never,
        Flush::Interval => FlushPolicy::interval(),
        Flush::Always => FlushPolicy::Always,
    }
}

const INTERVAL_BYTES: u64 = 4 << 20;

fn make_batch(record_size: usize, records: usize) -> Result<Bytes, BoxError> {
    let mut b = BatchBuilder::with_capacity(Compression::None, records * (record_size + 16));
    // Non-repeating values so nothing downstream can shortcut on patterns.
    let mut value = vec![0u8; record_size];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..records {
        for chunk in value.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        let key = (i as u64).to_le_bytes();
        b.append(1_700_000_000_000 + i as i64, Some(&key), Some(&value), &[]);
    }
    Ok(b.seal()?)
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64().max(1e-9)
}

/// Plain sequential write of `count` copies of `batch` under the flush policy.
fn raw_write(path: &Path, batch: &[u8], count: u64, flush: Flush) -> Result<Duration, BoxError> {
    let mut f = File::create(path)?;
    let start = Instant::now();
    let mut unflushed = 0u64;
    for _ in 0..count {
        f.write_all(batch)?;
        unflushed += batch.len() as u64;
        match flush {
            Flush::Never => {}
            Flush::Interval if unflushed >= INTERVAL_BYTES => {
                f.sync_data()?;
                unflushed = 0;
            }
            Flush::Interval => {}
            Flush::Always => f.sync_data()?,
        }
    }
    if !matches!(flush, Flush::Never) {
        f.sync_data()?;
    }
    Ok(start.elapsed())
}

fn memcpy_baseline(total: u64) -> Duration {
    let chunk = 64 << 20;
    let src: Vec<u8> = (0..chunk).map(|i| i as u8).collect();
    let mut dst = vec![0u8; chunk];
    dst.copy_from_slice(&src); // touch both before timing
    let start = Instant::now();
    let mut done = 0u64;
    while done < total {
        let n = ((total - done) as usize).min(chunk);
        dst[..n].copy_from_slice(&src[..n]);
        std::hint::black_box(&dst);
        done += n as u64;
    }
    start.elapsed()
}

pub fn run(args: Args) -> Result<(), BoxError> {
    if args.record_size == 0 || args.batch_records == 0 || args.total_mb == 0 {
        return Err("--record-size, --batch-records and --total-mb must be positive".into());
    }
    let batch = make_batch(args.record_size, args.batch_records)?;
    let total_target = args.total_mb << 20;
    let count = (total_target / batch.len() as u64).max(1);
    let total = count * batch.len() as u64;
    let records = count * args.batch_records as u64;
    let base = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let tmp = tempfile::Builder::new()
        .prefix("sluice-bench-")
        .tempdir_in(&base)?;

    // The page cache of these VMs is slow on first touch and its state drifts, so an unmeasured raw
    // warm-up goes first, then `--rounds` alternating pairs (raw write, log append) are measured and
    // the medians compared: neither side is favoured by running first or second.
    let raw_path = tmp.path().join("raw.bin");
    raw_write(&raw_path, &batch, count, args.flush)?;
    std::fs::remove_file(&raw_path)?;

    let config = LogConfig {
        flush: policy(args.flush),
        page_cache_window_bytes: args.cache_window_mb.map(|m| m << 20),
        retention_ms: None,
        segment_ms: None,
        ..LogConfig::default()
    };
    // Checked once here, as the broker checks a batch once when a producer sends it; the raw
    // baseline does no checking either.
    let (checked, _) = sluice_protocol::RecordBatch::decode(&batch)?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let rounds = args.rounds.max(1);
    let mut raw_times = Vec::with_capacity(rounds);
    let mut append_times = Vec::with_capacity(rounds);
    let log_dir = tmp.path().join("log");
    for round in 0..rounds {
        // Free the previous round's log first, so each write phase reuses the pages the phase
        // before it freed (fresh memory is what is slow here).
        if round > 0 {
            std::fs::remove_dir_all(&log_dir)?;
        }
        raw_times.push(raw_write(&raw_path, &batch, count, args.flush)?);
        std::fs::remove_file(&raw_path)?;
        let (log, _) = PartitionLog::open(&log_dir, config.clone())?;
        let start = Instant::now();
        for _ in 0..count {
            let t = Instant::now();
            log.append_batch(&checked, 0, 0)?;
            hist.record(t.elapsed().as_micros().max(1) as u64)?;
        }
        if !matches!(args.flush, Flush::Never) {
            log.flush()?;
        }
        append_times.push(start.elapsed());
        log.close()?;
    }
    let raw_time = median(&raw_times);
    let append_time = median(&append_times);

    // Read back through a reopened log: every batch is CRC-checked on its first read.
    let (log, _) = PartitionLog::open(&log_dir, config)?;
    let start = Instant::now();
    let mut offset = log.log_start_offset();
    let mut read_bytes = 0u64;
    while offset < log.log_end_offset() {
        let r = log.read(offset, 1 << 20)?;
        if r.bytes.is_empty() {
            break;
        }
        read_bytes += r.bytes.len() as u64;
        offset = r.next_offset;
    }
    let read_time = start.elapsed();
    if read_bytes != total {
        return Err(format!("read back {read_bytes} bytes, appended {total}").into());
    }
    drop(log);
    std::fs::remove_dir_all(&log_dir)?;
    let memcpy_time = memcpy_baseline(total);

    let append_mb = mb_per_s(total, append_time);
    let raw_mb = mb_per_s(total, raw_time);
    let read_mb = mb_per_s(total, read_time);
    let memcpy_mb = mb_per_s(total, memcpy_time);
    let flush = format!("{:?}", args.flush).to_lowercase();
    println!(
        "storage: {} MiB in {count} batches of {} records x {} B, flush {flush}",
        total >> 20,
        args.batch_records,
        args.record_size
    );
    println!("{:<28} {:>12} {:>14}", "phase", "MiB/s", "records/s");
    let rps = |d: Duration| records as f64 / d.as_secs_f64().max(1e-9);
    println!(
        "{:<28} {:>12.0} {:>14.0}",
        "append (median)",
        append_mb,
        rps(append_time)
    );
    println!(
        "{:<28} {:>12.0} {:>14}",
        "raw sequential write (median)", raw_mb, "-"
    );
    let runs = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.0}", mb_per_s(total, *d)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "  append runs: {}   raw runs: {}",
        runs(&append_times),
        runs(&raw_times)
    );
    println!(
        "{:<28} {:>12.0} {:>14.0}",
        "read (reopened, CRC)",
        read_mb,
        rps(read_time)
    );
    println!("{:<28} {:>12.0} {:>14}", "memcpy", memcpy_mb, "-");
    println!(
        "append latency per batch: p50 {} us, p99 {} us, p99.9 {} us, max {} us",
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max()
    );
    let json = serde_json::json!({
        "flush": flush,
        "record_size": args.record_size,
        "batch_records": args.batch_records,
        "total_bytes": total,
        "append_mb_per_s": round(append_mb),
        "append_records_per_s": round(rps(append_time)),
        "raw_write_mb_per_s": round(raw_mb),
        "rounds": rounds,
        "append_runs_mb_per_s": append_times.iter().map(|d| round(mb_per_s(total, *d))).collect::<Vec<_>>(),
        "raw_runs_mb_per_s": raw_times.iter().map(|d| round(mb_per_s(total, *d))).collect::<Vec<_>>(),
        "append_vs_raw": round3(append_mb / raw_mb),
        "read_mb_per_s": round(read_mb),
        "memcpy_mb_per_s": round(memcpy_mb),
        "read_vs_memcpy": round3(read_mb / memcpy_mb),
        "append_p50_us": hist.value_at_quantile(0.5),
        "append_p99_us": hist.value_at_quantile(0.99),
    });
    println!("{json}");
    Ok(())
}

fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s[s.len() / 2]
}

fn round(x: f64) -> f64 {
    x.round()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
