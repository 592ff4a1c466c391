//! One chunk of a cold read: a planned byte range `[start, end)` of a segment between two batch
//! boundaries, read straight from disk into an aligned buffer by an I/O thread, which then checks
//! both CRCs of every batch in it before anyone is served. Readers wait on the chunk (blocking, or
//! as a future), then serve slices of it. A chunk never serves a batch that failed its checks, nor
//! bytes read across a truncation of its segment.

use std::sync::{Arc, Condvar, Mutex};
use std::task::Waker;

use bytes::Bytes;
use sluice_protocol::batch::{self, BatchError, BatchHeader};

use super::buffer::AlignedBuf;
use crate::error::StorageError;
use crate::segment::Segment;

/// Why a chunk's good bytes end before its planned end.
#[derive(Debug, Clone)]
pub(crate) enum Cut {
    /// The batch at this position failed a check: reported, never served.
    Corrupt { position: u64, source: BatchError },
    /// The batch at the chunk's start is longer than the chunk: read `[start, needed_end)` instead.
    Longer { needed_end: u64 },
    /// The index planned a boundary that is not one (the batch at `good_end` crosses `end`):
    /// plan again from `good_end`.
    Misplanned,
    /// The segment was truncated while the chunk was planned or read: its bytes may be stale.
    Stale,
}

/// What the I/O thread found.
#[derive(Debug)]
pub(crate) struct Filled {
    /// The checked batches `[start, good_end)`, borrowing the chunk's buffer.
    pub(crate) bytes: Bytes,
    pub(crate) good_end: u64,
    pub(crate) cut: Option<Cut>,
}

#[derive(Debug)]
enum State {
    Pending {
        buf: Option<AlignedBuf>,
        wakers: Vec<Waker>,
    },
    Ready(Arc<Filled>),
    Failed {
        kind: std::io::ErrorKind,
        message: String,
    },
}

/// A planned read of `[start, end)` of `seg`.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub(crate) seg: Arc<Segment>,
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// Bytes of its buffer (what it costs the reader's and the broker's read-ahead).
    pub(crate) size: usize,
    truncations: u64,
    state: Mutex<State>,
    done: Condvar,
}

/// Where a chunk is.
#[derive(Debug)]
pub(crate) enum Status {
    Pending,
    Ready(Arc<Filled>),
    Failed(StorageError),
}

impl Chunk {
    /// A chunk to be read into `buf`; `truncations` is the segment's count loaded before its length
    /// was, when the chunk was planned.
    pub(crate) fn new(
        seg: Arc<Segment>,
        start: u64,
        end: u64,
        truncations: u64,
        buf: AlignedBuf,
    ) -> Chunk {
        debug_assert!(start < end);
        Chunk {
            seg,
            start,
            end,
            size: buf.capacity(),
            truncations,
            state: Mutex::new(State::Pending {
                buf: Some(buf),
                wakers: Vec::new(),
            }),
            done: Condvar::new(),
        }
    }

    pub(crate) fn status(&self) -> Status {
        match &*crate::sync::lock(&self.state) {
            State::Pending { .. } => Status::Pending,
            State::Ready(f) => Status::Ready(f.clone()),
            State::Failed { kind, message } => Status::Failed(StorageError::Io {
                context: "cold read of segment",
                path: self.seg.log_path().to_path_buf(),
                source: std::io::Error::new(*kind, message.clone()),
            }),
        }
    }

    /// Blocks until the I/O thread is done with the chunk.
    pub(crate) fn wait(&self) {
        let mut g = crate::sync::lock(&self.state);
        while matches!(*g, State::Pending { .. }) {
            g = crate::sync::wait(&self.done, g);
        }
    }

    /// Whether the chunk is done; otherwise `waker` is woken when it is.
    pub(crate) fn poll_done(&self, waker: &Waker) -> bool {
        let mut g = crate::sync::lock(&self.state);
        match &mut *g {
            State::Pending { wakers, .. } => {
                if !wakers.iter().any(|w| w.will_wake(waker)) {
                    wakers.push(waker.clone());
                }
                false
            }
            _ => true,
        }
    }

    /// Reads and checks the chunk (on an I/O thread), then wakes its waiters.
    pub(crate) fn fill(&self) {
        let buf = match &mut *crate::sync::lock(&self.state) {
            State::Pending { buf, .. } => buf.take(),
            _ => None,
        };
        let Some(mut buf) = buf else { return };
        let result = self
            .seg
            .read_direct(self.start, self.end, &mut buf)
            .map(|at| self.check(Bytes::from_owner(buf), at));
        let next = match result {
            Ok(filled) => State::Ready(Arc::new(filled)),
            Err(e) => {
                tracing::warn!(path = %self.seg.log_path().display(), start = self.start,
                    error = %e, "cold read failed");
                let kind = match &e {
                    StorageError::Io { source, .. } => source.kind(),
                    _ => std::io::ErrorKind::Other,
                };
                State::Failed {
                    kind,
                    message: e.to_string(),
                }
            }
        };
        let wakers = match std::mem::replace(&mut *crate::sync::lock(&self.state), next) {
            State::Pending { wakers, .. } => wakers,
            _ => Vec::new(),
        };
        self.done.notify_all();
        for w in wakers {
            w.wake();
        }
    }

    /// Walks the batches of `[start, end)` (at `at` in `bytes`), checking both CRCs of each.
    fn check(&self, bytes: Bytes, at: usize) -> Filled {
        let span = (self.end - self.start) as usize;
        let mut pos = 0usize;
        let mut cut = None;
        while pos < span {
            let rest = &bytes[at + pos..at + span];
            let h = match BatchHeader::decode(rest) {
                Ok(h) => h,
                Err(source) => {
                    cut = Some(Cut::Corrupt {
                        position: self.start + pos as u64,
                        source,
                    });
                    break;
                }
            };
            let len = h.length as usize;
            if len > rest.len() {
                cut = Some(if pos == 0 {
                    Cut::Longer {
                        needed_end: self.start + len as u64,
                    }
                } else {
                    Cut::Misplanned
                });
                break;
            }
            if let Err(source) = batch::verify_body(&rest[..len]) {
                cut = Some(Cut::Corrupt {
                    position: self.start + pos as u64,
                    source,
                });
                break;
            }
            pos += len;
        }
        // Loaded after the bytes were read: a truncation raises the count before it changes a
        // byte, so an unchanged count means these bytes were the segment's.
        if self.seg.truncations() != self.truncations {
            cut = Some(Cut::Stale);
            pos = 0;
        }
        Filled {
            bytes: bytes.slice(at..at + pos),
            good_end: self.start + pos as u64,
            cut,
        }
    }
}

/// What [`serve`] found.
#[derive(Debug)]
pub(crate) struct Served {
    /// Whole batches (possibly none).
    pub(crate) bytes: Bytes,
    /// The offset after the last batch served.
    pub(crate) next_offset: Option<u64>,
    /// The position after the batches skipped and served.
    pub(crate) end: u64,
    /// The answer ended at a batch at or past `limit_offset`.
    pub(crate) at_limit: bool,
}

/// Whole batches of `filled` (which starts at `start`) from position `pos`: first skips those
/// that end at or below `from_offset` (a reader that started at an index entry below its offset),
/// then serves at most `max_bytes` (but at least one batch), none at or past `limit_offset`.
pub(crate) fn serve(
    filled: &Filled,
    start: u64,
    pos: u64,
    from_offset: u64,
    max_bytes: usize,
    limit_offset: u64,
) -> Served {
    let end = (filled.good_end - start) as usize;
    let mut from = (pos - start) as usize;
    let mut at = from;
    let mut next_offset = None;
    let mut at_limit = false;
    while at < end {
        // Every batch here passed its checks on the I/O thread; a header that does not decode
        // now would be a bug, and ends the answer rather than serving past it.
        let Ok(h) = BatchHeader::decode(&filled.bytes[at..end]) else {
            break;
        };
        let len = h.length as usize;
        if next_offset.is_none() && h.next_offset() <= from_offset {
            at += len;
            from = at;
            continue;
        }
        if h.base_offset >= limit_offset {
            at_limit = true;
            break;
        }
        if at > from && at - from + len > max_bytes {
            break;
        }
        next_offset = Some(h.next_offset());
        at += len;
    }
    Served {
        bytes: filled.bytes.slice(from..at),
        next_offset,
        end: start + at as u64,
        at_limit,
    }
}

/// The error for a corrupt batch found by a cold read.
pub(crate) fn corrupt(seg: &Segment, position: u64, source: BatchError) -> StorageError {
    StorageError::Corrupt {
        path: seg.log_path().to_path_buf(),
        position,
        source,
    }
}
