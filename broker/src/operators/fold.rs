//! Folding a source partition's log into one operator, in log order, and turning what it writes
//! into deterministic target batches. Pure: bytes in, batches out; no I/O, no clock.
//!
//! Determinism is what makes the output exactly once: any replica that folds the same log entries
//! from the same state writes byte-identical batches under the same producer id and sequence
//! numbers, so a new leader can resend what an old one may have sent and the targets' idempotent
//! producer state drops the copies. Hence:
//! - the outputs of one source log entry (a record batch, or a mark read as a clock tick) become one
//!   batch per target partition (more only past [`MAX_TARGET_BATCH_BYTES`], split the same way);
//! - the time of those batches is taken from the log (the sink record's own timestamp), never a
//!   clock;
//! - sequence numbers come from per-target counters kept with the fold ([`Fold::seqs`]).
//!
//! Where outputs go: a sink record to `partition_for_key(source key)` of the sink (all windows of a
//! key in one sink partition, in order); late and bad records to the late / dead-letter topic's
//! partition `source partition % partitions`, with headers `sluice.partition` and `sluice.offset`
//! (and `sluice.reason` for bad records).

use std::collections::BTreeMap;

use bytes::Bytes;
use sluice_client::partition_for_key;
use sluice_protocol::wire::codec::{concat, Reader, Writer};
use sluice_protocol::wire::ProtocolError;
use sluice_protocol::{BatchBuilder, Compression, Header, Record, RecordBatch};
use sluice_window::{Input, Operator, Output, Spec, StateLimit};

use crate::replica::marks::{Mark, TargetSeq};

/// The largest target batch the fold builds (a larger output of one entry is split).
pub const MAX_TARGET_BATCH_BYTES: usize = 1 << 20;

/// Where an operator's outputs go, and how many partitions each target topic has.
#[derive(Debug, Clone)]
pub struct Targets {
    pub source_partition: u32,
    pub sink: (String, u32),
    pub late: Option<(String, u32)>,
    pub dead_letter: Option<(String, u32)>,
}

/// A target partition's batches of one fold step, in order.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    /// Per (topic, partition): sealed batches in sequence order.
    pub batches: BTreeMap<(String, u32), Vec<Bytes>>,
    /// Sink records in the outbox (results and tombstones).
    pub sink_records: u64,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
}

/// Encoding version of [`Fold::checkpoint`].
const CHECKPOINT_VERSION: u8 = 1;

/// `bool` present, then the `i64` when present (the wire codec has no optional integer).
fn put_opt(w: &mut Writer, v: Option<i64>) {
    w.bool(v.is_some());
    if let Some(v) = v {
        w.i64(v);
    }
}

fn get_opt(r: &mut Reader, what: &'static str) -> Result<Option<i64>, ProtocolError> {
    Ok(if r.bool(what)? {
        Some(r.i64(what)?)
    } else {
        None
    })
}

/// One record headed for a target partition.
#[derive(Debug)]
struct Pending {
    key: Option<Bytes>,
    value: Option<Bytes>,
    timestamp_ms: i64,
    headers: Vec<Header>,
}

/// Why folding stopped.
#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    #[error("corrupt source batch at offset {offset}: {error}")]
    Corrupt { offset: u64, error: String },
    #[error(transparent)]
    StateLimit(#[from] StateLimit),
    #[error("the output of the source entry ending at offset {offset} cannot be written: {error}")]
    Output { offset: u64, error: String },
}

/// An operator's state at a point of its source partition's log (see the module doc).
#[derive(Debug)]
pub struct Fold {
    pub op: Operator,
    /// The next log offset to read.
    pub position: u64,
    /// Next sequence number per target partition.
    pub seqs: BTreeMap<(String, u32), i32>,
    producer_id: i64,
    /// The time of the latest mark read (processing time), if any.
    clock_ms: Option<i64>,
    /// Whether a record was read since the latest mark.
    read_since_tick: bool,
    /// (mark time right after the last record, watermark then): where an idle advance counts from.
    idle_from: Option<(i64, i64)>,
    /// Reused between entries.
    outs: Vec<Output>,
    staged: BTreeMap<(String, u32), Vec<Pending>>,
    /// Source bytes read (for the checkpoint policy).
    pub bytes_read: u64,
    /// Records read.
    pub records_read: u64,
    /// The timestamp of the last record read.
    pub last_record_ms: Option<i64>,
}

impl Fold {
    /// A fresh fold reading from `position`.
    pub fn new(op: Operator, producer_id: i64, position: u64) -> Fold {
        Fold {
            op,
            position,
            seqs: BTreeMap::new(),
            producer_id,
            clock_ms: None,
            read_since_tick: false,
            idle_from: None,
            outs: Vec::new(),
            staged: BTreeMap::new(),
            bytes_read: 0,
            records_read: 0,
            last_record_ms: None,
        }
    }

    /// The fold's state for a checkpoint: its clock and idle bookkeeping, then the operator's
    /// state (sequences and position are the mark's own fields).
    pub fn checkpoint(&self) -> Bytes {
        let mut w = Writer::new();
        w.u8(CHECKPOINT_VERSION);
        put_opt(&mut w, self.clock_ms);
        w.bool(self.read_since_tick);
        put_opt(&mut w, self.idle_from.map(|(t, _)| t));
        put_opt(&mut w, self.idle_from.map(|(_, w)| w));
        w.bytes(&self.op.encode());
        concat(&w.finish())
    }

    /// The fold a mark's checkpoint holds, standing at the mark.
    pub fn restore(spec: Spec, producer_id: i64, mark: &Mark) -> Result<Fold, String> {
        let Some(bytes) = mark.checkpoint.clone() else {
            return Err("the mark has no checkpoint".into());
        };
        let mut r = Reader::new(bytes);
        let read = || -> Result<_, ProtocolError> {
            if r.u8("checkpoint version")? != CHECKPOINT_VERSION {
                return Err(ProtocolError::Invalid("checkpoint version"));
            }
            let clock_ms = get_opt(&mut r, "clock")?;
            let read_since_tick = r.bool("read since tick")?;
            let idle_t = get_opt(&mut r, "idle since")?;
            let idle_w = get_opt(&mut r, "idle watermark")?;
            let op = r.bytes("operator state")?;
            r.finish()?;
            Ok((clock_ms, read_since_tick, idle_t.zip(idle_w), op))
        };
        let (clock_ms, read_since_tick, idle_from, op) = read().map_err(|e| e.to_string())?;
        let op = Operator::decode(spec, op).map_err(|e| e.to_string())?;
        let mut fold = Fold::new(op, producer_id, mark.through);
        fold.clock_ms = clock_ms;
        fold.read_since_tick = read_since_tick;
        fold.idle_from = idle_from;
        fold.adopt_seqs(mark);
        Ok(fold)
    }

    /// Takes the sequence numbers of a mark whose `through` is this fold's position (the fold then
    /// stands exactly where the mark says).
    pub fn adopt_seqs(&mut self, mark: &Mark) {
        assert_eq!(
            mark.through, self.position,
            "a mark adopted away from its position"
        );
        self.seqs = mark
            .seqs
            .iter()
            .map(|s| ((s.topic.clone(), s.partition), s.next_seq))
            .collect();
    }

    /// The sequence numbers as a mark carries them.
    pub fn mark_seqs(&self) -> Vec<TargetSeq> {
        self.seqs
            .iter()
            .map(|((topic, partition), next_seq)| TargetSeq {
                topic: topic.clone(),
                partition: *partition,
                next_seq: *next_seq,
            })
            .collect()
    }

    /// Reads the whole batches in `bytes` (a read of the log from `self.position`), stopping before
    /// `until`. With `out`, what they cause becomes target batches there; without, it is dropped
    /// (a follower, or a leader catching up to the last mark: those outputs are in the targets).
    pub fn read(
        &mut self,
        bytes: Bytes,
        until: u64,
        targets: &Targets,
        mut out: Option<&mut Outbox>,
    ) -> Result<(), FoldError> {
        for batch in RecordBatch::iter_all(bytes) {
            let batch = batch.map_err(|e| FoldError::Corrupt {
                offset: self.position,
                error: e.to_string(),
            })?;
            let h = *batch.header();
            let end = h.base_offset + u64::from(h.last_offset_delta) + 1;
            if end <= self.position {
                continue;
            }
            if h.base_offset >= until {
                break;
            }
            self.read_entry(&batch, targets, out.is_some())?;
            self.position = end;
            self.bytes_read += batch.as_bytes().len() as u64;
            if let Some(o) = out.as_deref_mut() {
                self.seal_into(o, &targets.sink.0, end)?;
            }
            debug_assert!(self.staged.is_empty(), "staged outputs left after an entry");
        }
        Ok(())
    }

    /// Folds one entry; `emit`: its outputs are staged for target batches (a fold that writes
    /// nothing, a follower's, skips building them).
    fn read_entry(
        &mut self,
        batch: &RecordBatch,
        targets: &Targets,
        emit: bool,
    ) -> Result<(), FoldError> {
        let corrupt = |offset: u64, e: &dyn std::fmt::Display| FoldError::Corrupt {
            offset,
            error: e.to_string(),
        };
        let base = batch.header().base_offset;
        if batch.header().is_control() {
            // A mark is the leader's clock at this point of the log; raft's own entries are not
            // the operator's business.
            if let Some(Ok(mark)) = Mark::of_batch(batch) {
                self.tick(mark.now_ms, targets, emit)?;
            }
            return Ok(());
        }
        let records = batch.records().map_err(|e| corrupt(base, &e))?;
        for record in records {
            let record = record.map_err(|e| corrupt(base, &e))?;
            self.outs.clear();
            let input = Input {
                offset: record.offset,
                timestamp_ms: record.timestamp_ms,
                processing_ms: self.clock_ms.unwrap_or(record.timestamp_ms),
                key: record.key.as_deref(),
                value: record.value.as_deref(),
            };
            self.op.process(input, &mut self.outs)?;
            self.records_read += 1;
            self.read_since_tick = true;
            self.last_record_ms = Some(record.timestamp_ms);
            if emit {
                let outs = std::mem::take(&mut self.outs);
                self.stage(&outs, Some(&record), targets);
                self.outs = outs;
            }
        }
        Ok(())
    }

    /// A mark read at its place in the log: the clock moves to its time, and an idle partition's
    /// watermark advances by the time passed since the mark after its last record.
    fn tick(&mut self, now_ms: i64, targets: &Targets, emit: bool) -> Result<(), FoldError> {
        self.clock_ms = Some(self.clock_ms.map_or(now_ms, |c| c.max(now_ms)));
        let Some(idle_ms) = self.op.spec().idle_timeout_ms else {
            return Ok(());
        };
        if std::mem::take(&mut self.read_since_tick) {
            self.idle_from = self.op.stats().watermark_ms.map(|w| (now_ms, w));
            return Ok(());
        }
        let Some((since, w)) = self.idle_from else {
            return Ok(());
        };
        let idle = now_ms.saturating_sub(since);
        if idle >= idle_ms {
            self.outs.clear();
            self.op.advance(w.saturating_add(idle), &mut self.outs)?;
            if emit {
                let outs = std::mem::take(&mut self.outs);
                self.stage(&outs, None, targets);
                self.outs = outs;
            }
        }
        Ok(())
    }

    /// Queues `outs` (caused by `record`, or by a tick) for their target partitions.
    fn stage(&mut self, outs: &[Output], record: Option<&Record>, targets: &Targets) {
        for o in outs {
            match o {
                Output::Sink {
                    key,
                    value,
                    timestamp_ms,
                } => {
                    // The source key is the sink key before its last '@'.
                    let source_key = key
                        .iter()
                        .rposition(|&b| b == b'@')
                        .map_or(&key[..], |i| &key[..i]);
                    let (topic, n) = &targets.sink;
                    let partition = partition_for_key(source_key, *n);
                    self.staged
                        .entry((topic.clone(), partition))
                        .or_default()
                        .push(Pending {
                            key: Some(key.clone()),
                            value: value.clone(),
                            timestamp_ms: *timestamp_ms,
                            headers: Vec::new(),
                        });
                }
                Output::Late { offset } => self.stage_copy(
                    &targets.late,
                    targets.source_partition,
                    *offset,
                    record,
                    None,
                ),
                Output::Bad { offset, reason } => self.stage_copy(
                    &targets.dead_letter,
                    targets.source_partition,
                    *offset,
                    record,
                    Some(reason.to_string()),
                ),
            }
        }
    }

    /// A copy of the source record for the late or dead-letter topic (when one is configured).
    fn stage_copy(
        &mut self,
        target: &Option<(String, u32)>,
        source_partition: u32,
        offset: u64,
        record: Option<&Record>,
        reason: Option<String>,
    ) {
        let (Some((topic, n)), Some(record)) = (target, record) else {
            return;
        };
        debug_assert_eq!(
            record.offset, offset,
            "a late or bad output of another record"
        );
        let header = |k: &'static str, v: String| Header {
            key: Bytes::from_static(k.as_bytes()),
            value: Some(Bytes::from(v)),
        };
        let mut headers = vec![
            header("sluice.partition", source_partition.to_string()),
            header("sluice.offset", offset.to_string()),
        ];
        if let Some(r) = reason {
            headers.push(header("sluice.reason", r));
        }
        self.staged
            .entry((topic.clone(), source_partition % (*n).max(1)))
            .or_default()
            .push(Pending {
                key: record.key.clone(),
                value: record.value.clone(),
                timestamp_ms: record.timestamp_ms,
                headers,
            });
    }

    /// Seals what one entry caused into batches, one per target partition (split past the size
    /// bound), numbered from the per-target counters.
    /// An output too large for one batch (a source record near the batch limit copied to a late
    /// topic, a huge key in a result) fails the operator on this partition rather than the broker.
    fn seal_into(
        &mut self,
        out: &mut Outbox,
        sink_topic: &str,
        entry_end: u64,
    ) -> Result<(), FoldError> {
        for (target, records) in std::mem::take(&mut self.staged) {
            if target.0 == sink_topic {
                out.sink_records += records.len() as u64;
            }
            let seq = self.seqs.entry(target.clone()).or_insert(0);
            let batches = out.batches.entry(target.clone()).or_default();
            let mut i = 0;
            while i < records.len() {
                let mut b =
                    BatchBuilder::new(Compression::None).producer(self.producer_id, 0, *seq);
                let mut size = 0usize;
                while i < records.len() && (b.is_empty() || size < MAX_TARGET_BATCH_BYTES) {
                    let r = &records[i];
                    b.append(
                        r.timestamp_ms,
                        r.key.as_deref(),
                        r.value.as_deref(),
                        &r.headers,
                    );
                    size += r.key.as_ref().map_or(0, Bytes::len)
                        + r.value.as_ref().map_or(0, Bytes::len)
                        + 32;
                    i += 1;
                }
                let n = b.record_count();
                match b.seal() {
                    Ok(bytes) => batches.push(bytes),
                    Err(e) => {
                        return Err(FoldError::Output {
                            offset: entry_end.saturating_sub(1),
                            error: e.to_string(),
                        })
                    }
                }
                *seq = crate::replica::producers::seq_add(*seq, n);
            }
        }
        Ok(())
    }
}
