//! This node's live state: its connection registry, metrics and lifecycle events, and the
//! three things that change a connection's membership: register, close and unregister. Every
//! delivery that reaches this node ends in [`LocalNode::deliver`], whichever broker carried it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::clock::now_ms;
use crate::core::ids::format_conn_id;
use crate::core::registry::{Conn, Outbox, Registry, Target, TooMany};
use crate::core::topics::{TopicLimits, Topics};
use crate::metrics::Metrics;
use crate::ws::outbox::{SharedFrame, WsOutbox};

/// A connection as this node holds it.
pub type WsConn = Conn<WsOutbox>;

/// Close code for a slow consumer (its send queue overflowed).
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Connected,
    Disconnected,
    Subscribed,
    Unsubscribed,
}

/// A lifecycle event, as WatchEvents streams it.
pub struct Event {
    pub kind: EventKind,
    pub conn: Arc<WsConn>,
    pub topic: Option<String>,
    pub close_code: u16,
    pub close_reason: String,
    pub at_ms: i64,
}

pub struct LocalNode {
    pub id: String,
    pub registry: Registry<WsOutbox>,
    pub topics: Topics<WsOutbox>,
    pub metrics: Metrics,
    pub started_at_ms: i64,
    events: broadcast::Sender<Arc<Event>>,
    next_seq: AtomicU64,
    msg_prefix: String,
    next_msg: AtomicU64,
}

impl LocalNode {
    /// `seq_start` is where connection sequences begin; `msg_prefix` makes server-made message
    /// ids unique across restarts; `event_buffer` is how far a watcher may fall behind.
    pub fn new(
        id: String,
        started_at_ms: i64,
        seq_start: u64,
        msg_prefix: String,
        event_buffer: usize,
        topic_limits: TopicLimits,
    ) -> Self {
        LocalNode {
            id,
            registry: Registry::new(),
            topics: Topics::new(topic_limits),
            metrics: Metrics::new(),
            started_at_ms,
            events: broadcast::channel(event_buffer.max(1)).0,
            next_seq: AtomicU64::new(seq_start),
            msg_prefix,
            next_msg: AtomicU64::new(1),
        }
    }

    /// A fresh connection id and its sequence.
    pub fn next_conn_id(&self) -> (String, u64) {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        (format_conn_id(&self.id, seq), seq)
    }

    /// A fresh server-made message id.
    pub fn next_message_id(&self) -> String {
        let n = self.next_msg.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:x}", self.msg_prefix)
    }

    pub fn subscribe_events(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    fn emit(&self, kind: EventKind, conn: &Arc<WsConn>, close_code: u16, close_reason: &str) {
        self.emit_topic(kind, conn, None, close_code, close_reason);
    }

    /// Tells watchers a connection subscribed to or left `topic`.
    pub fn emit_topic_event(&self, kind: EventKind, conn: &Arc<WsConn>, topic: &str) {
        self.emit_topic(kind, conn, Some(topic), 0, "");
    }

    fn emit_topic(
        &self,
        kind: EventKind,
        conn: &Arc<WsConn>,
        topic: Option<&str>,
        close_code: u16,
        close_reason: &str,
    ) {
        // Building an event costs an allocation: only when someone watches.
        if self.events.receiver_count() == 0 {
            return;
        }
        let _ = self.events.send(Arc::new(Event {
            kind,
            conn: Arc::clone(conn),
            topic: topic.map(str::to_owned),
            close_code,
            close_reason: close_reason.to_owned(),
            at_ms: now_ms(),
        }));
    }

    /// Makes a connection reachable by every index, and tells watchers; refused when its
    /// user already has `max_per_user` connections (0: no limit).
    pub fn register(&self, conn: Arc<WsConn>, max_per_user: usize) -> Result<(), TooMany> {
        self.registry
            .insert_limited(Arc::clone(&conn), max_per_user)?;
        self.emit(EventKind::Connected, &conn, 0, "");
        Ok(())
    }

    /// Takes a connection out of the registry (if still there) and tells watchers. Returns
    /// false when it was already gone.
    pub fn unregister(&self, seq: u64, code: u16, reason: &str) -> bool {
        match self.registry.remove(seq) {
            Some(conn) => {
                for topic in self.topics.leave_all(&conn) {
                    self.emit_topic_event(EventKind::Unsubscribed, &conn, &topic);
                }
                self.metrics
                    .disconnects
                    .get_or_create(&crate::metrics::CloseLabels { code })
                    .inc();
                self.emit(EventKind::Disconnected, &conn, code, reason);
                true
            }
            None => false,
        }
    }

    /// Closes a connection on the server's initiative: it leaves every index at once and its
    /// task sends the close frame.
    pub fn close(&self, conn: &Arc<WsConn>, code: u16, reason: &str) -> bool {
        conn.outbox.close(code, reason);
        self.unregister(conn.info.seq, code, reason)
    }

    /// Closes slow consumers found by a delivery (their queue was full).
    pub fn close_slow(&self, conns: &[Arc<WsConn>]) {
        if conns.is_empty() {
            return;
        }
        self.metrics.messages_dropped.inc_by(conns.len() as u64);
        for conn in conns {
            self.close(conn, CLOSE_SLOW_CONSUMER, "slow consumer");
        }
    }

    /// Queues an encoded frame to this node's connections named by `target`; closes the slow
    /// consumers it finds. Returns how many connections it was queued to.
    pub fn deliver(&self, target: Target<'_>, frame: &SharedFrame) -> u32 {
        let d = self.registry.deliver(target, frame);
        self.metrics.messages_sent.inc_by(u64::from(d.queued));
        self.close_slow(&d.overflowed);
        d.queued
    }
}
