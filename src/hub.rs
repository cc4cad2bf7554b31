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
use crate::core::ids::parse_conn_id;
use crate::core::message::{self, MessageInput};
use crate::core::registry::Filter;
use crate::core::{page, CoreError};
use crate::node::{LocalNode, WsConn};
use crate::ws::outbox::{Frame, SharedFrame};

/// The answer to a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub message_id: String,
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
        let p = self.local.registry.list(filter, after, size);
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
            topics: 0,
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
        let conns = match target {
            ConnSelector::Connection(id) => {
                if id.is_empty() {
                    return Err(CoreError::invalid("connection_id", "is required"));
                }
                vec![self.get(&id)?]
            }
            ConnSelector::User(user) => {
                if user.is_empty() {
                    return Err(CoreError::invalid("user_id", "is required"));
                }
                self.local.registry.of_user(&user)
            }
        };
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
