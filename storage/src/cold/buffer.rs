//! Read-ahead memory: page-aligned buffers for direct reads and the per-process budget they are
//! taken from. A buffer holds its charge until its last user drops it (the bytes served from it
//! live in `Bytes` that borrow it), then goes back to a small free list (still charged) or to the
//! kernel, so a steady replay reuses the same memory instead of touching fresh pages. Never does
//! file I/O.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use memmap2::{MmapMut, MmapOptions};

/// Alignment of direct-read buffers, offsets and lengths: a page, which every block size we run
/// on (512 B, 4 KiB) divides.
pub(crate) const ALIGN: usize = 4096;

/// The budget every cold reader of a process draws its read-ahead from. It counts every buffer it
/// allocated and has not freed: those in use (being read into, queued ahead of a reader, or held by
/// `Bytes` still being sent) and those kept for reuse.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    /// Bytes charged: buffers in use plus those in `free`.
    charged: AtomicUsize,
    peak: AtomicUsize,
    /// Bytes allocated outside the budget: a reader's current chunk while the budget was spent.
    exempt: AtomicUsize,
    exempt_peak: AtomicUsize,
    /// Freed standard-size buffers kept for reuse (at most `keep`): a steady replay reuses the same
    /// pages instead of faulting in fresh memory, which is slow on VMs that return free memory.
    free: Mutex<Vec<MmapMut>>,
    chunk: usize,
    keep: usize,
    allocations: AtomicU64,
}

impl Budget {
    /// A budget of `limit` bytes whose standard buffers hold `chunk` bytes (a multiple of [`ALIGN`]).
    pub(crate) fn new(limit: usize, chunk: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            charged: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            exempt: AtomicUsize::new(0),
            exempt_peak: AtomicUsize::new(0),
            free: Mutex::new(Vec::new()),
            chunk,
            // Enough to reuse every buffer of a few busy readers, bounded so an idle process does
            // not keep much resident.
            keep: (limit / chunk.max(1)).min(16),
            allocations: AtomicU64::new(0),
        })
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes in buffers in use (charged minus the ones kept for reuse).
    pub(crate) fn used(&self) -> usize {
        let free = crate::sync::lock(&self.free).len() * self.chunk;
        self.charged.load(Ordering::Relaxed).saturating_sub(free)
    }

    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    pub(crate) fn exempt_peak(&self) -> usize {
        self.exempt_peak.load(Ordering::Relaxed)
    }

    pub(crate) fn allocations(&self) -> u64 {
        self.allocations.load(Ordering::Relaxed)
    }

    /// The size of the buffer a read of `len` bytes gets: the standard chunk, or more for a batch
    /// longer than it.
    fn size_for(&self, len: usize) -> usize {
        round_up(len.max(1)).max(self.chunk)
    }

    /// A buffer of at least `len` bytes charged to the budget, or `None` when the budget cannot
    /// cover it.
    pub(crate) fn take(self: &Arc<Self>, len: usize) -> Option<AlignedBuf> {
        let size = self.size_for(len);
        if size == self.chunk {
            if let Some(map) = crate::sync::lock(&self.free).pop() {
                // Already charged while it waited in the free list.
                return Some(self.wrap(map, true));
            }
        }
        let mut cur = self.charged.load(Ordering::Relaxed);
        loop {
            let next = cur.checked_add(size).filter(|n| *n <= self.limit)?;
            match self
                .charged
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.peak.fetch_max(next, Ordering::Relaxed);
                    break;
                }
                Err(now) => cur = now,
            }
        }
        match self.alloc(size) {
            Some(map) => Some(self.wrap(map, true)),
            None => {
                self.charged.fetch_sub(size, Ordering::AcqRel);
                None
            }
        }
    }

    /// A buffer outside the budget, for a reader that must make progress while the budget is
    /// spent (at most one per reader: its current chunk). `None` only if allocation fails.
    pub(crate) fn take_exempt(self: &Arc<Self>, len: usize) -> Option<AlignedBuf> {
        let size = self.size_for(len);
        let map = self.alloc(size)?;
        let now = self.exempt.fetch_add(size, Ordering::AcqRel) + size;
        self.exempt_peak.fetch_max(now, Ordering::Relaxed);
        Some(self.wrap(map, false))
    }

    fn wrap(self: &Arc<Self>, map: MmapMut, charged: bool) -> AlignedBuf {
        AlignedBuf {
            map: Some(map),
            filled: 0,
            charged,
            budget: self.clone(),
        }
    }

    /// Anonymous memory straight from the kernel (page-aligned, as direct reads need, and given
    /// back on free, so the process's resident size follows the buffers alive), in huge pages
    /// where the kernel has them: a direct read's request carries one segment per physically
    /// contiguous run of its buffer, and the virtio disks we run on take at most 254 segments,
    /// so a 4 MiB read into 4 KiB pages left as four requests of 1 MiB and the disk read at
    /// ~1.3 GB/s, 100 % busy, where the page cache's large folios read the same files at
    /// ~1.65 GB/s (docs/benchmarks.md, "Huge-page read buffers").
    fn alloc(&self, size: usize) -> Option<MmapMut> {
        self.allocations.fetch_add(1, Ordering::Relaxed);
        let map = MmapOptions::new().len(size).map_anon().ok()?;
        // Best effort: without transparent huge pages the reads are only split more.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        Some(map)
    }

    fn give_back(&self, map: MmapMut, charged: bool) {
        let size = map.len();
        if !charged {
            self.exempt.fetch_sub(size, Ordering::AcqRel);
            return;
        }
        if size == self.chunk {
            let mut free = crate::sync::lock(&self.free);
            if free.len() < self.keep {
                free.push(map);
                return;
            }
        }
        self.charged.fetch_sub(size, Ordering::AcqRel);
    }
}

/// Rounds up to a multiple of [`ALIGN`].
pub(crate) fn round_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// A page-aligned buffer filled by a direct read; the bytes below `filled` are the ones read.
#[derive(Debug)]
pub(crate) struct AlignedBuf {
    /// Always `Some` until dropped.
    map: Option<MmapMut>,
    filled: usize,
    charged: bool,
    budget: Arc<Budget>,
}

impl AlignedBuf {
    pub(crate) fn capacity(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.len())
    }

    /// The whole buffer, for a read to fill.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        self.map.as_deref_mut().unwrap_or(&mut [])
    }

    /// Marks the first `n` bytes as read.
    pub(crate) fn set_filled(&mut self, n: usize) {
        assert!(n <= self.capacity(), "filled past the buffer");
        self.filled = n;
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self.map.as_deref().map_or(&[], |m| &m[..self.filled])
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if let Some(map) = self.map.take() {
            self.budget.give_back(map, self.charged);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_budget_is_never_exceeded_and_returns_on_drop() {
        let b = Budget::new(3 * ALIGN, ALIGN);
        let x = b.take(ALIGN).unwrap();
        let y = b.take(2 * ALIGN - 7).unwrap();
        assert_eq!(y.capacity(), 2 * ALIGN);
        assert!(b.take(1).is_none(), "budget spent");
        let e = b.take_exempt(ALIGN).unwrap();
        assert_eq!(b.used(), 3 * ALIGN);
        drop(x);
        // Kept for reuse, still charged, not in use.
        assert_eq!(b.used(), 2 * ALIGN);
        assert!(b.take(ALIGN).is_some());
        drop((y, e));
        assert_eq!(b.used(), 0);
        assert_eq!(b.peak(), 3 * ALIGN);
        assert_eq!(b.exempt_peak(), ALIGN);
    }

    /// The read buffers are eligible for huge pages (the kernel's `THPeligible` of their
    /// mapping), so a direct read into one is a single request on a disk that takes few segments
    /// per request (see `Budget::alloc`). Seen failing with the `MADV_HUGEPAGE` advice removed
    /// (`THPeligible: 0` under this machine's `madvise` mode). A kernel with transparent huge
    /// pages off (`[never]`) or without the smaps field cannot give them: nothing to check there.
    #[cfg(target_os = "linux")]
    #[test]
    fn read_buffers_are_eligible_for_huge_pages() {
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
        if thp.map_or(true, |t| t.contains("[never]")) {
            return;
        }
        let b = Budget::new(8 << 20, 4 << 20);
        let mut buf = b.take(4 << 20).unwrap();
        buf.spare()[0] = 1;
        let start = buf.spare().as_ptr() as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        // The mapping's block: its header line names its range, the fields follow.
        let mut ours = false;
        let mut eligible = None;
        for line in smaps.lines() {
            let range = line.split_whitespace().next().and_then(|r| {
                let (a, z) = r.split_once('-')?;
                Some((
                    usize::from_str_radix(a, 16).ok()?,
                    usize::from_str_radix(z, 16).ok()?,
                ))
            });
            if let Some((a, z)) = range {
                ours = a <= start && start < z;
            } else if ours {
                if let Some(v) = line.strip_prefix("THPeligible:") {
                    eligible = Some(v.trim() == "1");
                }
            }
        }
        match eligible {
            Some(e) => assert!(
                e,
                "the read buffer's mapping is not eligible for huge pages"
            ),
            None => eprintln!("no THPeligible field for the buffer's mapping: not checked"),
        }
    }

    #[test]
    fn chunk_sized_buffers_are_reused() {
        let b = Budget::new(8 * ALIGN, ALIGN);
        for _ in 0..10 {
            drop(b.take(100).unwrap());
        }
        assert_eq!(b.allocations(), 1);
    }
}
