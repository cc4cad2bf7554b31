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
use crate::cluster::{BoxFuture, Broker, CommandHandler, Control, Engine, HistoryStore, Users};
use crate::config::Config;
use crate::core::event::{Event, Shared, SharedEvent};
use crate::core::message::{self, MessageInput};
use crate::core::model::{
    Command, ConnEvent, ConnEventKind, ConnSnapshot, Delivery, HistoryPage, HistoryQuery,
    ListFilter, PresenceEntry, StatsSnapshot, StreamPosition, Who,
};
use crate::core::native::{Since, StreamStart};
use crate::core::registry::{Offer, Outbox, TooMany};
use crate::core::stream::{self, Resume};
use crate::core::topic;
use crate::core::topic_table::{JoinStart, Joined, SubscribeRefused};
use crate::core::{close, page, CoreError};
use crate::node::outbox::WsOutbox;
use crate::node::{position_lost, LocalNode, WsConn};

/// The answer to a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub message_id: String,
    pub connections: u32,
    /// Its place in the user's stream (a SendToUser with user streams on).
    pub position: Option<StreamPosition>,
}

/// The answer to a Publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOutcome {
    pub message_id: String,
    pub offset: u64,
    pub epoch: String,
    pub connections: u32,
}

/// One page of Presence, with the counts of every subscriber.
pub struct PresencePage {
    pub entries: Vec<PresenceEntry>,
    /// Distinct users subscribed, cluster-wide (all of them, not this page).
    pub users: u64,
    /// Connections subscribed, cluster-wide.
    pub connections: u64,
    pub next_page_token: String,
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
/// The most subscribers a Presence with no `page_size` lists (then a next page token).
pub const MAX_PRESENCE_ALL: usize = 10_000;
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
    users: Arc<dyn Users>,
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
        let users = Arc::clone(&engine.users);
        // A connection's interests name its user once: its leave is the user's close.
        local.set_on_leave(Box::new(move |user, keys| {
            users.closed(user, now_ms());
            broker.release(user, keys)
        }));
        let max_connections = crate::config::effective_max_connections(&config.limits);
        Arc::new(Hub {
            local,
            config,
            auth,
            broker: engine.broker,
            store: engine.store,
            control: engine.control,
            users: engine.users,
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

    /// Whether a connection may subscribe to (and read the history of) `topic`: one of its
    /// token's patterns or the public ones matches. The same rule for every door.
    pub fn may_subscribe(&self, conn: &WsConn, topic: &str) -> bool {
        topic::allowed(&conn.info.topic_patterns, topic)
            || topic::allowed(&self.config.topics.public, topic)
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

    /// A session closes its connection itself (its rate, bad frames): out of every index, and
    /// logged when it is a refusal.
    pub fn closed_by_session(&self, conn: &WsConn, code: u16, reason: &str) {
        self.local.unregister(conn.info.seq, code, reason);
        self.local.log_close(conn, code, reason);
    }

    /// Logs why a client was refused (rate-limited; never a token or a key).
    pub fn refused(&self, r: crate::node::refusals::Refusal<'_>) {
        self.local.refused(r);
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
        // With user streams on, a user's messages are its stream's next publications: the
        // same path as a topic's (position, history, idempotency in the broker).
        let to = match route {
            Who::User(user) if self.config.users.streams() => Who::Topic(stream::of_user(&user)),
            other => other,
        };
        let d = self
            .broker
            .deliver(Delivery {
                to,
                message: valid.to_message(&message_id, now_ms()),
                caller_id: valid.id.is_some(),
            })
            .await?;
        Ok(Sent {
            message_id,
            connections: d.connections,
            position: d.position,
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
    /// reach this node before the client hears it is connected. With user streams on, the
    /// connection also joins its user's stream, from `resume` when the client gave one (the
    /// missed messages are queued, to follow `connected`); the answer says where it stands.
    pub async fn connect(
        &self,
        conn: &Arc<WsConn>,
        max_per_user: usize,
        resume: Option<&Resume>,
    ) -> Result<Option<StreamStart>, ConnectError> {
        let keys = crate::node::interests(conn, &[]);
        // Held first: on failure nothing is held, and nothing was registered.
        if let Err(e) = self.broker.hold(&conn.info.user_id, keys.clone()).await {
            return Err(ConnectError::Unavailable(e.to_string()));
        }
        let user = &conn.info.user_id;
        // Counted before it registers, so that USER_ONLINE precedes its CONNECTED.
        match self.users.opened(user, now_ms()).await {
            Ok(true) => self
                .local
                .emit_user(ConnEventKind::UserOnline, user, now_ms()),
            Ok(false) => {}
            Err(e) => {
                self.broker.release(user, keys);
                return Err(ConnectError::Unavailable(e.to_string()));
            }
        }
        // From here the connection's interests are released, and its user's count taken
        // back, by unregister.
        if let Err(e) = self.local.register(Arc::clone(conn), max_per_user) {
            self.users.closed(user, now_ms());
            self.broker.release(user, keys);
            return Err(ConnectError::TooMany(e));
        }
        if self.is_shutting_down() {
            // Shutdown began while we registered: its sweep may have missed us. The session
            // still says `connected`, then finds the close request and sends 1001.
            self.local
                .close(conn, close::GOING_AWAY, "server shutting down");
        }
        if !self.config.users.streams() {
            return Ok(None);
        }
        let name = stream::of_user(&conn.info.user_id);
        let since = resume.map(|r| (r.offset, r.epoch.as_str()));
        match self.join(conn, &name, since, 0, |_, _, _| None).await {
            Ok(joined) => Ok(joined.map(|j| StreamStart {
                offset: j.offset,
                epoch: j.epoch,
                recovered: j.recovered,
            })),
            // Closed while connecting (shutdown began): `connected`, then the close.
            Err(SubscribeError::Refused(SubscribeRefused::Closing)) => Ok(None),
            Err(e) => {
                // Registered above: out again, its interests released.
                self.local
                    .unregister(conn.info.seq, close::TRY_AGAIN_LATER, "try again later");
                Err(ConnectError::Unavailable(match e {
                    SubscribeError::Unavailable(why) => why,
                    SubscribeError::Refused(r) => format!("{r:?}"),
                }))
            }
        }
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
        let reply = |offset, epoch: &str, recovered| {
            Some(Shared::new(Event::Subscribed {
                topic: topic.into(),
                offset,
                epoch: epoch.into(),
                recovered,
                reference: reference.cloned(),
            }))
        };
        let since = since.map(|s| (s.offset, s.epoch.as_str()));
        let joined = self.join(conn, topic, since, max, reply).await?;
        if joined.is_some() && !conn.is_closing() {
            if listen {
                self.local.topics.listen(topic, conn.info.seq);
            }
            self.local
                .emit_topic_event(ConnEventKind::Subscribed, conn, topic);
        }
        Ok(())
    }

    /// Joins `conn` to the stream `name` (a topic or its user stream) without a lock across
    /// I/O: interest held, joining begun, history read, then the replay from `since` and the
    /// reply `reply` makes queued, in order with what arrived meanwhile. `None` when it was
    /// already joined, or left while joining (its leave released the interest).
    async fn join(
        &self,
        conn: &Arc<WsConn>,
        name: &str,
        since: Option<(u64, &str)>,
        max: usize,
        reply: impl FnOnce(u64, &str, Option<bool>) -> Option<SharedEvent>,
    ) -> Result<Option<Joined<WsOutbox>>, SubscribeError> {
        let key = vec![Who::Topic(name.to_owned())];
        self.broker
            .hold(&conn.info.user_id, key.clone())
            .await
            .map_err(|e| SubscribeError::Unavailable(e.to_string()))?;
        let ticket = match self.local.topics.begin_join(name, conn, max) {
            Ok(JoinStart::Joining(t)) => t,
            Ok(JoinStart::Already) => {
                self.broker.release(&conn.info.user_id, key);
                return Ok(None);
            }
            Err(e) => {
                self.broker.release(&conn.info.user_id, key);
                return Err(SubscribeError::Refused(e));
            }
        };
        let read = match self.store.read(name, since.map(|s| s.0)).await {
            Ok(r) => r,
            Err(e) => {
                if self.local.topics.cancel_join(ticket, conn) {
                    self.broker.release(&conn.info.user_id, key);
                }
                return Err(SubscribeError::Unavailable(e.to_string()));
            }
        };
        let joined = match stream::is_topic(name) {
            true => self
                .local
                .topics
                .finish_join(ticket, read, since, reply, position_lost(name)),
            // A user stream, joined at connect: parked while it is empty.
            false => self
                .local
                .topics
                .finish_or_park(ticket, read, since, position_lost(name)),
        };
        if let Some(j) = &joined {
            self.local.close_slow(&j.overflowed);
        }
        Ok(joined)
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
            self.broker
                .release(&conn.info.user_id, vec![Who::Topic(topic.to_owned())]);
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
        Box::pin(self.run_command_here(target, command))
    }
}

pub mod batch;
mod commands;
mod questions;

#[cfg(test)]
pub(crate) mod tests;
