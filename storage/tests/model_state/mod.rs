//! The model test's in-memory model and its checks: segments of batches of records (offset, key,
//! value or tombstone, timestamp) that roll, truncate and reopen as `PartitionLog` does, and the
//! comparisons of the real log against it after every operation (positions, segment layout, flushed
//! offset, every stored batch read back) and of a read's answer from any offset with any byte limit.

use std::fmt::Display;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use sluice_protocol::{BatchBuilder, Compression, RecordBatch};
use sluice_storage::{FlushPolicy, PartitionLog, StorageError};

use super::SEGMENT_BYTES;

// ---------------------------------------------------------------------------------------------------
// The model.

#[derive(Debug, Clone)]
pub(crate) struct MRecord {
    pub(crate) offset: u64,
    pub(crate) key: Option<String>,
    /// `None`: a tombstone.
    pub(crate) value: Option<String>,
    pub(crate) ts: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct MBatch {
    pub(crate) base: u64,
    /// The header's last offset (compaction may drop the records at the end of a batch).
    pub(crate) last: u64,
    pub(crate) records: Vec<MRecord>,
    /// Encoded length in bytes (what the batch takes in its segment).
    pub(crate) len: u64,
    pub(crate) codec: Compression,
}

impl MBatch {
    pub(crate) fn last(&self) -> u64 {
        self.last
    }

    pub(crate) fn next(&self) -> u64 {
        self.last + 1
    }
}

#[derive(Debug, Clone)]
pub(crate) struct MSegment {
    pub(crate) base: u64,
    pub(crate) batches: Vec<MBatch>,
    /// Highest length this process's handle on the segment ever had (`high_len` in the engine).
    pub(crate) high_water: u64,
}

impl MSegment {
    pub(crate) fn new(base: u64) -> Self {
        MSegment {
            base,
            batches: Vec::new(),
            high_water: 0,
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.batches.iter().map(|b| b.len).sum()
    }

    pub(crate) fn next(&self) -> u64 {
        self.batches.last().map_or(self.base, MBatch::next)
    }

    pub(crate) fn max_ts(&self) -> i64 {
        self.batches
            .iter()
            .flat_map(|b| &b.records)
            .map(|r| r.ts)
            .max()
            .unwrap_or(i64::MIN)
    }
}

#[derive(Debug)]
pub(crate) struct Model {
    /// Never empty; the last one is the active segment.
    pub(crate) segments: Vec<MSegment>,
    /// The flushed offset is at least this (exactly this under `never`, which nothing flushes behind
    /// the test's back).
    pub(crate) flushed_floor: u64,
    /// The checkpoint's recovery base: an unclean open scans every segment from here on (and always
    /// the last one), and trusts the ones below.
    pub(crate) recovery_base: u64,
    /// The flush policy fsyncs a segment when it rolls and moves the recovery base past it (all but
    /// `never`).
    pub(crate) roll_syncs: bool,
}

impl Model {
    pub(crate) fn new(policy: FlushPolicy) -> Self {
        Model {
            segments: vec![MSegment::new(0)],
            flushed_floor: 0,
            recovery_base: 0,
            roll_syncs: policy != FlushPolicy::Never,
        }
    }

    pub(crate) fn active_base(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.base)
    }

    pub(crate) fn start(&self) -> u64 {
        self.segments[0].base
    }

    pub(crate) fn end(&self) -> u64 {
        self.segments.last().map_or(0, MSegment::next)
    }

    pub(crate) fn bases(&self) -> Vec<u64> {
        self.segments.iter().map(|s| s.base).collect()
    }

    pub(crate) fn size(&self) -> u64 {
        self.segments.iter().map(MSegment::len).sum()
    }

    pub(crate) fn batches(&self) -> impl Iterator<Item = &MBatch> {
        self.segments.iter().flat_map(|s| &s.batches)
    }

    pub(crate) fn records(&self) -> impl Iterator<Item = (u64, &MRecord)> {
        self.batches()
            .flat_map(|b| b.records.iter().map(|r| (r.offset, r)))
    }

    /// Appends a batch the way the log rolls segments (by size only: no `segment_ms`, and the offset
    /// index never fills at this segment size). Returns (base offset, segment base, position).
    /// The records' offsets are assigned here.
    pub(crate) fn append(
        &mut self,
        mut records: Vec<MRecord>,
        len: u64,
        codec: Compression,
    ) -> (u64, u64, u64) {
        let base = self.end();
        let active = self.segments.last().expect("never empty");
        if active.len() > 0 && active.len() + len > SEGMENT_BYTES {
            self.segments.push(MSegment::new(base));
            if self.roll_syncs {
                self.recovery_base = base;
            }
        }
        for (i, r) in records.iter_mut().enumerate() {
            r.offset = base + i as u64;
        }
        let last = base + records.len() as u64 - 1;
        let active = self.segments.last_mut().expect("never empty");
        let position = active.len();
        active.batches.push(MBatch {
            base,
            last,
            records,
            len,
            codec,
        });
        active.high_water = active.high_water.max(active.len());
        (base, active.base, position)
    }

    /// `truncate_after` on a boundary (or `None`); returns the new end.
    pub(crate) fn truncate_after(&mut self, last_kept: Option<u64>) -> u64 {
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
        self.recovery_base = self.recovery_base.min(self.active_base());
        new_end
    }

    /// What an open does to the model's positions: everything kept is durable, with a new handle on
    /// every segment; the recovery base moves to the active segment (clean) or not past it.
    pub(crate) fn reopened(&mut self, clean: bool) {
        self.flushed_floor = self.end();
        for seg in &mut self.segments {
            seg.high_water = seg.len();
        }
        self.recovery_base = if clean {
            self.active_base()
        } else {
            self.recovery_base.min(self.active_base())
        };
    }
}

// ---------------------------------------------------------------------------------------------------
// Checks.

pub(crate) fn fail(msg: impl Display) -> TestCaseError {
    TestCaseError::fail(msg.to_string())
}

pub(crate) fn ok<T>(r: sluice_storage::Result<T>, what: &str) -> Result<T, TestCaseError> {
    r.map_err(|e| fail(format!("{what}: unexpected error: {e}")))
}

pub(crate) fn encode(records: &[MRecord], codec: Compression) -> Bytes {
    let mut b = BatchBuilder::new(codec);
    for r in records {
        b.append(
            r.ts,
            r.key.as_deref().map(str::as_bytes),
            r.value.as_deref().map(str::as_bytes),
            &[],
        );
    }
    b.seal().unwrap()
}

/// `bytes` decodes into exactly `expected`: offsets, lengths, and every record.
pub(crate) fn check_batches(
    bytes: Bytes,
    expected: &[&MBatch],
    what: &str,
) -> Result<(), TestCaseError> {
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
        for (r, m) in recs.iter().zip(&e.records) {
            prop_assert_eq!(r.offset, m.offset, "{}: record offset", what);
            prop_assert_eq!(r.timestamp_ms, m.ts, "{}: timestamp of {}", what, r.offset);
            prop_assert_eq!(
                r.key.as_deref(),
                m.key.as_deref().map(str::as_bytes),
                "{}: key of {}",
                what,
                r.offset
            );
            prop_assert_eq!(
                r.value.as_deref(),
                m.value.as_deref().map(str::as_bytes),
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
pub(crate) fn check_all(
    log: &PartitionLog,
    model: &Model,
    policy: FlushPolicy,
) -> Result<(), TestCaseError> {
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

pub(crate) fn check_read(
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
    // The batch holding the offset (or, in a gap compaction left, the first one after it), then whole
    // batches of the same segment while they fit; nothing up to the log end if there is none.
    let Some((seg, i)) = model.segments.iter().find_map(|s| {
        s.batches
            .iter()
            .position(|b| b.last() >= offset)
            .map(|i| (s, i))
    }) else {
        prop_assert!(r.bytes.is_empty(), "{}: bytes past the last batch", what);
        prop_assert_eq!(
            r.next_offset,
            end,
            "{}: next offset past the last batch",
            what
        );
        return Ok(());
    };
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
