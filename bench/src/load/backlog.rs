//! The backlog on the broker's disk, for `sluice-bench consume`: which segment files hold a
//! topic (from the broker's data directory, known for a spawned broker or given with
//! `--broker-data-dir`), how big each partition's log is against the broker's page-cache window,
//! dropping those files' pages from the page cache (`--cold`: per-file `POSIX_FADV_DONTNEED`, so
//! only the backlog goes, not the rest of the machine's cache), and the baseline a cold replay is
//! measured against: reading the same files sequentially with `pread` in 1 MiB blocks from a
//! dropped cache, as plain reads and as reads that drop what they read behind them. Only reads
//! files; never writes one.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::report::{mib, round1, round3, Report};
use super::{Error, Settings, Topic};

/// Block size of the baseline reads.
const BLOCK: usize = 1 << 20;
/// How often the drop-behind baseline drops what it read.
const DROP_EVERY: u64 = 64 << 20;
/// The pause after dropping the backlog's pages before a measured read starts. Dropping
/// gigabytes of cache makes this VM hand the memory back to its host, which stalls every process
/// for a while: an artifact of the benchmark's own preparation, so every measured read (the
/// replay, the tail phases, the `pread` baselines) starts after the same pause.
pub(crate) const SETTLE_AFTER_DROP: Duration = Duration::from_secs(3);

/// A topic's segment files, per partition, oldest first.
#[derive(Debug, Clone)]
pub(crate) struct Backlog {
    pub partitions: Vec<Vec<PathBuf>>,
}

impl Backlog {
    /// The `.log` files of `topic` under the broker's `data_dir`.
    pub(crate) fn find(data_dir: &Path, topic: &Topic) -> Result<Backlog, Error> {
        let mut partitions = Vec::new();
        for p in 0..topic.partitions {
            let dir = data_dir
                .join("topics")
                .join(&topic.name)
                .join(p.to_string());
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect();
            files.sort();
            partitions.push(files);
        }
        Ok(Backlog { partitions })
    }

    fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.partitions.iter().flatten()
    }

    /// Bytes of each partition's log files.
    pub(crate) fn partition_bytes(&self) -> Vec<u64> {
        self.partitions
            .iter()
            .map(|fs| fs.iter().map(|f| file_len(f)).sum())
            .collect()
    }

    /// Drops the files' pages from the page cache (pages a process has mapped stay; the broker
    /// maps only what it reads through its segment maps).
    pub(crate) fn drop_cache(&self) -> Result<(), Error> {
        for f in self.files() {
            let Some(file) = open(f)? else { continue };
            advise_dontneed(&file, 0, 0)
                .map_err(|e| format!("cannot drop the cache of {}: {e}", f.display()))?;
        }
        Ok(())
    }

    /// Drops the cache and waits [`SETTLE_AFTER_DROP`], then reads every file sequentially in
    /// 1 MiB `pread`s, dropping what was read behind the reader if `drop_behind`. Returns the
    /// bytes read and the time taken. Blocks its thread.
    pub(crate) fn pread_all(&self, drop_behind: bool) -> Result<(u64, Duration), Error> {
        self.drop_cache()?;
        std::thread::sleep(SETTLE_AFTER_DROP);
        let mut buf = vec![0u8; BLOCK];
        let started = Instant::now();
        let mut total = 0u64;
        for f in self.files() {
            let Some(file) = open(f)? else { continue };
            let (mut pos, mut dropped) = (0u64, 0u64);
            loop {
                let n = file
                    .read_at(&mut buf, pos)
                    .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
                if n == 0 {
                    break;
                }
                pos += n as u64;
                if drop_behind && pos - dropped >= DROP_EVERY {
                    // Best effort, like the broker's own window: only costs memory if it fails.
                    let _ = advise_dontneed(&file, dropped, pos - dropped);
                    dropped = pos;
                }
            }
            std::hint::black_box(&buf);
            total += pos;
        }
        let elapsed = started.elapsed();
        // Leave nothing of the baseline cached for what runs next.
        self.drop_cache()?;
        Ok((total, elapsed))
    }
}

/// Opens a segment file; `None` if retention deleted it meanwhile (a raft log's first segment
/// holds only control batches, whose timestamps make it expire at the first maintenance).
fn open(f: &Path) -> Result<Option<File>, Error> {
    match File::open(f) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot open {}: {e}", f.display()).into()),
    }
}

fn file_len(f: &Path) -> u64 {
    std::fs::metadata(f).map_or(0, |m| m.len())
}

fn advise_dontneed(file: &File, from: u64, len: u64) -> std::io::Result<()> {
    // SAFETY: advice on a descriptor we own; it changes no file contents.
    let rc = unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            from as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(rc))
    }
}

/// MB/s (10^6 bytes per second) of `bytes` in `d`.
pub(crate) fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64().max(1e-9) / 1e6
}

/// The broker's page-cache window per partition in bytes, when known: the default or the
/// `--broker-page-cache-window-mb` of a spawned broker, or that flag given for `--broker`.
/// `Some(0)`: the broker keeps everything cached.
fn window_bytes(s: &Settings) -> Option<u64> {
    match s.broker_window_mb {
        Some(mb) => Some(mb << 20),
        None if s.spawn_broker => Some(DEFAULT_WINDOW_MB << 20),
        None => None,
    }
}

/// The broker's default `--page-cache-window-mb`.
const DEFAULT_WINDOW_MB: u64 = 1536;

/// Adds to a consume report how the backlog compares with the broker's page-cache window and,
/// with `--cold`, the pread baselines against the replay (`replay` took `elapsed`).
pub(crate) fn report(
    r: &mut Report,
    s: &Settings,
    b: &Backlog,
    elapsed: Duration,
) -> Result<(), Error> {
    let per = b.partition_bytes();
    let total: u64 = per.iter().sum();
    let largest = per.iter().copied().max().unwrap_or(0);
    r.set("backlog_bytes", total.into());
    let window = window_bytes(s);
    r.set("broker_window_bytes", window.into());
    match window {
        Some(0) => r.note(
            "backlog vs window: the broker keeps every partition cached (window 0)".to_string(),
        ),
        Some(w) => {
            let larger = largest > w;
            r.set("backlog_exceeds_window", larger.into());
            r.note(format!(
                "backlog vs window: {:.1} MiB on disk ({:.1} MiB in the largest partition) against \
                 the broker's page-cache window of {:.1} MiB per partition: {}",
                mib(total),
                mib(largest),
                mib(w),
                if larger {
                    "LARGER, so the older part was read from disk"
                } else {
                    "within it"
                }
            ));
        }
        None => r.note(
            "backlog vs window: the broker's window is unknown (give --broker-page-cache-window-mb)"
                .to_string(),
        ),
    }
    let replay = mb_per_s(total, elapsed);
    r.set("consume_file_mb_per_s", round1(replay).into());
    if !s.cold {
        return Ok(());
    }
    let (plain_bytes, plain_time) = b.pread_all(false)?;
    let (behind_bytes, behind_time) = b.pread_all(true)?;
    let plain = mb_per_s(plain_bytes, plain_time);
    let behind = mb_per_s(behind_bytes, behind_time);
    r.note(format!(
        "cold: the backlog's pages were dropped before the replay, which read its segment files at \
         {replay:.0} MB/s; the same files with pread in 1 MiB blocks from a dropped cache: \
         {plain:.0} MB/s plain ({:.3}x), {behind:.0} MB/s dropping behind ({:.3}x)",
        replay / plain.max(1e-9),
        replay / behind.max(1e-9),
    ));
    r.set("pread_mb_per_s", round1(plain).into());
    r.set("pread_drop_behind_mb_per_s", round1(behind).into());
    r.set("cold_vs_pread", round3(replay / plain.max(1e-9)).into());
    r.set(
        "cold_vs_pread_drop_behind",
        round3(replay / behind.max(1e-9)).into(),
    );
    Ok(())
}
