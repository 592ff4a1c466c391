//! The replicated state of a data topic's partition: its idempotent producers and the marks of the
//! window operators reading it ([`super::marks`]). Every hook goes to the producer state; a
//! committed mark also goes to the marks. Nothing here does I/O.
//!
//! Snapshot layout: the producer table's bytes alone while no operator has marked this partition
//! (the layout before operators existed), else [`COMPOSITE`], a `u32` length and the producer
//! table, then the marks.

use std::io;
use std::ops::Range;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use sluice_protocol::RecordBatch;

use super::marks::{Mark, Marks};
use super::producers::{Limits, ProducerState};
use crate::raft::partition_state::{Admission, PartitionState, Refusal};
use crate::raft::Membership;

/// First byte of a snapshot with marks (the producer table's own first byte is its version, 1).
const COMPOSITE: u8 = 0xC1;

/// A data partition's replicated state (see the module doc).
#[derive(Debug, Default)]
pub struct TopicState {
    pub producers: ProducerState,
    pub marks: Marks,
}

impl TopicState {
    pub fn new(limits: Limits) -> TopicState {
        TopicState {
            producers: ProducerState::new(limits),
            marks: Marks::default(),
        }
    }
}

impl PartitionState for TopicState {
    fn admit(&mut self, batch: &RecordBatch, ticket: u64) -> Result<Admission, Refusal> {
        self.producers.admit(batch, ticket)
    }

    fn dropped(&mut self, ticket: u64) {
        self.producers.dropped(ticket)
    }

    fn accept_append(&mut self, ticket: u64, batch: &RecordBatch) -> bool {
        self.producers.accept_append(ticket, batch)
    }

    fn leader_reset(&mut self) {
        self.producers.leader_reset()
    }

    fn unadmit(&mut self, batches: &[&RecordBatch]) {
        self.producers.unadmit(batches)
    }

    fn appended(&mut self, index: u64, offsets: Range<u64>, batch: &RecordBatch) {
        self.producers.appended(index, offsets, batch)
    }

    fn truncated(&mut self, after: Option<u64>) {
        self.producers.truncated(after)
    }

    fn committed(&mut self, batch: &RecordBatch, membership: &Membership) {
        match Mark::of_batch(batch) {
            Some(Ok(mark)) => self.marks.apply(mark),
            // Only this broker's own driver writes marks (producers may not send control batches),
            // so a broken one is a bug; skipping it only delays the operator's next mark.
            Some(Err(e)) => {
                tracing::error!(error = %e, "a broken operator mark in the log; skipped")
            }
            None => self.producers.committed(batch, membership),
        }
    }

    fn snapshot(&self) -> io::Result<Bytes> {
        let producers = self.producers.snapshot()?;
        if self.marks.is_empty() {
            return Ok(producers);
        }
        let marks = self.marks.encode();
        let mut out = BytesMut::with_capacity(5 + producers.len() + marks.len());
        out.put_u8(COMPOSITE);
        out.put_u32_le(producers.len() as u32);
        out.put_slice(&producers);
        out.put_slice(&marks);
        Ok(out.freeze())
    }

    fn restore(&mut self, state: &[u8]) -> io::Result<()> {
        if state.first() != Some(&COMPOSITE) {
            self.marks = Marks::default();
            return self.producers.restore(state);
        }
        let mut buf = &state[1..];
        if buf.remaining() < 4 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "topic state: truncated",
            ));
        }
        let n = buf.get_u32_le() as usize;
        if buf.remaining() < n {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "topic state: truncated producers",
            ));
        }
        self.producers.restore(&buf[..n])?;
        self.marks = Marks::decode(Bytes::copy_from_slice(&buf[n..]))?;
        Ok(())
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}
