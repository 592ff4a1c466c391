//! Follower side of pipelined replication. A leader sends a group's next append before the
//! previous one is answered (see `network::PeerNetwork::stream_append`); here the appends of one
//! group that arrive on one peer connection reach the group's `Raft` in arrival order through one
//! `Raft::stream_append` stream, so raft can take (and merge into one write and one fsync) several
//! of them while earlier ones are still being flushed. Each request is answered on its own, by
//! correlation id, in the order raft flushes them.
//!
//! Order is the point: an append applied before its predecessor would be refused as a conflict. The
//! connection's read loop calls [`AppendPipelines::submit`] synchronously, in frame order, and
//! nothing between it and raft reorders (one unbounded channel per group, drained by openraft's
//! stream task in order). Memory is bounded by the connection's in-flight bytes, which a request
//! holds until it is answered.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use futures_util::StreamExt;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, StreamAppendError};
use sluice_protocol::wire::{ErrorCode, RaftRequest};
use tokio::sync::{mpsc, oneshot};

use super::codec::{decode_append, encode_append_response};
use super::network::{GroupEntry, RaftHandle, RaftRegistry};
use super::{LogId, TypeConfig};

/// The answer body of one append, or the error the frame gets.
pub type Answer = Result<Bytes, (ErrorCode, String)>;

/// One append waiting for raft, with where its answer goes.
struct Queued {
    rpc: AppendEntriesRequest<TypeConfig>,
    /// The log id the request ends at (its last entry, or its `prev_log_id` when it has none).
    last: Option<LogId>,
    answer: oneshot::Sender<Answer>,
}

/// An append raft has taken: where it ends and where its answer goes.
type Waiting = (Option<LogId>, oneshot::Sender<Answer>);

/// The append streams of one peer connection, by group id. Dropping it (the connection closed)
/// ends every stream once its queued appends are answered.
#[derive(Debug, Default)]
pub struct AppendPipelines {
    groups: HashMap<u64, GroupPipeline>,
}

#[derive(Debug)]
struct GroupPipeline {
    /// The group this stream feeds: a group deleted and created again under the same id gets a
    /// new stream. Weak, so a deleted group's log is not kept open by a long-lived connection.
    entry: Weak<GroupEntry>,
    tx: mpsc::UnboundedSender<Queued>,
    /// Set when raft's stream ended (after a conflict, a higher vote, or shutdown): appends sent
    /// after that would only be answered with errors, so a new stream takes them.
    ended: Arc<AtomicBool>,
}

impl GroupPipeline {
    fn start(entry: &Arc<GroupEntry>) -> GroupPipeline {
        let (tx, rx) = mpsc::unbounded_channel();
        let ended = Arc::new(AtomicBool::new(false));
        tokio::spawn(run(entry.raft.clone(), rx, ended.clone()));
        GroupPipeline {
            entry: Arc::downgrade(entry),
            tx,
            ended,
        }
    }

    /// Its group still exists and raft still takes its appends.
    fn is_live(&self) -> bool {
        self.entry.strong_count() > 0 && !self.ended.load(Ordering::Acquire)
    }

    /// Live, and feeding this very group (not an earlier one deleted under the same id).
    fn usable_for(&self, entry: &Arc<GroupEntry>) -> bool {
        Weak::ptr_eq(&self.entry, &Arc::downgrade(entry)) && self.is_live()
    }
}

impl AppendPipelines {
    pub fn new() -> AppendPipelines {
        AppendPipelines::default()
    }

    /// Queues one append message (`KIND_APPEND`) behind the earlier ones of its group on this
    /// connection. The receiver yields its answer; it fails if the answer is lost (the stream
    /// ended before raft answered), which the connection reports as an error.
    pub fn submit(
        &mut self,
        registry: &RaftRegistry,
        req: RaftRequest,
    ) -> Result<oneshot::Receiver<Answer>, (ErrorCode, String)> {
        let Some(g) = registry.get(req.group) else {
            // Not created here yet (its metadata has not arrived) or deleted: the sender retries.
            self.groups.remove(&req.group);
            return Err((
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                format!("raft group {} is not on this broker", req.group),
            ));
        };
        let rpc = decode_append(req.body_bytes())
            .map_err(|e| (ErrorCode::INVALID_REQUEST, e.to_string()))?;
        if !rpc.entries.is_empty() {
            g.activity.touch(&g.raft);
        }
        let last = rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id);
        let (answer, rx) = oneshot::channel();
        let mut queued = Queued { rpc, last, answer };
        // Two tries: the second on a fresh stream if the first one's raft side has just gone.
        for _ in 0..2 {
            let usable = self
                .groups
                .get(&req.group)
                .is_some_and(|p| p.usable_for(&g));
            if !usable {
                // Streams of deleted groups and ended streams hold a raft handle and two tasks
                // each until dropped; new streams are rare (a group's first append here, or
                // after an error), so sweeping then keeps the map to the live groups.
                self.groups.retain(|_, p| p.is_live());
                self.groups.insert(req.group, GroupPipeline::start(&g));
            }
            let Some(p) = self.groups.get(&req.group) else {
                break;
            };
            match p.tx.send(queued) {
                Ok(()) => return Ok(rx),
                Err(mpsc::error::SendError(back)) => {
                    p.ended.store(true, Ordering::Release);
                    queued = back;
                }
            }
        }
        Err((
            ErrorCode::BROKER_SHUTTING_DOWN,
            format!("raft group {} takes no appends", req.group),
        ))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    super::lock(m, "append pipeline")
}

/// Feeds the queued appends to raft in order and hands each answer back, until raft's stream ends
/// (an error ends it) or the connection drops the queue.
async fn run(raft: RaftHandle, mut rx: mpsc::UnboundedReceiver<Queued>, ended: Arc<AtomicBool>) {
    // Raft answers in request order; the answer channels wait here in the same order.
    let waiting: Arc<Mutex<VecDeque<Waiting>>> = Arc::default();
    let queue = waiting.clone();
    let input = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(move |q: Queued| {
        lock(&queue).push_back((q.last, q.answer));
        q.rpc
    });
    let answers = raft.stream_append(input);
    let mut answers = std::pin::pin!(answers);
    while let Some(result) = answers.next().await {
        let Some((last, answer)) = lock(&waiting).pop_front() else {
            break;
        };
        let reply = match result {
            Ok(Ok(flushed)) if flushed == last => {
                Ok(encode_append_response(&AppendEntriesResponse::Success))
            }
            Ok(Ok(flushed)) => Ok(encode_append_response(
                &AppendEntriesResponse::PartialSuccess(flushed),
            )),
            Ok(Err(StreamAppendError::Conflict(_))) => {
                Ok(encode_append_response(&AppendEntriesResponse::Conflict))
            }
            Ok(Err(StreamAppendError::HigherVote(v))) => Ok(encode_append_response(
                &AppendEntriesResponse::HigherVote(v),
            )),
            Err(fatal) => Err((ErrorCode::BROKER_SHUTTING_DOWN, fatal.to_string())),
        };
        let _ = answer.send(reply);
    }
    ended.store(true, Ordering::Release);
    // Whatever raft took after the error is answered with an error (the sender dropped here).
    lock(&waiting).clear();
}
