//! This node's live state: its connection registry, its local topic table, metrics and
//! lifecycle events, and the things that change a connection's membership: register, close
//! and unregister. Every delivery that reaches this node ends in [`LocalNode::deliver`] or
//! [`LocalNode::on_publication`], whichever broker carried it; every cluster-wide question is
//! answered here for this node's share ([`LocalNode::list`], [`LocalNode::stats_part`], ...).

pub mod outbox;
pub mod refusals;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::broadcast;

use crate::clock::now_ms;
use crate::core::event::{Event, Presence, Shared, SharedEvent};
use crate::core::ids::{format_conn_id, parse_conn_id};
use crate::core::model::{
    name_hash, ConnEvent, ConnEventKind, ConnSnapshot, Cursor, ListFilter, ListPage,
    PresenceCounts, PresenceEntry, StatsPart, Who,
};
use crate::core::registry::{Conn, Filter, Outbox, Registry, Target, TooMany};
use crate::core::stream;
use crate::core::topic_table::{Arrival, LivePosition, Topics};
use crate::metrics::Metrics;
use outbox::WsOutbox;

/// A connection as this node holds it.
pub type WsConn = Conn<WsOutbox>;

/// Where this node's events go besides its own watchers (other nodes' watchers).
pub type EventSink = Box<dyn Fn(&ConnEvent) + Send + Sync>;
/// Where join and leave notices of a topic go (this node's listeners, or every node's): the
/// notice (made only when someone may listen, so the sink is given a maker).
pub type PresenceSink = Box<dyn Fn(&str, &dyn Fn() -> Presence) + Send + Sync>;

pub struct LocalNode {
    pub id: String,
    pub registry: Registry<WsOutbox>,
    pub topics: Topics<WsOutbox>,
    pub metrics: Metrics,
    /// Why clients were refused, for the log (rate-limited).
    pub refusals: refusals::RefusalLog,
    pub started_at_ms: i64,
    events: broadcast::Sender<Arc<ConnEvent>>,
    /// Set while a watcher on another node wants this node's events.
    export_events: AtomicBool,
    event_sink: OnceLock<EventSink>,
    presence_sink: OnceLock<PresenceSink>,
    on_leave: OnceLock<LeaveHook>,
    next_seq: AtomicU64,
    msg_prefix: String,
    next_msg: AtomicU64,
}

/// The event that tells a subscriber its position in a topic was lost.
pub fn position_lost(topic: &str) -> impl Fn(u64, &str) -> SharedEvent + '_ {
    move |offset, epoch| Shared::new(Event::position_lost(topic, offset, epoch))
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
    ) -> Self {
        LocalNode {
            id,
            registry: Registry::new(),
            topics: Topics::new(),
            metrics: Metrics::new(),
            refusals: Default::default(),
            started_at_ms,
            events: broadcast::channel(event_buffer.max(1)).0,
            export_events: AtomicBool::new(false),
            event_sink: OnceLock::new(),
            presence_sink: OnceLock::new(),
            on_leave: OnceLock::new(),
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

    pub fn subscribe_events(&self) -> broadcast::Receiver<Arc<ConnEvent>> {
        self.events.subscribe()
    }

    /// Watchers on this node right now.
    pub fn watchers(&self) -> usize {
        self.events.receiver_count()
    }

    /// Where events go when another node watches (set once by a cluster broker).
    pub fn set_event_sink(&self, sink: EventSink) {
        let _ = self.event_sink.set(sink);
    }

    /// Sets where join and leave notices go (once, by the cluster family).
    pub fn set_presence_sink(&self, sink: PresenceSink) {
        let _ = self.presence_sink.set(sink);
    }

    /// Queues a join or leave notice to this node's listeners of its topic.
    pub fn offer_listeners(&self, notice: Presence) {
        let topic = notice.topic.clone();
        let slow = self
            .topics
            .offer_listeners(&topic, &Shared::new(Event::Presence(notice)));
        self.close_slow(&slow);
    }

    /// Whether this node's events are sent to the other nodes' watchers.
    pub fn set_export_events(&self, on: bool) {
        self.export_events.store(on, Ordering::Release);
    }

    /// An event from another node, for this node's watchers.
    pub fn inject_event(&self, ev: ConnEvent) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(Arc::new(ev));
        }
    }

    /// A user came online or went offline: told to this node's watchers (other nodes hear it
    /// from the engine that saw the transition).
    pub fn emit_user(&self, kind: ConnEventKind, user: &str, at_ms: i64) {
        self.inject_event(ConnEvent::user(kind, user, &self.id, at_ms));
    }

    fn emit(&self, kind: ConnEventKind, conn: &WsConn, close_code: u16, close_reason: &str) {
        self.emit_topic(kind, conn, None, close_code, close_reason);
    }

    /// A connection subscribed to or left a topic: tells watchers, and the topic's join/leave
    /// listeners wherever they are.
    pub fn emit_topic_event(&self, kind: ConnEventKind, conn: &WsConn, topic: &str) {
        self.emit_topic(kind, conn, Some(topic), 0, "");
        if let Some(sink) = self.presence_sink.get() {
            let joined = kind == ConnEventKind::Subscribed;
            sink(topic, &|| Presence {
                joined,
                topic: topic.into(),
                user_id: conn.info.user_id.as_str().into(),
                connection_id: conn.info.id.as_str().into(),
            });
        }
    }

    fn emit_topic(
        &self,
        kind: ConnEventKind,
        conn: &WsConn,
        topic: Option<&str>,
        close_code: u16,
        close_reason: &str,
    ) {
        let export = self.export_events.load(Ordering::Acquire);
        // Building an event costs allocations: only when someone watches.
        if self.events.receiver_count() == 0 && !export {
            return;
        }
        let ev = ConnEvent {
            kind,
            conn: self.snapshot(conn),
            topic: topic.map(str::to_owned),
            close_code,
            close_reason: close_reason.to_owned(),
            at_ms: now_ms(),
        };
        if export {
            if let Some(sink) = self.event_sink.get() {
                sink(&ev);
            }
        }
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(Arc::new(ev));
        }
    }

    /// A connection as the API shows it.
    pub fn snapshot(&self, c: &WsConn) -> ConnSnapshot {
        ConnSnapshot {
            id: c.info.id.clone(),
            node_id: self.id.clone(),
            seq: c.info.seq,
            user_id: c.info.user_id.clone(),
            roles: c.info.roles.clone(),
            topics: c.topics(),
            metadata: c.info.metadata.clone(),
            connected_at_ms: c.info.connected_at_ms,
            expires_at_ms: c.expires_at_ms(),
            remote_addr: c.info.remote_addr.clone(),
            user_agent: c.info.user_agent.clone(),
            messages_sent: c.messages_sent(),
            messages_dropped: c.messages_dropped(),
            protocol: c.info.protocol.as_str().into(),
        }
    }

    /// Makes a connection reachable by every index, and tells watchers; refused when its
    /// user already has `max_per_user` connections (0: no limit).
    pub fn register(&self, conn: Arc<WsConn>, max_per_user: usize) -> Result<(), TooMany> {
        self.registry
            .insert_limited(Arc::clone(&conn), max_per_user)?;
        self.emit(ConnEventKind::Connected, &conn, 0, "");
        Ok(())
    }

    /// Takes a connection out of the registry (if still there) and tells watchers. Returns
    /// it to the one caller that removed it, with the topics it left.
    pub fn unregister(
        &self,
        seq: u64,
        code: u16,
        reason: &str,
    ) -> Option<(Arc<WsConn>, Vec<String>)> {
        let conn = self.registry.remove(seq)?;
        let topics = self.topics.leave_all(&conn);
        if let Some(release) = self.on_leave.get() {
            release(&conn.info.user_id, interests(&conn, &topics));
        }
        for topic in topics.iter().filter(|t| stream::is_topic(t)) {
            self.emit_topic_event(ConnEventKind::Unsubscribed, &conn, topic);
        }
        self.metrics
            .disconnects
            .get_or_create(&crate::metrics::CloseLabels { code })
            .inc();
        self.emit(ConnEventKind::Disconnected, &conn, code, reason);
        Some((conn, topics))
    }

    /// Closes a connection on the server's initiative: it leaves every index at once and its
    /// task sends the close frame.
    pub fn close(&self, conn: &WsConn, code: u16, reason: &str) -> bool {
        self.close_from(conn, code, reason, crate::core::close::Origin::Server)
    }

    /// [`LocalNode::close`], saying who asked.
    pub fn close_from(
        &self,
        conn: &WsConn,
        code: u16,
        reason: &str,
        origin: crate::core::close::Origin,
    ) -> bool {
        conn.outbox.close_from(code, reason, origin);
        let closed = self.unregister(conn.info.seq, code, reason).is_some();
        if closed && origin == crate::core::close::Origin::Server {
            self.log_close(conn, code, reason);
        }
        closed
    }

    /// Logs a close the server decided on when it is a refusal (see [`refusals`]).
    pub fn log_close(&self, conn: &WsConn, code: u16, reason: &str) {
        if crate::core::close::is_refusal(code) {
            self.refused(refusals::Refusal {
                what: "connection closed",
                code,
                reason,
                remote_addr: &conn.info.remote_addr,
                user_id: Some(&conn.info.user_id),
            });
        }
    }

    /// Logs a refusal now (rate-limited).
    pub fn refused(&self, r: refusals::Refusal<'_>) {
        self.refusals.record(r, now_ms());
    }

    /// Closes slow consumers found by a delivery (their queue was full).
    pub fn close_slow(&self, conns: &[Arc<WsConn>]) {
        if conns.is_empty() {
            return;
        }
        self.metrics.messages_dropped.inc_by(conns.len() as u64);
        for conn in conns {
            self.close(conn, crate::core::close::SLOW_CONSUMER, "slow consumer");
        }
    }

    /// Queues an event to this node's connections `who` names (a user, a role, one connection
    /// or everyone); `None` when it names a connection this node does not hold, or a topic
    /// (whose subscribers get publications, through [`LocalNode::on_publication`]).
    pub fn deliver_to(&self, who: &Who, event: &SharedEvent) -> Option<u32> {
        let target = match who {
            Who::User(u) => Target::User(u),
            Who::Role(r) => Target::Role(r),
            Who::All => Target::All,
            Who::Connection(id) => Target::Connection(self.get(id)?.info.seq),
            Who::Topic(_) => return None,
        };
        Some(self.deliver(target, event))
    }

    /// Queues an event to this node's connections named by `target`; closes the slow
    /// consumers it finds. Returns how many connections it was queued to.
    pub fn deliver(&self, target: Target<'_>, event: &SharedEvent) -> u32 {
        let d = self.registry.deliver(target, event);
        self.metrics.messages_sent.inc_by(u64::from(d.queued));
        self.close_slow(&d.overflowed);
        d.queued
    }

    /// A live publication reaching this node: queued to the topic's subscribers here.
    pub fn on_publication(
        &self,
        topic: &str,
        live: LivePosition<'_>,
        event: &SharedEvent,
    ) -> Arrival<WsOutbox> {
        if !stream::is_topic(topic) {
            // Its user's parked connections join first, so they get it too.
            let overflowed = self
                .topics
                .adopt(topic, &self.registry, position_lost(topic));
            self.close_slow(&overflowed);
        }
        let a = self
            .topics
            .on_publication(topic, live, event, position_lost(topic));
        self.metrics.messages_sent.inc_by(u64::from(a.queued));
        self.close_slow(&a.overflowed);
        a
    }

    /// A live connection of this node by id.
    pub fn get(&self, connection_id: &str) -> Option<Arc<WsConn>> {
        parse_conn_id(connection_id)
            .filter(|(node, _)| *node == self.id)
            .and_then(|(_, seq)| self.registry.get(seq))
    }

    /// This node's page of a listing: its connections after `after` in (node id, sequence)
    /// order, at most `size`, and how many match in all.
    pub fn list(&self, filter: &ListFilter, after: Option<&Cursor>, size: usize) -> ListPage {
        let f = Filter {
            user: filter.user.as_deref(),
            role: filter.role.as_deref(),
            topic: filter.topic.as_deref(),
        };
        let (start, none): (Option<u64>, bool) = match after {
            None => (None, false),
            Some((node, seq)) => match self.id.as_str().cmp(node.as_str()) {
                std::cmp::Ordering::Greater => (None, false),
                std::cmp::Ordering::Equal => (Some(*seq), *seq == u64::MAX),
                std::cmp::Ordering::Less => (None, true),
            },
        };
        let page = match (f.topic, f.user) {
            // A topic alone (or with a role): page over its subscribers, already in order,
            // rather than over every connection.
            (Some(topic), None) => {
                if none {
                    let all = self.topics.page(topic, f.role, None, 1);
                    return ListPage {
                        items: Vec::new(),
                        total: all.total as u64,
                        next: None,
                    };
                }
                self.topics.page(topic, f.role, start, size)
            }
            _ => {
                if none {
                    let all = self.registry.list(f, None, 1);
                    return ListPage {
                        items: Vec::new(),
                        total: all.total as u64,
                        next: None,
                    };
                }
                self.registry.list(f, start, size)
            }
        };
        ListPage {
            items: page.items.iter().map(|c| self.snapshot(c)).collect(),
            total: page.total as u64,
            next: page.next_after.map(|s| (self.id.clone(), s)),
        }
    }

    /// The subscribers of `topic` on this node.
    pub fn presence(&self, topic: &str) -> Vec<PresenceEntry> {
        self.topics
            .subscribers(topic)
            .iter()
            .map(|c| PresenceEntry {
                connection_id: c.info.id.clone(),
                user_id: c.info.user_id.clone(),
            })
            .collect()
    }

    /// This node's counts of `topic`'s subscribers (no one listed).
    pub fn presence_counts(&self, topic: &str) -> PresenceCounts {
        let (connections, users) = self.topics.counts(topic);
        PresenceCounts { connections, users }
    }

    /// This node's share of GetStats.
    pub fn stats_part(&self) -> StatsPart {
        let mut users = Vec::new();
        self.registry
            .for_each(|c| users.push(name_hash(&c.info.user_id)));
        users.sort_unstable();
        users.dedup();
        StatsPart {
            node_id: self.id.clone(),
            connections: self.registry.len() as u64,
            users,
            topics: (self.topics.names().iter())
                .filter(|t| stream::is_topic(t))
                .map(|t| name_hash(t))
                .collect(),
            messages_sent: self.metrics.messages_sent.get(),
            messages_dropped: self.metrics.messages_dropped.get(),
            started_at_ms: self.started_at_ms,
        }
    }

    /// Closes every connection (shutdown).
    pub fn close_all(&self, code: u16, reason: &str) {
        for conn in self.registry.all() {
            self.close(&conn, code, reason);
        }
    }

    /// What to do with the interests of a connection that left (set once by the hub).
    pub fn set_on_leave(&self, f: LeaveHook) {
        let _ = self.on_leave.set(f);
    }
}

/// Called with the interests a leaving connection no longer needs.
pub type LeaveHook = Box<dyn Fn(&str, Vec<Who>) + Send + Sync>;

/// The interests a connection holds: itself (which a cluster counts, so that it can answer
/// for the connection without asking its node), its user, its roles and the given topics.
pub fn interests(conn: &WsConn, topics: &[String]) -> Vec<Who> {
    let mut v = Vec::with_capacity(2 + conn.info.roles.len() + topics.len());
    v.push(Who::Connection(conn.info.id.clone()));
    v.push(Who::User(conn.info.user_id.clone()));
    let mut roles: Vec<&String> = conn.info.roles.iter().collect();
    roles.sort();
    roles.dedup();
    v.extend(roles.into_iter().map(|r| Who::Role(r.clone())));
    v.extend(topics.iter().map(|t| Who::Topic(t.clone())));
    v
}

/// A connection that is only its outbox (no socket), for the unit tests of this node and the
/// hub: `(id, seq)` from [`LocalNode::next_conn_id`], one role, a queue of `queue` events.
#[cfg(test)]
pub(crate) fn test_conn(
    (id, seq): (String, u64),
    user: &str,
    role: &str,
    queue: usize,
) -> Arc<WsConn> {
    use crate::core::registry::{ConnInfo, Protocol};
    Arc::new(Conn::new(
        ConnInfo {
            id,
            seq,
            user_id: user.into(),
            roles: vec![role.into()],
            topic_patterns: vec![],
            metadata: Default::default(),
            connected_at_ms: 0,
            remote_addr: String::new(),
            user_agent: String::new(),
            protocol: Protocol::Native,
        },
        None,
        WsOutbox::new(queue),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::Message;
    fn node() -> LocalNode {
        LocalNode::new("n1".into(), 0, 1, "m".into(), 16)
    }

    fn conn(node: &LocalNode, user: &str) -> Arc<WsConn> {
        test_conn(node.next_conn_id(), user, "r", 2)
    }

    fn event() -> SharedEvent {
        Shared::new(Event::Message(Message {
            kind: "t".into(),
            payload: bytes::Bytes::from_static(b"1"),
            id: "m".into(),
            ts_ms: 0,
        }))
    }

    #[test]
    fn delivers_to_whom_it_holds_and_nowhere_else() {
        let n = node();
        let (a, b) = (conn(&n, "ann"), conn(&n, "bob"));
        n.register(Arc::clone(&a), 0).unwrap();
        n.register(Arc::clone(&b), 0).unwrap();
        let e = event();
        assert_eq!(n.deliver_to(&Who::User("ann".into()), &e), Some(1));
        assert_eq!(n.deliver_to(&Who::Role("r".into()), &e), Some(2));
        assert_eq!(
            n.deliver_to(&Who::Connection(b.info.id.clone()), &e),
            Some(1)
        );
        assert_eq!(n.deliver_to(&Who::User("nobody".into()), &e), Some(0));
        let elsewhere = format!("n2.{:016x}", b.info.seq);
        assert_eq!(n.deliver_to(&Who::Connection(elsewhere), &e), None);
        assert_eq!(n.deliver_to(&Who::Topic("t".into()), &e), None);
        // Both queues (2 each) are full; ann's task takes hers. The next delivery reaches ann
        // and closes bob as a slow consumer.
        a.outbox.try_recv_many(&mut Vec::new(), usize::MAX);
        assert_eq!(n.deliver_to(&Who::All, &e), Some(1));
        assert_eq!(b.outbox.close_request().map(|r| r.code), Some(4008));
        assert!(n.get(&b.info.id).is_none());
        assert_eq!(n.metrics.messages_dropped.get(), 1);
    }

    #[test]
    fn watchers_see_connects_and_disconnects_with_their_codes() {
        let n = node();
        let mut events = n.subscribe_events();
        let c = conn(&n, "ann");
        n.register(Arc::clone(&c), 1).unwrap();
        assert!(n.register(conn(&n, "ann"), 1).is_err(), "one per user");
        assert!(n.close(&c, 4100, "bye"));
        assert!(!n.close(&c, 4100, "again"), "closed once");
        let first = events.try_recv().unwrap();
        let second = events.try_recv().unwrap();
        assert_eq!(
            (
                first.kind,
                second.kind,
                second.close_code,
                second.close_reason.as_str()
            ),
            (
                ConnEventKind::Connected,
                ConnEventKind::Disconnected,
                4100,
                "bye"
            )
        );
        assert!(events.try_recv().is_err());
        assert_eq!(n.stats_part().connections, 0);
    }

    #[test]
    fn a_listing_pages_in_sequence_order_and_counts_all() {
        let n = node();
        let conns: Vec<_> = (0..5).map(|i| conn(&n, &format!("u{}", i % 2))).collect();
        for c in &conns {
            n.register(Arc::clone(c), 0).unwrap();
        }
        let all = ListFilter::default();
        let first = n.list(&all, None, 2);
        assert_eq!((first.items.len(), first.total), (2, 5));
        let next = first.next.clone().expect("more");
        let rest = n.list(&all, Some(&next), 10);
        let seqs: Vec<u64> = first
            .items
            .iter()
            .chain(&rest.items)
            .map(|c| c.seq)
            .collect();
        let want: Vec<u64> = conns.iter().map(|c| c.info.seq).collect();
        assert_eq!(seqs, want);
        assert_eq!(rest.next, None);
        let u1 = ListFilter {
            user: Some("u1".into()),
            ..Default::default()
        };
        assert_eq!(n.list(&u1, None, 10).total, 2);
        // A cursor on a node that sorts after this one: nothing here.
        let after = ("n2".to_owned(), 0);
        assert_eq!(n.list(&all, Some(&after), 10).items.len(), 0);
    }
}
