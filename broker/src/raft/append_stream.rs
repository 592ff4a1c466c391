//! The leader's side of pipelined replication: one [`AppendStream`] per follower and group writes
//! each append openraft streams without waiting for earlier answers, bounded in requests and bytes
//! unanswered, and yields the answers in request order (see `network::PeerNetwork::stream_append`).
//! It never reorders: an append answered out of order would be refused as a conflict.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use openraft::errors::RPCError;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, StreamAppendError, StreamAppendResult,
};
use sluice_client::ClientError;
use sluice_protocol::wire::{RaftRequest, Request};

use super::codec::*;
use super::log_store::MAX_APPEND_BYTES;
use super::network::{bad_answer, raft_body, rpc_error, PeerNetwork, Peers};
use super::TypeConfig;

/// Appends written to a peer and not answered yet, at most this many per replication stream.
const MAX_PIPELINED_APPENDS: usize = 16;
/// Batch bytes written to a peer and not answered yet, at most, per replication stream (past the
/// request that crosses it): a lagging follower's catch-up keeps two full requests on the wire,
/// not sixteen, so the connection every group shares with that peer stays short and each answer
/// comes within the timeout even on a slow link.
const MAX_PIPELINED_BYTES: usize = 2 * MAX_APPEND_BYTES;

/// One answer of a replication stream, as openraft takes it.
pub(super) type AppendAnswer = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

type SentAppend = Pin<Box<dyn Future<Output = (AppendAnswer, bool)> + Send>>;

/// An append written to the peer: its answer (with whether the stream may go on after it) and
/// the bytes it carried.
struct Sent {
    answer: SentAppend,
    bytes: usize,
}

/// The leader's side of one pipelined replication stream to one peer.
pub(super) struct AppendStream<S> {
    group: u64,
    addr: String,
    peers: Peers,
    /// How long the oldest unanswered append may wait, counted from when it was written or from
    /// the previous answer, whichever is later: a deep pipeline on a slow link is not timed out
    /// for the requests queued ahead of it, and a silent peer still is.
    timeout: Duration,
    /// openraft's requests; `None` once it has no more.
    input: Option<S>,
    /// Written requests, oldest first (at most [`MAX_PIPELINED_APPENDS`]).
    sent: VecDeque<Sent>,
    /// When the oldest of `sent` times out.
    oldest_deadline: Pin<Box<tokio::time::Sleep>>,
}

enum Step {
    Answer(AppendAnswer, bool),
    TimedOut,
    Request(Option<AppendEntriesRequest<TypeConfig>>),
}

impl<S> AppendStream<S>
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
{
    pub(super) fn new(net: &PeerNetwork, input: S, timeout: Duration) -> AppendStream<S> {
        AppendStream {
            group: net.group,
            addr: net.addr.clone(),
            peers: net.peers.clone(),
            timeout,
            input: Some(input),
            sent: VecDeque::new(),
            oldest_deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    /// Restarts the oldest answer's clock (a request became the oldest).
    fn restart_clock(&mut self) {
        let at = tokio::time::Instant::now() + self.timeout;
        self.oldest_deadline.as_mut().reset(at);
    }

    /// Writes requests while there is room and waits for the oldest answer; `None` when openraft
    /// has no more requests and every answer was yielded.
    pub(super) async fn next_answer(&mut self) -> Option<(AppendAnswer, bool)> {
        loop {
            let unanswered = self.sent.iter().map(|s| s.bytes).sum::<usize>();
            let room = self.input.is_some()
                && self.sent.len() < MAX_PIPELINED_APPENDS
                && unanswered < MAX_PIPELINED_BYTES;
            if self.sent.is_empty() && !room {
                return None;
            }
            if !room && self.input.is_some() {
                // At a bound: nothing more is written until an answer (tests wait for this line).
                tracing::debug!(
                    group = self.group,
                    appends = self.sent.len(),
                    bytes = unanswered,
                    "append stream full: waiting for an answer"
                );
            }
            let step = {
                let (input, sent) = (&mut self.input, &mut self.sent);
                let waiting = !sent.is_empty();
                let oldest = futures_util::future::poll_fn(|cx| match sent.front_mut() {
                    Some(f) => f.answer.as_mut().poll(cx),
                    None => Poll::Pending,
                });
                let request = futures_util::future::poll_fn(|cx| match input.as_mut() {
                    Some(s) => s.poll_next_unpin(cx),
                    None => Poll::Pending,
                });
                // Answers first: they free room and end a failed stream early. The request
                // stream is an `unfold`, so dropping an unfinished `next` loses nothing.
                tokio::select! {
                    biased;
                    (answer, go_on) = oldest => Step::Answer(answer, go_on),
                    () = self.oldest_deadline.as_mut(), if waiting => Step::TimedOut,
                    request = request, if room => Step::Request(request),
                }
            };
            match step {
                Step::Answer(answer, go_on) => {
                    self.sent.pop_front();
                    if !self.sent.is_empty() {
                        self.restart_clock();
                    }
                    return Some((answer, go_on));
                }
                Step::TimedOut => {
                    // openraft starts a new stream after an error; what was written is resent.
                    self.sent.clear();
                    let e = rpc_error(&self.addr, ClientError::Timeout(self.timeout));
                    return Some((Err(e), false));
                }
                Step::Request(None) => self.input = None,
                Step::Request(Some(rpc)) => {
                    let sent =
                        write_append(&self.peers, &self.addr, self.group, self.timeout, rpc).await;
                    if self.sent.is_empty() {
                        self.restart_clock();
                    }
                    self.sent.push_back(sent);
                }
            }
        }
    }
}

/// Writes one append; its answer (an error right away if it could not be written within
/// `timeout`: the connection's in-flight slots may all be taken by a stalled peer).
async fn write_append(
    peers: &Peers,
    addr: &str,
    group: u64,
    timeout: Duration,
    rpc: AppendEntriesRequest<TypeConfig>,
) -> Sent {
    let prev = rpc.prev_log_id;
    let last = rpc.entries.last().map(|e| e.log_id).or(prev);
    let body = match encode_append(&rpc) {
        Ok(body) => body,
        Err(e) => return failed(bad_answer(e)),
    };
    drop(rpc);
    let bytes = body.iter().map(Bytes::len).sum();
    let req = Request::Raft(RaftRequest {
        group,
        kind: KIND_APPEND,
        body,
    });
    let pending = match tokio::time::timeout(timeout, peers.client().submit_to(addr, &req)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return failed(rpc_error(addr, e)),
        Err(_) => return failed(rpc_error(addr, ClientError::Timeout(timeout))),
    };
    let addr = addr.to_string();
    let answer = Box::pin(async move {
        let resp = match raft_body(&addr, pending.await)
            .and_then(|b| decode_append_response(b).map_err(bad_answer))
        {
            Ok(resp) => resp,
            Err(e) => return (Err(e), false),
        };
        match resp {
            AppendEntriesResponse::Success => (Ok(Ok(last)), true),
            AppendEntriesResponse::PartialSuccess(m) => (Ok(Ok(m)), m == last),
            AppendEntriesResponse::Conflict => match prev {
                Some(p) => (Ok(Err(StreamAppendError::Conflict(p))), false),
                None => (Err(bad_answer("conflict before the first entry")), false),
            },
            AppendEntriesResponse::HigherVote(v) => {
                (Ok(Err(StreamAppendError::HigherVote(v))), false)
            }
        }
    });
    Sent { answer, bytes }
}

fn failed(e: RPCError<TypeConfig>) -> Sent {
    Sent {
        answer: Box::pin(std::future::ready((Err(e), false))),
        bytes: 0,
    }
}
