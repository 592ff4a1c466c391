//! Raft messages on the wire, inside [`sluice_protocol::wire::RaftRequest`] bodies (pure; no I/O).
//!
//! Integers little-endian; `log id?` is `u8 present | u64 term | u64 index`; a vote is
//! `u64 term | u64 voted for | u8 committed`. Entries travel as `u64 term | u64 index | bytes batch`:
//! the batch exactly as stored (normal entries) or the control batch of a blank/membership entry,
//! so the leader sends record bytes straight from its segment maps and the follower checks both
//! CRCs before it appends.
//!
//! | kind | request | response |
//! |---|---|---|
//! | 1 append | vote, prev log id?, leader commit?, u32 count, entries | u8 tag (0 ok, 1 partial + log id?, 2 conflict, 3 higher vote + vote) |
//! | 2 vote, 3 pre-vote | vote, last log id?, u8 leadership transfer | vote, u8 granted, last log id? |
//! | 4 snapshot chunk | vote, u64 chunk number, u64 start offset, bytes batches | vote |
//! | 5 snapshot done | vote, bytes snapshot (meta and state, see `state_machine`) | vote |
//! | 6 transfer leader | vote (the leader's), u64 to, last log id? | u8 tag (0 ok, 1 vote changed + vote expected + vote actual, 2 log not flushed + log id? expected + log id? actual) |

use bytes::Bytes;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, TransferLeaderRequest, VoteRequest, VoteResponse,
};
use openraft::vote::RaftLeaderId;
use sluice_protocol::wire::codec::{Reader, Writer};
use sluice_protocol::wire::ProtocolError;
use sluice_protocol::RecordBatch;

use super::entry::{batch_for, entry_from_batch, join};
use super::{log_id, term_of, Entry, LogId, TypeConfig, Vote};

pub const KIND_APPEND: u8 = 1;
pub const KIND_VOTE: u8 = 2;
pub const KIND_PRE_VOTE: u8 = 3;
pub const KIND_SNAPSHOT_CHUNK: u8 = 4;
pub const KIND_SNAPSHOT_DONE: u8 = 5;
pub const KIND_TRANSFER_LEADER: u8 = 6;

/// What the target of a leadership transfer answers (openraft's `TransferLeaderResponse`).
pub type TransferAnswer = openraft::raft::TransferLeaderResponse<TypeConfig>;

type Result<T> = std::result::Result<T, ProtocolError>;

pub fn put_vote(w: &mut Writer, v: &Vote) {
    w.u64(v.leader_id.term);
    w.u64(v.leader_id.voted_for);
    w.bool(v.committed);
}

pub fn get_vote(r: &mut Reader) -> Result<Vote> {
    let term = r.u64("vote term")?;
    let node = r.u64("voted for")?;
    let committed = r.bool("vote committed")?;
    Ok(openraft::impls::Vote {
        leader_id: openraft::impls::leader_id_std::LeaderId::new(term, node),
        committed,
    })
}

pub fn put_log_id(w: &mut Writer, id: &Option<LogId>) {
    match id {
        Some(id) => {
            w.u8(1);
            w.u64(term_of(id));
            w.u64(id.index);
        }
        None => {
            w.u8(0);
            w.u64(0);
            w.u64(0);
        }
    }
}

pub fn get_log_id(r: &mut Reader) -> Result<Option<LogId>> {
    let present = r.u8("log id present")?;
    let term = r.u64("log id term")?;
    let index = r.u64("log id index")?;
    match present {
        0 => Ok(None),
        1 => Ok(Some(log_id(term, index))),
        _ => Err(ProtocolError::Invalid("log id present flag")),
    }
}

/// Encodes an append-entries request; record bytes stay zero-copy chunks.
pub fn encode_append(req: &AppendEntriesRequest<TypeConfig>) -> Result<Vec<Bytes>> {
    let mut w = Writer::new();
    put_vote(&mut w, &req.vote);
    put_log_id(&mut w, &req.prev_log_id);
    put_log_id(&mut w, &req.leader_commit);
    w.count(req.entries.len());
    for e in &req.entries {
        let batch = batch_for(&e.payload).map_err(|_| ProtocolError::Invalid("raft entry"))?;
        w.u64(term_of(&e.log_id));
        w.u64(e.log_id.index);
        w.bytes(batch.as_bytes());
    }
    Ok(w.finish())
}

/// Decodes an append-entries request, checking every batch's CRCs.
pub fn decode_append(body: Bytes) -> Result<AppendEntriesRequest<TypeConfig>> {
    let mut r = Reader::new(body);
    let vote = get_vote(&mut r)?;
    let prev_log_id = get_log_id(&mut r)?;
    let leader_commit = get_log_id(&mut r)?;
    let entries = r.array(20, "raft entries", |r| {
        let term = r.u64("entry term")?;
        let index = r.u64("entry index")?;
        let bytes = r.bytes("entry batch")?;
        let (batch, rest) =
            RecordBatch::decode(&bytes).map_err(|_| ProtocolError::Invalid("raft entry batch"))?;
        if !rest.is_empty() {
            return Err(ProtocolError::Invalid(
                "raft entry holds more than one batch",
            ));
        }
        let mut e: Entry =
            entry_from_batch(batch).map_err(|_| ProtocolError::Invalid("raft entry batch"))?;
        e.log_id = log_id(term, index);
        Ok(e)
    })?;
    r.finish()?;
    // Entries follow the previous log id one index at a time (openraft stops a group otherwise).
    // Checked: an index of u64::MAX has no successor (an overflow here was a panic on peer input).
    let mut before = prev_log_id.map(|p| p.index);
    for e in &entries {
        if before.is_some_and(|b| b.checked_add(1) != Some(e.log_id.index)) {
            return Err(ProtocolError::Invalid("raft entries are not consecutive"));
        }
        before = Some(e.log_id.index);
    }
    Ok(AppendEntriesRequest {
        vote,
        prev_log_id,
        entries,
        leader_commit,
    })
}

pub fn encode_append_response(resp: &AppendEntriesResponse<TypeConfig>) -> Bytes {
    let mut w = Writer::new();
    match resp {
        AppendEntriesResponse::Success => w.u8(0),
        AppendEntriesResponse::PartialSuccess(id) => {
            w.u8(1);
            put_log_id(&mut w, id);
        }
        AppendEntriesResponse::Conflict => w.u8(2),
        AppendEntriesResponse::HigherVote(v) => {
            w.u8(3);
            put_vote(&mut w, v);
        }
    }
    join(w.finish())
}

pub fn decode_append_response(body: Bytes) -> Result<AppendEntriesResponse<TypeConfig>> {
    let mut r = Reader::new(body);
    let resp = match r.u8("append response tag")? {
        0 => AppendEntriesResponse::Success,
        1 => AppendEntriesResponse::PartialSuccess(get_log_id(&mut r)?),
        2 => AppendEntriesResponse::Conflict,
        3 => AppendEntriesResponse::HigherVote(get_vote(&mut r)?),
        _ => return Err(ProtocolError::Invalid("append response tag")),
    };
    r.finish()?;
    Ok(resp)
}

pub fn encode_vote(req: &VoteRequest<TypeConfig>) -> Bytes {
    let mut w = Writer::new();
    put_vote(&mut w, &req.vote);
    put_log_id(&mut w, &req.last_log_id);
    w.bool(req.leadership_transfer);
    join(w.finish())
}

pub fn decode_vote(body: Bytes) -> Result<VoteRequest<TypeConfig>> {
    let mut r = Reader::new(body);
    let vote = get_vote(&mut r)?;
    let last_log_id = get_log_id(&mut r)?;
    let leadership_transfer = r.bool("leadership transfer")?;
    r.finish()?;
    let mut req = VoteRequest::new(vote, last_log_id);
    req.leadership_transfer = leadership_transfer;
    Ok(req)
}

pub fn encode_vote_response(resp: &VoteResponse<TypeConfig>) -> Bytes {
    let mut w = Writer::new();
    put_vote(&mut w, &resp.vote);
    w.bool(resp.vote_granted);
    put_log_id(&mut w, &resp.last_log_id);
    join(w.finish())
}

pub fn decode_vote_response(body: Bytes) -> Result<VoteResponse<TypeConfig>> {
    let mut r = Reader::new(body);
    let vote = get_vote(&mut r)?;
    let granted = r.bool("vote granted")?;
    let last = get_log_id(&mut r)?;
    r.finish()?;
    Ok(VoteResponse::new(vote, last, granted))
}

/// One chunk of a snapshot transfer: whole batches of the leader's retained log, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunk {
    pub vote: Vote,
    /// 0 for the first chunk (the receiver starts a fresh staging log at `start_offset`).
    pub seq: u64,
    /// The leader's log start when the transfer began (meaningful in the first chunk).
    pub start_offset: u64,
    pub batches: Bytes,
}

pub fn encode_snapshot_chunk(c: &SnapshotChunk) -> Vec<Bytes> {
    let mut w = Writer::new();
    put_vote(&mut w, &c.vote);
    w.u64(c.seq);
    w.u64(c.start_offset);
    w.bytes(&c.batches);
    w.finish()
}

pub fn decode_snapshot_chunk(body: Bytes) -> Result<SnapshotChunk> {
    let mut r = Reader::new(body);
    let c = SnapshotChunk {
        vote: get_vote(&mut r)?,
        seq: r.u64("chunk number")?,
        start_offset: r.u64("start offset")?,
        batches: r.bytes("snapshot batches")?,
    };
    r.finish()?;
    Ok(c)
}

/// The end of a snapshot transfer: the vote it was sent under and the encoded snapshot.
pub fn encode_snapshot_done(vote: &Vote, snapshot: &Bytes) -> Vec<Bytes> {
    let mut w = Writer::new();
    put_vote(&mut w, vote);
    w.bytes(snapshot);
    w.finish()
}

pub fn decode_snapshot_done(body: Bytes) -> Result<(Vote, Bytes)> {
    let mut r = Reader::new(body);
    let vote = get_vote(&mut r)?;
    let snap = r.bytes("snapshot")?;
    r.finish()?;
    Ok((vote, snap))
}

/// A bare vote (the answer to snapshot messages).
pub fn encode_vote_only(v: &Vote) -> Bytes {
    let mut w = Writer::new();
    put_vote(&mut w, v);
    join(w.finish())
}

pub fn decode_vote_only(body: Bytes) -> Result<Vote> {
    let mut r = Reader::new(body);
    let v = get_vote(&mut r)?;
    r.finish()?;
    Ok(v)
}

pub fn encode_transfer_leader(req: &TransferLeaderRequest<TypeConfig>) -> Bytes {
    let mut w = Writer::new();
    put_vote(&mut w, req.from_leader());
    w.u64(*req.to_node_id());
    put_log_id(&mut w, &req.last_log_id().copied());
    join(w.finish())
}

pub fn decode_transfer_leader(body: Bytes) -> Result<TransferLeaderRequest<TypeConfig>> {
    let mut r = Reader::new(body);
    let from = get_vote(&mut r)?;
    let to = r.u64("transfer target")?;
    let last = get_log_id(&mut r)?;
    r.finish()?;
    Ok(TransferLeaderRequest::new(from, to, last))
}

pub fn encode_transfer_answer(answer: &TransferAnswer) -> Bytes {
    use openraft::raft::TransferLeaderError as E;
    let mut w = Writer::new();
    match answer {
        Ok(()) => w.u8(0),
        Err(E::VoteChanged { expected, actual }) => {
            w.u8(1);
            put_vote(&mut w, expected);
            put_vote(&mut w, actual);
        }
        Err(E::LogNotFlushed { expected, actual }) => {
            w.u8(2);
            put_log_id(&mut w, expected);
            put_log_id(&mut w, actual);
        }
    }
    join(w.finish())
}

pub fn decode_transfer_answer(body: Bytes) -> Result<TransferAnswer> {
    use openraft::raft::TransferLeaderError as E;
    let mut r = Reader::new(body);
    let answer = match r.u8("transfer answer tag")? {
        0 => Ok(()),
        1 => Err(E::VoteChanged {
            expected: get_vote(&mut r)?,
            actual: get_vote(&mut r)?,
        }),
        2 => Err(E::LogNotFlushed {
            expected: get_log_id(&mut r)?,
            actual: get_log_id(&mut r)?,
        }),
        _ => return Err(ProtocolError::Invalid("transfer answer tag")),
    };
    r.finish()?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use openraft::EntryPayload;
    use sluice_protocol::{BatchBuilder, Compression};

    fn vote(term: u64, node: u64, committed: bool) -> Vote {
        openraft::impls::Vote {
            leader_id: openraft::impls::leader_id_std::LeaderId::new(term, node),
            committed,
        }
    }

    fn normal(term: u64, index: u64, value: &[u8]) -> Entry {
        let mut b = BatchBuilder::new(Compression::None);
        b.append(1, Some(b"k"), Some(value), &[]);
        let batch = RecordBatch::decode(&b.seal().unwrap()).unwrap().0;
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Normal(super::super::Proposal::new(batch)),
        }
    }

    #[test]
    fn append_requests_round_trip_with_every_entry_kind() {
        let req = AppendEntriesRequest::<TypeConfig> {
            vote: vote(5, 2, true),
            prev_log_id: Some(log_id(4, 9)),
            leader_commit: None,
            entries: vec![
                normal(5, 10, &[7u8; 700]),
                Entry {
                    log_id: log_id(5, 11),
                    payload: EntryPayload::Blank,
                },
                normal(5, 12, b"x"),
            ],
        };
        let bytes = join(encode_append(&req).unwrap());
        let back = decode_append(bytes.clone()).unwrap();
        assert_eq!(back.vote, req.vote);
        assert_eq!(back.prev_log_id, req.prev_log_id);
        assert_eq!(back.leader_commit, req.leader_commit);
        assert_eq!(back.entries.len(), 3);
        for (a, b) in back.entries.iter().zip(&req.entries) {
            assert_eq!(a.log_id, b.log_id);
        }
        // Any flipped bit in an entry's batch is refused, never appended.
        let mut bad = bytes.to_vec();
        let at = bad.len() - 300;
        bad[at] ^= 0x10;
        assert!(decode_append(Bytes::from(bad)).is_err());
        // Truncations never panic.
        for n in 0..bytes.len() {
            let _ = decode_append(bytes.slice(..n));
        }
    }

    #[test]
    fn votes_and_responses_round_trip() {
        let mut req = VoteRequest::<TypeConfig>::new(vote(3, 1, false), Some(log_id(2, 40)));
        req.leadership_transfer = true;
        assert_eq!(decode_vote(encode_vote(&req)).unwrap(), req);
        let resp = VoteResponse::<TypeConfig>::new(vote(3, 1, false), None, true);
        assert_eq!(
            decode_vote_response(encode_vote_response(&resp)).unwrap(),
            resp
        );
        for resp in [
            AppendEntriesResponse::Success,
            AppendEntriesResponse::PartialSuccess(Some(log_id(1, 2))),
            AppendEntriesResponse::Conflict,
            AppendEntriesResponse::HigherVote(vote(9, 3, true)),
        ] {
            assert_eq!(
                decode_append_response(encode_append_response(&resp)).unwrap(),
                resp
            );
        }
        let c = SnapshotChunk {
            vote: vote(1, 1, true),
            seq: 3,
            start_offset: 77,
            batches: Bytes::from_static(b"abc"),
        };
        assert_eq!(
            decode_snapshot_chunk(join(encode_snapshot_chunk(&c))).unwrap(),
            c
        );
        assert!(decode_vote_response(Bytes::from_static(b"\x01\x02")).is_err());
    }

    #[test]
    fn leader_transfers_and_their_answers_round_trip() {
        use openraft::raft::TransferLeaderError as E;
        for last in [None, Some(log_id(4, 77))] {
            let req = TransferLeaderRequest::<TypeConfig>::new(vote(4, 2, true), 3, last);
            let bytes = encode_transfer_leader(&req);
            assert_eq!(decode_transfer_leader(bytes.clone()).unwrap(), req);
            for n in 0..bytes.len() {
                assert!(decode_transfer_leader(bytes.slice(..n)).is_err());
            }
        }
        for answer in [
            Ok(()),
            Err(E::VoteChanged {
                expected: vote(4, 2, true),
                actual: vote(5, 3, false),
            }),
            Err(E::LogNotFlushed {
                expected: Some(log_id(4, 9)),
                actual: None,
            }),
        ] {
            let bytes = encode_transfer_answer(&answer);
            assert_eq!(decode_transfer_answer(bytes).unwrap(), answer);
        }
        assert!(decode_transfer_answer(Bytes::from_static(b"\x07")).is_err());
    }
}
