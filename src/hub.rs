//! The hub: the one routing core both doors call. It validates what a backend asks, encodes a
//! message once, hands it to the broker, and answers questions about connections. The gRPC
//! door translates protobuf to these calls; the WebSocket door registers connections through
//! [`LocalNode`]. Errors are [`CoreError`]s, mapped once at each door.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use crate::auth::Authenticator;
use crate::broker::{Broker, MemoryBroker, Route};
use crate::clock::now_ms;
use crate::config::Config;
use crate::core::frames::{self, Since};
use crate::core::ids::parse_conn_id;
use crate::core::message::TopicPosition;
use crate::core::message::{self, MessageInput};
use crate::core::registry::{Filter, Offer, Outbox};
use crate::core::topic;
use crate::core::topics::TopicLimits;
use crate::core::topics::{Kept, NewPublication, SubscribeRefused};
use crate::core::{page, CoreError};
use crate::node::EventKind;
use crate::node::{LocalNode, WsConn};
use crate::ws::outbox::{Frame, SharedFrame};

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
    pub connections: Vec<Arc<WsConn>>,
    pub next_page_token: String,
    pub total: usize,
}

/// GetStats, node-local on a single node.
#[derive(Debug, Clone)]
pub struct StatsSnapshot {
    pub connections: u64,
    pub users: u64,
    pub topics: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub nodes: u32,
    pub node_id: String,
    pub started_at_ms: i64,
}

/// Which connections a Disconnect (and later Subscribe/Unsubscribe) acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnSelector {
    Connection(String),
    User(String),
}

/// A fresh epoch for a topic whose history starts (again).
fn new_epoch() -> String {
    crate::random::hex(4)
}

pub const DEFAULT_PAGE_SIZE: u32 = 100;
pub const MAX_PAGE_SIZE: u32 = 1000;
pub const CLOSE_DISCONNECTED: u16 = 4000;
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const MAX_CLOSE_REASON_BYTES: usize = 123;

/// A socket admitted under the node's connection cap; dropping it frees the place.
pub struct Admission {
    hub: Arc<Hub>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.hub.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct Hub {
    pub local: Arc<LocalNode>,
    pub config: Config,
    pub auth: Arc<Authenticator>,
    broker: Arc<dyn Broker>,
    shutting_down: AtomicBool,
    shutdown: watch::Sender<bool>,
    /// Sockets between upgrade and end, authenticated or not.
    admitted: AtomicUsize,
    /// The cap on `admitted`.
    pub max_connections: usize,
}

impl Hub {
    /// A hub for `config` (already validated) on a node called `node_id`.
    pub fn new(
        config: Config,
        node_id: String,
        auth: Arc<Authenticator>,
    ) -> Result<Arc<Self>, crate::config::ConfigError> {
        let started = now_ms();
        // Sequences start from the start time so a restarted node with a fixed id does not
        // hand out the ids of its previous life.
        let seq_start = (started.max(0) as u64) << 16;
        let local = Arc::new(LocalNode::new(
            node_id,
            started,
            seq_start,
            format!("{}-{:x}", crate::random::hex(4), started),
            config.grpc.watch_buffer,
            TopicLimits {
                history_size: config.topics.history_size,
                history_ttl_ms: config.topics.history_ttl_ms,
            },
        ));
        let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new(Arc::clone(&local)));
        let config_limits = config.limits.clone();
        Ok(Arc::new(Hub {
            local,
            config,
            auth,
            broker,
            shutting_down: AtomicBool::new(false),
            shutdown: watch::channel(false).0,
            admitted: AtomicUsize::new(0),
            max_connections: crate::config::effective_max_connections(&config_limits),
        }))
    }

    /// Validates and encodes `msg` once, then delivers it to `route`.
    pub async fn send(&self, route: Route, msg: MessageInput<'_>) -> Result<Sent, CoreError> {
        if self.is_shutting_down() {
            return Err(CoreError::ShuttingDown);
        }
        let valid = message::validate("message", msg, self.config.limits.max_payload_bytes)?;
        let message_id = match valid.id {
            Some(id) => id.to_owned(),
            None => self.local.next_message_id(),
        };
        let frame: SharedFrame = Arc::new(Frame::from(message::encode(
            &valid,
            &message_id,
            now_ms(),
            None,
        )));
        let connections = self.broker.deliver(route, frame).await?;
        Ok(Sent {
            message_id,
            connections,
        })
    }

    /// Publishes to a topic's subscribers and keeps the publication in its history. A
    /// caller-chosen message id already in the history is not delivered again.
    pub fn publish(&self, topic: &str, msg: MessageInput<'_>) -> Result<PublishOutcome, CoreError> {
        if self.is_shutting_down() {
            return Err(CoreError::ShuttingDown);
        }
        topic::validate_name("topic", topic)?;
        let valid = message::validate("message", msg, self.config.limits.max_payload_bytes)?;
        let (message_id, caller_id) = match valid.id {
            Some(id) => (id.to_owned(), true),
            None => (self.local.next_message_id(), false),
        };
        let now = now_ms();
        let p = self.local.topics.publish(
            topic,
            NewPublication {
                message_id: &message_id,
                caller_id,
                kind: valid.kind,
                payload_json: valid.payload.get(),
                now_ms: now,
            },
            new_epoch,
            |offset, epoch| {
                let pos = TopicPosition {
                    topic,
                    offset,
                    epoch,
                };
                Arc::new(Frame::from(message::encode(
                    &valid,
                    &message_id,
                    now,
                    Some(pos),
                )))
            },
        );
        self.local.metrics.messages_sent.inc_by(u64::from(p.queued));
        self.local.close_slow(&p.overflowed);
        Ok(PublishOutcome {
            message_id,
            offset: p.offset,
            epoch: p.epoch,
            connections: p.queued,
        })
    }

    /// Subscribes a connection to `topic`. With `since`, missed publications are queued
    /// first; the `subscribed` reply (carrying `reference`) follows them in the same queue.
    /// `max` caps the connection's subscriptions (0: no cap).
    pub fn subscribe(
        &self,
        conn: &Arc<WsConn>,
        topic: &str,
        since: Option<&Since>,
        reference: Option<&serde_json::Value>,
        max: usize,
    ) -> Result<(), SubscribeRefused> {
        let r = self.local.topics.subscribe(
            topic,
            conn,
            since.map(|s| (s.offset, s.epoch.as_str())),
            max,
            new_epoch,
            |offset, epoch, recovered| {
                Arc::new(Frame::from(frames::subscribed(
                    topic, offset, epoch, recovered, reference,
                )))
            },
        )?;
        if let Some(c) = &r.overflowed {
            self.local.close_slow(std::slice::from_ref(c));
        } else if r.added {
            self.local
                .emit_topic_event(EventKind::Subscribed, conn, topic);
        }
        Ok(())
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
            self.local
                .emit_topic_event(EventKind::Unsubscribed, conn, topic);
        }
        let reply: SharedFrame = Arc::new(Frame::from(frames::unsubscribed(topic, reference)));
        if conn.outbox.offer(&reply) == Offer::Full && conn.mark_closing() {
            self.local.close_slow(std::slice::from_ref(conn));
        }
        was
    }

    /// The connections a Disconnect/Subscribe/Unsubscribe RPC names.
    pub fn select(&self, target: ConnSelector) -> Result<Vec<Arc<WsConn>>, CoreError> {
        match target {
            ConnSelector::Connection(id) => {
                if id.is_empty() {
                    return Err(CoreError::invalid("connection_id", "is required"));
                }
                Ok(vec![self.get(&id)?])
            }
            ConnSelector::User(user) => {
                if user.is_empty() {
                    return Err(CoreError::invalid("user_id", "is required"));
                }
                Ok(self.local.registry.of_user(&user))
            }
        }
    }

    /// Subscribes the selected connections (no authorization, no cap: the backend decides);
    /// returns how many are subscribed now.
    pub fn subscribe_selected(&self, topic: &str, target: ConnSelector) -> Result<u32, CoreError> {
        topic::validate_name("topic", topic)?;
        let conns = self.select(target)?;
        Ok(conns
            .iter()
            .filter(|c| self.subscribe(c, topic, None, None, 0).is_ok())
            .count() as u32)
    }

    /// Unsubscribes the selected connections; returns how many were subscribed.
    pub fn unsubscribe_selected(
        &self,
        topic: &str,
        target: ConnSelector,
    ) -> Result<u32, CoreError> {
        topic::validate_name("topic", topic)?;
        let conns = self.select(target)?;
        Ok(conns
            .iter()
            .filter(|c| self.unsubscribe(c, topic, None))
            .count() as u32)
    }

    /// The subscribers of a topic and the number of distinct users among them.
    pub fn presence(&self, topic: &str) -> Result<(Vec<Arc<WsConn>>, usize), CoreError> {
        topic::validate_name("topic", topic)?;
        let subs = self.local.topics.subscribers(topic);
        let users: std::collections::HashSet<&str> =
            subs.iter().map(|c| c.info.user_id.as_str()).collect();
        let n = users.len();
        Ok((subs, n))
    }

    /// Kept publications of a topic after `since` (at most `limit`, default 100, capped at
    /// 1000), with the epoch and the latest offset. A topic with no state answers nothing,
    /// an empty epoch and offset 0.
    pub fn history(
        &self,
        topic: &str,
        since: u64,
        limit: u32,
    ) -> Result<(Vec<Kept>, String, u64), CoreError> {
        topic::validate_name("topic", topic)?;
        let limit = match limit {
            0 => 100,
            n => n.min(1000),
        } as usize;
        Ok(self
            .local
            .topics
            .history(topic, since, limit, now_ms())
            .unwrap_or_else(|| (Vec::new(), String::new(), 0)))
    }

    /// A live connection of this node by id.
    pub fn get(&self, connection_id: &str) -> Result<Arc<WsConn>, CoreError> {
        parse_conn_id(connection_id)
            .filter(|(node, _)| *node == self.local.id)
            .and_then(|(_, seq)| self.local.registry.get(seq))
            .ok_or_else(|| CoreError::NotFound {
                what: format!("connection {connection_id:?}"),
            })
    }

    /// One page of connections matching `filter`.
    pub fn list(
        &self,
        filter: Filter<'_>,
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
        let p = match (filter.topic, filter.user) {
            // A topic alone (or with a role): page over its subscribers, already in order,
            // rather than over every connection.
            (Some(topic), None) => {
                let members = self.local.topics.subscribers(topic);
                crate::core::registry::page_of(&members, filter.role, after, size)
            }
            _ => self.local.registry.list(filter, after, size),
        };
        Ok(Listing {
            connections: p.items,
            next_page_token: p.next_after.map(page::encode).unwrap_or_default(),
            total: p.total,
        })
    }

    pub fn stats(&self) -> StatsSnapshot {
        let m = &self.local.metrics;
        StatsSnapshot {
            connections: self.local.registry.len() as u64,
            users: self.local.registry.users() as u64,
            topics: self.local.topics.len() as u64,
            messages_sent: m.messages_sent.get(),
            messages_dropped: m.messages_dropped.get(),
            nodes: 1,
            node_id: self.local.id.clone(),
            started_at_ms: self.local.started_at_ms,
        }
    }

    /// Closes the selected connections with `code` (0 means 4000) and `reason`.
    pub fn disconnect(
        &self,
        target: ConnSelector,
        code: u32,
        reason: &str,
    ) -> Result<u32, CoreError> {
        let code = match code {
            0 => CLOSE_DISCONNECTED,
            4000..=4999 => code as u16,
            other => {
                return Err(CoreError::invalid(
                    "code",
                    format!("{other} is not a close code in 4000..4999"),
                ))
            }
        };
        if reason.len() > MAX_CLOSE_REASON_BYTES {
            return Err(CoreError::invalid(
                "reason",
                format!(
                    "is {} bytes, over the limit of {MAX_CLOSE_REASON_BYTES}",
                    reason.len()
                ),
            ));
        }
        let conns = self.select(target)?;
        Ok(conns
            .iter()
            .filter(|c| self.local.close(c, code, reason))
            .count() as u32)
    }

    /// Takes a place under the node's connection cap; `None` when the node is full.
    pub fn admit(self: &Arc<Self>) -> Option<Admission> {
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= self.max_connections {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Admission {
            hub: Arc::clone(self),
        })
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
        for conn in self.local.registry.all() {
            self.local
                .close(&conn, CLOSE_GOING_AWAY, "server shutting down");
        }
    }
}
