//! Fetch (key 5), with long polling: answers once `min_bytes` of committed records are available
//! or the wait (bounded by `max_fetch_wait`) is over. A one-partition fetch waits on that
//! partition's high watermark; a wider one on any partition's. Reads go through each replica,
//! below its high watermark, bounded by the response budget. A read of data behind the page-cache
//! window never blocks the connection's worker on the disk: the replica starts reading it ahead
//! and the fetch awaits it (unless other partitions already filled the answer). A reader far behind
//! a partition's end gets small slices, paced, while producers are active (`broker::catch_up`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_protocol::wire::{
    ErrorCode, FetchPartitionResult, FetchRequest, FetchResponse, FetchTopicResult, Response,
};

use sluice_storage::{ColdWait, ReadOrWait};

use super::Answer;
use crate::broker::catch_up::{CATCH_UP_DISTANCE, CATCH_UP_SLICE};
use crate::broker::Broker;
use crate::replica::Replica;

pub async fn handle(broker: Arc<Broker>, req: FetchRequest) -> Answer {
    let wait = Duration::from_millis(u64::from(req.max_wait_ms)).min(broker.config.max_fetch_wait);
    let deadline = Instant::now() + wait;
    let mut any = broker.replicas.subscribe_appends();
    let single = req.topics.iter().map(|t| t.partitions.len()).sum::<usize>() == 1;
    loop {
        any.borrow_and_update();
        let once = fetch_once(&broker, &req);
        // Nothing read yet but cold bytes on their way: wait for them, whatever `min_bytes` says,
        // rather than answer empty and be asked again at once.
        let cold_only = once.bytes == 0 && once.cold.is_some();
        // A partition cut short (its slice or the response budget) has more now: waiting for
        // `min_bytes` would only read the same bytes again.
        if ((once.bytes >= req.min_bytes as usize || once.capped) && !cold_only)
            || once.errors
            || Instant::now() >= deadline
        {
            count_sent(&broker, &once.response);
            // The slice read for a reader catching up takes its time on the schedule; the next
            // catching-up read waits for it (below), so nothing is held back with its bytes.
            broker.catch_up.book(once.catch_up_bytes);
            return Ok(Response::Fetch(once.response));
        }
        if let Some(cold) = once.cold {
            let _ = tokio::time::timeout_at(deadline.into(), cold).await;
            continue;
        }
        if let Some(hold) = once.catch_up_deferred {
            // Only catching-up partitions had data and the schedule is full: wait for room.
            broker.metrics.catch_up_paced(hold);
            let _ = tokio::time::timeout_at(deadline.into(), tokio::time::sleep(hold)).await;
            continue;
        }
        match once.first {
            // One partition: wait for that partition's high watermark to move.
            // Logged before the wait starts; the wait still sees anything committed since the
            // read above (tests wait for this line to know a long poll is parked).
            Some((p, offset)) if single => {
                tracing::debug!("fetch parked: waiting for data past offset {offset}");
                p.wait_beyond(offset, deadline).await
            }
            _ => {
                tracing::debug!("fetch parked: waiting for an append to any partition");
                let _ = tokio::time::timeout_at(deadline.into(), any.changed()).await;
            }
        }
    }
}

/// Counts what the answer carries as sent by each partition (reads a long poll dropped are not
/// sent, so they are counted only here).
fn count_sent(broker: &Broker, response: &FetchResponse) {
    for t in &response.topics {
        for p in t.partitions.iter().filter(|p| !p.records.is_empty()) {
            if let Ok(part) = broker.replicas.replica(&t.name, p.partition) {
                part.metrics().fetched(&p.records);
            }
        }
    }
}

struct FetchOnce {
    response: FetchResponse,
    bytes: usize,
    errors: bool,
    /// The first partition asked for and its offset (what a one-partition fetch waits on).
    first: Option<(Arc<Replica>, u64)>,
    /// The first partition whose bytes are being read from disk (read-ahead started).
    cold: Option<ColdWait>,
    /// Bytes read for partitions this fetch is catching up on, while catch-up reads are paced.
    catch_up_bytes: usize,
    /// A catching-up partition was not read because the catch-up schedule is full for this long.
    catch_up_deferred: Option<Duration>,
    /// A partition's read stopped below its high watermark (its slice or the response budget).
    capped: bool,
}

fn fetch_once(broker: &Broker, req: &FetchRequest) -> FetchOnce {
    let mut budget = (req.max_bytes as usize).min(broker.config.max_fetch_response_bytes);
    let mut total = 0usize;
    let mut errors = false;
    let mut first = None;
    let mut cold = None;
    let pacing = broker.catch_up.pacing();
    // At most one catch-up slice per answer, and only when the schedule has room now.
    let mut catch_up_wait = if pacing {
        broker.catch_up.wait_for_room()
    } else {
        None
    };
    let mut catch_up_bytes = 0usize;
    let mut catch_up_deferred = None;
    let mut capped = false;
    let topics = req
        .topics
        .iter()
        .map(|t| FetchTopicResult {
            name: t.name.clone(),
            partitions: t
                .partitions
                .iter()
                .map(|fp| {
                    let mut r = FetchPartitionResult {
                        partition: fp.partition,
                        error: ErrorCode::NONE,
                        high_watermark: 0,
                        log_start_offset: 0,
                        records: bytes::Bytes::new(),
                    };
                    let part = match broker.replicas.replica(&t.name, fp.partition) {
                        Ok(p) => p,
                        Err(e) => {
                            r.error = e.code;
                            errors = true;
                            return r;
                        }
                    };
                    r.high_watermark = part.high_watermark();
                    r.log_start_offset = part.log_start_offset();
                    if first.is_none() {
                        first = Some((part.clone(), fp.offset));
                    }
                    if budget == 0 {
                        return r;
                    }
                    let mut max = (fp.max_bytes as usize).min(budget).max(1);
                    let catching_up = pacing && part.bytes_from(fp.offset) > CATCH_UP_DISTANCE;
                    if catching_up {
                        if let Some(wait) = catch_up_wait {
                            catch_up_deferred.get_or_insert(wait);
                            return r;
                        }
                        max = max.min(CATCH_UP_SLICE);
                    }
                    match part.read_or_wait(fp.offset, max) {
                        Ok(ReadOrWait::Ready(read)) => {
                            budget = budget.saturating_sub(read.bytes.len());
                            total += read.bytes.len();
                            capped |= read.next_offset < read.log_end_offset;
                            if let Some((p, at)) = first.as_mut() {
                                if Arc::ptr_eq(p, &part) {
                                    // A one-partition wait is for data past what was read.
                                    *at = read.next_offset;
                                }
                            }
                            if catching_up && !read.bytes.is_empty() {
                                catch_up_bytes += read.bytes.len();
                                // The slice of this answer is taken.
                                catch_up_wait = Some(Duration::ZERO);
                            }
                            r.records = read.bytes;
                        }
                        Ok(ReadOrWait::Wait(w)) => {
                            cold.get_or_insert(w);
                        }
                        Err(e) => {
                            r.error = e.code;
                            errors = true;
                        }
                    }
                    r
                })
                .collect(),
        })
        .collect();
    FetchOnce {
        response: FetchResponse { topics },
        bytes: total,
        errors,
        first,
        cold,
        catch_up_bytes,
        catch_up_deferred: catch_up_deferred.filter(|_| total == 0),
        capped,
    }
}
