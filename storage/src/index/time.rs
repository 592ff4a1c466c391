//! Time index: sparse entries (max timestamp so far in ms as `i64`, relative offset as `u32`). Timestamps
//! in the entries never decrease, so a search by time is a binary search.

use std::path::Path;

use super::IndexFile;
use crate::error::Result;

/// Bytes of one entry.
pub(crate) const ENTRY_LEN: usize = 12;

/// Maps timestamps to offsets in a segment.
#[derive(Debug)]
pub(crate) struct TimeIndex {
    file: IndexFile,
}

impl TimeIndex {
    pub(crate) fn open(
        path: &Path,
        capacity_bytes: u64,
        entries: Option<usize>,
        writable: bool,
    ) -> Result<Self> {
        Ok(TimeIndex {
            file: IndexFile::open(path, ENTRY_LEN, capacity_bytes, entries, writable)?,
        })
    }

    pub(crate) fn entry(&self, i: usize) -> (i64, u32) {
        let mut b = [0u8; ENTRY_LEN];
        self.file.read(i, &mut b);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[..8]);
        (
            i64::from_le_bytes(ts),
            u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        )
    }

    /// The relative offset of the last entry whose timestamp is below `ts`: every batch up to and
    /// including that offset has a max timestamp below `ts`, so a search for `ts` may start there.
    pub(crate) fn scan_start(&self, ts: i64) -> Option<u32> {
        let n = self.file.len();
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.entry(mid).0 < ts {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1).map(|i| self.entry(i).1)
    }

    /// Entry `i`, if there is one.
    pub(crate) fn entry_opt(&self, i: usize) -> Option<(i64, u32)> {
        (i < self.file.len()).then(|| self.entry(i))
    }

    /// The newest entry.
    pub(crate) fn last(&self) -> Option<(i64, u32)> {
        self.file.len().checked_sub(1).map(|i| self.entry(i))
    }

    /// Appends an entry. Neither the timestamp nor the relative offset decreases (a programmer
    /// error otherwise: entries hold the running maximum timestamp of batches indexed in order).
    pub(crate) fn push(&self, ts: i64, rel: u32) -> bool {
        if let Some((last_ts, last_rel)) = self.last() {
            assert!(
                ts >= last_ts && rel >= last_rel,
                "time index entry ({ts}, {rel}) goes back from ({last_ts}, {last_rel})"
            );
        }
        let mut b = [0u8; ENTRY_LEN];
        b[..8].copy_from_slice(&ts.to_le_bytes());
        b[8..].copy_from_slice(&rel.to_le_bytes());
        self.file.push(&b)
    }

    /// Keeps only entries whose relative offset is below `rel`.
    pub(crate) fn truncate_to_offset(&self, rel: u32) {
        let n = self.file.len();
        let keep = (0..n).find(|&i| self.entry(i).1 >= rel).unwrap_or(n);
        self.file.truncate_entries(keep);
    }

    pub(crate) fn len(&self) -> usize {
        self.file.len()
    }

    pub(crate) fn file(&self) -> &IndexFile {
        &self.file
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The order assert is live: an entry that does not keep the documented order panics.
    #[test]
    #[should_panic(expected = "goes back")]
    fn a_time_entry_going_back_panics() {
        let dir = tempfile::tempdir().unwrap();
        let idx = TimeIndex::open(&dir.path().join("i"), 1200, Some(0), true).unwrap();
        assert!(idx.push(100, 5));
        idx.push(99, 6);
    }
}
