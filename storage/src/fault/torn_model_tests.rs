//! The storage model test's torn-write operation, on the unit-test side because it needs the fault
//! seam (which `storage/tests/model.rs` only has with the `fault-injection` feature, and
//! `cargo test --workspace --all-targets` must run it). A smaller model than that test's: random
//! appends, flushes, clean and unclean reopens and truncations of a recent suffix, against segments
//! of batches of values; and the torn append: the batch's write to its segment file lands only its
//! first `keep` bytes (then reports success, or EIO), the process dies (the log is dropped without
//! `close`) and the log is opened again. The model drops that batch and nothing else: the open must
//! report the cut at exactly the batch's position in its segment, keep every batch before it (and
//! the segment a roll made for it), serve exactly those, and go on appending at the cut.
//!
//! 24 cases of 10 to 40 operations by default (`PROPTEST_CASES` raises it); about one torn append in
//! eight goes into a segment its own roll created. Broken once by not cutting the file at the torn
//! batch in recovery (`recover` keeping the whole file): the open reported 0 dropped bytes and the
//! case failed at its first torn append.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use sluice_protocol::{BatchBuilder, Compression, RecordBatch};

use super::tests::small_config;
use crate::fault::{Errno, Plan, Torn};
use crate::{FlushPolicy, PartitionLog};

const SEGMENT_BYTES: u64 = 4096;

#[derive(Debug, Clone)]
struct MBatch {
    base: u64,
    values: Vec<String>,
    len: u64,
}

#[derive(Debug, Clone)]
struct MSegment {
    base: u64,
    batches: Vec<MBatch>,
}

impl MSegment {
    fn len(&self) -> u64 {
        self.batches.iter().map(|b| b.len).sum()
    }

    fn next(&self) -> u64 {
        self.batches
            .last()
            .map_or(self.base, |b| b.base + b.values.len() as u64)
    }
}

#[derive(Debug)]
struct Model {
    segments: Vec<MSegment>,
}

impl Model {
    fn end(&self) -> u64 {
        self.segments.last().map_or(0, MSegment::next)
    }

    /// Appends as the log rolls (by size only); returns (base offset, segment base, position).
    fn append(&mut self, values: Vec<String>, len: u64) -> (u64, u64, u64) {
        let base = self.end();
        let active = self.segments.last().expect("never empty");
        if active.len() > 0 && active.len() + len > SEGMENT_BYTES {
            self.segments.push(MSegment {
                base,
                batches: Vec::new(),
            });
        }
        let active = self.segments.last_mut().expect("never empty");
        let position = active.len();
        active.batches.push(MBatch { base, values, len });
        (base, active.base, position)
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Records of `pad` padding bytes each.
    Append(Vec<u16>),
    Flush,
    Reopen {
        clean: bool,
    },
    /// Keep up to the end of one of the last 3 batches.
    Truncate(Index),
    /// An append whose write lands `keep` bytes (a prefix short of the batch's last non-zero byte), then
    /// a crash and a reopen.
    Torn {
        records: Vec<u16>,
        keep: Index,
        error: bool,
    },
}

fn records() -> impl Strategy<Value = Vec<u16>> {
    proptest::collection::vec(prop_oneof![0u16..50, 200u16..700], 1..=4)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => records().prop_map(Op::Append),
        1 => Just(Op::Flush),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        1 => any::<Index>().prop_map(Op::Truncate),
        3 => (records(), any::<Index>(), any::<bool>())
            .prop_map(|(records, keep, error)| Op::Torn { records, keep, error }),
    ]
}

fn policy() -> impl Strategy<Value = FlushPolicy> {
    prop_oneof![
        Just(FlushPolicy::Never),
        Just(FlushPolicy::Always),
        Just(FlushPolicy::External),
    ]
}

fn encode(values: &[String]) -> bytes::Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    for v in values {
        b.append(7, None, Some(v.as_bytes()), &[]);
    }
    b.seal().unwrap()
}

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

/// The log agrees with the model: end, segment bases, and every value read back at its offset.
fn check(log: &PartitionLog, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.log_end_offset(), model.end(), "log end");
    let bases: Vec<u64> = model.segments.iter().map(|s| s.base).collect();
    prop_assert_eq!(log.segment_bases(), bases, "segment bases");
    let want: Vec<(u64, String)> = model
        .segments
        .iter()
        .flat_map(|s| &s.batches)
        .flat_map(|b| (b.base..).zip(b.values.iter().cloned()))
        .collect();
    let mut got = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let r = log
            .read(offset, usize::MAX)
            .map_err(|e| fail(format!("read({offset}): {e}")))?;
        prop_assert!(!r.bytes.is_empty(), "read({}) served nothing", offset);
        for b in RecordBatch::iter_all(r.bytes) {
            let b = b.map_err(|e| fail(format!("served bytes do not decode: {e}")))?;
            for rec in b.records().map_err(|e| fail(e.to_string()))? {
                let rec = rec.map_err(|e| fail(e.to_string()))?;
                let v = rec.value.map(|v| String::from_utf8_lossy(&v).into_owned());
                got.push((rec.offset, v.unwrap_or_default()));
            }
        }
        offset = r.next_offset;
    }
    prop_assert_eq!(got, want, "records served");
    Ok(())
}

struct Harness {
    dir: tempfile::TempDir,
    policy: FlushPolicy,
    log: Option<PartitionLog>,
    model: Model,
    seq: u64,
}

impl Harness {
    fn log(&self) -> &PartitionLog {
        self.log.as_ref().expect("open")
    }

    fn values(&mut self, records: &[u16]) -> Vec<String> {
        self.seq += 1;
        let seq = self.seq;
        (0..records.len())
            .map(|i| format!("v{seq}.{i}:{}", "x".repeat(usize::from(records[i]))))
            .collect()
    }

    fn open(&mut self) -> Result<crate::RecoveryReport, TestCaseError> {
        let (log, report) = PartitionLog::open(self.dir.path(), small_config(self.policy))
            .map_err(|e| fail(format!("open: {e}")))?;
        self.log = Some(log);
        Ok(report)
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Append(records) => {
                let values = self.values(records);
                let bytes = encode(&values);
                let want = self.model.append(values, bytes.len() as u64);
                let info = self
                    .log()
                    .append(&bytes)
                    .map_err(|e| fail(format!("append: {e}")))?;
                prop_assert_eq!(
                    (info.base_offset, info.segment_base, info.position),
                    want,
                    "where the append landed"
                );
            }
            Op::Flush => {
                self.log()
                    .flush()
                    .map_err(|e| fail(format!("flush: {e}")))?;
            }
            Op::Reopen { clean } => {
                let log = self.log.take().expect("open");
                if *clean {
                    log.close().map_err(|e| fail(format!("close: {e}")))?;
                }
                drop(log);
                let report = self.open()?;
                prop_assert!(
                    report.segments_deleted.is_empty(),
                    "reopen deleted segments: {:?}",
                    report
                );
            }
            Op::Truncate(pick) => {
                let lasts: Vec<u64> = self
                    .model
                    .segments
                    .iter()
                    .flat_map(|s| &s.batches)
                    .map(|b| b.base + b.values.len() as u64 - 1)
                    .collect();
                if lasts.is_empty() {
                    return Ok(());
                }
                let k = *pick.get(&lasts[lasts.len().saturating_sub(3)..]);
                let idx = self
                    .model
                    .segments
                    .iter()
                    .rposition(|s| s.base <= k)
                    .expect("a segment holds it");
                self.model.segments.truncate(idx + 1);
                self.model.segments[idx]
                    .batches
                    .retain(|b| b.base + (b.values.len() as u64) <= k + 1);
                let got = self
                    .log()
                    .truncate_after(Some(k))
                    .map_err(|e| fail(format!("truncate_after({k}): {e}")))?;
                prop_assert_eq!(got, k + 1, "new end");
            }
            Op::Torn {
                records,
                keep,
                error,
            } => {
                let values = self.values(records);
                let bytes = encode(&values);
                // The tear always leaves a non-zero byte unwritten: a tear that drops only trailing
                // zeros over a zeroed suffix (a truncation's) rebuilds the whole batch, which is
                // then rightly kept (found by CI: the batch's last byte, a headers count of 0).
                let last_nz = bytes
                    .iter()
                    .rposition(|&b| b != 0)
                    .expect("a batch has non-zero bytes");
                let keep = 1 + keep.index(last_nz);
                let (base, seg_base, position) = self.model.append(values, bytes.len() as u64);
                // The batch is the first write to its segment file from here (a roll's checkpoint
                // and index writes go to other files).
                let file = self.dir.path().join(format!("{seg_base:020}.log"));
                let then = if *error {
                    Torn::ThenError(Errno::Eio)
                } else {
                    Torn::ThenSuccess
                };
                let armed = Plan::new(&file).tear_write(1, keep, then).arm();
                let r = self.log().append(&bytes);
                prop_assert_eq!(armed.fired(), 1, "the torn write fired");
                drop(armed);
                prop_assert_eq!(r.is_ok(), !*error, "append result: {:?}", r);
                if let Ok(info) = r {
                    prop_assert_eq!(
                        (info.base_offset, info.segment_base, info.position),
                        (base, seg_base, position),
                        "where the torn append landed"
                    );
                }
                // The process dies; the model drops the torn batch (its segment stays).
                drop(self.log.take());
                self.model
                    .segments
                    .last_mut()
                    .expect("never empty")
                    .batches
                    .pop();
                let report = self.open()?;
                prop_assert!(!report.clean_shutdown, "{:?}", report);
                let cut = report
                    .truncated
                    .as_ref()
                    .ok_or_else(|| fail(format!("no cut reported: {report:?}")))?;
                prop_assert_eq!(
                    (cut.segment_base, cut.position),
                    (seg_base, position),
                    "where the open cut"
                );
                prop_assert!(cut.dropped_bytes >= keep as u64, "{:?}", report);
                prop_assert!(report.segments_deleted.is_empty(), "{:?}", report);
                check(self.log(), &self.model)?;
                // The log goes on at the cut.
                let values = self.values(&[1]);
                let bytes = encode(&values);
                let want = self.model.append(values, bytes.len() as u64);
                let info = self
                    .log()
                    .append(&bytes)
                    .map_err(|e| fail(format!("append after the cut: {e}")))?;
                prop_assert_eq!(
                    (info.base_offset, info.segment_base, info.position),
                    want,
                    "append after the cut"
                );
            }
        }
        Ok(())
    }
}

fn run(policy: FlushPolicy, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut h = Harness {
        dir: tempfile::tempdir().unwrap(),
        policy,
        log: None,
        model: Model {
            segments: vec![MSegment {
                base: 0,
                batches: Vec::new(),
            }],
        },
        seq: 0,
    };
    h.open()?;
    for (step, op) in ops.iter().enumerate() {
        let context = |e: TestCaseError| fail(format!("step {step}, {op:?}: {e}"));
        h.apply(op).map_err(context)?;
        check(h.log(), &h.model).map_err(context)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24)
    ))]

    #[test]
    fn torn_appends_agree_with_the_model(
        policy in policy(),
        ops in proptest::collection::vec(op(), 10..40),
    ) {
        run(policy, &ops)?;
    }
}
