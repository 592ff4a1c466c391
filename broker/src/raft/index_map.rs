//! The raft index -> batch position map of a group's log, for the entries above the purge point
//! (pure bookkeeping; rebuilt from batch headers on open, a cache and never the truth).

use std::collections::VecDeque;
use std::io;

use super::io_error;

/// Where one raft entry's batch sits in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryPos {
    pub term: u64,
    pub base_offset: u64,
    pub next_offset: u64,
}

/// raft index -> batch position, for the entries above the purge point.
#[derive(Debug, Default)]
pub struct IndexMap {
    /// Raft index of `entries[0]` (or of the next append when empty).
    pub(super) first: u64,
    pub(super) entries: VecDeque<EntryPos>,
}

impl IndexMap {
    pub fn get(&self, index: u64) -> Option<EntryPos> {
        let i = index.checked_sub(self.first)?;
        self.entries.get(usize::try_from(i).ok()?).copied()
    }

    pub fn last(&self) -> Option<(u64, EntryPos)> {
        let pos = *self.entries.back()?;
        Some((self.first + self.entries.len() as u64 - 1, pos))
    }

    pub fn first_index(&self) -> u64 {
        self.first
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `index` may be appended next: any index on an empty map, else the one after the
    /// last. Checked before the entry's batch is written, so a refused entry leaves no trace.
    pub(super) fn check_next(&self, index: u64) -> io::Result<()> {
        if !self.entries.is_empty() && index != self.first + self.entries.len() as u64 {
            return Err(io_error(format!(
                "raft log hole: appending index {index} after {}",
                self.first + self.entries.len() as u64 - 1
            )));
        }
        Ok(())
    }

    pub(super) fn push(&mut self, index: u64, pos: EntryPos) -> io::Result<()> {
        self.check_next(index)?;
        if self.entries.is_empty() {
            self.first = index;
        }
        self.entries.push_back(pos);
        Ok(())
    }

    /// Keeps entries up to `index` inclusive (`None`: none).
    pub(super) fn truncate_after(&mut self, index: Option<u64>) {
        let keep = match index {
            None => 0,
            Some(i) if i < self.first => 0,
            Some(i) => (i - self.first + 1).min(self.entries.len() as u64) as usize,
        };
        self.entries.truncate(keep);
    }

    /// Drops entries up to `index` inclusive; an empty map then expects `index + 1` next.
    pub(super) fn purge(&mut self, index: u64) {
        while !self.entries.is_empty() && self.first <= index {
            self.entries.pop_front();
            self.first += 1;
        }
        if self.entries.is_empty() {
            self.first = self.first.max(index + 1);
        }
    }
}
