//! The outbox of one WebSocket connection: a bounded queue of shared events (each encoded once
//! per protocol, by whichever connection writes it first),
//! and the control requests (close, ping) the connection's task waits on. Offering never
//! waits: a full queue is reported to the caller, which closes the connection as a slow
//! consumer.
//!
//! The queue is a `VecDeque` under a mutex plus one waker, not a tokio channel: an idle queue
//! allocates nothing, an offer is a push and at most one wake (a burst wakes the task once),
//! and the task takes everything queued in one lock. Measured in docs/benchmarks.md.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::core::close::Origin;
use crate::core::registry::{Offer, Outbox};

pub use crate::core::event::SharedEvent;

/// A drained queue whose buffer grew past this many frames gives the buffer back, so a burst
/// does not leave its peak allocated on every connection.
const KEEP_CAPACITY: usize = 64;

/// A request to close, with the code and reason to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    pub code: u16,
    pub reason: String,
    pub origin: Origin,
}

/// What the connection's task is asked to do besides writing queued frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Close(CloseRequest),
    Ping,
}

pub struct WsOutbox {
    queue: Mutex<Queue>,
    capacity: usize,
    /// The connection task, when it waits for frames.
    ready: AtomicWaker,
    close: Mutex<Option<CloseRequest>>,
    ping: AtomicBool,
    notify: Notify,
    /// How this connection's protocol says a close (see [`WsOutbox::with_dialect`]).
    dialect: Option<CloseDialect>,
}

/// Turns the core's close code and reason into the ones a protocol sends.
pub type CloseDialect = fn(u16, &str, Origin) -> (u16, String);

#[derive(Default)]
struct Queue {
    frames: VecDeque<SharedEvent>,
    /// The task has ended: offers are refused as [`Offer::Closed`].
    finished: bool,
}

impl WsOutbox {
    /// An outbox holding at most `capacity` frames.
    pub fn new(capacity: usize) -> Self {
        WsOutbox {
            queue: Mutex::new(Queue::default()),
            capacity,
            ready: AtomicWaker::new(),
            close: Mutex::new(None),
            ping: AtomicBool::new(false),
            notify: Notify::new(),
            dialect: None,
        }
    }

    /// An outbox whose close requests are translated by `dialect` when they are made (the
    /// Centrifugo endpoint's codes), so every path that closes sends the same code.
    pub fn with_dialect(capacity: usize, dialect: CloseDialect) -> Self {
        WsOutbox {
            dialect: Some(dialect),
            ..WsOutbox::new(capacity)
        }
    }

    /// Waits until frames are queued, then moves up to `max` of them, oldest first, into
    /// `batch`; returns how many. Only the connection's own task calls this.
    pub async fn recv_many(&self, batch: &mut Vec<SharedEvent>, max: usize) -> usize {
        poll_fn(|cx| {
            // Register before looking, so an offer between the look and the return wakes us.
            self.ready.register(cx.waker());
            let mut q = self.queue.lock();
            if q.frames.is_empty() {
                return Poll::Pending;
            }
            let n = q.frames.len().min(max);
            batch.extend(q.frames.drain(..n));
            if q.frames.is_empty() && q.frames.capacity() > KEEP_CAPACITY {
                q.frames = VecDeque::new();
            }
            Poll::Ready(n)
        })
        .await
    }

    /// Moves up to `max` queued frames into `batch` without waiting; returns how many. Only
    /// the connection's own task calls this.
    pub fn try_recv_many(&self, batch: &mut Vec<SharedEvent>, max: usize) -> usize {
        let mut q = self.queue.lock();
        let n = q.frames.len().min(max);
        batch.extend(q.frames.drain(..n));
        n
    }

    /// The task has ended: drop what is queued and refuse further offers.
    pub fn finish(&self) {
        let mut q = self.queue.lock();
        q.finished = true;
        q.frames = VecDeque::new();
    }

    /// Waits for the next control request; a close takes precedence over a ping.
    pub async fn control(&self) -> Control {
        loop {
            if let Some(req) = self.close.lock().clone() {
                return Control::Close(req);
            }
            if self.ping.swap(false, Ordering::AcqRel) {
                return Control::Ping;
            }
            self.notify.notified().await;
        }
    }

    /// Waits until a close is requested (pings are left for [`WsOutbox::control`]).
    pub async fn closed(&self) -> CloseRequest {
        loop {
            if let Some(req) = self.close.lock().clone() {
                return req;
            }
            self.notify.notified().await;
        }
    }

    /// The close requested so far, if any.
    pub fn close_request(&self) -> Option<CloseRequest> {
        self.close.lock().clone()
    }
}

impl Outbox for WsOutbox {
    type Item = SharedEvent;

    fn offer(&self, frame: &SharedEvent) -> Offer {
        let mut q = self.queue.lock();
        if q.finished {
            return Offer::Closed;
        }
        if q.frames.len() >= self.capacity {
            return Offer::Full;
        }
        let was_empty = q.frames.is_empty();
        q.frames.push_back(Arc::clone(frame));
        drop(q);
        // The task parks only after finding the queue empty under the lock, so a push onto a
        // non-empty queue will be seen without a wake: a burst wakes the task once.
        if was_empty {
            self.ready.wake();
        }
        Offer::Queued
    }

    fn close_from(&self, code: u16, reason: &str, origin: Origin) {
        let mut slot = self.close.lock();
        if slot.is_none() {
            let (code, reason) = match self.dialect {
                Some(d) => d(code, reason, origin),
                None => (code, reason.to_owned()),
            };
            *slot = Some(CloseRequest {
                code,
                reason,
                origin,
            });
            drop(slot);
            self.notify.notify_one();
        }
    }

    fn ping(&self) {
        self.ping.store(true, Ordering::Release);
        self.notify.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(s: &str) -> SharedEvent {
        crate::core::event::Shared::new(crate::core::event::Event::Unsubscribed {
            topic: s.into(),
            reference: None,
        })
    }

    #[tokio::test]
    async fn queues_in_order_up_to_capacity_then_refuses() {
        let outbox = WsOutbox::new(3);
        for s in ["a", "b", "c"] {
            assert_eq!(outbox.offer(&frame(s)), Offer::Queued);
        }
        assert_eq!(outbox.offer(&frame("d")), Offer::Full);
        let mut batch = Vec::new();
        assert_eq!(outbox.recv_many(&mut batch, 2).await, 2);
        assert_eq!(outbox.recv_many(&mut batch, 2).await, 1);
        let got: Vec<&str> = batch.iter().filter_map(|f| f.event().topic()).collect();
        assert_eq!(got, ["a", "b", "c"]);
        outbox.finish();
        assert_eq!(outbox.offer(&frame("e")), Offer::Closed);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_task_is_woken_by_an_offer_from_another_task() {
        let outbox = Arc::new(WsOutbox::new(1024));
        let waiting = tokio::spawn({
            let outbox = Arc::clone(&outbox);
            async move {
                let mut batch = Vec::new();
                let mut total = 0;
                while total < 500 {
                    total += outbox.recv_many(&mut batch, 128).await;
                }
                batch.len()
            }
        });
        for i in 0..500 {
            assert_eq!(outbox.offer(&frame(&i.to_string())), Offer::Queued);
            if i % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("the task was woken")
            .expect("the task did not panic");
        assert_eq!(got, 500);
    }
}
