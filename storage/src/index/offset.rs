//! Offset index: sparse entries (offset relative to the segment base, byte position), both `u32`.

use std::path::Path;

use super::IndexFile;
use crate::error::Result;

/// Bytes of one entry.
pub(crate) const ENTRY_LEN: usize = 8;

/// Maps offsets to byte positions in a segment's log file.
#[derive(Debug)]
pub(crate) struct OffsetIndex {
    file: IndexFile,
}

impl OffsetIndex {
    pub(crate) fn open(
        path: &Path,
        capacity_bytes: u64,
        entries: Option<usize>,
        writable: bool,
    ) -> Result<Self> {
        Ok(OffsetIndex {
            file: IndexFile::open(path, ENTRY_LEN, capacity_bytes, entries, writable)?,
        })
    }

    pub(crate) fn entry(&self, i: usize) -> (u32, u32) {
        let mut b = [0u8; ENTRY_LEN];
        self.file.read(i, &mut b);
        let rel = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let pos = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        (rel, pos)
    }

    /// The last entry whose relative offset is at most `rel`: where a scan for `rel` may start.
    pub(crate) fn floor(&self, rel: u32) -> Option<(u32, u32)> {
        let n = self.file.len();
        // Binary search for the first entry with relative offset > rel.
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.entry(mid).0 <= rel {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1).map(|i| self.entry(i))
    }

    /// Positions of indexed batches, for planning reads by byte range: the last indexed position
    /// in `(after, at_most]` and the first in `(after, below)`. Entry positions strictly increase,
    /// so both are binary searches; only entries below `below` (the loaded segment length) count,
    /// since an entry may be published a moment before its batch.
    pub(crate) fn positions_around(
        &self,
        after: u64,
        at_most: u64,
        below: u64,
    ) -> (Option<u64>, Option<u64>) {
        let n = self.file.len();
        let pos = |i: usize| u64::from(self.entry(i).1);
        // First entry with position > x.
        let upper = |x: u64| {
            let (mut lo, mut hi) = (0usize, n);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if pos(mid) <= x {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            lo
        };
        let first_after = upper(after);
        let floor = upper(at_most.min(below.saturating_sub(1)))
            .checked_sub(1)
            .filter(|&i| i >= first_after)
            .map(pos);
        let next = (first_after < n)
            .then(|| pos(first_after))
            .filter(|&p| p < below);
        (floor, next)
    }

    /// Appends an entry. Entries strictly increase in both relative offset and position (a
    /// programmer error otherwise: the writer indexes batches in order, and recovery checks the
    /// offsets it reads from a file before indexing them).
    pub(crate) fn push(&self, rel: u32, pos: u32) -> bool {
        if let Some(i) = self.file.len().checked_sub(1) {
            let (last_rel, last_pos) = self.entry(i);
            assert!(
                rel > last_rel && pos > last_pos,
                "offset index entry ({rel}, {pos}) does not follow ({last_rel}, {last_pos})"
            );
        }
        let mut b = [0u8; ENTRY_LEN];
        b[..4].copy_from_slice(&rel.to_le_bytes());
        b[4..].copy_from_slice(&pos.to_le_bytes());
        self.file.push(&b)
    }

    /// Keeps only entries whose position is below `pos`.
    pub(crate) fn truncate_to_position(&self, pos: u32) {
        let n = self.file.len();
        let keep = (0..n).find(|&i| self.entry(i).1 >= pos).unwrap_or(n);
        self.file.truncate_entries(keep);
    }

    pub(crate) fn len(&self) -> usize {
        self.file.len()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.file.is_full()
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
    #[should_panic(expected = "does not follow")]
    fn an_offset_entry_out_of_order_panics() {
        let dir = tempfile::tempdir().unwrap();
        let idx = OffsetIndex::open(&dir.path().join("i"), 1200, Some(0), true).unwrap();
        assert!(idx.push(5, 100));
        idx.push(5, 200);
    }
}
