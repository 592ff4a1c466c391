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
use crate::broker::catch_up::{CATCH_UP_DISTANCE, CATCH_UP_SLICE, GENTLE_READ_BYTES};
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
        if (once.bytes >= req.min_bytes as usize && !cold_only)
            || once.errors
            || Instant::now() >= deadline
        {
            count_sent(&broker, &once.response);
            if once.catch_up_bytes > 0 {
                let hold = broker.catch_up.pace(once.catch_up_bytes);
                if !hold.is_zero() {
                    broker.metrics.catch_up_paced(hold);
                    tokio::time::sleep(hold).await;
                }
            }
            return Ok(Response::Fetch(once.response));
        }
        if let Some(cold) = once.cold {
            let _ = tokio::time::timeout_at(deadline.into(), cold).await;
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
}

fn fetch_once(broker: &Broker, req: &FetchRequest) -> FetchOnce {
    let mut budget = (req.max_bytes as usize).min(broker.config.max_fetch_response_bytes);
    let mut total = 0usize;
    let mut errors = false;
    let mut first = None;
    let mut cold = None;
    let pacing = broker.catch_up.pacing();
    broker
        .replicas
        .gentle_cold_reads(pacing.then_some(GENTLE_READ_BYTES));
    let mut catch_up_bytes = 0usize;
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
                        max = max.min(CATCH_UP_SLICE);
                    }
                    match part.read_or_wait(fp.offset, max) {
                        Ok(ReadOrWait::Ready(read)) => {
                            budget = budget.saturating_sub(read.bytes.len());
                            total += read.bytes.len();
                            if catching_up {
                                catch_up_bytes += read.bytes.len();
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
    }
}
