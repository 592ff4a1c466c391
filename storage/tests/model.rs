//! Model-based property test of `PartitionLog`, in the spirit of redb's fuzz target: random sequences
//! of appends, reads, truncations (accepted and refused), clean and unclean reopens, retention, time
//! lookups and flushes run both against a real log in a temporary directory and against a plain
//! in-memory model (segments of batches of `(offset, value, timestamp)` records). After every operation
//! the log must agree with the model: log start and end, segment bases and sizes, every stored record
//! read back batch by batch, and a flushed offset the flush policy allows. Each operation also checks
//! its own answer: where an append landed, what a read from any offset with any byte limit returns,
//! which offset a timestamp maps to, which segments retention deletes.
//!
//! Segments are small (4096 bytes, the minimum) and indexed densely (every 256 bytes) so they roll
//! and their indexes fill; each case picks one of the three flush policies. 32 cases of 10 to 60
//! operations by default; `PROPTEST_CASES` raises the count.
//!
//! `zeroed_tail_of_a_truncated_then_rolled_segment` is the minimal case of a bug this test found (a
//! sealed segment kept the zeroed bytes of a truncated suffix, and the next open read them as part of
//! the segment), kept as a regression test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fmt::Display;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use sluice_protocol::{BatchBuilder, Compression, RecordBatch};
use sluice_storage::{FlushPolicy, LogConfig, PartitionLog, StorageError};

const SEGMENT_BYTES: u64 = 4096;
const RETENTION_MS: i64 = 2_000;
const START_CLOCK_MS: i64 = 10_000;

fn config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT_BYTES,
        index_interval_bytes: 256,
        retention_ms: Some(RETENTION_MS),
        ..common::small_config(flush)
    }
}

// ---------------------------------------------------------------------------------------------------
// The model.

#[derive(Debug, Clone)]
struct MRecord {
    value: String,
    ts: i64,
}

#[derive(Debug, Clone)]
struct MBatch {
    base: u64,
    records: Vec<MRecord>,
    /// Encoded length in bytes (what the batch takes in its segment).
    len: u64,
}

impl MBatch {
    fn last(&self) -> u64 {
        self.base + self.records.len() as u64 - 1
    }

    fn next(&self) -> u64 {
        self.base + self.records.len() as u64
    }
}

#[derive(Debug, Clone)]
struct MSegment {
    base: u64,
    batches: Vec<MBatch>,
    /// Highest length this process's handle on the segment ever had (`high_len` in the engine).
    high_water: u64,
}

impl MSegment {
    fn new(base: u64) -> Self {
        MSegment {
            base,
            batches: Vec::new(),
            high_water: 0,
        }
    }

    fn len(&self) -> u64 {
        self.batches.iter().map(|b| b.len).sum()
    }

    fn next(&self) -> u64 {
        self.batches.last().map_or(self.base, MBatch::next)
    }

    fn max_ts(&self) -> i64 {
        self.batches
            .iter()
            .flat_map(|b| &b.records)
            .map(|r| r.ts)
            .max()
            .unwrap_or(i64::MIN)
    }
}

#[derive(Debug)]
struct Model {
    /// Never empty; the last one is the active segment.
    segments: Vec<MSegment>,
    /// The flushed offset is at least this (exactly this under `never`, which nothing flushes behind
    /// the test's back).
    flushed_floor: u64,
}

impl Model {
    fn new() -> Self {
        Model {
            segments: vec![MSegment::new(0)],
            flushed_floor: 0,
        }
    }

    fn start(&self) -> u64 {
        self.segments[0].base
    }

    fn end(&self) -> u64 {
        self.segments.last().map_or(0, MSegment::next)
    }

    fn bases(&self) -> Vec<u64> {
        self.segments.iter().map(|s| s.base).collect()
    }

    fn size(&self) -> u64 {
        self.segments.iter().map(MSegment::len).sum()
    }

    fn batches(&self) -> impl Iterator<Item = &MBatch> {
        self.segments.iter().flat_map(|s| &s.batches)
    }

    fn records(&self) -> impl Iterator<Item = (u64, &MRecord)> {
        self.batches().flat_map(|b| {
            b.records
                .iter()
                .enumerate()
                .map(|(i, r)| (b.base + i as u64, r))
        })
    }

    /// Appends a batch the way the log rolls segments (by size only: no `segment_ms`, and the offset
    /// index never fills at this segment size). Returns (base offset, segment base, position).
    fn append(&mut self, records: Vec<MRecord>, len: u64) -> (u64, u64, u64) {
        let base = self.end();
        let active = self.segments.last().expect("never empty");
        if active.len() > 0 && active.len() + len > SEGMENT_BYTES {
            self.segments.push(MSegment::new(base));
        }
        let active = self.segments.last_mut().expect("never empty");
        let position = active.len();
        active.batches.push(MBatch { base, records, len });
        active.high_water = active.high_water.max(active.len());
        (base, active.base, position)
    }

    /// `truncate_after` on a boundary (or `None`); returns the new end.
    fn truncate_after(&mut self, last_kept: Option<u64>) -> u64 {
        let new_end = last_kept.map_or(self.start(), |k| k + 1);
        if new_end >= self.end() {
            return self.end();
        }
        let idx = match last_kept {
            None => 0,
            Some(k) => self
                .segments
                .iter()
                .rposition(|s| s.base <= k)
                .expect("a segment holds the boundary"),
        };
        let reactivated = idx + 1 < self.segments.len();
        self.segments.truncate(idx + 1);
        let seg = &mut self.segments[idx];
        seg.batches.retain(|b| b.last() < new_end);
        assert_eq!(seg.next(), new_end, "model: not a boundary");
        if reactivated {
            // A sealed segment made active again is reopened: a new handle, at its new length.
            seg.high_water = seg.len();
        }
        self.flushed_floor = self.flushed_floor.min(new_end);
        new_end
    }
}

// ---------------------------------------------------------------------------------------------------
// Operations.

#[derive(Debug, Clone)]
enum ReadAt {
    /// Somewhere in `[log_start, log_end]`.
    InRange(Index),
    /// Below the log start (past the end while the start is 0).
    BelowStart(Index),
    /// `log_end + 1 + n`.
    PastEnd(u8),
}

#[derive(Debug, Clone)]
enum TsAt {
    /// A stored record's timestamp, plus -1, 0 or 1.
    Record(Index, i8),
    /// The model clock plus this.
    Clock(i64),
    Abs(i64),
}

/// What `truncate_after` keeps.
#[derive(Debug, Clone)]
enum Keep {
    /// `None`: nothing.
    Nothing,
    /// Up to the end of one of the last 4 batches (a raft suffix is usually short).
    Recent(Index),
    /// Up to the end of any batch.
    Any(Index),
}

#[derive(Debug, Clone)]
enum Op {
    /// One batch: per record (padding bytes, timestamp jitter); the clock moves by `clock_step` first.
    Append {
        records: Vec<(u16, i16)>,
        clock_step: i64,
        codec: Compression,
    },
    Read {
        at: ReadAt,
        max_bytes: usize,
    },
    /// Accepted: the log and the model drop the same suffix.
    TruncateAfter(Keep),
    /// An offset inside a batch, or below the log start: refused, nothing changes.
    TruncateRefused(Index),
    ReopenClean,
    ReopenUnclean,
    /// `now` = the model clock plus this.
    ApplyRetention(i64),
    OffsetForTimestamp(TsAt),
    Flush,
}

fn codec() -> impl Strategy<Value = Compression> {
    prop_oneof![
        6 => Just(Compression::None),
        1 => Just(Compression::Lz4),
        1 => Just(Compression::Zstd),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let append = (
        proptest::collection::vec(
            (prop_oneof![2 => 0u16..100, 3 => 100u16..900], -100i16..100),
            1..=5,
        ),
        -500i64..1500,
        codec(),
    )
        .prop_map(|(records, clock_step, codec)| Op::Append {
            records,
            clock_step,
            codec,
        });
    let read_at = prop_oneof![
        8 => any::<Index>().prop_map(ReadAt::InRange),
        1 => any::<Index>().prop_map(ReadAt::BelowStart),
        1 => (0u8..3).prop_map(ReadAt::PastEnd),
    ];
    let max_bytes = prop_oneof![1usize..200, 200usize..5000, Just(usize::MAX)];
    let read = (read_at, max_bytes).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes });
    let ts_at = prop_oneof![
        6 => (any::<Index>(), -1i8..=1).prop_map(|(i, d)| TsAt::Record(i, d)),
        3 => (-20_000i64..3_000).prop_map(TsAt::Clock),
        1 => prop_oneof![Just(i64::MIN), Just(i64::MAX)].prop_map(TsAt::Abs),
    ];
    prop_oneof![
        16 => append,
        6 => read,
        2 => prop_oneof![
            1 => Just(Keep::Nothing),
            4 => any::<Index>().prop_map(Keep::Recent),
            2 => any::<Index>().prop_map(Keep::Any),
        ].prop_map(Op::TruncateAfter),
        1 => any::<Index>().prop_map(Op::TruncateRefused),
        1 => Just(Op::ReopenClean),
        1 => Just(Op::ReopenUnclean),
        2 => (-3_000i64..3_000).prop_map(Op::ApplyRetention),
        3 => ts_at.prop_map(Op::OffsetForTimestamp),
        1 => Just(Op::Flush),
    ]
}

fn policy() -> impl Strategy<Value = FlushPolicy> {
    prop_oneof![
        Just(FlushPolicy::Never),
        // Small enough that the background flusher runs during the case.
        Just(FlushPolicy::Interval {
            max_bytes: 2048,
            max_delay: Duration::from_millis(2),
        }),
        Just(FlushPolicy::Always),
        Just(FlushPolicy::External),
    ]
}

// ---------------------------------------------------------------------------------------------------
// Checks.

fn fail(msg: impl Display) -> TestCaseError {
    TestCaseError::fail(msg.to_string())
}

fn ok<T>(r: sluice_storage::Result<T>, what: &str) -> Result<T, TestCaseError> {
    r.map_err(|e| fail(format!("{what}: unexpected error: {e}")))
}

fn encode(records: &[MRecord], codec: Compression) -> Bytes {
    let mut b = BatchBuilder::new(codec);
    for r in records {
        b.append(r.ts, None, Some(r.value.as_bytes()), &[]);
    }
    b.seal().unwrap()
}

/// `bytes` decodes into exactly `expected`: offsets, lengths, and every record.
fn check_batches(bytes: Bytes, expected: &[&MBatch], what: &str) -> Result<(), TestCaseError> {
    let got: Vec<RecordBatch> = RecordBatch::iter_all(bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| fail(format!("{what}: returned bytes do not decode: {e}")))?;
    let bases = |v: &[&MBatch]| v.iter().map(|b| b.base).collect::<Vec<_>>();
    let got_bases: Vec<u64> = got.iter().map(|b| b.header().base_offset).collect();
    prop_assert_eq!(&got_bases, &bases(expected), "{}: batch base offsets", what);
    for (g, e) in got.iter().zip(expected) {
        prop_assert_eq!(g.header().last_offset(), e.last(), "{}: last offset", what);
        prop_assert_eq!(g.as_bytes().len() as u64, e.len, "{}: batch length", what);
        let recs = g
            .records()
            .and_then(|r| r.collect::<Result<Vec<_>, _>>())
            .map_err(|err| {
                fail(format!(
                    "{what}: records of batch {} do not decode: {err}",
                    e.base
                ))
            })?;
        prop_assert_eq!(
            recs.len(),
            e.records.len(),
            "{}: records in batch {}",
            what,
            e.base
        );
        for (i, (r, m)) in recs.iter().zip(&e.records).enumerate() {
            prop_assert_eq!(r.offset, e.base + i as u64, "{}: record offset", what);
            prop_assert_eq!(r.timestamp_ms, m.ts, "{}: timestamp of {}", what, r.offset);
            prop_assert!(r.key.is_none(), "{}: key of {}", what, r.offset);
            prop_assert_eq!(
                r.value.as_deref(),
                Some(m.value.as_bytes()),
                "{}: value of {}",
                what,
                r.offset
            );
        }
    }
    Ok(())
}

/// After every operation: positions, segment layout, flushed offset, and every record, read back one
/// whole segment at a time (a read never crosses into the next segment).
fn check_all(log: &PartitionLog, model: &Model, policy: FlushPolicy) -> Result<(), TestCaseError> {
    let (start, end) = (model.start(), model.end());
    prop_assert_eq!(log.log_start_offset(), start, "log start");
    prop_assert_eq!(log.log_end_offset(), end, "log end");
    prop_assert_eq!(log.segment_bases(), model.bases(), "segment bases");
    prop_assert_eq!(log.size_bytes(), model.size(), "bytes in segments");
    let flushed = log.flushed_offset();
    match policy {
        FlushPolicy::Always => prop_assert_eq!(flushed, end, "flushed under `always`"),
        // Only flush, close, open and truncation move it (a roll syncs under `external` but does
        // not raise it).
        FlushPolicy::Never | FlushPolicy::External => {
            prop_assert_eq!(
                flushed,
                model.flushed_floor,
                "flushed under `never`/`external`"
            )
        }
        FlushPolicy::Interval { .. } => prop_assert!(
            model.flushed_floor <= flushed && flushed <= end,
            "flushed {} outside [{}, {}]",
            flushed,
            model.flushed_floor,
            end
        ),
    }
    for seg in &model.segments {
        let Some(first) = seg.batches.first() else {
            continue;
        };
        let what = format!("whole segment {}", seg.base);
        let r = ok(log.read(first.base, usize::MAX), &what)?;
        let expected: Vec<&MBatch> = seg.batches.iter().collect();
        check_batches(r.bytes, &expected, &what)?;
        prop_assert_eq!(r.next_offset, seg.next(), "{}: next offset", what);
    }
    Ok(())
}

fn check_read(
    log: &PartitionLog,
    model: &Model,
    offset: u64,
    max_bytes: usize,
) -> Result<(), TestCaseError> {
    let (start, end) = (model.start(), model.end());
    let what = format!("read({offset}, {max_bytes})");
    let r = log.read(offset, max_bytes);
    if offset < start || offset > end {
        return match r {
            Err(StorageError::OffsetOutOfRange {
                offset: o,
                log_start,
                log_end,
            }) => {
                prop_assert_eq!((o, log_start, log_end), (offset, start, end), "{}", what);
                Ok(())
            }
            other => Err(fail(format!(
                "{what} outside [{start}, {end}]: expected OffsetOutOfRange, got {other:?}"
            ))),
        };
    }
    let r = ok(r, &what)?;
    prop_assert_eq!(
        (r.log_start_offset, r.log_end_offset),
        (start, end),
        "{}: positions in the result",
        what
    );
    if offset == end {
        prop_assert!(r.bytes.is_empty(), "{}: bytes at the log end", what);
        prop_assert_eq!(r.next_offset, end, "{}: next offset at the end", what);
        return Ok(());
    }
    // The batch holding the offset, then whole batches of the same segment while they fit.
    let seg = model
        .segments
        .iter()
        .find(|s| s.base <= offset && offset < s.next())
        .expect("an in-range offset is in a segment");
    let i = seg
        .batches
        .iter()
        .position(|b| b.base <= offset && offset <= b.last())
        .expect("offsets are dense");
    let mut expected = vec![&seg.batches[i]];
    let mut total = seg.batches[i].len;
    for b in &seg.batches[i + 1..] {
        if total + b.len > max_bytes as u64 {
            break;
        }
        total += b.len;
        expected.push(b);
    }
    let next = expected.last().map_or(offset, |b| b.next());
    check_batches(r.bytes, &expected, &what)?;
    prop_assert_eq!(r.next_offset, next, "{}: next offset", what);
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// The run.

struct Harness {
    dir: tempfile::TempDir,
    policy: FlushPolicy,
    /// `None` only inside a reopen.
    log: Option<PartitionLog>,
    model: Model,
    /// Timestamps of appended records are this plus a jitter; it mostly moves forward.
    clock: i64,
    /// Appends so far, to make every value unique.
    seq: u64,
}

fn run(policy: FlushPolicy, ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let (log, report) = ok(PartitionLog::open(dir.path(), config(policy)), "open")?;
    prop_assert!(report.clean_shutdown, "a new log opens clean");
    let mut h = Harness {
        dir,
        policy,
        log: Some(log),
        model: Model::new(),
        clock: START_CLOCK_MS,
        seq: 0,
    };
    for (step, op) in ops.iter().enumerate() {
        let context = |e: TestCaseError| fail(format!("step {step}, {op:?}: {e}"));
        h.apply(op).map_err(context)?;
        check_all(h.log(), &h.model, policy).map_err(context)?;
    }
    Ok(())
}

impl Harness {
    fn log(&self) -> &PartitionLog {
        self.log.as_ref().expect("open")
    }

    /// Drops the handle (after `close()` if `clean`) and opens the directory again.
    fn reopen(&mut self, clean: bool) -> Result<(), TestCaseError> {
        let log = self.log.take().expect("open");
        if clean {
            ok(log.close(), "close")?;
            prop_assert_eq!(
                log.flushed_offset(),
                self.model.end(),
                "flushed after close"
            );
            let closed = log.append(&encode(
                &[MRecord {
                    value: "after close".into(),
                    ts: self.clock,
                }],
                Compression::None,
            ));
            prop_assert!(
                matches!(closed, Err(StorageError::Closed)),
                "append after close: {:?}",
                closed
            );
            // Reads keep working on a closed log.
            self.model.flushed_floor = self.model.end();
            check_all(&log, &self.model, self.policy)?;
        }
        drop(log);
        let (log, report) = ok(
            PartitionLog::open(self.dir.path(), config(self.policy)),
            "reopen",
        )?;
        self.log = Some(log);
        // Open makes everything it keeps durable, with a new handle on every segment.
        self.model.flushed_floor = self.model.end();
        for seg in &mut self.model.segments {
            seg.high_water = seg.len();
        }
        if clean {
            prop_assert!(report.clean_shutdown, "clean reopen: {:?}", report);
            prop_assert_eq!(report.segments_scanned, 0, "clean reopen scans nothing");
        } else {
            prop_assert!(!report.clean_shutdown, "unclean reopen: {:?}", report);
            // The process stopped, the machine did not: recovery may only cut zeros off the end of
            // the active segment (left by a truncation), never delete a segment.
            let active = self.model.segments.last().map_or(0, |s| s.base);
            prop_assert!(
                report.segments_deleted.is_empty()
                    && report
                        .truncated
                        .as_ref()
                        .is_none_or(|t| t.segment_base == active),
                "unclean reopen: {:?}",
                report
            );
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let policy = self.policy;
        match op {
            Op::Append {
                records,
                clock_step,
                codec,
            } => {
                self.clock += clock_step;
                self.seq += 1;
                let (clock, seq) = (self.clock, self.seq);
                let records: Vec<MRecord> = records
                    .iter()
                    .enumerate()
                    .map(|(i, &(pad, jitter))| MRecord {
                        value: format!("v{seq}.{i}:{}", "x".repeat(usize::from(pad))),
                        ts: clock + i64::from(jitter),
                    })
                    .collect();
                let n = records.len() as u64;
                let bytes = encode(&records, *codec);
                let (base, segment_base, position) = self.model.append(records, bytes.len() as u64);
                let info = ok(self.log().append(&bytes), "append")?;
                prop_assert_eq!(
                    (info.base_offset, info.last_offset),
                    (base, base + n - 1),
                    "offsets of the append"
                );
                prop_assert_eq!(
                    (info.segment_base, info.position),
                    (segment_base, position),
                    "where the append landed"
                );
                prop_assert_eq!(
                    info.flushed,
                    policy == FlushPolicy::Always,
                    "append flushed"
                );
            }
            Op::Read { at, max_bytes } => {
                let (start, end) = (self.model.start(), self.model.end());
                let offset = match at {
                    ReadAt::InRange(i) => start + i.index((end - start + 1) as usize) as u64,
                    ReadAt::BelowStart(i) if start > 0 => i.index(start as usize) as u64,
                    ReadAt::BelowStart(_) => end + 1,
                    ReadAt::PastEnd(n) => end + 1 + u64::from(*n),
                };
                check_read(self.log(), &self.model, offset, *max_bytes)?;
            }
            Op::TruncateAfter(pick) => {
                let lasts: Vec<u64> = self.model.batches().map(MBatch::last).collect();
                let last_kept = match pick {
                    _ if lasts.is_empty() => None,
                    Keep::Nothing => None,
                    Keep::Recent(i) => Some(*i.get(&lasts[lasts.len().saturating_sub(4)..])),
                    Keep::Any(i) => Some(*i.get(&lasts)),
                };
                let expected = self.model.truncate_after(last_kept);
                let got = ok(self.log().truncate_after(last_kept), "truncate_after")?;
                prop_assert_eq!(
                    got,
                    expected,
                    "new end after truncate_after({:?})",
                    last_kept
                );
            }
            Op::TruncateRefused(pick) => {
                let start = self.model.start();
                // Offsets that do not end a batch, and (when there is room) one below `log_start - 1`.
                let mut candidates: Vec<(u64, bool)> = self
                    .model
                    .batches()
                    .flat_map(|b| (b.base..b.last()).map(|o| (o, true)))
                    .collect();
                if start >= 2 {
                    candidates.push((start - 2, false));
                }
                if candidates.is_empty() {
                    return Ok(());
                }
                let (k, inside) = *pick.get(&candidates);
                let r = self.log().truncate_after(Some(k));
                let refused_right = match (&r, inside) {
                    (Err(StorageError::NotBatchBoundary(o)), true) => *o == k,
                    (Err(StorageError::OffsetOutOfRange { offset, .. }), false) => *offset == k + 1,
                    _ => false,
                };
                prop_assert!(refused_right, "truncate_after(Some({})): got {:?}", k, r);
            }
            Op::ReopenClean => self.reopen(true)?,
            Op::ReopenUnclean => self.reopen(false)?,
            Op::ApplyRetention(delta) => {
                let now = self.clock + delta;
                let cutoff = now - RETENTION_MS;
                let model = &mut self.model;
                let sealed = model.segments.len() - 1;
                let n = model.segments[..sealed]
                    .iter()
                    .take_while(|s| s.max_ts() < cutoff)
                    .count();
                let deleted: Vec<u64> = model.segments[..n].iter().map(|s| s.base).collect();
                let bytes: u64 = model.segments[..n].iter().map(MSegment::len).sum();
                let old_start = model.start();
                model.segments.drain(..n);
                let log = self.log.as_ref().expect("open");
                let report = ok(log.apply_retention(now), "apply_retention")?;
                let model = &self.model;
                prop_assert_eq!(
                    &report.deleted_segments,
                    &deleted,
                    "segments deleted at {}",
                    now
                );
                prop_assert_eq!(report.bytes_deleted, bytes, "bytes deleted");
                prop_assert_eq!(report.log_start_offset, model.start(), "reported log start");
                prop_assert_eq!(log.log_start_offset(), model.start(), "log start");
                // Nothing below the new start is readable; everything from it on is (check_all).
                for offset in [old_start, model.start().saturating_sub(1)] {
                    if offset < model.start() {
                        check_read(log, model, offset, usize::MAX)?;
                    }
                }
            }
            Op::OffsetForTimestamp(at) => {
                let ts = match at {
                    TsAt::Record(i, d) => {
                        let stamps: Vec<i64> = self.model.records().map(|(_, r)| r.ts).collect();
                        if stamps.is_empty() {
                            self.clock
                        } else {
                            i.get(&stamps) + i64::from(*d)
                        }
                    }
                    TsAt::Clock(d) => self.clock + d,
                    TsAt::Abs(t) => *t,
                };
                let expected = self
                    .model
                    .records()
                    .find(|(_, r)| r.ts >= ts)
                    .map(|(o, _)| o);
                let got = ok(self.log().offset_for_timestamp(ts), "offset_for_timestamp")?;
                prop_assert_eq!(got, expected, "offset_for_timestamp({})", ts);
            }
            Op::Flush => {
                let got = ok(self.log().flush(), "flush")?;
                prop_assert_eq!(got, self.model.end(), "flush() return");
                prop_assert_eq!(self.log().flushed_offset(), self.model.end(), "flushed");
                self.model.flushed_floor = self.model.end();
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(32)
    ))]

    #[test]
    fn partition_log_agrees_with_the_model(
        policy in policy(),
        ops in proptest::collection::vec(op(), 10..60),
    ) {
        run(policy, &ops)?;
    }
}

/// Every record from the log start on, as (offset, value without its padding), or the first error.
fn values(log: &PartitionLog) -> Result<Vec<(u64, String)>, String> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let r = log.read(offset, usize::MAX).map_err(|e| e.to_string())?;
        for b in RecordBatch::iter_all(r.bytes) {
            let b = b.map_err(|e| e.to_string())?;
            for rec in b.records().map_err(|e| e.to_string())? {
                let rec = rec.map_err(|e| e.to_string())?;
                let v = String::from_utf8_lossy(rec.value.as_deref().unwrap_or_default());
                out.push((rec.offset, v.trim_end_matches('x').to_string()));
            }
        }
        offset = r.next_offset;
    }
    Ok(out)
}

/// Regression, found by the model test. Before the fix:
/// `truncate_after` inside the active segment zeroes the dropped suffix and retreats the segment's
/// `len`, but not its `high_len`. If the segment then rolls before appends have refilled the zeroed
/// bytes, `seal()` sets the file length to `max(len, high_len)`, so the sealed segment's file ends in
/// zeros. The next open takes the whole file as the segment:
/// - after a clean reopen (and after an unclean one under `interval`/`always`, where the segment is
///   trusted), every read that reaches the segment's last batch fails with `Corrupt` ("version byte is
///   0"), so offset 1 below can never be consumed again; `size_bytes()` counts the zeros;
/// - after an unclean reopen under `never` (the segment is scanned), recovery cuts the segment at the
///   zeros and deletes every later segment: offset 2, acknowledged and in the page cache, is lost, and
///   the log end moves back.
#[test]
fn zeroed_tail_of_a_truncated_then_rolled_segment() {
    let rec = |tag: &str, pad: usize| {
        let value = format!("{tag}{}", "x".repeat(pad));
        encode(&[MRecord { value, ts: 1 }], Compression::None)
    };
    let mut outcomes = Vec::new();
    for clean in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(FlushPolicy::Never);
        let (log, _) = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
        log.append(&rec("a", 1800)).unwrap(); // offset 0, 1890 bytes
        log.append(&rec("b", 1800)).unwrap(); // offset 1, 1890 bytes: segment 0 holds 3780
        assert_eq!(log.truncate_after(Some(0)).unwrap(), 1); // segment 0: 1890, file still 3780
        log.append(&rec("c", 1700)).unwrap(); // offset 1, 1790 bytes: 3680, below 3780
        let d = log.append(&rec("d", 500)).unwrap(); // 590 bytes: rolls, seals segment 0
        assert_eq!((d.base_offset, d.segment_base), (2, 2));
        if clean {
            log.close().unwrap();
        }
        drop(log);
        let (log, _) = PartitionLog::open(dir.path(), cfg).unwrap();
        outcomes.push((if clean { "clean" } else { "unclean" }, values(&log)));
    }
    let all = || {
        Ok(vec![
            (0, "a".to_string()),
            (1, "c".to_string()),
            (2, "d".to_string()),
        ])
    };
    // Before the fix: clean: Err("corrupt batch … at byte 3680: no batch here: version byte is 0");
    // unclean: Ok([(0, "a"), (1, "c")]), offset 2 lost. The open now ends a sealed segment at a zeroed
    // suffix (and trims it) instead of reading it as damage.
    assert_eq!(
        outcomes,
        vec![("clean", all()), ("unclean", all())],
        "every acknowledged record reads back after a reopen"
    );
}
