//! The handles openraft owns over a group's log: [`LogStore`] (`RaftLogStorage`) and
//! [`LogReader`] (`RaftLogReader`), both thin adapters over the shared [`GroupLog`]. The blocking
//! saves (vote, purge point: each an fsync) run off the async workers.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::RaftLogReader;

use super::log_store::{GroupLog, MAX_APPEND_BYTES};
use super::{io_error, Entry, LogId, TypeConfig, Vote};

/// The `RaftLogStorage` handle openraft owns.
#[derive(Debug, Clone)]
pub struct LogStore {
    pub group: Arc<GroupLog>,
}

/// A reader sharing the store's log (entries appended later are visible to it).
#[derive(Debug, Clone)]
pub struct LogReader {
    pub group: Arc<GroupLog>,
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

/// The store and its readers read the same way: from the shared group log.
macro_rules! read_from_group {
    ($t:ty) => {
        impl RaftLogReader<TypeConfig> for $t {
            async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
                &mut self,
                range: RB,
            ) -> io::Result<Vec<Entry>> {
                let (start, end) = bounds(&range);
                self.group.entries_up_to_async(start, end, usize::MAX).await
            }

            /// What one append request carries: bounded in bytes as well as in entries, so a
            /// lagging follower gets frames well below the frame limit.
            async fn limited_get_log_entries(
                &mut self,
                start: u64,
                end: u64,
            ) -> io::Result<Vec<Entry>> {
                self.group
                    .entries_up_to_async(start, end, MAX_APPEND_BYTES)
                    .await
            }

            async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
                Ok(self.group.vote())
            }
        }
    };
}

read_from_group!(LogReader);
read_from_group!(LogStore);

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        Ok(self.group.log_state())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            group: self.group.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let g = self.group.clone();
        let v = *vote;
        tokio::task::spawn_blocking(move || g.save_vote(&v))
            .await
            .map_err(|e| io_error(e.to_string()))?
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        self.group.append(entries, callback)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        self.group.truncate_after(last_log_id)
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        // Saving the purge point fsyncs `raft.meta`: off the async workers, like the vote.
        let g = self.group.clone();
        tokio::task::spawn_blocking(move || g.purge(log_id))
            .await
            .map_err(|e| io_error(e.to_string()))?
    }
}
