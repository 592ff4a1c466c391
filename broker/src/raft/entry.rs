//! How raft entries are stored in the segment log, one batch per entry (pure; no I/O).
//!
//! - a normal entry is the produced record batch itself;
//! - a blank entry (a new leader's first entry) and a membership entry are *control* batches of one
//!   record whose key says which (`sluice.raft.blank`, `sluice.raft.membership`) and whose value holds
//!   the encoded membership. Consumers skip control batches; each takes one offset, like Kafka's
//!   control records, so offsets stay dense and equal on every replica;
//! - a *void* batch (key `sluice.void`) is a normal entry stored in place of a leader's proposal
//!   that must not be stored after all (its admission was forgotten: an earlier batch of its
//!   producer never reached the log, see `PartitionState::accept_append`). Raft had given it an
//!   index already, so something must take it; a control batch that no state and no consumer reads.
//!
//! The batch header carries the entry's raft term and index (patched in on append), so a stored
//! batch is a complete raft entry: [`entry_from_batch`] rebuilds it without any side table.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use openraft::{BasicNode, EntryPayload};
use sluice_protocol::wire::codec::{Reader, Writer};
use sluice_protocol::wire::ProtocolError;
use sluice_protocol::{BatchBuilder, Compression, RecordBatch};

use super::{log_id, Entry, Membership, Proposal};

pub const KEY_BLANK: &[u8] = b"sluice.raft.blank";
pub const KEY_MEMBERSHIP: &[u8] = b"sluice.raft.membership";
pub const KEY_VOID: &[u8] = b"sluice.void";

/// Control batches carry no event time: -1, like Kafka's "no timestamp", so they never move a
/// segment's time index or retention clock.
const CONTROL_TIMESTAMP: i64 = -1;

/// Why a stored batch is not a valid raft entry.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("invalid batch: {0}")]
    Batch(#[from] sluice_protocol::BatchError),
    #[error("invalid raft control batch: {0}")]
    Control(String),
    #[error("invalid membership: {0}")]
    Membership(#[from] ProtocolError),
}

/// The batch that stores `payload`: the proposal's batch, or a control batch.
pub fn batch_for(
    payload: &EntryPayload<Proposal, u64, BasicNode>,
) -> Result<RecordBatch, EntryError> {
    match payload {
        EntryPayload::Normal(p) => Ok(p.batch.clone()),
        EntryPayload::Blank => control_batch(KEY_BLANK, &[]),
        EntryPayload::Membership(m) => control_batch(KEY_MEMBERSHIP, &encode_membership(m)),
    }
}

/// The batch stored in place of a proposal that may not be stored (see the module doc).
pub fn void_batch() -> Result<RecordBatch, EntryError> {
    control_batch(KEY_VOID, &[])
}

fn control_batch(key: &[u8], value: &[u8]) -> Result<RecordBatch, EntryError> {
    let mut b = BatchBuilder::with_capacity(Compression::None, 128 + value.len()).control();
    b.append(CONTROL_TIMESTAMP, Some(key), Some(value), &[]);
    Ok(RecordBatch::decode(&b.seal()?)?.0)
}

/// Rebuilds the raft entry a stored batch holds (term and index from its header).
pub fn entry_from_batch(batch: RecordBatch) -> Result<Entry, EntryError> {
    let h = *batch.header();
    let id = log_id(h.raft_term, h.raft_index);
    if !h.is_control() {
        return Ok(Entry {
            log_id: id,
            payload: EntryPayload::Normal(Proposal::stored(batch)),
        });
    }
    let record = batch
        .records()?
        .next()
        .transpose()?
        .ok_or_else(|| EntryError::Control("no record".into()))?;
    let key = record.key.unwrap_or_default();
    let payload = if key.as_ref() == KEY_BLANK {
        EntryPayload::Blank
    } else if key.as_ref() == KEY_MEMBERSHIP {
        let value = record.value.unwrap_or_default();
        EntryPayload::Membership(decode_membership(&mut Reader::new(value))?)
    } else {
        // A control batch that is not raft's (an operator mark, a void batch): a normal entry.
        EntryPayload::Normal(Proposal::stored(batch))
    };
    Ok(Entry {
        log_id: id,
        payload,
    })
}

/// Whether a control batch is (or may be: it cannot be read) one of raft's own blank or membership
/// entries. A normal entry must never hold one: reopening the log would read it back as raft's.
/// The broker's other control batches (window operator marks) are normal entries.
pub fn is_raft_entry_batch(batch: &RecordBatch) -> bool {
    if !batch.header().is_control() {
        return false;
    }
    match batch.records().map(|mut r| r.next()) {
        Ok(Some(Ok(record))) => {
            let key = record.key.unwrap_or_default();
            key.as_ref() == KEY_BLANK || key.as_ref() == KEY_MEMBERSHIP
        }
        _ => true,
    }
}

/// Whether a batch is one of raft's own control batches (consumers and appliers skip them).
pub fn is_raft_control(batch: &RecordBatch) -> bool {
    batch.header().is_control()
}

/// `u32` config count, each a `u32` count of `u64` voter ids; then `u32` node count, each `u64` id and
/// a string address.
pub fn write_membership(w: &mut Writer, m: &Membership) {
    let configs = m.get_joint_config();
    w.count(configs.len());
    for c in configs {
        w.count(c.len());
        for id in c {
            w.u64(*id);
        }
    }
    let nodes: Vec<_> = m.nodes().collect();
    w.count(nodes.len());
    for (id, node) in nodes {
        w.u64(*id);
        w.string(&node.addr);
    }
}

pub fn encode_membership(m: &Membership) -> Bytes {
    let mut w = Writer::new();
    write_membership(&mut w, m);
    join(w.finish())
}

pub fn decode_membership(r: &mut Reader) -> Result<Membership, ProtocolError> {
    let configs = r.array(4, "membership configs", |r| {
        Ok(r.array(8, "voters", |r| r.u64("voter id"))?
            .into_iter()
            .collect::<BTreeSet<u64>>())
    })?;
    let nodes = r.array(10, "membership nodes", |r| {
        Ok((r.u64("node id")?, BasicNode::new(r.string("node address")?)))
    })?;
    let nodes: BTreeMap<u64, BasicNode> = nodes.into_iter().collect();
    Membership::new(configs, nodes).map_err(|_| ProtocolError::Invalid("membership"))
}

/// Concatenates encoder chunks (small control values only).
pub fn join(chunks: Vec<Bytes>) -> Bytes {
    sluice_protocol::wire::codec::concat(&chunks)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn membership() -> Membership {
        let nodes: BTreeMap<u64, BasicNode> = [
            (1, BasicNode::new("127.0.0.1:1")),
            (2, BasicNode::new("127.0.0.1:2")),
            (3, BasicNode::new("127.0.0.1:3")),
        ]
        .into_iter()
        .collect();
        Membership::new(
            vec![[1, 2].into_iter().collect(), [2, 3].into_iter().collect()],
            nodes,
        )
        .unwrap()
    }

    fn stored(bytes: Bytes, term: u64, index: u64) -> RecordBatch {
        let mut v = bytes.to_vec();
        sluice_protocol::batch::patch_position(&mut v, 40, term, index).unwrap();
        RecordBatch::decode(&Bytes::from(v)).unwrap().0
    }

    #[test]
    fn control_entries_round_trip_through_stored_batches() {
        let m = membership();
        for payload in [EntryPayload::Blank, EntryPayload::Membership(m.clone())] {
            let bytes = batch_for(&payload).unwrap().as_bytes().clone();
            let batch = stored(bytes, 7, 12);
            assert!(is_raft_control(&batch));
            let e = entry_from_batch(batch).unwrap();
            assert_eq!(e.log_id, log_id(7, 12));
            match (&payload, &e.payload) {
                (EntryPayload::Blank, EntryPayload::Blank) => {}
                (EntryPayload::Membership(a), EntryPayload::Membership(b)) => assert_eq!(a, b),
                other => panic!("payload changed: {other:?}"),
            }
        }
    }

    #[test]
    fn normal_entries_are_the_batch_itself() {
        let mut b = BatchBuilder::new(Compression::None);
        b.append(5, None, Some(b"v"), &[]);
        let bytes = b.seal().unwrap();
        let e = entry_from_batch(stored(bytes, 3, 4)).unwrap();
        assert_eq!(e.log_id, log_id(3, 4));
        assert!(matches!(e.payload, EntryPayload::Normal(_)));
    }

    #[test]
    fn garbage_membership_is_an_error_not_a_panic() {
        for len in 0..64u8 {
            let junk: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37)).collect();
            let _ = decode_membership(&mut Reader::new(Bytes::from(junk)));
        }
        let mut w = Writer::new();
        w.count(1);
        w.count(1);
        w.u64(9); // a voter with no node
        w.count(0);
        assert!(decode_membership(&mut Reader::new(join(w.finish()))).is_err());
    }
}
