//! The collector of one producer's delivery futures (see `produce`'s module doc): it takes them in
//! groups, waits on every outstanding group at once (a slot per group, each with its own waker),
//! and times each record from its send reading to the moment its group is seen resolved, into an
//! HDR histogram. It never sends a record.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use hdrhistogram::Histogram;
use tokio::sync::mpsc;

use super::produce::{histogram, micros, Failure, Sent, GROUP};
use super::Error;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Slots whose futures were woken, and the sender task to wake if it is waiting.
#[derive(Debug, Default)]
struct ReadyQueue {
    /// Set with every push to `ready`: the sender checks it without taking the lock.
    any: AtomicBool,
    ready: Mutex<Vec<usize>>,
    task: Mutex<Option<Waker>>,
}

/// The waker of one slot: marks the slot ready and wakes the sender task if it waits.
#[derive(Debug)]
struct SlotWaker {
    slot: usize,
    queue: Arc<ReadyQueue>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        lock(&self.queue.ready).push(self.slot);
        self.queue.any.store(true, Ordering::Release);
        let task = lock(&self.queue.task).take();
        if let Some(w) = task {
            w.wake();
        }
    }
}

/// What a collector measured.
#[derive(Debug)]
pub(super) struct Collected {
    pub(super) latency: Histogram<u64>,
    pub(super) last_done: Option<Instant>,
}

/// Times one producer's delivery futures as they resolve. It lives in the sender task (no
/// hand-off to another task, which costs a cross-thread wake-up): the sender gives it futures a
/// group at a time and lets it look at the woken groups every group and whenever it waits.
pub(super) struct Collector {
    /// The group being gathered.
    group: Vec<Sent>,
    /// Groups of outstanding futures with their send times; `None` = free slot. A group shares one
    /// waker (the client registers a waker once for consecutive futures of a batch polled with it).
    slots: Vec<Option<Vec<Sent>>>,
    /// One waker per slot, made once and reused.
    wakers: Vec<Waker>,
    free: Vec<usize>,
    live: usize,
    queue: Arc<ReadyQueue>,
    /// Whether the sender task's waker is registered in `queue` (it is only while it waits).
    registered: bool,
    /// Set in a sender whose groups are timed by a collector task: groups go there.
    forward: Option<mpsc::UnboundedSender<Vec<Sent>>>,
    /// Where the first failed delivery goes.
    fail: Option<mpsc::UnboundedSender<Failure>>,
    pub(super) out: Collected,
}

impl Collector {
    pub(super) fn new(fail: mpsc::UnboundedSender<Failure>) -> Result<Collector, Error> {
        Ok(Collector {
            group: Vec::with_capacity(GROUP),
            slots: Vec::new(),
            wakers: Vec::new(),
            free: Vec::new(),
            live: 0,
            queue: Arc::new(ReadyQueue::default()),
            registered: false,
            forward: None,
            fail: Some(fail),
            out: Collected {
                latency: histogram()?,
                last_done: None,
            },
        })
    }

    /// A collector that only gathers groups and sends them to a collector task ([`Collector::run`]).
    /// Its failure channel is unused: the collector task reports failures.
    pub(super) fn forwarding(
        tx: mpsc::UnboundedSender<Vec<Sent>>,
        fail: mpsc::UnboundedSender<Failure>,
    ) -> Result<Collector, Error> {
        Ok(Collector {
            forward: Some(tx),
            ..Collector::new(fail)?
        })
    }

    /// A collector task: times the groups that come through `rx` until it closes and every future
    /// has resolved.
    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Vec<Sent>>) -> Collected {
        let mut closed = false;
        std::future::poll_fn(|cx| {
            // Registered before looking at anything, so no wake-up is lost.
            self.collect(Some(cx));
            while !closed {
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(group)) => self.insert(group),
                    Poll::Ready(None) => closed = true,
                    Poll::Pending => break,
                }
            }
            self.collect(Some(cx));
            if closed && self.live == 0 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        self.out
    }

    pub(super) fn push(&mut self, sent: Sent) {
        self.group.push(sent);
        if self.group.len() >= GROUP {
            self.hand_over();
            self.collect(None);
        }
    }

    /// Starts watching the gathered group; done before anything that may wait, so no future sits
    /// unwatched while its batch completes.
    pub(super) fn hand_over(&mut self) {
        if !self.group.is_empty() {
            let group = std::mem::replace(&mut self.group, Vec::with_capacity(GROUP));
            match &self.forward {
                // The collector task lives until this sender is dropped, so this cannot fail.
                Some(tx) => drop(tx.send(group)),
                None => self.insert(group),
            }
        }
    }

    /// Times the futures of every woken group. With `cx` (the sender is about to wait), the task's
    /// waker is registered first, so no wake-up is lost; without, a registration is withdrawn (the
    /// sender is running and will look again).
    pub(super) fn collect(&mut self, cx: Option<&Context<'_>>) {
        if self.forward.is_some() {
            return;
        }
        match cx {
            Some(cx) => {
                let mut task = lock(&self.queue.task);
                if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *task = Some(cx.waker().clone());
                }
                self.registered = true;
            }
            None if self.registered => {
                lock(&self.queue.task).take();
                self.registered = false;
            }
            None => {}
        }
        while self.queue.any.swap(false, Ordering::Acquire) {
            let ready = std::mem::take(&mut *lock(&self.queue.ready));
            for slot in ready {
                self.poll_slot(slot);
            }
        }
    }

    /// Waits until every future handed over has resolved.
    pub(super) async fn drain(&mut self) {
        self.hand_over();
        if self.forward.is_some() {
            return;
        }
        std::future::poll_fn(|cx| {
            self.collect(Some(cx));
            if self.live == 0 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    pub(super) fn insert(&mut self, group: Vec<Sent>) {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = self.slots.len();
                self.slots.push(None);
                self.wakers.push(Waker::from(Arc::new(SlotWaker {
                    slot,
                    queue: self.queue.clone(),
                })));
                slot
            }
        };
        self.slots[slot] = Some(group);
        self.live += 1;
        self.poll_slot(slot);
    }

    /// Polls the futures of a group; times and drops those that resolved. The clock is read once
    /// per call, when the first resolved future is found: futures that resolve together (records
    /// of one batch) are observed at the same moment.
    pub(super) fn poll_slot(&mut self, slot: usize) {
        // A stale wake (the slot was freed, or reused by a later group) polls harmlessly.
        let Some(group) = self.slots[slot].as_mut() else {
            return;
        };
        let mut cx = Context::from_waker(&self.wakers[slot]);
        let mut now = None;
        // Equal latencies in a row (records sent after one clock read, resolved together) are
        // recorded at once: (microseconds, count).
        let mut run: Option<(u64, u64)> = None;
        // Pending futures are moved to the front, in order; `last_pending` is the last of them. A
        // future of the same batch as it is pending too and is not polled (one registered waker
        // per batch is enough: they resolve together).
        let mut kept = 0;
        let mut last_pending: Option<usize> = None;
        for i in 0..group.len() {
            let same = last_pending.is_some_and(|j| group[j].1.same_batch(&group[i].1));
            // A resolved future is read without a poll (which would build record metadata); a
            // pending one is polled to register the slot's waker.
            let result = match group[i].1.result_now() {
                Some(r) => Some(r),
                None if same => None,
                None => match Pin::new(&mut group[i].1).poll(&mut cx) {
                    Poll::Ready(r) => Some(r.map(|m| m.offset)),
                    Poll::Pending => None,
                },
            };
            let Some(result) = result else {
                group.swap(kept, i);
                if !same {
                    last_pending = Some(kept);
                }
                kept += 1;
                continue;
            };
            let now = *now.get_or_insert_with(Instant::now);
            match result {
                Ok(_) => {
                    let us = micros(now.saturating_duration_since(group[i].0));
                    match &mut run {
                        Some((v, n)) if *v == us => *n += 1,
                        _ => {
                            if let Some((v, n)) = run.replace((us, 1)) {
                                self.out.latency.saturating_record_n(v, n);
                            }
                        }
                    }
                }
                Err(e) => {
                    if let Some(fail) = self.fail.take() {
                        let _ = fail.send(Failure::Delivery(e));
                    }
                }
            }
        }
        group.truncate(kept);
        if let Some((v, n)) = run {
            self.out.latency.saturating_record_n(v, n);
        }
        if now.is_some() {
            self.out.last_done = now;
        }
        if group.is_empty() {
            self.slots[slot] = None;
            self.free.push(slot);
            self.live -= 1;
        }
    }
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("live", &self.live)
            .field("gathered", &self.group.len())
            .finish_non_exhaustive()
    }
}
