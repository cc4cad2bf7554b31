//! The cluster seam: everything the hub asks of "the service as a whole", behind four traits
//! with a memory implementation (one node, [`memory`]) and a Redis one (any number of nodes,
//! [`redis`]). The doors call the hub; the hub calls these; neither door knows which runs.
//!
//! - [`Broker`]: every delivery, on one path: to a topic (the stream's next offset, kept in
//!   history, idempotent by the caller's id, handed to every node that holds the topic) or to
//!   users, roles, connections and everyone (as it is); and the interest a node declares so
//!   that deliveries for its connections reach it.
//! - [`HistoryStore`]: reading what topics keep (a subscriber joining, History, GetStats).
//! - [`Control`]: commands on connections wherever they are (disconnect, subscribe,
//!   unsubscribe), and the cluster-wide questions (get, list, presence, stats, events).
//! - [`Users`]: who is online, cluster-wide (counts per user, online periods, graces).
//!
//! The types here are plain data (snapshots, not live connections) so that they can cross a
//! process boundary.

pub mod compact;
pub mod memory;
pub mod redis;

use std::sync::{Arc, OnceLock, Weak};

use crate::core::event::SharedEvent;
use crate::core::model::{
    Command, ConnSnapshot, Cursor, Delivered, Delivery, HistoryPage, HistoryQuery, ListFilter,
    ListPage, PresenceCounts, PresenceEntry, StatsPart, Who,
};
use crate::core::topic_table::HistoryRead;
use crate::core::users::UserState;
use crate::core::CoreError;

pub use futures_util::future::BoxFuture;

/// Deliveries, and the interest that routes them to this node.
pub trait Broker: Send + Sync + 'static {
    /// Delivers a message: to a topic, as the stream's next publication (atomic per topic:
    /// the idempotency check, the next offset, the append and the hand-off to every node
    /// holding the topic happen as one step, so a topic's publications have offsets 1, 2, 3,
    /// ... without a gap or a repeat within an epoch, and every node receives them in offset
    /// order; a node that misses one sees a gap and reads it from history; a caller-chosen id
    /// already kept answers the kept position, delivers nothing and counts 0); to a user, a
    /// role, one connection or everyone, queued as it is to every such connection on every
    /// node, as one shared event per node (two deliveries from one caller to the same
    /// recipients reach each connection in the order they were made; NOT_FOUND for a
    /// connection that is not live). Returns how many connections it was queued to (on a
    /// cluster: how many the broker has registered for the target at that moment, counted
    /// without asking any node), and the stream position. Not atomic across nodes: on
    /// UNAVAILABLE some nodes may have delivered.
    fn deliver(&self, d: Delivery) -> BoxFuture<'_, Result<Delivered, CoreError>>;

    /// Declares that this node holds a connection of `user` for these keys; resolves once
    /// deliveries for them reach this node (so a connection told `connected` or `subscribed`
    /// misses nothing sent after) and the connection is counted. On error nothing is held.
    fn hold<'a>(&'a self, user: &'a str, keys: Vec<Who>) -> BoxFuture<'a, Result<(), CoreError>>;

    /// The opposite of [`Broker::hold`], once per key held, with the same user.
    fn release(&self, user: &str, keys: Vec<Who>);

    /// Whether deliveries can be made now (for `/readyz`).
    fn ready(&self) -> bool;
}

/// Reading topic history (the writing is [`Broker::deliver`] to a topic).
pub trait HistoryStore: Send + Sync + 'static {
    /// The topic's epoch and latest offset (made when absent), with the kept publications
    /// after `since` when it is given, for a subscriber joining. One consistent read: the
    /// publications are exactly those kept up to `latest`.
    fn read(
        &self,
        topic: &str,
        since: Option<u64>,
    ) -> BoxFuture<'_, Result<HistoryRead<SharedEvent>, CoreError>>;

    /// The kept publications `q` asks for, with the epoch and the latest offset (empty and 0
    /// for a topic with no state; nothing is made). The store filters and limits: nothing
    /// beyond what `q` asks leaves it.
    fn history(
        &self,
        topic: &str,
        q: HistoryQuery,
    ) -> BoxFuture<'_, Result<HistoryPage, CoreError>>;

    /// Topics with a kept publication, as name hashes (for GetStats).
    fn kept_topics(&self) -> BoxFuture<'_, Result<Vec<u64>, CoreError>>;

    /// Drops what expired (a store whose entries expire by themselves does nothing).
    fn sweep(&self, _now_ms: i64) {}
}

/// Commands and questions about connections, wherever they are. Each answer gathers every
/// live node's share at one moment per node, not one moment cluster-wide.
pub trait Control: Send + Sync + 'static {
    /// Runs `command` on the selected connections, on the nodes that hold them; returns how
    /// many it applied to.
    fn command(&self, target: Who, command: Command) -> BoxFuture<'_, Result<u32, CoreError>>;
    fn get(&self, connection_id: &str) -> BoxFuture<'_, Result<ConnSnapshot, CoreError>>;
    fn list(
        &self,
        filter: ListFilter,
        after: Option<Cursor>,
        size: usize,
    ) -> BoxFuture<'_, Result<ListPage, CoreError>>;
    fn presence(&self, topic: &str) -> BoxFuture<'_, Result<Vec<PresenceEntry>, CoreError>>;
    /// The counts of `topic`'s subscribers (connections, distinct users), cluster-wide,
    /// without listing anyone: from counters, not from the subscribers.
    fn presence_counts(&self, topic: &str) -> BoxFuture<'_, Result<PresenceCounts, CoreError>>;
    fn stats(&self) -> BoxFuture<'_, Result<(Vec<StatsPart>, u32), CoreError>>;
    /// Makes every node's events reach this node's watchers from now on.
    fn watch(&self) -> BoxFuture<'_, Result<(), CoreError>>;
    /// This node's watchers have all gone.
    fn unwatch(&self);
    /// Ends the admin console session `id` on every node: from when this answers Ok until
    /// `until_ms` (the session's own end, after which no node accepts it anyway),
    /// [`Control::session_ended`] answers true everywhere.
    fn end_session(&self, id: &str, until_ms: i64) -> BoxFuture<'_, Result<(), CoreError>>;
    /// Whether the admin console session `id` was ended by a sign-out (on any node).
    fn session_ended(&self, id: &str) -> BoxFuture<'_, Result<bool, CoreError>>;
}

/// Who is online, cluster-wide (PROTOCOL.md section 7): every node's connection count per
/// user, the online period, the offline grace and `last_seen`, kept where every node reads
/// them, so GetUsers asks no other node and each transition is decided once.
pub trait Users: Send + Sync + 'static {
    /// A connection of `user` opened on this node. True when the user came online
    /// cluster-wide: atomic per user, so of several nodes opening the first connections at
    /// once exactly one is told, and the engine has told the other nodes' watchers (the caller
    /// tells this node's, before the connection's CONNECTED event).
    fn opened(&self, user: &str, now_ms: i64) -> BoxFuture<'_, Result<bool, CoreError>>;

    /// A connection of `user` closed on this node; with it the user's last, its grace begins.
    /// Not awaited (counts add up in any order).
    fn closed(&self, user: &str, now_ms: i64);

    /// The users whose grace ended by `now_ms` (each with when its last connection closed):
    /// they went offline. Each is handed to exactly one node, which has told the other
    /// nodes' watchers; the caller tells its own.
    fn offline_due(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<(String, i64)>, CoreError>>;

    /// The users `ids` names, in that order (one consistent read per user).
    fn users(
        &self,
        ids: Vec<String>,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<UserState>, CoreError>>;
}

/// The engine: the parts a hub is built with (`[broker] kind` picks the memory or the Redis
/// one).
#[derive(Clone)]
pub struct Engine {
    pub broker: Arc<dyn Broker>,
    pub store: Arc<dyn HistoryStore>,
    pub control: Arc<dyn Control>,
    pub users: Arc<dyn Users>,
}

impl Engine {
    /// An engine whose parts are one object (as both implementations are).
    pub fn of<T: Broker + HistoryStore + Control + Users>(all: &Arc<T>) -> Engine {
        Engine {
            broker: Arc::clone(all) as Arc<dyn Broker>,
            store: Arc::clone(all) as Arc<dyn HistoryStore>,
            control: Arc::clone(all) as Arc<dyn Control>,
            users: Arc::clone(all) as Arc<dyn Users>,
        }
    }
}

/// What the cluster asks of the layer above it: run a command on this node's own
/// connections (a subscribe reads history and joins the topic table, which is the hub's
/// work). The hub registers itself once, when it exists ([`Started::register`]), as
/// centrifuge's node registers its `BrokerEventHandler`: the cluster never names the hub.
pub trait CommandHandler: Send + Sync + 'static {
    /// Runs `command` on the connections of this node `target` names; NOT_FOUND for a
    /// connection id that is not live here.
    fn run_local(&self, target: Who, command: Command) -> BoxFuture<'_, Result<u32, CoreError>>;
}

/// Where an engine keeps its [`CommandHandler`]: set once, held weakly (the handler owns the
/// engine), and gone while the node shuts down.
#[derive(Default)]
pub struct HandlerSlot(OnceLock<Weak<dyn CommandHandler>>);

impl HandlerSlot {
    pub fn set(&self, handler: Weak<dyn CommandHandler>) {
        let _ = self.0.set(handler);
    }

    /// The handler, or UNAVAILABLE when there is none (not registered yet, or shutting down).
    pub fn get(&self) -> Result<Arc<dyn CommandHandler>, CoreError> {
        self.0
            .get()
            .and_then(Weak::upgrade)
            .ok_or(CoreError::ShuttingDown)
    }
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
#[error("broker.redis_url: {0}")]
pub struct StartError(pub String);

/// The engine a node started, and what must be done once the hub exists and when it leaves.
pub struct Started {
    pub engine: Engine,
    memory: Option<Arc<memory::Memory>>,
    redis: Option<Arc<redis::RedisCluster>>,
}

impl Started {
    /// Registers what runs commands on this node's connections (the hub).
    pub fn register(&self, handler: Weak<dyn CommandHandler>) {
        if let Some(m) = &self.memory {
            m.handler.set(handler.clone());
        }
        if let Some(r) = &self.redis {
            r.handler.set(handler);
        }
    }

    /// Leaves the cluster (a goodbye to the other nodes); nothing on a single node.
    pub async fn leave(&self) {
        if let Some(r) = &self.redis {
            r.leave().await;
        }
    }
}

/// Starts the engine `[broker] kind` names, for this node.
pub async fn build(
    config: &crate::config::Config,
    local: Arc<crate::node::LocalNode>,
) -> Result<Started, StartError> {
    let limits = memory::HistoryLimits {
        size: config.topics.history_size,
        ttl_ms: config.topics.history_ttl_ms,
    };
    match config.broker.kind {
        crate::config::BrokerKind::Redis => {
            let r = redis::RedisCluster::start(config, local)
                .await
                .map_err(|e| StartError(e.to_string()))?;
            Ok(Started {
                engine: Engine::of(&r),
                memory: None,
                redis: Some(r),
            })
        }
        crate::config::BrokerKind::Memory => {
            let users = memory::HistoryLimits {
                size: config.users.history_size,
                ttl_ms: config.users.history_ttl_ms,
            };
            let m = memory::Memory::new(local, limits, users, &config.users);
            Ok(Started {
                engine: Engine::of(&m),
                memory: Some(m),
                redis: None,
            })
        }
    }
}
