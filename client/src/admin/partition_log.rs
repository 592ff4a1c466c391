//! What group administration needs from partition logs: a partition's bounds (log start and high
//! watermark, from its leader), the timestamp of the first record at or after an offset (one small
//! fetch from the leader, more only to step over control batches), and the arithmetic over them:
//! lag in records and in time, and the resolution of a [`ResetSpec`] into an offset.
//!
//! The arithmetic is pure (unit-tested below); the lookups never write and never touch a group.

use std::time::{SystemTime, UNIX_EPOCH};

use sluice_protocol::batch::first_timestamp;
use sluice_protocol::wire::{
    ErrorCode, FetchPartition, FetchPartitionResult, FetchRequest, FetchTopic, Request, Response,
    EARLIEST, LATEST,
};

use crate::client::{unexpected, Client};
use crate::error::{ClientError, Result};

/// Where a group's committed offsets may be moved, for [`crate::Admin::reset_offsets`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetSpec {
    /// The first retained offset (log start).
    Earliest,
    /// The high watermark: the group skips everything written so far.
    Latest,
    /// This offset; it must lie within [log start, high watermark].
    Offset(u64),
    /// The first record with a timestamp at or after this one (ms since the Unix epoch); the high
    /// watermark when every record is older.
    Timestamp(i64),
    /// The committed offset moved by this many records (negative: back), clamped to
    /// [log start, high watermark]. Needs a committed offset.
    ShiftBy(i64),
}

/// A partition's retained range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub log_start: u64,
    pub high_watermark: u64,
}

/// Largest record bytes one timestamp lookup fetches (the broker still returns a whole first batch).
const TIMESTAMP_FETCH_BYTES: u32 = 64 << 10;
/// Fetches one timestamp lookup makes at most (each steps over batches without data records).
const TIMESTAMP_FETCH_ROUNDS: usize = 8;

/// The bounds of `topic`/`partition`, asked of its leader.
pub(crate) async fn bounds(client: &Client, topic: &str, partition: u32) -> Result<Bounds> {
    let log_start = offset(client, topic, partition, EARLIEST).await?;
    let high_watermark = offset(client, topic, partition, LATEST).await?;
    Ok(Bounds {
        log_start,
        high_watermark: high_watermark.max(log_start),
    })
}

/// The first offset with a timestamp at or after `ts`, `None` when every record is older.
pub(crate) async fn offset_for_timestamp(
    client: &Client,
    topic: &str,
    partition: u32,
    ts: i64,
) -> Result<Option<u64>> {
    let o = client.list_offset(topic, partition, ts).await?;
    Ok(u64::try_from(o).ok())
}

async fn offset(client: &Client, topic: &str, partition: u32, spec: i64) -> Result<u64> {
    let o = client.list_offset(topic, partition, spec).await?;
    u64::try_from(o).map_err(|_| unexpected("negative offset in a list offsets answer"))
}

/// The timestamp of the first data record at or after `from` and below `end` in
/// `topic`/`partition`, read from its leader; `None` when there is none (only control batches, or
/// `from >= end`). A `from` below the log start reads from the log start.
pub(crate) async fn timestamp_at(
    client: &Client,
    topic: &str,
    partition: u32,
    from: u64,
    end: u64,
) -> Result<Option<i64>> {
    let mut position = from;
    for _ in 0..TIMESTAMP_FETCH_ROUNDS {
        if position >= end {
            return Ok(None);
        }
        let p = client
            .retrying("fetch a timestamp", || async {
                let r = fetch_once(client, topic, partition, position).await;
                if let Err(e) = &r {
                    if e.invalidates_metadata() {
                        client.invalidate_topic(topic);
                    }
                }
                r
            })
            .await?;
        match p.error {
            ErrorCode::NONE => {}
            // Retention removed `position` meanwhile: the oldest record left is the one wanted.
            ErrorCode::OFFSET_OUT_OF_RANGE if position < p.log_start_offset => {
                position = p.log_start_offset;
                continue;
            }
            code => {
                return Err(ClientError::broker(
                    code,
                    format!("fetch of {topic}/{partition} at {position}"),
                ))
            }
        }
        if p.records.is_empty() {
            return Ok(None);
        }
        let (found, next) =
            first_timestamp(position, p.records).map_err(|source| ClientError::Corrupt {
                topic: topic.to_string(),
                partition,
                offset: position,
                source,
            })?;
        if found.is_some() || next <= position {
            return Ok(found);
        }
        position = next;
    }
    Ok(None)
}

/// One fetch of `topic`/`partition` at `position` from its leader, without waiting. Retriable
/// partition errors come back as errors (so the caller's retry refreshes the leader); the rest
/// come back in the result.
async fn fetch_once(
    client: &Client,
    topic: &str,
    partition: u32,
    position: u64,
) -> Result<FetchPartitionResult> {
    let addr = client.leader_for(topic, partition).await?;
    let request = Request::Fetch(FetchRequest {
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes: TIMESTAMP_FETCH_BYTES,
        topics: vec![FetchTopic {
            name: topic.to_string(),
            partitions: vec![FetchPartition {
                partition,
                offset: position,
                max_bytes: TIMESTAMP_FETCH_BYTES,
            }],
        }],
    });
    let Response::Fetch(r) = client.request_to(&addr, &request).await? else {
        return Err(unexpected("answer to fetch"));
    };
    let p = r
        .topics
        .into_iter()
        .filter(|t| t.name == topic)
        .flat_map(|t| t.partitions)
        .find(|p| p.partition == partition)
        .ok_or_else(|| unexpected("fetch answer lacks the partition"))?;
    if p.error.is_retriable() {
        return Err(ClientError::broker(
            p.error,
            format!("fetch of {topic}/{partition}"),
        ));
    }
    Ok(p)
}

/// Records a group has yet to consume: from its committed offset (the log start when it has none)
/// to the high watermark; 0 when it is at or past it.
pub(crate) fn lag(committed: Option<u64>, b: Bounds) -> u64 {
    b.high_watermark
        .saturating_sub(committed.unwrap_or(b.log_start))
}

/// Where the oldest unconsumed record is looked for: the committed offset (or the log start
/// without one), but never below the log start (older records are gone).
pub(crate) fn first_unconsumed(committed: Option<u64>, b: Bounds) -> u64 {
    committed.unwrap_or(b.log_start).max(b.log_start)
}

/// The age at `now_ms` of a record stamped `ts`; 0 for a record stamped in the future.
pub(crate) fn age_ms(now_ms: i64, ts: i64) -> u64 {
    u64::try_from(now_ms.saturating_sub(ts)).unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The offset `spec` means for a partition with bounds `b`: `committed` is the group's committed
/// offset there (needed by [`ResetSpec::ShiftBy`]), `at_timestamp` what the leader answered for a
/// [`ResetSpec::Timestamp`]. `what` names the partition in errors.
pub(crate) fn resolve(
    spec: ResetSpec,
    b: Bounds,
    committed: Option<u64>,
    at_timestamp: Option<u64>,
    what: &str,
) -> Result<u64> {
    let clamp = |o: u64| o.clamp(b.log_start, b.high_watermark);
    match spec {
        ResetSpec::Earliest => Ok(b.log_start),
        ResetSpec::Latest => Ok(b.high_watermark),
        ResetSpec::Offset(o) if o < b.log_start || o > b.high_watermark => {
            Err(ClientError::InvalidArgument(format!(
                "offset {o} is out of range for {what} (log start offset {}, high watermark {})",
                b.log_start, b.high_watermark
            )))
        }
        ResetSpec::Offset(o) => Ok(o),
        ResetSpec::Timestamp(_) => Ok(clamp(at_timestamp.unwrap_or(b.high_watermark))),
        ResetSpec::ShiftBy(n) => {
            let Some(c) = committed else {
                return Err(ClientError::InvalidArgument(format!(
                    "{what} has no committed offset to shift; reset it to the earliest, the \
                     latest or an explicit offset instead"
                )));
            };
            let shifted = if n < 0 {
                c.saturating_sub(n.unsigned_abs())
            } else {
                c.saturating_add(n.unsigned_abs())
            };
            Ok(clamp(shifted))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const B: Bounds = Bounds {
        log_start: 10,
        high_watermark: 50,
    };

    #[test]
    fn lag_counts_from_the_commit_or_the_log_start() {
        assert_eq!(lag(Some(47), B), 3);
        assert_eq!(lag(Some(50), B), 0);
        // Committed past the end (the log was truncated or reset): nothing to read, not negative.
        assert_eq!(lag(Some(60), B), 0);
        // Committed below the log start: the records in between count (they were never read).
        assert_eq!(lag(Some(4), B), 46);
        assert_eq!(lag(None, B), 40);
        assert_eq!(first_unconsumed(Some(4), B), 10);
        assert_eq!(first_unconsumed(Some(20), B), 20);
        assert_eq!(first_unconsumed(None, B), 10);
    }

    #[test]
    fn age_is_never_negative() {
        assert_eq!(age_ms(10_000, 4_000), 6_000);
        assert_eq!(age_ms(10_000, 10_000), 0);
        assert_eq!(age_ms(10_000, 20_000), 0);
        assert_eq!(age_ms(i64::MAX, i64::MIN), u64::try_from(i64::MAX).unwrap());
    }

    #[test]
    fn specs_resolve_within_the_bounds() {
        let r = |spec, committed, ts| resolve(spec, B, committed, ts, "t/0");
        assert_eq!(r(ResetSpec::Earliest, Some(30), None).unwrap(), 10);
        assert_eq!(r(ResetSpec::Latest, Some(30), None).unwrap(), 50);
        assert_eq!(r(ResetSpec::Offset(10), None, None).unwrap(), 10);
        assert_eq!(r(ResetSpec::Offset(50), None, None).unwrap(), 50);
        for bad in [9, 51, u64::MAX] {
            let e = r(ResetSpec::Offset(bad), None, None).unwrap_err();
            assert!(
                matches!(&e, ClientError::InvalidArgument(m)
                    if m.contains(&format!("offset {bad} is out of range for t/0"))
                        && m.contains("log start offset 10")
                        && m.contains("high watermark 50")),
                "{e}"
            );
        }
        assert_eq!(r(ResetSpec::Timestamp(5), None, Some(33)).unwrap(), 33);
        // Every record is older: the end.
        assert_eq!(r(ResetSpec::Timestamp(5), None, None).unwrap(), 50);
        assert_eq!(r(ResetSpec::ShiftBy(-1), Some(30), None).unwrap(), 29);
        assert_eq!(r(ResetSpec::ShiftBy(5), Some(30), None).unwrap(), 35);
        assert_eq!(r(ResetSpec::ShiftBy(-100), Some(30), None).unwrap(), 10);
        assert_eq!(r(ResetSpec::ShiftBy(i64::MIN), Some(30), None).unwrap(), 10);
        assert_eq!(r(ResetSpec::ShiftBy(100), Some(30), None).unwrap(), 50);
        assert_eq!(r(ResetSpec::ShiftBy(i64::MAX), Some(30), None).unwrap(), 50);
        // A commit beyond the end is pulled back into range by any shift.
        assert_eq!(r(ResetSpec::ShiftBy(0), Some(70), None).unwrap(), 50);
        let e = r(ResetSpec::ShiftBy(-1), None, None).unwrap_err();
        assert!(
            matches!(&e, ClientError::InvalidArgument(m) if m.contains("no committed offset")),
            "{e}"
        );
    }
}
