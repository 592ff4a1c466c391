//! Window operators' marks in a source partition's log: how far each operator's output has gone,
//! the wall-clock time its leader saw, and now and then its whole state (a checkpoint). Pure: the
//! encoding of a mark entry and the replicated table of the latest marks; no I/O, no clock.
//!
//! A mark is a control batch (consumers skip it) of one record whose key is [`KEY_MARK`]. Its
//! meaning, for the operator writing with producer id `producer_id`:
//! - every entry of this log below `through` has been read by the operator and everything it caused
//!   is in the sink (and late/dead-letter topics), acknowledged by them;
//! - `seqs` are the next sequence numbers of that producer in each target partition;
//! - `now_ms` is the leader's clock when it wrote the mark: the operator reads it, at the mark's
//!   place in the log, as the time for processing time and idle advances (so every replica sees
//!   the same time);
//! - `checkpoint`, when present, is the operator's encoded state after reading exactly the entries
//!   below `through` (a restarted replica starts from it instead of from the log start).
//!
//! [`Marks`] keeps, per producer id, the latest mark and the latest mark that had a checkpoint, as
//! replicated partition state: raft snapshots carry it. Marks only move forward: one whose
//! `through` is behind the latest is ignored (a deposed leader's late write).

use std::collections::BTreeMap;
use std::io;

use bytes::Bytes;
use sluice_protocol::wire::codec::{concat, Reader, Writer};
use sluice_protocol::wire::ProtocolError;
use sluice_protocol::{BatchBuilder, Compression, RecordBatch};

/// The key of a mark's record.
pub const KEY_MARK: &[u8] = b"sluice.operator.mark";

/// Encoding version of a mark and of the [`Marks`] snapshot.
const VERSION: u8 = 1;

/// Upper bound on the targets (sink, late and dead-letter partitions) of one mark.
const MAX_TARGETS: usize = 1 << 16;

/// One target partition's next sequence number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TargetSeq {
    pub topic: String,
    pub partition: u32,
    pub next_seq: i32,
}

/// One operator's progress at a point of a source partition's log (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub producer_id: i64,
    pub through: u64,
    pub now_ms: i64,
    /// Sorted by (topic, partition), each at most once.
    pub seqs: Vec<TargetSeq>,
    pub checkpoint: Option<Bytes>,
}

impl Mark {
    fn write(&self, w: &mut Writer) {
        w.u8(VERSION);
        w.i64(self.producer_id);
        w.u64(self.through);
        w.i64(self.now_ms);
        w.count(self.seqs.len());
        for s in &self.seqs {
            w.string(&s.topic);
            w.u32(s.partition);
            w.i32(s.next_seq);
        }
        match &self.checkpoint {
            Some(c) => {
                w.bool(true);
                w.bytes(c);
            }
            None => w.bool(false),
        }
    }

    fn read(r: &mut Reader) -> Result<Mark, ProtocolError> {
        let version = r.u8("mark version")?;
        if version != VERSION {
            return Err(ProtocolError::Invalid("mark version"));
        }
        let producer_id = r.i64("producer id")?;
        let through = r.u64("through")?;
        let now_ms = r.i64("now ms")?;
        let seqs = r.array(10, "targets", |r| {
            Ok(TargetSeq {
                topic: r.string("topic")?,
                partition: r.u32("partition")?,
                next_seq: r.i32("next sequence")?,
            })
        })?;
        if seqs.len() > MAX_TARGETS
            || !seqs
                .windows(2)
                .all(|w| (&w[0].topic, w[0].partition) < (&w[1].topic, w[1].partition))
        {
            return Err(ProtocolError::Invalid(
                "mark targets (unsorted or too many)",
            ));
        }
        let checkpoint = if r.bool("has checkpoint")? {
            Some(r.bytes("checkpoint")?)
        } else {
            None
        };
        Ok(Mark {
            producer_id,
            through,
            now_ms,
            seqs,
            checkpoint,
        })
    }

    /// The control batch that stores this mark.
    pub fn to_batch(&self) -> Bytes {
        let mut w = Writer::new();
        self.write(&mut w);
        let value = concat(&w.finish());
        let mut b = BatchBuilder::with_capacity(Compression::None, 128 + value.len()).control();
        b.append(self.now_ms, Some(KEY_MARK), Some(&value), &[]);
        match b.seal() {
            Ok(bytes) => bytes,
            // One record of bounded size always fits a batch.
            Err(e) => panic!("a mark does not fit a batch: {e}"),
        }
    }

    /// The mark a batch holds: `None` when it is not a mark, an error when it is a broken one.
    pub fn of_batch(batch: &RecordBatch) -> Option<Result<Mark, ProtocolError>> {
        if !batch.header().is_control() {
            return None;
        }
        let record = match batch.records() {
            Ok(mut records) => match records.next()? {
                Ok(r) => r,
                Err(_) => return Some(Err(ProtocolError::Invalid("mark record"))),
            },
            Err(_) => return Some(Err(ProtocolError::Invalid("mark batch"))),
        };
        if record.key.as_deref() != Some(KEY_MARK) {
            return None;
        }
        let value = record.value.unwrap_or_default();
        Some(Mark::read(&mut Reader::new(value)))
    }
}

/// The latest mark of each operator writing from this partition (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks {
    /// Per producer id: the latest mark, without its checkpoint (that is in `checkpoints`).
    latest: BTreeMap<i64, Mark>,
    /// Per producer id: the latest mark that carried a checkpoint.
    checkpoints: BTreeMap<i64, Mark>,
}

impl Marks {
    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// Applies a committed mark (a mark behind the latest one is ignored).
    pub fn apply(&mut self, mark: Mark) {
        let pid = mark.producer_id;
        if self
            .latest
            .get(&pid)
            .is_some_and(|l| l.through > mark.through)
        {
            return;
        }
        if mark.checkpoint.is_some() {
            self.checkpoints.insert(pid, mark.clone());
        }
        self.latest.insert(
            pid,
            Mark {
                checkpoint: None,
                ..mark
            },
        );
    }

    /// The latest mark of `producer_id`'s operator (its checkpoint left out).
    pub fn latest(&self, producer_id: i64) -> Option<&Mark> {
        self.latest.get(&producer_id)
    }

    /// The latest mark of `producer_id`'s operator that carried a checkpoint.
    pub fn checkpoint(&self, producer_id: i64) -> Option<&Mark> {
        self.checkpoints.get(&producer_id)
    }

    pub fn encode(&self) -> Bytes {
        let mut w = Writer::new();
        w.u8(VERSION);
        for map in [&self.latest, &self.checkpoints] {
            w.count(map.len());
            for m in map.values() {
                m.write(&mut w);
            }
        }
        concat(&w.finish())
    }

    pub fn decode(buf: Bytes) -> io::Result<Marks> {
        let bad = |e: ProtocolError| {
            io::Error::new(io::ErrorKind::InvalidData, format!("operator marks: {e}"))
        };
        let mut r = Reader::new(buf);
        let version = r.u8("marks version").map_err(bad)?;
        if version != VERSION {
            return Err(bad(ProtocolError::Invalid("marks version")));
        }
        let mut out = Marks::default();
        for map in [&mut out.latest, &mut out.checkpoints] {
            for m in r.array(30, "marks", Mark::read).map_err(bad)? {
                map.insert(m.producer_id, m);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn mark(pid: i64, through: u64, checkpoint: Option<&'static [u8]>) -> Mark {
        Mark {
            producer_id: pid,
            through,
            now_ms: 1_700_000_000_000 + through as i64,
            seqs: vec![
                TargetSeq {
                    topic: "late".into(),
                    partition: 0,
                    next_seq: 3,
                },
                TargetSeq {
                    topic: "sink".into(),
                    partition: 1,
                    next_seq: 40,
                },
            ],
            checkpoint: checkpoint.map(Bytes::from_static),
        }
    }

    #[test]
    fn a_mark_survives_its_batch() {
        let m = mark(7, 120, Some(b"state"));
        let batch = RecordBatch::decode(&m.to_batch()).unwrap().0;
        assert_eq!(Mark::of_batch(&batch).unwrap().unwrap(), m);
    }

    /// Marks move forward only, and the checkpoint stays with the last mark that had one.
    #[test]
    fn marks_keep_the_latest_and_the_last_checkpoint() {
        let mut marks = Marks::default();
        marks.apply(mark(7, 100, Some(b"at 100")));
        marks.apply(mark(7, 150, None));
        marks.apply(mark(7, 120, Some(b"stale")));
        assert_eq!(marks.latest(7).unwrap().through, 150);
        assert_eq!(marks.checkpoint(7).unwrap().through, 100);
        let back = Marks::decode(marks.encode()).unwrap();
        assert_eq!(back, marks);
    }
}
