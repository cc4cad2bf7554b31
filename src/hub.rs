//! The hub: the one routing core both doors call. It validates what a backend or client asks,
//! encodes a message once, and hands the work to its collaborators: the [`Broker`] for
//! deliveries, the [`HistoryStore`] for topics, the [`Control`] for commands and cluster-wide
//! questions, and this node's [`LocalNode`] for the connections it holds. The collaborators
//! are built outside (in `Server::start`) and injected; the doors never know whether one node
//! or a cluster answers. Errors are [`CoreError`]s, mapped once at each door.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{broadcast, watch, Notify};

use crate::auth::Authenticator;
use crate::clock::now_ms;
use crate::cluster::{BoxFuture, Broker, CommandHandler, Control, Engine, HistoryStore};
use crate::config::Config;
use crate::core::event::{Event, Shared, SharedEvent};
use crate::core::message::{self, MessageInput};
use crate::core::model::{
    Command, ConnEvent, ConnEventKind, ConnSnapshot, Delivery, HistoryPage, HistoryQuery,
    ListFilter, PresenceEntry, StatsSnapshot, StreamPosition, Who,
};
use crate::core::native::Since;
use crate::core::registry::{Offer, Outbox, TooMany};
use crate::core::topic;
use crate::core::topic_table::{JoinStart, SubscribeRefused};
use crate::core::{close, page, CoreError};
use crate::node::{position_lost, LocalNode, WsConn};

/// The answer to a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub message_id: String,
    pub connections: u32,
}

/// The answer to a Publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOutcome {
    pub message_id: String,
    pub offset: u64,
    pub epoch: String,
    pub connections: u32,
}

/// One page of ListConnections.
pub struct Listing {
    pub connections: Vec<ConnSnapshot>,
    pub next_page_token: String,
    pub total: u64,
}

/// Why a client's subscribe did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeError {
    Refused(SubscribeRefused),
    /// The cluster broker could not be reached.
    Unavailable(String),
}

/// Why a connection could not be admitted after authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    TooMany(TooMany),
    Unavailable(String),
}

pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// The most kept publications one history read returns.
pub const MAX_HISTORY: usize = 1000;
pub const MAX_PAGE_SIZE: u32 = 1000;

/// A socket admitted under the node's connection cap; dropping it frees the place.
pub struct Admission {
    hub: Arc<Hub>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.hub.release_admission();
    }
}

pub struct Hub {
    local: Arc<LocalNode>,
    pub config: Config,
    pub auth: Arc<Authenticator>,
    broker: Arc<dyn Broker>,
    store: Arc<dyn HistoryStore>,
    control: Arc<dyn Control>,
    shutting_down: AtomicBool,
    shutdown: watch::Sender<bool>,
    /// Sockets between upgrade and end, authenticated or not.
    admitted: AtomicUsize,
    /// Woken when `admitted` falls to zero (shutdown waits on it).
    all_ended: Notify,
    /// The cap on `admitted`.
    pub max_connections: usize,
}

impl Hub {
    /// A hub for `config` (already validated) over this node's state and its collaborators.
    pub fn new(
        config: Config,
        auth: Arc<Authenticator>,
        local: Arc<LocalNode>,
        engine: Engine,
    ) -> Arc<Self> {
        let broker = Arc::clone(&engine.broker);
        local.set_on_leave(Box::new(move |keys| broker.release(keys)));
        let max_connections = crate::config::effective_max_connections(&config.limits);
        Arc::new(Hub {
            local,
            config,
            auth,
            broker: engine.broker,
            store: engine.store,
            control: engine.control,
            shutting_down: AtomicBool::new(false),
            shutdown: watch::channel(false).0,
            admitted: AtomicUsize::new(0),
            all_ended: Notify::new(),
            max_connections,
        })
    }

    /// This node only: its registry, metrics and topic table (registration, heartbeats,
    /// metrics). Cluster-wide questions go through the hub's own methods.
    pub fn local(&self) -> &Arc<LocalNode> {
        &self.local
    }

    /// This node's metrics (the doors count handshakes and calls).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.local.metrics
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.local.id
    }

    /// A fresh connection id on this node, and its sequence.
    pub fn next_conn_id(&self) -> (String, u64) {
        self.local.next_conn_id()
    }

    /// How many connections `user` has on this node (the upgrade's early refusal).
    pub fn user_connections(&self, user: &str) -> usize {
        self.local.registry.user_connections(user)
    }

    /// The `/metrics` text: this node's counters with its live gauges.
    pub fn encode_metrics(&self) -> String {
        let reg = &self.local.registry;
        self.local
            .metrics
            .encode(reg.len(), reg.users(), self.ready())
    }

    /// Closes a connection on the server's initiative: it leaves every index at once, and its
    /// task sends the close frame. False when it had already left.
    pub fn close(&self, conn: &WsConn, code: u16, reason: &str) -> bool {
        self.local.close(conn, code, reason)
    }

    /// A connection's task ended (or closes it now): out of every index if still there, its
    /// interests released, watchers told. Safe to call more than once.
    pub fn disconnected(&self, conn: &WsConn, code: u16, reason: &str) {
        self.local.unregister(conn.info.seq, code, reason);
    }

    /// The history store (for the sweeper).
    pub fn store(&self) -> &Arc<dyn HistoryStore> {
        &self.store
    }

    /// Whether this node can serve cluster-wide work now (`/readyz`).
    pub fn ready(&self) -> bool {
        !self.is_shutting_down() && self.broker.ready()
    }

    /// Validates `msg` once, then delivers it to `route` (each door encodes it once).
    pub async fn send(&self, route: Who, msg: MessageInput<'_>) -> Result<Sent, CoreError> {
        if self.is_shutting_down() {
            return Err(CoreError::ShuttingDown);
        }
        if let Who::Topic(_) = route {
            return Err(CoreError::invalid(
                "target",
                "a topic's subscribers are reached by Publish",
            ));
        }
        let valid = message::validate("message", msg, self.config.limits.max_payload_bytes)?;
        let message_id = match valid.id {
            Some(id) => id.to_owned(),
            None => self.local.next_message_id(),
        };
        let d = self
            .broker
            .deliver(Delivery {
                to: route,
                message: valid.to_message(&message_id, now_ms()),
                caller_id: valid.id.is_some(),
            })
            .await?;
        Ok(Sent {
            message_id,
            connections: d.connections,
        })
    }

    /// Publishes to a topic's subscribers and keeps the publication in its history. A
    /// caller-chosen message id already in the history is not delivered again.
    pub async fn publish(
        &self,
        topic: &str,
        msg: MessageInput<'_>,
    ) -> Result<PublishOutcome, CoreError> {
        if self.is_shutting_down() {
            return Err(CoreError::ShuttingDown);
        }
        topic::validate_name("topic", topic)?;
        let valid = message::validate("message", msg, self.config.limits.max_payload_bytes)?;
        let (message_id, caller_id) = match valid.id {
            Some(id) => (id.to_owned(), true),
            None => (self.local.next_message_id(), false),
        };
        let d = self
            .broker
            .deliver(Delivery {
                to: Who::Topic(topic.to_owned()),
                message: valid.to_message(&message_id, now_ms()),
                caller_id,
            })
            .await?;
        // Every engine positions a delivery to a topic.
        let position = d.position.unwrap_or(StreamPosition {
            offset: 0,
            epoch: String::new(),
        });
        Ok(PublishOutcome {
            message_id,
            offset: position.offset,
            epoch: position.epoch,
            connections: d.connections,
        })
    }

    /// Registers an authenticated connection and makes sure deliveries for its user and roles
    /// reach this node before the client hears it is connected.
    pub async fn connect(
        &self,
        conn: &Arc<WsConn>,
        max_per_user: usize,
    ) -> Result<(), ConnectError> {
        let keys = crate::node::interests(conn, &[]);
        // Held first: on failure nothing is held, and nothing was registered.
        if let Err(e) = self.broker.hold(keys.clone()).await {
            return Err(ConnectError::Unavailable(e.to_string()));
        }
        // From here the connection's interests are released by unregister.
        if let Err(e) = self.local.register(Arc::clone(conn), max_per_user) {
            self.broker.release(keys);
            return Err(ConnectError::TooMany(e));
        }
        if self.is_shutting_down() {
            // Shutdown began while we registered: its sweep may have missed us. The session
            // still says `connected`, then finds the close request and sends 1001.
            self.local
                .close(conn, close::GOING_AWAY, "server shutting down");
        }
        Ok(())
    }

    /// Subscribes a connection to `topic`. With `since`, missed publications are queued
    /// first; the `subscribed` reply (carrying `reference`) follows them in the same queue.
    /// `max` caps the connection's subscriptions (0: no cap). With `listen`, the connection
    /// also gets the topic's join and leave notices (its own join first).
    pub async fn subscribe(
        &self,
        conn: &Arc<WsConn>,
        topic: &str,
        since: Option<&Since>,
        reference: Option<&serde_json::Value>,
        max: usize,
        listen: bool,
    ) -> Result<(), SubscribeError> {
        if conn.has_topic(topic) {
            return self.resubscribed(conn, topic, since, reference).await;
        }
        let key = vec![Who::Topic(topic.to_owned())];
        self.broker
            .hold(key.clone())
            .await
            .map_err(|e| SubscribeError::Unavailable(e.to_string()))?;
        let ticket = match self.local.topics.begin_join(topic, conn, max) {
            Ok(JoinStart::Joining(t)) => t,
            Ok(JoinStart::Already) => {
                self.broker.release(key);
                return Ok(());
            }
            Err(e) => {
                self.broker.release(key);
                return Err(SubscribeError::Refused(e));
            }
        };
        let read = match self.store.read(topic, since.map(|s| s.offset)).await {
            Ok(r) => r,
            Err(e) => {
                if self.local.topics.cancel_join(ticket, conn) {
                    self.broker.release(key);
                }
                return Err(SubscribeError::Unavailable(e.to_string()));
            }
        };
        let joined = self.local.topics.finish_join(
            ticket,
            read,
            since.map(|s| (s.offset, s.epoch.as_str())),
            |offset, epoch, recovered| {
                Shared::new(Event::Subscribed {
                    topic: topic.into(),
                    offset,
                    epoch: epoch.into(),
                    recovered,
                    reference: reference.cloned(),
                })
            },
            position_lost(topic),
        );
        // None: the connection left while joining (its leave released the interest).
        if let Some(j) = joined {
            self.local.close_slow(&j.overflowed);
            if !conn.is_closing() {
                if listen {
                    self.local.topics.listen(topic, conn.info.seq);
                }
                self.local
                    .emit_topic_event(ConnEventKind::Subscribed, conn, topic);
            }
        }
        Ok(())
    }

    /// A subscribe to a topic the connection already has: answered with the current
    /// position, nothing replayed.
    async fn resubscribed(
        &self,
        conn: &Arc<WsConn>,
        topic: &str,
        since: Option<&Since>,
        reference: Option<&serde_json::Value>,
    ) -> Result<(), SubscribeError> {
        let read = self
            .store
            .read(topic, since.map(|s| s.offset))
            .await
            .map_err(|e| SubscribeError::Unavailable(e.to_string()))?;
        let recovered =
            since.map(|s| s.epoch == read.epoch && s.offset <= read.latest && read.complete);
        let reply = Shared::new(Event::Subscribed {
            topic: topic.into(),
            offset: read.latest,
            epoch: read.epoch.as_str().into(),
            recovered,
            reference: reference.cloned(),
        });
        self.offer_or_close(conn, &reply);
        Ok(())
    }

    fn offer_or_close(&self, conn: &Arc<WsConn>, f: &SharedEvent) {
        if conn.outbox.offer(f) == Offer::Full && conn.mark_closing() {
            self.local.close_slow(std::slice::from_ref(conn));
        }
    }

    /// Unsubscribes a connection from `topic` and queues the `unsubscribed` reply after
    /// anything of that topic already queued. True when it was subscribed.
    pub fn unsubscribe(
        &self,
        conn: &Arc<WsConn>,
        topic: &str,
        reference: Option<&serde_json::Value>,
    ) -> bool {
        let was = self.local.topics.unsubscribe(topic, conn);
        if was {
            self.broker.release(vec![Who::Topic(topic.to_owned())]);
            self.local
                .emit_topic_event(ConnEventKind::Unsubscribed, conn, topic);
        }
        let reply = Shared::new(Event::Unsubscribed {
            topic: topic.into(),
            reference: reference.cloned(),
        });
        self.offer_or_close(conn, &reply);
        was
    }

    /// Runs a command on the connections of this node the selector names: NOT_FOUND for a
    /// connection id that is not live here. Called by the control seam, on the owning node
    /// (through [`CommandHandler`]).
    async fn run_local(&self, target: Who, command: Command) -> Result<u32, CoreError> {
        let conns = match &target {
            Who::Connection(id) => {
                vec![self.local.get(id).ok_or_else(|| CoreError::NotFound {
                    what: format!("connection {id:?}"),
                })?]
            }
            Who::User(user) => self.local.registry.of_user(user),
            other => return Err(not_a_command_target(other)),
        };
        let mut n = 0;
        for c in &conns {
            let done = match &command {
                Command::Disconnect { code, reason } => {
                    self.local
                        .close_from(c, *code, reason, close::Origin::Backend)
                }
                Command::Subscribe { topic } => {
                    self.subscribe(c, topic, None, None, 0, false).await.is_ok()
                        && c.has_topic(topic)
                }
                Command::Unsubscribe { topic } => self.unsubscribe(c, topic, None),
            };
            n += u32::from(done);
        }
        Ok(n)
    }

    fn check_selector(target: &Who) -> Result<(), CoreError> {
        match target {
            Who::Connection(id) if id.is_empty() => {
                Err(CoreError::invalid("connection_id", "is required"))
            }
            Who::User(u) if u.is_empty() => Err(CoreError::invalid("user_id", "is required")),
            Who::Connection(_) | Who::User(_) => Ok(()),
            other => Err(not_a_command_target(other)),
        }
    }

    /// Subscribes the selected connections (no authorization, no cap: the backend decides);
    /// returns how many are subscribed now.
    pub async fn subscribe_selected(&self, topic: &str, target: Who) -> Result<u32, CoreError> {
        topic::validate_name("topic", topic)?;
        Self::check_selector(&target)?;
        self.control
            .command(
                target,
                Command::Subscribe {
                    topic: topic.to_owned(),
                },
            )
            .await
    }

    /// Unsubscribes the selected connections; returns how many were subscribed.
    pub async fn unsubscribe_selected(&self, topic: &str, target: Who) -> Result<u32, CoreError> {
        topic::validate_name("topic", topic)?;
        Self::check_selector(&target)?;
        self.control
            .command(
                target,
                Command::Unsubscribe {
                    topic: topic.to_owned(),
                },
            )
            .await
    }

    /// Closes the selected connections with `code` (0 means 4000) and `reason`.
    pub async fn disconnect(&self, target: Who, code: u32, reason: &str) -> Result<u32, CoreError> {
        let code = match code {
            0 => close::DISCONNECTED,
            4000..=4999 => code as u16,
            other => {
                return Err(CoreError::invalid(
                    "code",
                    format!("{other} is not a close code in 4000..4999"),
                ))
            }
        };
        if reason.len() > close::MAX_REASON_BYTES {
            return Err(CoreError::invalid(
                "reason",
                format!(
                    "is {} bytes, over the limit of {}",
                    reason.len(),
                    close::MAX_REASON_BYTES
                ),
            ));
        }
        Self::check_selector(&target)?;
        self.control
            .command(
                target,
                Command::Disconnect {
                    code,
                    reason: reason.to_owned(),
                },
            )
            .await
    }

    /// The subscribers of a topic, cluster-wide, and the number of distinct users among them.
    pub async fn presence(&self, topic: &str) -> Result<(Vec<PresenceEntry>, usize), CoreError> {
        topic::validate_name("topic", topic)?;
        let subs = self.control.presence(topic).await?;
        let users: HashSet<&str> = subs.iter().map(|c| c.user_id.as_str()).collect();
        let n = users.len();
        Ok((subs, n))
    }

    /// KeptPublication publications of a topic as `q` asks (its limit capped at [`MAX_HISTORY`]), with
    /// the epoch and the latest offset. A topic with no state answers nothing, an empty epoch
    /// and offset 0.
    pub async fn history(&self, topic: &str, q: HistoryQuery) -> Result<HistoryPage, CoreError> {
        topic::validate_name("topic", topic)?;
        let q = HistoryQuery {
            limit: q.limit.min(MAX_HISTORY),
            ..q
        };
        self.store.history(topic, q).await
    }

    /// A live connection by id, on whichever node holds it.
    pub async fn get(&self, connection_id: &str) -> Result<ConnSnapshot, CoreError> {
        self.control.get(connection_id).await
    }

    /// One page of connections matching `filter`, cluster-wide.
    pub async fn list(
        &self,
        filter: ListFilter,
        page_size: u32,
        page_token: &str,
    ) -> Result<Listing, CoreError> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        } as usize;
        let after = if page_token.is_empty() {
            None
        } else {
            Some(page::decode(page_token).ok_or_else(|| {
                CoreError::invalid(
                    "page_token",
                    "is not a token from a previous ListConnections page",
                )
            })?)
        };
        let p = self.control.list(filter, after, size).await?;
        Ok(Listing {
            connections: p.items,
            next_page_token: p
                .next
                .map(|(node, seq)| page::encode(&node, seq))
                .unwrap_or_default(),
            total: p.total,
        })
    }

    /// GetStats, cluster-wide.
    pub async fn stats(&self) -> Result<StatsSnapshot, CoreError> {
        let (parts, nodes) = self.control.stats().await?;
        let kept = self.store.kept_topics().await?;
        let mut users = HashSet::new();
        let mut topics: HashSet<u64> = kept.into_iter().collect();
        let mut s = StatsSnapshot {
            connections: 0,
            users: 0,
            topics: 0,
            messages_sent: 0,
            messages_dropped: 0,
            nodes,
            node_id: self.local.id.clone(),
            started_at_ms: self.local.started_at_ms,
        };
        for p in parts {
            s.connections += p.connections;
            s.messages_sent += p.messages_sent;
            s.messages_dropped += p.messages_dropped;
            users.extend(p.users);
            topics.extend(p.topics);
        }
        s.users = users.len() as u64;
        s.topics = topics.len() as u64;
        Ok(s)
    }

    /// Starts watching lifecycle events of every node.
    pub async fn watch(&self) -> Result<broadcast::Receiver<Arc<ConnEvent>>, CoreError> {
        let rx = self.local.subscribe_events();
        self.control.watch().await?;
        Ok(rx)
    }

    /// A watcher of this node went away.
    pub fn unwatch(&self) {
        self.control.unwatch();
    }

    /// Takes a place under the node's connection cap; `None` when the node is full.
    pub fn admit(self: &Arc<Self>) -> Option<Admission> {
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= self.max_connections {
            self.release_admission();
            return None;
        }
        Some(Admission {
            hub: Arc::clone(self),
        })
    }

    /// Sockets admitted and not yet ended.
    pub fn open_sockets(&self) -> usize {
        self.admitted.load(Ordering::Acquire)
    }

    fn release_admission(&self) {
        if self.admitted.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_ended.notify_waiters();
        }
    }

    /// Resolves once every admitted socket's task has ended (its close handshake done or
    /// timed out). Shutdown waits on this, not on the registry: a connection leaves the
    /// registry the moment it is asked to close, long before its close frame is written, and
    /// one still registering is in no registry yet.
    pub async fn sockets_ended(&self) {
        loop {
            let notified = self.all_ended.notified();
            tokio::pin!(notified);
            // Registered before the check, so a drop to zero between the two is not missed.
            notified.as_mut().enable();
            if self.admitted.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// A receiver that changes to `true` when shutdown begins.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Stops taking new work and asks every connection to close with 1001.
    pub fn begin_shutdown(&self) {
        if self.shutting_down.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shutdown.send_replace(true);
        self.local
            .close_all(close::GOING_AWAY, "server shutting down");
    }
}

impl CommandHandler for Hub {
    fn run_local(&self, target: Who, command: Command) -> BoxFuture<'_, Result<u32, CoreError>> {
        Box::pin(Hub::run_local(self, target, command))
    }
}

fn not_a_command_target(who: &Who) -> CoreError {
    CoreError::invalid(
        "target",
        format!("{who:?}: a command acts on a connection or a user's connections"),
    )
}

#[cfg(test)]
mod tests {
    //! The hub over the memory engine and a real node, with connections that are only their
    //! outboxes: what each call queues, refuses or closes, without a socket.

    use super::*;
    use crate::core::event::Event;
    use crate::core::registry::{Conn, ConnInfo, Protocol};
    use crate::node::outbox::WsOutbox;

    async fn hub() -> Arc<Hub> {
        let mut config = Config::default();
        config.jwt.secret = "unit-test-secret-0123456789abcdef-0123456789abcdef".into();
        config.grpc.api_keys = vec!["unit-test-key-0123456789".into()];
        let checked = config.validate().expect("a valid configuration");
        let auth = Arc::new(
            Authenticator::new(&config, checked.verifier)
                .await
                .expect("an authenticator"),
        );
        let local = Arc::new(LocalNode::new("n".into(), 0, 1, "m".into(), 16));
        let started = crate::cluster::build(&config, Arc::clone(&local))
            .await
            .expect("the memory engine");
        let hub = Hub::new(config, auth, local, started.engine.clone());
        let handler: std::sync::Weak<dyn CommandHandler> = Arc::downgrade(&hub) as _;
        started.register(handler);
        hub
    }

    fn conn(hub: &Hub, user: &str) -> Arc<WsConn> {
        let (id, seq) = hub.next_conn_id();
        Arc::new(Conn::new(
            ConnInfo {
                id,
                seq,
                user_id: user.into(),
                roles: vec!["staff".into()],
                topic_patterns: vec![],
                metadata: Default::default(),
                connected_at_ms: 0,
                remote_addr: String::new(),
                user_agent: String::new(),
                protocol: Protocol::Native,
            },
            None,
            WsOutbox::new(8),
        ))
    }

    fn queued(c: &WsConn) -> Vec<Event> {
        let mut batch = Vec::new();
        c.outbox.try_recv_many(&mut batch, usize::MAX);
        batch.iter().map(|e| e.event().clone()).collect()
    }

    fn input<'a>(kind: &'a str, payload: &'a str) -> MessageInput<'a> {
        MessageInput {
            kind,
            payload_json: payload,
            id: "",
        }
    }

    #[tokio::test]
    async fn a_message_is_validated_once_and_queued_to_whom_it_names() {
        let hub = hub().await;
        let (a, b) = (conn(&hub, "ann"), conn(&hub, "bob"));
        for c in [&a, &b] {
            hub.connect(c, 10).await.unwrap();
        }
        let sent = hub
            .send(Who::User("ann".into()), input("t", "[1]"))
            .await
            .unwrap();
        assert_eq!(sent.connections, 1);
        let got = queued(&a);
        let [Event::Message(m)] = got.as_slice() else {
            panic!("{got:?}")
        };
        assert_eq!(
            (&*m.kind, &m.payload[..], &*m.id),
            ("t", &b"[1]"[..], sent.message_id.as_str())
        );
        assert!(queued(&b).is_empty());
        assert_eq!(
            hub.send(Who::Role("staff".into()), input("t", "1"))
                .await
                .unwrap()
                .connections,
            2
        );
        assert_eq!(
            hub.send(Who::All, input("t", "1"))
                .await
                .unwrap()
                .connections,
            2
        );
        let e = hub
            .send(Who::User("ann".into()), input("bad type", "1"))
            .await
            .unwrap_err();
        assert!(
            matches!(e, CoreError::InvalidArgument { ref field, .. } if field == "message.type"),
            "{e:?}"
        );
        let e = hub
            .send(Who::Topic("t".into()), input("t", "1"))
            .await
            .unwrap_err();
        assert!(
            matches!(e, CoreError::InvalidArgument { ref field, .. } if field == "target"),
            "{e:?}"
        );
        let e = hub
            .send(Who::Connection("n.ffff".into()), input("t", "1"))
            .await
            .unwrap_err();
        assert!(matches!(e, CoreError::NotFound { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn a_subscriber_gets_its_reply_then_publications_in_order_and_recovers() {
        let hub = hub().await;
        let c = conn(&hub, "ann");
        hub.connect(&c, 10).await.unwrap();
        let reference = serde_json::json!("r1");
        hub.subscribe(&c, "news", None, Some(&reference), 0, false)
            .await
            .unwrap();
        let p1 = hub.publish("news", input("t", "1")).await.unwrap();
        let p2 = hub.publish("news", input("t", "2")).await.unwrap();
        assert_eq!((p1.offset, p2.offset, p2.connections), (1, 2, 1));
        let got = queued(&c);
        assert!(
            matches!(&got[0], Event::Subscribed { offset: 0, recovered: None, reference: Some(r), .. } if *r == reference),
            "{got:?}"
        );
        let offsets: Vec<u64> = got[1..]
            .iter()
            .map(|e| match e {
                Event::Publication(p) => p.offset,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(offsets, [1, 2]);
        // Leave, miss one, come back from offset 1: the missed ones first, then the reply.
        assert!(hub.unsubscribe(&c, "news", None));
        assert!(matches!(
            queued(&c).as_slice(),
            [Event::Unsubscribed { .. }]
        ));
        hub.publish("news", input("t", "3")).await.unwrap();
        let since = Since {
            offset: 1,
            epoch: p1.epoch.clone(),
        };
        hub.subscribe(&c, "news", Some(&since), None, 0, false)
            .await
            .unwrap();
        let got = queued(&c);
        let shape: Vec<String> = got
            .iter()
            .map(|e| match e {
                Event::Publication(p) => format!("pub {}", p.offset),
                Event::Subscribed {
                    offset, recovered, ..
                } => format!("subscribed {offset} {recovered:?}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(shape, ["pub 2", "pub 3", "subscribed 3 Some(true)"]);
    }

    #[tokio::test]
    async fn commands_reach_connections_and_refuse_what_is_not_a_target() {
        let hub = hub().await;
        let c = conn(&hub, "ann");
        hub.connect(&c, 10).await.unwrap();
        assert_eq!(
            hub.subscribe_selected("room", Who::User("ann".into()))
                .await
                .unwrap(),
            1
        );
        assert!(c.has_topic("room"));
        let e = hub
            .disconnect(Who::Role("staff".into()), 0, "")
            .await
            .unwrap_err();
        assert!(
            matches!(e, CoreError::InvalidArgument { ref field, .. } if field == "target"),
            "{e:?}"
        );
        let e = hub
            .disconnect(Who::User("ann".into()), 3999, "")
            .await
            .unwrap_err();
        assert!(
            matches!(e, CoreError::InvalidArgument { ref field, .. } if field == "code"),
            "{e:?}"
        );
        assert_eq!(
            hub.disconnect(Who::Connection(c.info.id.clone()), 4100, "bye")
                .await
                .unwrap(),
            1
        );
        let closed = c.outbox.close_request().expect("asked to close");
        assert_eq!((closed.code, closed.reason.as_str()), (4100, "bye"));
        assert_eq!(
            hub.disconnect(Who::Connection(c.info.id.clone()), 0, "")
                .await
                .unwrap_err(),
            CoreError::NotFound {
                what: format!("connection {:?}", c.info.id)
            }
        );
    }

    #[tokio::test]
    async fn a_connection_registering_as_shutdown_begins_is_closed_with_1001() {
        let hub = hub().await;
        let early = conn(&hub, "ann");
        hub.connect(&early, 10).await.unwrap();
        hub.begin_shutdown();
        assert_eq!(
            early.outbox.close_request().map(|r| r.code),
            Some(close::GOING_AWAY)
        );
        // Registered after the shutdown's sweep: still told to go.
        let late = conn(&hub, "bob");
        hub.connect(&late, 10).await.unwrap();
        assert_eq!(
            late.outbox.close_request().map(|r| r.code),
            Some(close::GOING_AWAY)
        );
        let e = hub.send(Who::All, input("t", "1")).await.unwrap_err();
        assert_eq!(e, CoreError::ShuttingDown);
    }

    #[tokio::test]
    async fn shutdown_waits_for_every_admitted_socket() {
        let hub = hub().await;
        let a = hub.admit().expect("room");
        let b = hub.admit().expect("room");
        assert_eq!(hub.open_sockets(), 2);
        let waiting = tokio::spawn({
            let hub = Arc::clone(&hub);
            async move { hub.sockets_ended().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(b);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken when the last socket ended")
            .unwrap();
    }
}
