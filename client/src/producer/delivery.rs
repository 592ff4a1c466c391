//! What a caller gets back for an accepted record: a [`DeliveryFuture`] that resolves to the
//! record's [`RecordMetadata`] or to the error that failed its batch.
//!
//! One [`Completion`] per batch is shared by the futures of all its records (each knows its index
//! in the batch), so a record costs one reference count here, nothing more. This module owns the
//! completion and the wakers waiting on it. It never decides an outcome: the sender completes a
//! batch once, with an offset or an error, and this module only hands that to the futures.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use crate::connection::lock;
use crate::error::Result;

/// Where an acknowledged record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    pub topic: Arc<str>,
    pub partition: u32,
    /// The record's offset; `None` with [`Acks::None`](crate::Acks::None), where the broker does
    /// not answer.
    pub offset: Option<u64>,
}

/// The outcome of one batch, shared by the delivery futures of its records.
pub(super) struct Completion {
    topic: Arc<str>,
    partition: u32,
    /// Base offset (None for acks none), or the error of the whole batch. Set once; a resolved
    /// future is polled without taking the lock.
    result: OnceLock<Result<Option<u64>>>,
    /// Wakers of the futures waiting, each with the number of futures sharing it: consecutive
    /// futures polled with the same waker share one entry, so a task waiting on many records of a
    /// batch registers its waker once, not once per record.
    pub(super) wakers: Mutex<Vec<(Waker, u32)>>,
}

impl Completion {
    pub(super) fn new(topic: Arc<str>, partition: u32) -> Arc<Completion> {
        Arc::new(Completion {
            topic,
            partition,
            result: OnceLock::new(),
            wakers: Mutex::new(Vec::new()),
        })
    }

    pub(super) fn complete(&self, result: Result<Option<u64>>) {
        if self.result.set(result).is_err() {
            return;
        }
        // A poll that saw no result under the lock registered its waker before this takes them.
        let wakers = std::mem::take(&mut *lock(&self.wakers));
        for (w, _) in wakers {
            w.wake();
        }
    }
}

/// Registers `waker` in `wakers`, sharing the last entry if it wakes the same task; returns the
/// entry's index.
fn register_waker(wakers: &mut Vec<(Waker, u32)>, waker: &Waker) -> usize {
    if let Some((last, shared)) = wakers.last_mut() {
        if last.will_wake(waker) {
            *shared += 1;
            return wakers.len() - 1;
        }
    }
    wakers.push((waker.clone(), 1));
    wakers.len() - 1
}

/// Resolves when the record is acknowledged (or finally fails). Dropping it does not cancel the
/// record.
pub struct DeliveryFuture {
    pub(super) completion: Arc<Completion>,
    index: u32,
    /// Our slot in the completion's waker list, once registered.
    slot: Option<usize>,
}

impl std::fmt::Debug for DeliveryFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryFuture")
            .field("topic", &self.completion.topic)
            .field("partition", &self.completion.partition)
            .field("index", &self.index)
            .finish()
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(r) = this.completion.result.get() {
            return Poll::Ready(this.output(r));
        }
        let mut wakers = lock(&this.completion.wakers);
        // Checked again under the lock: `complete` sets the result before taking the wakers.
        if let Some(r) = this.completion.result.get() {
            drop(wakers);
            return Poll::Ready(this.output(r));
        }
        match this.slot {
            Some(i) if i < wakers.len() => {
                let (w, shared) = &mut wakers[i];
                if !w.will_wake(cx.waker()) {
                    if *shared == 1 {
                        *w = cx.waker().clone();
                    } else {
                        // Other futures still wait on that waker: leave it, take a new entry.
                        *shared -= 1;
                        this.slot = Some(register_waker(&mut wakers, cx.waker()));
                    }
                }
            }
            _ => this.slot = Some(register_waker(&mut wakers, cx.waker())),
        }
        Poll::Pending
    }
}

impl DeliveryFuture {
    /// The future of the record at `index` in the batch that `completion` resolves.
    pub(super) fn new(completion: Arc<Completion>, index: u32) -> DeliveryFuture {
        DeliveryFuture {
            completion,
            index,
            slot: None,
        }
    }

    /// Whether `self` and `other` belong to the same batch, and so resolve at the same moment with
    /// the same outcome. A caller waiting on many futures may poll one of each run of same-batch
    /// futures to register its waker, rather than every one.
    pub fn same_batch(&self, other: &DeliveryFuture) -> bool {
        Arc::ptr_eq(&self.completion, &other.completion)
    }

    /// The record's outcome if it is already known, without waiting or registering a waker: its
    /// offset (`None` with [`Acks::None`](crate::Acks::None)) or its error; `None` while it is
    /// pending. Cheaper than a poll for a caller that only needs the offset (no [`RecordMetadata`]
    /// is built).
    pub fn result_now(&self) -> Option<Result<Option<u64>>> {
        let r = self.completion.result.get()?;
        Some(match r {
            Ok(base) => Ok(base.map(|b| b + u64::from(self.index))),
            Err(e) => Err(e.clone()),
        })
    }

    fn output(&self, result: &Result<Option<u64>>) -> Result<RecordMetadata> {
        match result {
            Ok(base) => Ok(RecordMetadata {
                topic: self.completion.topic.clone(),
                partition: self.completion.partition,
                offset: base.map(|b| b + u64::from(self.index)),
            }),
            Err(e) => Err(e.clone()),
        }
    }
}
