//! The cluster seam: everything the hub asks of "the service as a whole", behind three traits
//! with a memory implementation (one node, [`memory`]) and a Redis one (any number of nodes,
//! [`redis`]). The doors call the hub; the hub calls these; neither door knows which runs.
//!
//! - [`Broker`]: deliveries to users, roles, connections and everyone, and the interest a node
//!   declares so that deliveries for its connections reach it.
//! - [`HistoryStore`]: topic offsets, epochs, history and idempotency; publishing appends and
//!   hands the publication to every node that holds the topic.
//! - [`Control`]: commands on connections wherever they are (disconnect, subscribe,
//!   unsubscribe), and the cluster-wide questions (get, list, presence, stats, events).
//!
//! The types here are plain data (snapshots, not live connections) so that they can cross a
//! process boundary.

pub mod memory;
pub mod redis;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::core::frame::SharedFrame;
use crate::core::topics::HistoryRead;
use crate::core::CoreError;

pub use futures_util::future::BoxFuture;

/// Who a delivery goes to, cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Route {
    User(String),
    Role(String),
    /// One connection, by its id `<node_id>.<seq>`: the node is read from the id.
    Connection(String),
    All,
}

/// Which connections a command acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Selector {
    Connection(String),
    User(String),
}

/// What a backend asks to be done to connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Disconnect { code: u16, reason: String },
    Subscribe { topic: String },
    Unsubscribe { topic: String },
}

/// What a node must receive for its connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Interest {
    User(String),
    Role(String),
    Topic(String),
}

/// A connection as the API shows it, wherever it lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnSnapshot {
    pub id: String,
    pub node_id: String,
    pub seq: u64,
    pub user_id: String,
    pub roles: Vec<String>,
    pub topics: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub connected_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub remote_addr: String,
    pub user_agent: String,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub protocol: String,
}

impl ConnSnapshot {
    /// The order of listings: by node id, then by sequence within the node.
    pub fn position(&self) -> (&str, u64) {
        (&self.node_id, self.seq)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Connected,
    Disconnected,
    Subscribed,
    Unsubscribed,
}

/// A lifecycle event, as WatchEvents streams it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub conn: ConnSnapshot,
    pub topic: Option<String>,
    pub close_code: u16,
    pub close_reason: String,
    pub at_ms: i64,
}

/// Filters of a listing; all given ones must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListFilter {
    pub user: Option<String>,
    pub role: Option<String>,
    pub topic: Option<String>,
}

/// A listing position: after this (node id, sequence).
pub type Cursor = (String, u64);

/// One page of a listing, in (node id, sequence) order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPage {
    pub items: Vec<ConnSnapshot>,
    /// Connections matching the filters, cluster-wide.
    pub total: u64,
    /// Where the next page starts (exclusive); `None` on the last page.
    pub next: Option<Cursor>,
}

/// Merges per-node pages (each sorted, each at most `size`) into one page of `size`.
pub fn merge_pages(parts: Vec<ListPage>, size: usize) -> ListPage {
    let total = parts.iter().map(|p| p.total).sum();
    let more_somewhere = parts.iter().any(|p| p.next.is_some());
    let mut items: Vec<ConnSnapshot> = parts.into_iter().flat_map(|p| p.items).collect();
    items.sort_by(|a, b| a.position().cmp(&b.position()));
    let cut = items.len() > size;
    items.truncate(size);
    let next = if cut || more_somewhere {
        items.last().map(|c| (c.node_id.clone(), c.seq))
    } else {
        None
    };
    ListPage { items, total, next }
}

/// One node's share of GetStats. Users and topics come as 64-bit hashes so that the union
/// across nodes counts each once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsPart {
    pub node_id: String,
    pub connections: u64,
    pub users: Vec<u64>,
    pub topics: Vec<u64>,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub started_at_ms: i64,
}

/// GetStats, cluster-wide.
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

/// A stable 64-bit hash (FNV-1a) of a name, the same on every node and build.
pub fn name_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A Presence entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Present {
    pub connection_id: String,
    pub user_id: String,
}

/// A publication to append.
#[derive(Debug, Clone)]
pub struct NewPublication {
    pub topic: String,
    /// The message id (server-made or the caller's).
    pub message_id: String,
    /// Whether the caller chose the id (only those make retries idempotent).
    pub caller_id: bool,
    pub kind: String,
    pub payload_json: String,
    pub now_ms: i64,
}

/// What a Publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub offset: u64,
    pub epoch: String,
    /// Connections it was queued to, cluster-wide (0 for an idempotent retry).
    pub connections: u32,
}

/// A publication as the History RPC returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub offset: u64,
    pub message_id: String,
    pub kind: String,
    pub payload_json: String,
    pub published_at_ms: i64,
}

/// The History RPC's answer.
#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    pub publications: Vec<Kept>,
    pub epoch: String,
    pub latest: u64,
}

/// How long a topic's position (epoch and latest offset) outlives its last use, at least: a
/// quiet topic keeps its epoch across reconnects, so a client that saw everything recovers.
pub const META_TTL_MS: u64 = 24 * 3600 * 1000;

/// Deliveries, and the interest that routes them to this node.
pub trait Broker: Send + Sync + 'static {
    /// Queues `frame` to every connection `route` names, on every node. Returns how many
    /// connections it was queued to; NOT_FOUND for a connection that is not live.
    fn deliver(&self, route: Route, frame: SharedFrame) -> BoxFuture<'_, Result<u32, CoreError>>;

    /// Declares that this node holds connections for these keys; resolves once deliveries
    /// for them reach this node. On error nothing is held.
    fn hold(&self, keys: Vec<Interest>) -> BoxFuture<'_, Result<(), CoreError>>;

    /// The opposite of [`Broker::hold`], once per key held.
    fn release(&self, keys: Vec<Interest>);

    /// Whether deliveries can be made now (for `/readyz`).
    fn ready(&self) -> bool;
}

/// Encodes a publication once its offset and epoch are known.
pub type EncodeAt<'a> = Box<dyn FnOnce(u64, &str) -> String + Send + 'a>;

/// Topic offsets, epochs, history and idempotency.
pub trait HistoryStore: Send + Sync + 'static {
    /// Appends a publication (or finds the caller's id already kept) and hands it to every
    /// node holding the topic. `frame(offset, epoch)` encodes it once.
    fn publish(
        &self,
        p: NewPublication,
        frame: EncodeAt<'_>,
    ) -> BoxFuture<'_, Result<Published, CoreError>>;

    /// The topic's epoch and latest offset (made when absent), with the kept publications
    /// after `since` when it is given, for a subscriber joining.
    fn read(
        &self,
        topic: &str,
        since: Option<u64>,
    ) -> BoxFuture<'_, Result<HistoryRead<SharedFrame>, CoreError>>;

    /// The History RPC: at most `limit` kept publications after `since`.
    fn history(
        &self,
        topic: &str,
        since: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<HistoryPage, CoreError>>;

    /// Topics with a kept publication, as name hashes (for GetStats).
    fn kept_topics(&self) -> BoxFuture<'_, Result<Vec<u64>, CoreError>>;

    /// Drops what expired (a store whose entries expire by themselves does nothing).
    fn sweep(&self, _now_ms: i64) {}
}

/// Commands and questions about connections, wherever they are.
pub trait Control: Send + Sync + 'static {
    /// Runs `command` on the selected connections; returns how many it applied to.
    fn command(&self, target: Selector, command: Command) -> BoxFuture<'_, Result<u32, CoreError>>;
    fn get(&self, connection_id: &str) -> BoxFuture<'_, Result<ConnSnapshot, CoreError>>;
    fn list(
        &self,
        filter: ListFilter,
        after: Option<Cursor>,
        size: usize,
    ) -> BoxFuture<'_, Result<ListPage, CoreError>>;
    fn presence(&self, topic: &str) -> BoxFuture<'_, Result<Vec<Present>, CoreError>>;
    fn stats(&self) -> BoxFuture<'_, Result<(Vec<StatsPart>, u32), CoreError>>;
    /// Makes every node's events reach this node's watchers from now on.
    fn watch(&self) -> BoxFuture<'_, Result<(), CoreError>>;
    /// This node's watchers have all gone.
    fn unwatch(&self);
}

/// The three parts a hub is built with.
#[derive(Clone)]
pub struct Family {
    pub broker: Arc<dyn Broker>,
    pub store: Arc<dyn HistoryStore>,
    pub control: Arc<dyn Control>,
}

impl Family {
    /// A family whose three parts are one object (as both implementations are).
    pub fn of<T: Broker + HistoryStore + Control>(all: &Arc<T>) -> Family {
        Family {
            broker: Arc::clone(all) as Arc<dyn Broker>,
            store: Arc::clone(all) as Arc<dyn HistoryStore>,
            control: Arc::clone(all) as Arc<dyn Control>,
        }
    }
}

/// The family a node was built with, and what must be done once the hub exists.
pub struct Built {
    pub family: Family,
    memory: Option<Arc<memory::Memory>>,
    redis: Option<Arc<redis::RedisCluster>>,
}

impl Built {
    /// Gives the family the hub that runs commands on this node's connections.
    pub fn attach(&self, hub: &Arc<crate::hub::Hub>) {
        if let Some(m) = &self.memory {
            m.attach(Arc::downgrade(hub));
        }
        if let Some(r) = &self.redis {
            r.attach(Arc::downgrade(hub));
        }
    }

    /// Leaves the cluster (a goodbye to the other nodes); nothing on a single node.
    pub async fn leave(&self) {
        if let Some(r) = &self.redis {
            r.leave().await;
        }
    }
}

/// Builds the family `[broker] kind` names, for this node.
pub async fn build(
    config: &crate::config::Config,
    local: Arc<crate::node::LocalNode>,
) -> Result<Built, crate::server::StartError> {
    let limits = memory::HistoryLimits {
        size: config.topics.history_size,
        ttl_ms: config.topics.history_ttl_ms,
    };
    match config.broker.kind {
        crate::config::BrokerKind::Redis => {
            let r = redis::RedisCluster::start(config, local)
                .await
                .map_err(|e| crate::server::StartError::Broker(e.to_string()))?;
            Ok(Built {
                family: Family::of(&r),
                memory: None,
                redis: Some(r),
            })
        }
        crate::config::BrokerKind::Memory => {
            let m = memory::Memory::new(local, limits);
            Ok(Built {
                family: Family::of(&m),
                memory: Some(m),
                redis: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(node: &str, seq: u64) -> ConnSnapshot {
        ConnSnapshot {
            id: format!("{node}.{seq:016x}"),
            node_id: node.into(),
            seq,
            user_id: "u".into(),
            roles: vec![],
            topics: vec![],
            metadata: BTreeMap::new(),
            connected_at_ms: 0,
            expires_at_ms: None,
            remote_addr: String::new(),
            user_agent: String::new(),
            messages_sent: 0,
            messages_dropped: 0,
            protocol: "native".into(),
        }
    }

    #[test]
    fn pages_merge_in_node_then_sequence_order() {
        let a = ListPage {
            items: vec![snap("a", 5), snap("a", 9)],
            total: 2,
            next: None,
        };
        let b = ListPage {
            items: vec![snap("a-b", 1), snap("a-b", 2)],
            total: 7,
            next: Some(("a-b".into(), 2)),
        };
        let p = merge_pages(vec![b, a], 3);
        let ids: Vec<_> = p
            .items
            .iter()
            .map(|c| (c.node_id.as_str(), c.seq))
            .collect();
        assert_eq!(ids, [("a", 5), ("a", 9), ("a-b", 1)]);
        assert_eq!(p.total, 9);
        assert_eq!(p.next, Some(("a-b".into(), 1)));
        let last = merge_pages(vec![ListPage::default()], 3);
        assert_eq!(last.next, None);
    }

    #[test]
    fn name_hash_is_stable() {
        assert_eq!(name_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(name_hash("a"), name_hash("b"));
    }
}
