//! One log's cold readers: a [`StreamSet`] of sequential streams, each the position of a reader
//! (the segment and byte position of its next batch and the offset it will ask for next) and the
//! chunks planned ahead of it. A read that asks for the offset a stream expects continues that
//! stream; any other read of cold data starts a new one (the least recently used is dropped past
//! [`MAX_STREAMS`]). Chunks are planned across segment ends, up to the reader's read-ahead bound,
//! the broker's budget and the page-cache window (bytes inside it are read through the map, unless
//! they are not cached: after a restart, or dropped on purpose). Never writes, never touches the
//! page cache.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::buffer::{round_up, ALIGN};
use super::chunk::{self, Chunk, Cut, Status};
use super::{ColdReads, ColdWait};
use crate::error::Result;
use crate::segment::Segment;

/// Streams one log keeps (readers reading different parts of it at once). Generous: a reader whose
/// stream is dropped while it waits for its chunk starts over, so too few streams for the readers
/// would have them take each other's turn forever. Memory is bounded by the budget, not by this.
const MAX_STREAMS: usize = 64;

/// A cold read's answer.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Whole batches and the offset after the last.
    Served { bytes: Bytes, next_offset: u64 },
    /// The bytes are being read; wait and ask again.
    Wait(ColdWait),
}

#[derive(Debug)]
struct Stream {
    seg: Arc<Segment>,
    pos: u64,
    next_offset: u64,
    /// Planned chunks, contiguous from `pos` on.
    chunks: VecDeque<Arc<Chunk>>,
    plan_seg: Arc<Segment>,
    plan_pos: u64,
    last_used: Instant,
}

impl Stream {
    fn at(seg: Arc<Segment>, pos: u64, next_offset: u64) -> Stream {
        Stream {
            plan_seg: seg.clone(),
            plan_pos: pos,
            seg,
            pos,
            next_offset,
            chunks: VecDeque::new(),
            last_used: Instant::now(),
        }
    }

    fn replan(&mut self) {
        self.chunks.clear();
        self.plan_seg = self.seg.clone();
        self.plan_pos = self.pos;
    }

    fn queued(&self) -> usize {
        self.chunks.iter().map(|c| c.size).sum()
    }
}

/// The cold readers of one log.
#[derive(Debug)]
pub(crate) struct StreamSet {
    cold: Arc<ColdReads>,
    window: u64,
    streams: Mutex<Vec<Stream>>,
}

fn index_of(segments: &[Arc<Segment>], seg: &Arc<Segment>) -> Option<usize> {
    segments.iter().position(|s| Arc::ptr_eq(s, seg))
}

/// Bytes of `segments[i]` below this position are outside the page-cache window (the newest
/// `window` bytes of the log, counted from its end across segments, as the flush drops them).
fn cold_upto(segments: &[Arc<Segment>], i: usize, window: u64) -> u64 {
    let behind: u64 = segments[i + 1..].iter().map(|s| s.len()).sum();
    segments[i]
        .len()
        .saturating_sub(window.saturating_sub(behind))
}

impl StreamSet {
    pub(crate) fn new(cold: Arc<ColdReads>, window: u64) -> Arc<StreamSet> {
        let set = Arc::new(StreamSet {
            cold: cold.clone(),
            window,
            streams: Mutex::new(Vec::new()),
        });
        cold.register(&set);
        set
    }

    /// Drops the streams (and their read-ahead) not read since `idle` before `now`; skips a set
    /// that is busy (its reader is active, and another thread's set lock must never be waited on).
    pub(crate) fn drop_idle(&self, now: Instant, idle: Duration) {
        if let Ok(mut set) = self.streams.try_lock() {
            set.retain(|s| now.duration_since(s.last_used) < idle);
        }
    }

    /// Reads whole batches from `offset` (held by `segments[first]` or a later segment), like
    /// `Segment::read`, if the batch holding it is cold; `None` if it is not (or no batch holds it,
    /// or it is at `limit_offset`): the caller reads through the map.
    pub(crate) fn read(
        &self,
        segments: &[Arc<Segment>],
        first: usize,
        offset: u64,
        max_bytes: usize,
        limit_offset: u64,
    ) -> Result<Option<Outcome>> {
        let mut set = crate::sync::lock(&self.streams);
        let now = Instant::now();
        set.retain(|s| now.duration_since(s.last_used) < super::IDLE);
        let found = set.iter().position(|s| {
            s.next_offset == offset && segments[first..].iter().any(|x| Arc::ptr_eq(x, &s.seg))
        });
        let i = match found {
            Some(i) => i,
            None => {
                // From the index alone: reading headers through the map here would pull cold
                // pages (and the kernel's read-around of them) into the page cache.
                let seg = &segments[first];
                let pos = seg.scan_start(offset, seg.len());
                if pos >= cold_upto(segments, first, self.window) && seg.is_cached(pos, seg.len()) {
                    return Ok(None);
                }
                let si = first;
                if set.len() >= MAX_STREAMS {
                    if let Some(lru) = (0..set.len()).min_by_key(|&j| set[j].last_used) {
                        set.swap_remove(lru);
                    }
                }
                set.push(Stream::at(segments[si].clone(), pos, offset));
                set.len() - 1
            }
        };
        let outcome = self.serve(&mut set[i], segments, max_bytes, limit_offset);
        if !matches!(outcome, Ok(Some(_))) {
            // An error, a hot position or a stale chunk: the stream has nothing more to give.
            set.swap_remove(i);
        }
        outcome
    }

    fn serve(
        &self,
        s: &mut Stream,
        segments: &[Arc<Segment>],
        max_bytes: usize,
        limit_offset: u64,
    ) -> Result<Option<Outcome>> {
        s.last_used = Instant::now();
        loop {
            move_past_end(s, segments);
            let covers = s
                .chunks
                .front()
                .is_some_and(|c| Arc::ptr_eq(&c.seg, &s.seg) && c.start <= s.pos && s.pos < c.end);
            if !covers {
                s.replan();
            }
            self.top_up(s, segments);
            let Some(c) = s.chunks.front().cloned() else {
                // Not cold any more (or the segment is gone): the map serves it.
                return Ok(None);
            };
            let f = match c.status() {
                Status::Pending => return Ok(Some(Outcome::Wait(ColdWait { chunk: c }))),
                Status::Failed(e) => return Err(e),
                Status::Ready(f) => f,
            };
            if s.pos < f.good_end {
                let served =
                    chunk::serve(&f, c.start, s.pos, s.next_offset, max_bytes, limit_offset);
                s.pos = served.end;
                if served.end >= f.good_end {
                    s.chunks.pop_front();
                    if f.cut.is_some() {
                        s.replan();
                    }
                }
                if let Some(next_offset) = served.next_offset {
                    s.next_offset = next_offset;
                    move_past_end(s, segments);
                    self.top_up(s, segments);
                    return Ok(Some(Outcome::Served {
                        bytes: served.bytes,
                        next_offset,
                    }));
                }
                if served.at_limit {
                    return Ok(None);
                }
                // Only batches below the asked offset in this chunk: go on with the next.
                continue;
            }
            return match f.cut.clone() {
                Some(Cut::Corrupt { position, source }) => {
                    Err(chunk::corrupt(&c.seg, position, source))
                }
                Some(Cut::Longer { needed_end }) => {
                    s.replan();
                    let t = s.plan_seg.truncations();
                    if !self.add_chunk(s, t, needed_end) {
                        return Ok(None);
                    }
                    Ok(s.chunks
                        .front()
                        .map(|c| Outcome::Wait(ColdWait { chunk: c.clone() })))
                }
                Some(Cut::Misplanned) | None => {
                    s.replan();
                    self.top_up(s, segments);
                    Ok(s.chunks
                        .front()
                        .map(|c| Outcome::Wait(ColdWait { chunk: c.clone() })))
                }
                Some(Cut::Stale) => Ok(None),
            };
        }
    }

    /// Plans chunks ahead of the stream up to its read-ahead bound, the budget and the window.
    fn top_up(&self, s: &mut Stream, segments: &[Arc<Segment>]) {
        let (chunk_bytes, reader_bytes) = self.cold.read_ahead();
        loop {
            if !s.chunks.is_empty() && s.queued() + chunk_bytes > reader_bytes {
                return;
            }
            let Some(i) = index_of(segments, &s.plan_seg) else {
                return;
            };
            // The count before the length: see `Chunk::check`.
            let t = s.plan_seg.truncations();
            let len = s.plan_seg.len();
            if s.plan_pos >= len {
                match segments.get(i + 1) {
                    Some(next) if i + 1 < segments.len() => {
                        s.plan_seg = next.clone();
                        s.plan_pos = 0;
                        continue;
                    }
                    _ => return,
                }
            }
            if s.plan_pos >= cold_upto(segments, i, self.window)
                && s.plan_seg.is_cached(s.plan_pos, len)
            {
                return;
            }
            let target = (s.plan_pos & !(ALIGN as u64 - 1)) + chunk_bytes as u64;
            let end = s.plan_seg.chunk_end(s.plan_pos, target, len);
            if !self.add_chunk(s, t, end) {
                return;
            }
        }
    }

    /// Plans `[plan_pos, end)` of the plan segment and hands it to the I/O threads, if the budget
    /// allows (the stream's first chunk is granted outside it if need be).
    fn add_chunk(&self, s: &mut Stream, truncations: u64, end: u64) -> bool {
        let from = s.plan_pos & !(ALIGN as u64 - 1);
        let size = round_up((end - from) as usize);
        let budget = &self.cold.budget;
        let buf = budget.take(size).or_else(|| {
            self.cold.reclaim_idle(self);
            budget.take(size)
        });
        let buf = match buf {
            Some(b) => b,
            None if s.chunks.is_empty() => match budget.take_exempt(size) {
                Some(b) => b,
                None => return false,
            },
            None => return false,
        };
        let c = Arc::new(Chunk::new(
            s.plan_seg.clone(),
            s.plan_pos,
            end,
            truncations,
            buf,
        ));
        s.chunks.push_back(c.clone());
        s.plan_pos = end;
        self.cold.note_reader_bytes(s.queued());
        self.cold.submit(c);
        true
    }
}

/// A stream at the end of a segment that has a successor continues at the successor's start.
fn move_past_end(s: &mut Stream, segments: &[Arc<Segment>]) {
    if s.pos < s.seg.len() {
        return;
    }
    if let Some(next) = index_of(segments, &s.seg).and_then(|i| segments.get(i + 1)) {
        s.seg = next.clone();
        s.pos = 0;
    }
}
