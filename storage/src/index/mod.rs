//! Sparse, memory-mapped segment indexes. They are caches: the log is the truth, and an index that is
//! missing or fails its checks is rebuilt from the log.
//!
//! [`IndexFile`] is the shared mechanism: a preallocated file of fixed-size entries, mapped once, appended
//! to by the single writer, with the entry count published through a [`Watermark`] so readers can search
//! it concurrently. [`OffsetIndex`] and [`TimeIndex`] give the entries their meaning.

mod offset;
mod time;

pub(crate) use offset::OffsetIndex;
pub(crate) use time::TimeIndex;

/// Bytes of one offset index entry and of one time index entry.
pub(crate) const OFFSET_ENTRY_LEN: usize = offset::ENTRY_LEN;
pub(crate) const TIME_ENTRY_LEN: usize = time::ENTRY_LEN;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{IoContext, Result};
use crate::io;
use crate::publish::Watermark;

/// A file of fixed-size entries, mapped read-write.
#[derive(Debug)]
pub(crate) struct IndexFile {
    path: PathBuf,
    file: File,
    map: Option<MmapRaw>,
    entry_len: usize,
    capacity: usize,
    len: Watermark,
    /// The file held a whole number of entries when opened (a trimmed index always does; a file cut
    /// in the middle of an entry is damaged).
    whole: bool,
}

impl IndexFile {
    /// Opens (creating if needed) the index at `path`. `entries` is how many entries are trusted (all
    /// the file holds when `None`). A writable index is extended to `capacity_bytes` so appends never
    /// remap; a sealed one is mapped at its own length.
    pub(crate) fn open(
        path: &Path,
        entry_len: usize,
        capacity_bytes: u64,
        entries: Option<usize>,
        writable: bool,
    ) -> Result<IndexFile> {
        let file = io::create(
            path,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
        )
        .ctx("open index", path)?;
        let file_len = file.metadata().ctx("stat index", path)?.len();
        let whole = file_len % entry_len as u64 == 0;
        let entries = entries.unwrap_or((file_len / entry_len as u64) as usize);
        let used = (entries * entry_len) as u64;
        let map_len = if writable {
            let cap = (capacity_bytes / entry_len as u64 * entry_len as u64).max(used);
            if file_len != cap {
                io::set_len(&file, path, cap).ctx("size index", path)?;
            }
            cap
        } else {
            if file_len < used {
                io::set_len(&file, path, used).ctx("size index", path)?;
            }
            used
        };
        let map = if map_len == 0 {
            None
        } else {
            Some(
                MmapOptions::new()
                    .len(map_len as usize)
                    .map_raw(&file)
                    .ctx("map index", path)?,
            )
        };
        Ok(IndexFile {
            path: path.to_path_buf(),
            file,
            map,
            entry_len,
            capacity: (map_len / entry_len as u64) as usize,
            len: Watermark::new(entries as u64),
            whole,
        })
    }

    /// Published entry count.
    pub(crate) fn len(&self) -> usize {
        self.len.load() as usize
    }

    /// Whether the file held a whole number of entries when it was opened.
    pub(crate) fn whole_entries(&self) -> bool {
        self.whole
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len() >= self.capacity
    }

    /// Copies entry `i` (which must be below [`IndexFile::len`]) into `out`.
    pub(crate) fn read(&self, i: usize, out: &mut [u8]) {
        debug_assert!(i < self.len() && out.len() == self.entry_len);
        if let Some(map) = &self.map {
            if (i + 1) * self.entry_len <= map.len() {
                // SAFETY: in bounds of the map (checked above); entries below the published length are not
                // written again except after a truncation, which readers of the truncated suffix tolerate
                // because every position read from an index is re-checked against the log.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        map.as_ptr().add(i * self.entry_len),
                        out.as_mut_ptr(),
                        self.entry_len,
                    );
                }
            }
        }
    }

    /// Appends an entry and publishes it. Single writer only. Returns false if the index is full.
    pub(crate) fn push(&self, entry: &[u8]) -> bool {
        debug_assert_eq!(entry.len(), self.entry_len);
        let i = self.len();
        let Some(map) = &self.map else { return false };
        if i >= self.capacity {
            return false;
        }
        // SAFETY: `i < capacity` keeps the write inside the map; slot `i` is above the published length,
        // so no reader looks at it until `publish` below.
        unsafe {
            std::ptr::copy_nonoverlapping(
                entry.as_ptr(),
                map.as_mut_ptr().add(i * self.entry_len),
                self.entry_len,
            );
        }
        self.len.publish(i as u64 + 1);
        true
    }

    /// Forgets entries from `n` on (truncation). Single writer only.
    pub(crate) fn truncate_entries(&self, n: usize) {
        if n < self.len() {
            self.len.retreat(n as u64);
        }
    }

    /// Shrinks the file to its entries (on seal and clean shutdown) so the next open knows the count
    /// from the file length. The map stays valid for every entry below the length.
    pub(crate) fn trim(&self) -> Result<()> {
        io::set_len(&self.file, &self.path, (self.len() * self.entry_len) as u64)
            .ctx("trim index", &self.path)
    }

    pub(crate) fn sync(&self) -> Result<()> {
        io::sync_data(&self.file, &self.path).ctx("fsync index", &self.path)
    }
}
