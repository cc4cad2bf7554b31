//! The plain data every layer shares: who a delivery or a command is for, what a backend asks
//! done to connections, connection snapshots and listing pages, lifecycle events, the parts of
//! a stats answer, and what the history store takes and gives. No behaviour beyond pure
//! helpers (merging pages, a stable name hash): these types cross the cluster's wire, so they
//! are serde data, and they sit at the bottom so that the node, the cluster, the hub and the
//! doors can all name them without naming each other.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::event::Message;

/// Who something is for: the one way every layer names recipients. A delivery goes to a
/// user, a role, one connection or everyone (a topic's subscribers are reached by publishing,
/// through the history store); a command acts on one connection or a user's connections; a
/// node's interest is a user, a role or a topic it holds connections for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Who {
    User(String),
    Role(String),
    /// One connection, by its id `<node_id>.<seq>`: the node is read from the id.
    Connection(String),
    Topic(String),
    All,
}

/// What a backend asks to be done to connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Disconnect { code: u16, reason: String },
    Subscribe { topic: String },
    Unsubscribe { topic: String },
}

/// A connection as the API shows it, wherever it lives.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
pub enum ConnEventKind {
    Connected,
    Disconnected,
    Subscribed,
    Unsubscribed,
    /// A user's first connection anywhere opened (`conn` holds only the user and the node
    /// that saw it).
    UserOnline,
    /// A user's last connection closed and none came back within the grace.
    UserOffline,
}

impl ConnEventKind {
    /// Whether it is about a user rather than one connection.
    pub fn is_user(self) -> bool {
        matches!(self, ConnEventKind::UserOnline | ConnEventKind::UserOffline)
    }
}

/// A lifecycle event, as WatchEvents streams it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnEvent {
    pub kind: ConnEventKind,
    pub conn: ConnSnapshot,
    pub topic: Option<String>,
    pub close_code: u16,
    pub close_reason: String,
    pub at_ms: i64,
}

impl ConnEvent {
    /// A user's transition, seen by node `node` at `at_ms`.
    pub fn user(kind: ConnEventKind, user: &str, node: &str, at_ms: i64) -> ConnEvent {
        ConnEvent {
            kind,
            conn: ConnSnapshot {
                user_id: user.to_owned(),
                node_id: node.to_owned(),
                ..Default::default()
            },
            topic: None,
            close_code: 0,
            close_reason: String::new(),
            at_ms,
        }
    }
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

/// One node's line of the admin console's node table (from its [`StatsPart`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStats {
    pub node_id: String,
    pub connections: u64,
    pub users: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
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
pub struct PresenceEntry {
    pub connection_id: String,
    pub user_id: String,
}

/// A topic's subscribers, counted: connections, and distinct users among them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceCounts {
    pub connections: u64,
    pub users: u64,
}

/// A message on its way: to whom, and (for a stream) whether its id makes a retry
/// idempotent. To a topic it takes the topic stream's next position and is kept in its
/// history; to anyone else it is delivered as it is. A stream of another kind (a user's,
/// with user streams) is another `to` on the same path.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub to: Who,
    /// The message, validated; its id is the caller's or a server-made one.
    pub message: Message,
    /// Whether the caller chose the id (only those make retries idempotent).
    pub caller_id: bool,
}

/// Where a message sits in its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPosition {
    pub offset: u64,
    pub epoch: String,
}

/// What a delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Connections it was queued to, cluster-wide (0 for an idempotent retry).
    pub connections: u32,
    /// Its place in its stream (`None` for a message with no stream).
    pub position: Option<StreamPosition>,
}

/// A publication as the History RPC returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptPublication {
    pub offset: u64,
    pub message_id: String,
    pub kind: String,
    pub payload_json: String,
    pub published_at_ms: i64,
}

impl KeptPublication {
    /// A kept message as the History RPC shows it; `message_id` is the caller's id, or empty
    /// when the server made it.
    pub fn of(offset: u64, message_id: &str, m: &Message) -> KeptPublication {
        KeptPublication {
            offset,
            message_id: message_id.to_owned(),
            kind: m.kind.to_string(),
            payload_json: String::from_utf8_lossy(&m.payload).into_owned(),
            published_at_ms: m.ts_ms,
        }
    }
}

/// Which kept publications a history read returns: walking forward (oldest first) from
/// after `since`, or backward (newest first) from before `since` (from the top when `None`),
/// at most `limit` (0: none, just the epoch and the latest offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    pub since: Option<u64>,
    pub limit: usize,
    pub reverse: bool,
}

/// The History RPC's answer.
#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    pub publications: Vec<KeptPublication>,
    pub epoch: String,
    pub latest: u64,
}

/// How long a topic's position (epoch and latest offset) outlives its last use, at least: a
/// quiet topic keeps its epoch across reconnects, so a client that saw everything recovers.
pub const META_TTL_MS: u64 = 24 * 3600 * 1000;

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
