//! The storage crate's I/O layer: every write, fsync (file and directory), rename, file creation,
//! removal and length change the crate makes goes through the small wrappers here, plus segment file
//! names.
//!
//! The wrappers are the fault-injection seam: with the `fault-injection` feature each one asks
//! `crate::fault` first whether to run, fail or tear the operation; without it they are the plain
//! system calls. They never retry a failed fsync (the page cache state after one is unknown) and
//! never decide what a failure means for the log: callers map errors to `StorageError` and stop the
//! log where the durability contract says so.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// Asks the armed fault plans about an operation (feature `fault-injection`); `None`: run it.
/// `file` is the open file a write, fsync or length change acts on, `data` a write's bytes (the
/// power-loss model reads the one and copies the other).
#[cfg(any(test, feature = "fault-injection"))]
fn injected(
    op: crate::fault::Op,
    path: &Path,
    file: Option<&File>,
    pos: u64,
    data: &[&[u8]],
) -> Option<crate::fault::Action> {
    let len = data.iter().map(|p| p.len()).sum();
    crate::fault::intercept(crate::fault::OpInfo {
        op,
        path,
        file,
        from: None,
        pos,
        len,
        data,
    })
}

/// Returns early with the injected error of a non-write operation (on `file`, if it acts on one).
macro_rules! seam {
    ($op:ident, $path:expr) => {
        seam!($op, $path, None)
    };
    ($op:ident, $path:expr, $file:expr) => {
        #[cfg(any(test, feature = "fault-injection"))]
        match injected(crate::fault::Op::$op, $path, $file, 0, &[]) {
            // Only writes tear (a tear rule cannot name another kind); a tear's error is its error.
            Some(crate::fault::Action::Fail(e))
            | Some(crate::fault::Action::Tear { then: Some(e), .. }) => return Err(e),
            _ => {}
        }
    };
}

/// Writes all of `parts`, back to back, at `pos` of `file` (whose path is `path`): pwritev, retrying
/// short writes and EINTR.
pub(crate) fn write_all_at(file: &File, path: &Path, parts: &[&[u8]], pos: u64) -> io::Result<()> {
    let _ = path;
    #[cfg(any(test, feature = "fault-injection"))]
    {
        match injected(crate::fault::Op::Write, path, Some(file), pos, parts) {
            None => {}
            Some(crate::fault::Action::Fail(e)) => return Err(e),
            Some(crate::fault::Action::Tear { keep, then }) => {
                let mut left = keep;
                let prefix: Vec<&[u8]> = parts
                    .iter()
                    .map(|p| {
                        let n = left.min(p.len());
                        left -= n;
                        &p[..n]
                    })
                    .collect();
                pwritev_all(file, &prefix, pos)?;
                return match then {
                    Some(e) => Err(e),
                    None => Ok(()),
                };
            }
        }
    }
    pwritev_all(file, parts, pos)
}

fn pwritev_all(file: &File, parts: &[&[u8]], mut pos: u64) -> io::Result<()> {
    let mut parts: Vec<&[u8]> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    while !parts.is_empty() {
        let iov: Vec<libc::iovec> = parts
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        let offset = libc::off_t::try_from(pos)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file position overflows"))?;
        // SAFETY: every iovec points into a live slice of `parts` for the duration of the call.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                iov.as_ptr(),
                iov.len() as libc::c_int,
                offset,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "pwritev wrote nothing",
            ));
        }
        let mut written = n as usize;
        pos += written as u64;
        while written > 0 {
            if written >= parts[0].len() {
                written -= parts[0].len();
                parts.remove(0);
            } else {
                parts[0] = &parts[0][written..];
                written = 0;
            }
        }
    }
    Ok(())
}

/// Writes zeros over `[from, to)` so stale bytes past a truncation point can never be read back as a
/// batch by a later recovery.
pub(crate) fn zero_range(file: &File, path: &Path, from: u64, to: u64) -> io::Result<()> {
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK.min((to.saturating_sub(from)) as usize)];
    let mut pos = from;
    while pos < to {
        let n = ((to - pos) as usize).min(CHUNK);
        write_all_at(file, path, &[&zeros[..n]], pos)?;
        pos += n as u64;
    }
    Ok(())
}

/// fsyncs a directory so that file creations, renames and deletions in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    sync_dir_io(dir).ctx("fsync directory", dir)
}

/// [`sync_dir`] with the plain `io::Error`.
pub(crate) fn sync_dir_io(dir: &Path) -> io::Result<()> {
    seam!(SyncDir, dir);
    let d = File::open(dir)?;
    timed(|| d.sync_all())
}

/// `fdatasync` of `file` (at `path`): its data and the metadata needed to read it back.
pub(crate) fn sync_data(file: &File, path: &Path) -> io::Result<()> {
    let _ = path;
    seam!(Sync, path, Some(file));
    timed(|| file.sync_data())
}

/// `fsync` of `file` (at `path`): data and all metadata.
pub(crate) fn sync_all(file: &File, path: &Path) -> io::Result<()> {
    let _ = path;
    seam!(Sync, path, Some(file));
    timed(|| file.sync_all())
}

/// Runs one fsync system call and records how long it took (`crate::stats::fsync_latency`).
fn timed(fsync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    let start = std::time::Instant::now();
    let r = fsync();
    crate::stats::record_fsync(start.elapsed());
    r
}

/// Renames `from` over `to` (atomic within a file system; durable once the directory is fsynced).
pub(crate) fn rename(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(any(test, feature = "fault-injection"))]
    if let Some(crate::fault::Action::Fail(e) | crate::fault::Action::Tear { then: Some(e), .. }) =
        crate::fault::intercept(crate::fault::OpInfo {
            op: crate::fault::Op::Rename,
            path: to,
            file: None,
            from: Some(from),
            pos: 0,
            len: 0,
            data: &[],
        })
    {
        return Err(e);
    }
    std::fs::rename(from, to)
}

/// Removes the name `path` (durable once its directory is fsynced).
pub(crate) fn remove_file(path: &Path) -> io::Result<()> {
    seam!(Remove, path);
    std::fs::remove_file(path)
}

/// Opens `path` with `options`, which create the file if it does not exist.
pub(crate) fn create(path: &Path, options: &OpenOptions) -> io::Result<File> {
    seam!(Create, path);
    let file = options.open(path)?;
    // The power-loss model learns the new name's inode only now that it exists.
    #[cfg(any(test, feature = "fault-injection"))]
    crate::fault::created(path, &file);
    Ok(file)
}

/// Sets the length of `file` (at `path`): trims and preallocation (`ftruncate`).
pub(crate) fn set_len(file: &File, path: &Path, len: u64) -> io::Result<()> {
    let _ = path;
    seam!(SetLen, path, Some(file));
    file.set_len(len)
}

/// `<dir>/<base offset, 20 digits>.<ext>`.
pub(crate) fn segment_path(dir: &Path, base_offset: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{ext}"))
}

/// The base offset a segment file name encodes, if `name` is `<20 digits>.<ext>`.
pub(crate) fn parse_segment_name(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}
