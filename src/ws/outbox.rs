//! The outbox of one WebSocket connection: a bounded queue of shared, already-encoded frames,
//! and the control requests (close, ping) the connection's task waits on. Offering never waits: a full queue is
//! reported to the caller, which closes the connection as a slow consumer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};

use crate::core::registry::{Offer, Outbox};

/// One encoded JSON text frame, shared by all its recipients.
#[derive(Debug)]
pub struct Frame(pub Utf8Bytes);

impl From<String> for Frame {
    fn from(s: String) -> Self {
        Frame(Utf8Bytes::from(s))
    }
}

/// The queue item: one pointer, so an idle queue's first block costs 32 × 8 bytes.
pub type SharedFrame = Arc<Frame>;

/// A request to close, with the code and reason to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    pub code: u16,
    pub reason: String,
}

/// What the connection's task is asked to do besides writing queued frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Close(CloseRequest),
    Ping,
}

pub struct WsOutbox {
    tx: mpsc::Sender<SharedFrame>,
    close: Mutex<Option<CloseRequest>>,
    ping: AtomicBool,
    notify: Notify,
}

impl WsOutbox {
    /// An outbox holding at most `capacity` frames, and the receiving end for the task.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<SharedFrame>) {
        let (tx, rx) = mpsc::channel(capacity);
        (
            WsOutbox {
                tx,
                close: Mutex::new(None),
                ping: AtomicBool::new(false),
                notify: Notify::new(),
            },
            rx,
        )
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
    type Frame = SharedFrame;

    fn offer(&self, frame: &SharedFrame) -> Offer {
        match self.tx.try_send(Arc::clone(frame)) {
            Ok(()) => Offer::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Offer::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Offer::Closed,
        }
    }

    fn close(&self, code: u16, reason: &str) {
        let mut slot = self.close.lock();
        if slot.is_none() {
            *slot = Some(CloseRequest {
                code,
                reason: reason.to_owned(),
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
