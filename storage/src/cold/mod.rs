//! Cold reads: how a partition log serves data outside its page-cache window (see
//! `LogConfig::page_cache_window_bytes`) at the disk's sequential speed without evicting the hot
//! tail that tailing readers and replication rely on.
//!
//! A sequential reader of cold data (a consumer replaying a backlog, a follower or a window
//! operator catching up: anyone calling `PartitionLog::read*` in order) gets a *stream*: chunks of
//! a few MiB between batch boundaries, planned from the offset index ahead of the reader and read
//! with `O_DIRECT` into aligned buffers by a few I/O threads (so several reads are in flight and
//! none goes through the page cache). An I/O thread checks both CRCs of every batch of a chunk
//! before any of it is served; readers get `Bytes` slices of the buffer, no copy. Read-ahead memory
//! is bounded per reader (`reader_bytes`) and per broker (`budget_bytes`); a reader whose
//! read-ahead the budget cannot cover still gets the one chunk it needs next, outside the budget,
//! so it makes progress (slower, with no read-ahead): past the budget, each reader holds at most
//! the chunk its last answer is being sent from and the one being read.
//!
//! This module owns the broker-wide part: settings, the budget, the I/O threads and the registry
//! of every log's streams (to reclaim the read-ahead of readers that went away). The per-log
//! streams are in [`stream`], one read in [`chunk`], the buffers in [`buffer`]. It never writes a
//! file and never decides what is cold: the log does (`PartitionLog::read_below`).

pub(crate) mod buffer;
pub(crate) mod chunk;
pub(crate) mod stream;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use buffer::{round_up, Budget};
use chunk::Chunk;

use crate::error::{Result, StorageError};

/// Settings of the cold-read path; one [`ColdReads`] per process serves every log given it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColdReadConfig {
    /// Bytes of one direct read (rounded up to 4 KiB; ends at a batch boundary, so a little less;
    /// a batch larger than this gets a read of its own size).
    pub chunk_bytes: usize,
    /// Read-ahead one sequential reader may hold, including the chunk it is being served from
    /// (at least one chunk).
    pub reader_bytes: usize,
    /// Read-ahead all readers together may hold, including chunks whose bytes are still being sent.
    pub budget_bytes: usize,
    /// Threads issuing reads: how many reads are in flight at once.
    pub io_threads: usize,
}

impl Default for ColdReadConfig {
    /// Chosen by measurement on this project's VMs (docs/benchmarks.md, "Cold reads"): 4 MiB direct
    /// reads two at a time ran at the disk's sequential speed.
    fn default() -> Self {
        ColdReadConfig {
            chunk_bytes: 4 << 20,
            reader_bytes: 16 << 20,
            budget_bytes: 256 << 20,
            io_threads: 2,
        }
    }
}

impl ColdReadConfig {
    /// Checks that the values are usable.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(StorageError::Config(m));
        if self.chunk_bytes < buffer::ALIGN || self.chunk_bytes > (256 << 20) {
            return bad(format!(
                "cold read chunk_bytes {} outside [4 KiB, 256 MiB]",
                self.chunk_bytes
            ));
        }
        if self.reader_bytes < self.chunk_bytes {
            return bad(format!(
                "cold read reader_bytes {} below chunk_bytes {}",
                self.reader_bytes, self.chunk_bytes
            ));
        }
        if self.budget_bytes < self.reader_bytes {
            return bad(format!(
                "cold read budget_bytes {} below reader_bytes {}",
                self.budget_bytes, self.reader_bytes
            ));
        }
        if self.io_threads == 0 || self.io_threads > 64 {
            return bad(format!(
                "cold read io_threads {} outside [1, 64]",
                self.io_threads
            ));
        }
        Ok(())
    }
}

/// Counters of the cold-read path (for tests, benchmarks and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ColdStats {
    /// The per-broker bound and what is held against it now and at most so far.
    pub budget_bytes: usize,
    pub used_bytes: usize,
    pub peak_bytes: usize,
    /// Most bytes ever held outside the budget (readers' current chunks while it was spent).
    pub exempt_peak_bytes: usize,
    /// Most read-ahead one reader ever held.
    pub reader_peak_bytes: usize,
    /// Chunks read and bytes they held.
    pub chunks: u64,
    pub bytes: u64,
    /// Buffers allocated (the rest were reused).
    pub allocations: u64,
}

/// How long a stream may go unread before its read-ahead may be taken for other readers.
const IDLE: Duration = Duration::from_secs(2);
/// How often a reader short of budget may look for idle streams to reclaim.
const RECLAIM_EVERY: Duration = Duration::from_millis(100);

/// The cold-read path of a process: its settings, budget and I/O threads. Cheap to share
/// (`Arc`); the threads end when the last handle is dropped.
pub struct ColdReads {
    config: ColdReadConfig,
    budget: Arc<Budget>,
    jobs: Mutex<Sender<Arc<Chunk>>>,
    streams: Mutex<Vec<Weak<stream::StreamSet>>>,
    last_reclaim: Mutex<Option<Instant>>,
    reader_peak: AtomicU64,
    chunks: AtomicU64,
    bytes: AtomicU64,
    /// While non-zero and before `gentle_until_ms`, each reader reads one chunk of this many bytes
    /// at a time (see [`ColdReads::gentle_for`]).
    gentle: AtomicUsize,
    /// Milliseconds since `epoch` until which reads stay gentle.
    gentle_until_ms: AtomicU64,
    epoch: Instant,
}

impl std::fmt::Debug for ColdReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColdReads")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ColdReads {
    /// Starts the I/O threads.
    pub fn start(config: ColdReadConfig) -> Result<Arc<ColdReads>> {
        config.validate()?;
        let chunk = buffer::round_up(config.chunk_bytes);
        let (tx, rx) = mpsc::channel::<Arc<Chunk>>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..config.io_threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("sluice-cold-{i}"))
                .spawn(move || io_thread(&rx))
                .map_err(|e| {
                    StorageError::Config(format!("cannot start a cold-read thread: {e}"))
                })?;
        }
        Ok(Arc::new(ColdReads {
            config: ColdReadConfig {
                chunk_bytes: chunk,
                ..config
            },
            budget: Budget::new(config.budget_bytes, chunk),
            jobs: Mutex::new(tx),
            streams: Mutex::new(Vec::new()),
            last_reclaim: Mutex::new(None),
            reader_peak: AtomicU64::new(0),
            chunks: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            gentle: AtomicUsize::new(0),
            gentle_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }))
    }

    /// Gentle reads for the next `period`: every reader reads one chunk of `bytes` at a time
    /// (rounded up to 4 KiB, at most `chunk_bytes`) instead of its full read-ahead, so that reads
    /// ahead of a replay never keep the disk busy for long in front of someone's fsync; after the
    /// period, the configured read-ahead again (a caller renews it while it wants gentle reads:
    /// the broker on every produce). Chunks already planned are not cut. Measured in
    /// docs/benchmarks.md ("Catch-up pacing"): 2 MiB one at a time kept a tailing consumer's p99
    /// near its own while a replay ran, and reads slower than the full read-ahead.
    pub fn gentle_for(&self, bytes: usize, period: Duration) {
        let n = round_up(bytes.max(1)).min(self.config.chunk_bytes);
        let until = (self.epoch.elapsed() + period).as_millis() as u64;
        if self.gentle.load(Ordering::Relaxed) != n {
            self.gentle.store(n, Ordering::Relaxed);
        }
        self.gentle_until_ms.store(until, Ordering::Relaxed);
    }

    /// Gentle reads end now (the next chunks are planned with the full read-ahead).
    pub fn not_gentle(&self) {
        self.gentle_until_ms.store(0, Ordering::Relaxed);
    }

    /// The chunk size and read-ahead bound of a reader now.
    fn read_ahead(&self) -> (usize, usize) {
        let n = self.gentle.load(Ordering::Relaxed);
        let until = self.gentle_until_ms.load(Ordering::Relaxed);
        if n == 0 || (self.epoch.elapsed().as_millis() as u64) >= until {
            return (self.config.chunk_bytes, self.config.reader_bytes);
        }
        (n, n)
    }

    pub fn config(&self) -> ColdReadConfig {
        self.config
    }

    pub fn stats(&self) -> ColdStats {
        ColdStats {
            budget_bytes: self.budget.limit(),
            used_bytes: self.budget.used(),
            peak_bytes: self.budget.peak(),
            exempt_peak_bytes: self.budget.exempt_peak(),
            reader_peak_bytes: self.reader_peak.load(Ordering::Relaxed) as usize,
            chunks: self.chunks.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            allocations: self.budget.allocations(),
        }
    }

    /// Hands a planned chunk to the I/O threads.
    fn submit(&self, chunk: Arc<Chunk>) {
        self.chunks.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(chunk.end - chunk.start, Ordering::Relaxed);
        let sent = crate::sync::lock(&self.jobs).send(chunk.clone());
        if sent.is_err() {
            // The threads are gone (they only end with this handle): read here rather than hang.
            chunk.fill();
        }
    }

    fn note_reader_bytes(&self, n: usize) {
        self.reader_peak.fetch_max(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn register(&self, set: &Arc<stream::StreamSet>) {
        let mut v = crate::sync::lock(&self.streams);
        v.retain(|w| w.strong_count() > 0);
        v.push(Arc::downgrade(set));
    }

    /// Drops the read-ahead of streams no one has read for [`IDLE`] (at most every
    /// [`RECLAIM_EVERY`]); `except` is the caller's own set, already locked.
    fn reclaim_idle(&self, except: &stream::StreamSet) {
        let now = Instant::now();
        {
            let mut last = crate::sync::lock(&self.last_reclaim);
            if last.is_some_and(|t| now.duration_since(t) < RECLAIM_EVERY) {
                return;
            }
            *last = Some(now);
        }
        let sets: Vec<_> = crate::sync::lock(&self.streams)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for set in sets {
            if !std::ptr::eq(Arc::as_ptr(&set), except) {
                set.drop_idle(now, IDLE);
            }
        }
    }
}

/// Puts the calling thread's I/O in the idle class: the block layer's scheduler (mq-deadline,
/// bfq) then serves every other request first, so a replay does not queue the fsyncs and the
/// writes that tailing consumers wait for behind megabytes of reads. Measured here: fsync p99
/// under a 4 MiB x 2 direct-read replay 48-58 ms in the default class, 8.5 ms in the idle class,
/// with the replay as fast (docs/benchmarks.md, "Cold reads"). Best effort: a kernel or scheduler
/// without priorities leaves the reads in the default class.
fn lower_io_priority() {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_IDLE: libc::c_long = 3;
    const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
    // SAFETY: ioprio_set takes three integers and changes only this thread's I/O priority
    // (`who` 0 with IOPRIO_WHO_PROCESS is the calling thread).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cold reads keep the default I/O priority");
    }
}

fn io_thread(rx: &Mutex<Receiver<Arc<Chunk>>>) {
    lower_io_priority();
    loop {
        let job = crate::sync::lock(rx).recv();
        match job {
            Ok(chunk) => chunk.fill(),
            Err(_) => return,
        }
    }
}

/// A read that found its bytes still on their way from disk: wait for it (`.await`, or
/// [`ColdWait::wait`] to block), then read again.
#[derive(Debug)]
pub struct ColdWait {
    chunk: Arc<Chunk>,
}

impl ColdWait {
    /// Blocks the calling thread until the bytes are read.
    pub fn wait(self) {
        self.chunk.wait();
    }
}

impl Future for ColdWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.chunk.poll_done(cx.waker()) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}
