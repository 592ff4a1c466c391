//! A segment's side of cold reads (`crate::cold`): reading a byte range of the log file straight
//! from disk into an aligned buffer (`O_DIRECT`, so the page cache, and the hot tail it holds for
//! tailing readers, is left alone), planning chunk ends at batch boundaries from the offset index,
//! and the truncation count that tells a reader its buffered bytes may be stale. Checks no CRC
//! (the cold reader does, on the buffer it serves) and never writes.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use super::Segment;
use crate::cold::buffer::{round_up, AlignedBuf, ALIGN};
use crate::error::{IoContext, Result};

/// How far ahead [`Segment::is_cached`] looks: past the kernel's read-around of a map fault (half
/// of `read_ahead_kb`, 8 MiB on these VMs).
const CACHED_PROBE_BYTES: u64 = 16 << 20;

/// The file cold reads go through: opened `O_DIRECT` once, on the first cold read.
#[derive(Debug)]
pub(crate) struct DirectFile {
    file: Option<File>,
    /// Direct reads failed (a filesystem without `O_DIRECT`, such as tmpfs): read through the page
    /// cache with the segment's own descriptor and drop what was read right after.
    buffered: AtomicBool,
}

impl Segment {
    /// How many truncations this segment has seen: a reader that buffered bytes of it compares the
    /// count before and after, since a truncation may rewrite bytes it holds.
    pub(crate) fn truncations(&self) -> u64 {
        self.truncations.load(Ordering::Acquire)
    }

    /// A batch boundary at or before the batch holding `offset`, from the index alone (no byte of
    /// the log is touched: a header walk through the map would fault in, and read around, pages
    /// of cold data). A reader starting there skips the batches below `offset`.
    pub(crate) fn scan_start(&self, offset: u64, end: u64) -> u64 {
        let rel = offset
            .saturating_sub(self.base_offset)
            .min(u64::from(u32::MAX)) as u32;
        self.floor_position(rel, end)
    }

    /// Where a chunk of a sequential read that starts at the batch boundary `start` should end: the
    /// last indexed batch boundary at or below `target`, or `len` if `target` reaches it; if no
    /// boundary lies in between (a batch longer than the chunk), the first boundary after `start`.
    /// Only a plan: the reader checks every batch header it walks.
    pub(crate) fn chunk_end(&self, start: u64, target: u64, len: u64) -> u64 {
        if target >= len {
            return len;
        }
        match self.offset_index.positions_around(start, target, len) {
            (Some(p), _) => p,
            (None, Some(next)) => next,
            (None, None) => len,
        }
    }

    /// Whether the bytes from `pos` on (up to [`CACHED_PROBE_BYTES`], or `end`) are all in the page
    /// cache (`mincore` on the segment's map; a failed call counts as cached: the map path then
    /// serves them). Data inside the page-cache window that is not cached (after a restart, or
    /// dropped on purpose) is read like cold data rather than faulted in through the map. The probe
    /// reaches past what the kernel reads around a fault on the map, so a reader the map served
    /// once does not look cached for ever after.
    pub(crate) fn is_cached(&self, pos: u64, end: u64) -> bool {
        let page = super::page_size();
        let at = pos & !(page - 1);
        let to = end
            .min(pos.saturating_add(CACHED_PROBE_BYTES))
            .min(self.data.len() as u64);
        if at >= to {
            return true;
        }
        let mut v = [0u8; (CACHED_PROBE_BYTES / 4096) as usize + 1];
        let pages = (to - at).div_ceil(page) as usize;
        if pages > v.len() {
            return true;
        }
        // SAFETY: `[at, to)` lies inside the live map (checked above; `at` is page-aligned and the
        // map starts on a page), and `v` holds one byte per page of it.
        let rc = unsafe {
            libc::mincore(
                self.data.as_ptr().add(at as usize) as *mut libc::c_void,
                (to - at) as usize,
                v.as_mut_ptr(),
            )
        };
        rc != 0 || v[..pages].iter().all(|b| b & 1 == 1)
    }

    fn direct_file(&self) -> &DirectFile {
        self.direct.get_or_init(|| {
            let opened = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(&self.log_path);
            match opened {
                Ok(file) => DirectFile {
                    file: Some(file),
                    buffered: AtomicBool::new(false),
                },
                Err(e) => {
                    tracing::debug!(path = %self.log_path.display(), error = %e,
                        "no direct reads for this segment; cold reads go through the page cache");
                    DirectFile {
                        file: None,
                        buffered: AtomicBool::new(true),
                    }
                }
            }
        })
    }

    /// Reads the bytes `[from, to)` of the log file into `buf`, from the aligned position at or
    /// below `from`; returns where `from` lies in the buffer. `buf` must hold the aligned range.
    pub(crate) fn read_direct(&self, from: u64, to: u64, buf: &mut AlignedBuf) -> Result<usize> {
        let start = from & !(ALIGN as u64 - 1);
        let want = round_up((to - start) as usize);
        let need = (to - start) as usize;
        assert!(
            want <= buf.capacity(),
            "cold read of {want} bytes into a {}-byte buffer",
            buf.capacity()
        );
        let direct = self.direct_file();
        let filled = match (&direct.file, direct.buffered.load(Ordering::Relaxed)) {
            (Some(f), false) => match pread_all(f, buf, start, want, need) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // The filesystem took the open but refuses direct reads: go buffered for good.
                    direct.buffered.store(true, Ordering::Relaxed);
                    self.read_buffered(buf, start, want, need)?
                }
                r => r.ctx("cold read of segment", &self.log_path)?,
            },
            _ => self.read_buffered(buf, start, want, need)?,
        };
        buf.set_filled(filled);
        Ok((from - start) as usize)
    }

    fn read_buffered(
        &self,
        buf: &mut AlignedBuf,
        start: u64,
        want: usize,
        need: usize,
    ) -> Result<usize> {
        let n = pread_all(&self.file, buf, start, want, need)
            .ctx("cold read of segment", &self.log_path)?;
        // What was just read is cold (behind the page-cache window): do not let it push out the
        // hot tail. SAFETY: plain advice on our own descriptor; it changes no file contents.
        unsafe {
            libc::posix_fadvise(
                self.file.as_raw_fd(),
                start as libc::off_t,
                n as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            );
        }
        Ok(n)
    }
}

/// Reads up to `want` bytes at `start` into `buf`; at least `need` of them must be there (the rest
/// is alignment past the bytes asked for, which the file may not hold).
fn pread_all(
    f: &File,
    buf: &mut AlignedBuf,
    start: u64,
    want: usize,
    need: usize,
) -> std::io::Result<usize> {
    let mut filled = 0usize;
    let dst = buf.spare();
    while filled < need {
        let rest = &mut dst[filled..want];
        // SAFETY: `rest` is a live, writable slice of `rest.len()` bytes for the call's duration.
        let n = unsafe {
            libc::pread(
                f.as_raw_fd(),
                rest.as_mut_ptr() as *mut libc::c_void,
                rest.len(),
                (start + filled as u64) as libc::off_t,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "file ends {} bytes short of the segment length",
                    need - filled
                ),
            ));
        }
        filled += n as usize;
        if filled < need && !filled.is_multiple_of(ALIGN) {
            // A direct read must go on at an aligned position; a short read inside the file is
            // not expected, so report it rather than guess.
            return Err(std::io::Error::other(format!(
                "short read of {filled} bytes inside the file"
            )));
        }
    }
    Ok(filled)
}
