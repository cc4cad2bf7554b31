//! The connection registry: every live connection of this node, indexed by connection
//! sequence, by user and by role, so that each kind of delivery costs only the connections it
//! reaches (SendToUser is O(that user's connections), not O(all connections)).
//!
//! Every index is sharded behind its own `RwLock` and holds the same `Arc<Conn>`, so a lookup
//! takes one shard's read lock and never touches a socket: delivering is a non-blocking
//! [`Outbox::offer`] per recipient. Removing a connection takes it out of every index in one
//! call. Sequences order connections for keyset pagination.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

/// How a connection receives events: a bounded, non-blocking queue in front of its socket.
pub trait Outbox: Send + Sync + 'static {
    /// What is queued: a shared event (cheap to clone: a pointer).
    type Item: Send + Sync;
    /// Queues a frame without waiting.
    fn offer(&self, frame: &Self::Item) -> Offer;
    /// Asks the connection to close with this code and reason; later calls are ignored.
    fn close(&self, code: u16, reason: &str) {
        self.close_from(code, reason, crate::core::close::Origin::Server);
    }
    /// [`Outbox::close`], saying who asked (a backend's Disconnect code passes through
    /// unchanged on every endpoint).
    fn close_from(&self, code: u16, reason: &str, origin: crate::core::close::Origin);
    /// Asks the connection to send a heartbeat ping.
    fn ping(&self);
}

/// What [`Outbox::offer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// The queue is full: the connection is a slow consumer.
    Full,
    /// The connection is already gone.
    Closed,
}

/// What a connection is, fixed when it is accepted.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub id: String,
    pub seq: u64,
    pub user_id: String,
    pub roles: Vec<String>,
    /// The token's `topics` claim: patterns this connection may subscribe itself to.
    pub topic_patterns: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub connected_at_ms: i64,
    pub remote_addr: String,
    pub user_agent: String,
    /// Which WebSocket protocol the connection speaks.
    pub protocol: Protocol,
}

/// The client protocol of a connection (`Connection.protocol` in the gRPC API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// `GET /ws`, docs/protocol.md.
    #[default]
    Native,
    /// The Centrifugo client protocol v2 in JSON.
    CentrifugeJson,
    /// The Centrifugo client protocol v2 in Protobuf.
    CentrifugeProtobuf,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Native => "native",
            Protocol::CentrifugeJson => "centrifuge-json",
            Protocol::CentrifugeProtobuf => "centrifuge-protobuf",
        }
    }
}

const NO_EXPIRY: i64 = i64::MIN;

/// [`Conn`]'s state word: closing, and parked on its empty user stream at offset 0 of the
/// epoch in the low 32 bits. One word, so that parking refuses a closing connection and
/// closing sees a parked one without a lock between them (`topic_table/park.rs`).
const CLOSING: u64 = 1 << 63;
const PARKED: u64 = 1 << 62;
const EPOCH: u64 = u32::MAX as u64;

/// A live connection: its fixed facts, its outbox and its counters.
pub struct Conn<O> {
    pub info: ConnInfo,
    pub outbox: O,
    expires_at_ms: AtomicI64,
    sent: AtomicU64,
    dropped: AtomicU64,
    /// [`CLOSING`], [`PARKED`] and the parked epoch.
    state: AtomicU64,
    last_seen_ms: AtomicI64,
    ping_sent_ms: AtomicI64,
    topics: Mutex<TopicSet>,
}

/// A connection's topics, sorted, in exactly the memory they need (a `BTreeSet` leaf is about
/// 300 bytes; this is 24 and the names). Its user stream is not here: it is always its user's,
/// and the topic table leaves it with the rest. Small by construction (capped by
/// `topics.max_subscriptions`), so inserting and removing in a vector is cheap.
#[derive(Debug, Default)]
pub struct TopicSet(Vec<String>);

impl TopicSet {
    pub fn contains(&self, name: &str) -> bool {
        self.0.binary_search_by(|n| n.as_str().cmp(name)).is_ok()
    }

    /// False when it was there already.
    pub fn insert(&mut self, name: String) -> bool {
        match self.0.binary_search(&name) {
            Ok(_) => false,
            Err(at) => {
                self.0.reserve_exact(1);
                self.0.insert(at, name);
                true
            }
        }
    }

    /// False when it was not there.
    pub fn remove(&mut self, name: &str) -> bool {
        match self.0.binary_search_by(|n| n.as_str().cmp(name)) {
            Ok(at) => {
                self.0.remove(at);
                if self.0.is_empty() {
                    self.0 = Vec::new();
                }
                true
            }
            Err(_) => false,
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &String> {
        self.0.iter()
    }

    /// Empties it, handing back what it held.
    pub fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.0)
    }
}

impl<O> Conn<O> {
    pub fn new(info: ConnInfo, expires_at_ms: Option<i64>, outbox: O) -> Self {
        Conn {
            outbox,
            expires_at_ms: AtomicI64::new(expires_at_ms.unwrap_or(NO_EXPIRY)),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            state: AtomicU64::new(0),
            last_seen_ms: AtomicI64::new(info.connected_at_ms),
            ping_sent_ms: AtomicI64::new(NO_EXPIRY),
            topics: Mutex::new(TopicSet::default()),
            info,
        }
    }

    /// Records that a frame arrived at `now_ms`.
    pub fn touch(&self, now_ms: i64) {
        self.last_seen_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Records that a heartbeat ping was requested at `now_ms`.
    pub fn mark_ping_sent(&self, now_ms: i64) {
        self.ping_sent_ms.store(now_ms, Ordering::Relaxed);
    }

    /// What the heartbeat rules need to know about this connection.
    pub fn heartbeat_state(&self) -> super::heartbeat::State {
        super::heartbeat::State {
            connected_at_ms: self.info.connected_at_ms,
            last_seen_ms: self.last_seen_ms.load(Ordering::Relaxed),
            ping_sent_ms: match self.ping_sent_ms.load(Ordering::Relaxed) {
                NO_EXPIRY => None,
                v => Some(v),
            },
            expires_at_ms: self.expires_at_ms(),
        }
    }

    pub fn expires_at_ms(&self) -> Option<i64> {
        match self.expires_at_ms.load(Ordering::Relaxed) {
            NO_EXPIRY => None,
            v => Some(v),
        }
    }

    pub fn set_expires_at_ms(&self, v: Option<i64>) {
        self.expires_at_ms
            .store(v.unwrap_or(NO_EXPIRY), Ordering::Relaxed);
    }

    /// Messages queued to this connection.
    pub fn messages_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Messages that did not fit its queue.
    pub fn messages_dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// True once the connection is on its way out: it takes no more messages.
    pub fn is_closing(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLOSING != 0
    }

    /// Marks the connection as closing; true for the one caller that did it first.
    pub fn mark_closing(&self) -> bool {
        self.state.fetch_or(CLOSING, Ordering::AcqRel) & CLOSING == 0
    }

    /// Parks the connection on its empty user stream at offset 0 of `epoch`; false (and not
    /// parked) when it is closing.
    pub fn park(&self, epoch: u32) -> bool {
        self.state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s & CLOSING == 0).then_some(PARKED | u64::from(epoch))
            })
            .is_ok()
    }

    /// Takes the connection off its parked stream: the epoch it was parked at, once. With
    /// `open_only`, a closing connection keeps its mark (it is leaving; its leave takes it).
    pub fn unpark(&self, open_only: bool) -> Option<u32> {
        self.state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                let takeable = s & PARKED != 0 && !(open_only && s & CLOSING != 0);
                takeable.then_some(s & CLOSING)
            })
            .ok()
            // Truncation is the point: the epoch is the low 32 bits.
            .map(|s| (s & EPOCH) as u32)
    }

    /// The epoch the connection is parked at, if it is.
    pub fn parked(&self) -> Option<u32> {
        let s = self.state.load(Ordering::Acquire);
        (s & PARKED != 0).then_some((s & EPOCH) as u32)
    }

    /// The set of topics this connection is subscribed to, locked. The topic table takes it
    /// before a topic's lock; nothing else may hold it while taking another lock.
    pub fn topic_set(&self) -> parking_lot::MutexGuard<'_, TopicSet> {
        self.topics.lock()
    }

    /// Counts the outcome of one offer in this connection's counters.
    pub fn count_offer(&self, r: Offer) {
        match r {
            Offer::Queued => {
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
            Offer::Full => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Offer::Closed => {}
        }
    }

    /// Topics this connection is subscribed to, sorted.
    /// The topics it is subscribed to (not its user stream, which is not a topic).
    pub fn topics(&self) -> Vec<String> {
        self.topics
            .lock()
            .iter()
            .filter(|t| super::stream::is_topic(t))
            .cloned()
            .collect()
    }

    pub fn has_topic(&self, topic: &str) -> bool {
        self.topics.lock().contains(topic)
    }
}

/// Who a delivery goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    User(&'a str),
    Role(&'a str),
    /// One connection of this node, by sequence.
    Connection(u64),
    All,
}

/// The result of one delivery on this node.
pub struct Delivery<O> {
    /// Connections the frame was queued to.
    pub queued: u32,
    /// Connections whose queue was full: the caller closes them (slow consumers).
    pub overflowed: Vec<Arc<Conn<O>>>,
}

/// The user already has the most connections allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooMany;

/// Filters of a listing; all given ones must match.
#[derive(Debug, Default, Clone, Copy)]
pub struct Filter<'a> {
    pub user: Option<&'a str>,
    pub role: Option<&'a str>,
    pub topic: Option<&'a str>,
}

/// One page of a listing, in sequence order.
pub struct Page<O> {
    pub items: Vec<Arc<Conn<O>>>,
    /// Connections matching the filters, on every page.
    pub total: usize,
    /// Where the next page starts (exclusive), `None` on the last page.
    pub next_after: Option<u64>,
}

impl<O> Page<O> {
    /// A page from the first `limit + 1` matches after the cursor, in order: the first
    /// `limit` of them, and a next page when there was one more.
    pub fn from_run(mut items: Vec<Arc<Conn<O>>>, limit: usize, total: usize) -> Self {
        let more = items.len() > limit;
        items.truncate(limit);
        Page::ending(items, more, total)
    }

    /// A page of `items`, with a next page after its last one when there are `more`.
    fn ending(items: Vec<Arc<Conn<O>>>, more: bool, total: usize) -> Self {
        Page {
            next_after: if more {
                items.last().map(|c| c.info.seq)
            } else {
                None
            },
            items,
            total,
        }
    }
}

type Members<O> = BTreeMap<u64, Arc<Conn<O>>>;

const SHARDS: usize = 32;

type IndexShard<O> = RwLock<HashMap<String, Members<O>>>;

/// A sharded map from a key (user id, role) to the connections that carry it.
struct Index<O> {
    shards: Box<[IndexShard<O>]>,
    hasher: RandomState,
    keys: AtomicUsize,
}

impl<O> Index<O> {
    fn new() -> Self {
        Index {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            keys: AtomicUsize::new(0),
        }
    }

    fn shard(&self, key: &str) -> &IndexShard<O> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    fn add(&self, key: &str, conn: &Arc<Conn<O>>) {
        self.add_limited(key, conn, 0);
    }

    /// Adds `conn` under `key` unless `key` already has `max` members (0: no limit).
    fn add_limited(&self, key: &str, conn: &Arc<Conn<O>>, max: usize) -> bool {
        let mut shard = self.shard(key).write();
        if max > 0 && shard.get(key).is_some_and(|m| m.len() >= max) {
            return false;
        }
        let members = shard.entry(key.to_owned()).or_insert_with(|| {
            self.keys.fetch_add(1, Ordering::Relaxed);
            BTreeMap::new()
        });
        members.insert(conn.info.seq, Arc::clone(conn));
        true
    }

    fn remove(&self, key: &str, seq: u64) {
        let mut shard = self.shard(key).write();
        if let Some(members) = shard.get_mut(key) {
            members.remove(&seq);
            if members.is_empty() {
                shard.remove(key);
                self.keys.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Runs `f` on the members of `key` under the shard's read lock.
    fn with<R>(&self, key: &str, f: impl FnOnce(Option<&Members<O>>) -> R) -> R {
        let shard = self.shard(key).read();
        f(shard.get(key))
    }
}

/// Every live connection of this node.
pub struct Registry<O: Outbox> {
    conns: Box<[RwLock<Members<O>>]>,
    users: Index<O>,
    roles: Index<O>,
    count: AtomicUsize,
}

impl<O: Outbox> Default for Registry<O> {
    fn default() -> Self {
        Self::new()
    }
}

impl<O: Outbox> Registry<O> {
    pub fn new() -> Self {
        Registry {
            conns: (0..SHARDS).map(|_| RwLock::new(BTreeMap::new())).collect(),
            users: Index::new(),
            roles: Index::new(),
            count: AtomicUsize::new(0),
        }
    }

    fn conn_shard(&self, seq: u64) -> &RwLock<Members<O>> {
        &self.conns[(seq as usize) % SHARDS]
    }

    /// Live connections.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Distinct users with at least one live connection.
    pub fn users(&self) -> usize {
        self.users.keys.load(Ordering::Relaxed)
    }

    /// Connections of one user right now.
    pub fn user_connections(&self, user: &str) -> usize {
        self.users.with(user, |m| m.map_or(0, BTreeMap::len))
    }

    /// Adds a connection to every index.
    pub fn insert(&self, conn: Arc<Conn<O>>) {
        // With no limit the insert cannot be refused.
        let _ = self.insert_limited(conn, 0);
    }

    /// Adds a connection to every index unless its user already has `max_per_user`
    /// connections (0: no limit). The check and the insert are one step under the user's
    /// shard lock, so concurrent connects of one user cannot overshoot.
    pub fn insert_limited(&self, conn: Arc<Conn<O>>, max_per_user: usize) -> Result<(), TooMany> {
        if !self
            .users
            .add_limited(&conn.info.user_id, &conn, max_per_user)
        {
            return Err(TooMany);
        }
        let seq = conn.info.seq;
        if self
            .conn_shard(seq)
            .write()
            .insert(seq, Arc::clone(&conn))
            .is_none()
        {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        for role in distinct(&conn.info.roles) {
            self.roles.add(role, &conn);
        }
        Ok(())
    }

    /// How many live connections are parked on their empty user stream (for tests).
    pub fn parked_len(&self) -> usize {
        let mut n = 0;
        self.for_each(|c| n += usize::from(c.parked().is_some()));
        n
    }

    /// Calls `f` on every live connection, one shard's read lock at a time. `f` must not
    /// call back into the registry.
    pub fn for_each(&self, mut f: impl FnMut(&Arc<Conn<O>>)) {
        for shard in self.conns.iter() {
            shard.read().values().for_each(&mut f);
        }
    }

    /// Takes a connection out of every index and marks it closing. Returns it to the one
    /// caller that removed it; `None` when it was already gone.
    pub fn remove(&self, seq: u64) -> Option<Arc<Conn<O>>> {
        let conn = self.conn_shard(seq).write().remove(&seq)?;
        self.count.fetch_sub(1, Ordering::Relaxed);
        conn.mark_closing();
        self.users.remove(&conn.info.user_id, seq);
        for role in distinct(&conn.info.roles) {
            self.roles.remove(role, seq);
        }
        Some(conn)
    }

    pub fn get(&self, seq: u64) -> Option<Arc<Conn<O>>> {
        self.conn_shard(seq).read().get(&seq).cloned()
    }

    /// Calls `f` with each live connection of one user, under its index shard's read lock
    /// (`f` must not take a registry lock).
    pub fn each_of_user(&self, user: &str, mut f: impl FnMut(&Arc<Conn<O>>)) {
        self.users.with(user, |m| {
            if let Some(m) = m {
                m.values().for_each(&mut f);
            }
        })
    }

    /// The live connections of one user.
    pub fn of_user(&self, user: &str) -> Vec<Arc<Conn<O>>> {
        self.users
            .with(user, |m| m.map(|m| m.values().cloned().collect()))
            .unwrap_or_default()
    }

    /// Every live connection (for shutdown and tests; not on a hot path).
    pub fn all(&self) -> Vec<Arc<Conn<O>>> {
        let mut out = Vec::with_capacity(self.len());
        for shard in self.conns.iter() {
            out.extend(shard.read().values().cloned());
        }
        out
    }

    /// Queues `frame` to every connection `target` names. Never waits: a full queue is
    /// reported in [`Delivery::overflowed`] for the caller to close.
    pub fn deliver(&self, target: Target<'_>, frame: &O::Item) -> Delivery<O> {
        let mut d = Delivery {
            queued: 0,
            overflowed: Vec::new(),
        };
        match target {
            Target::User(user) => self.users.with(user, |m| {
                m.into_iter()
                    .flat_map(|m| m.values())
                    .for_each(|c| offer_to(c, frame, &mut d))
            }),
            Target::Role(role) => self.roles.with(role, |m| {
                m.into_iter()
                    .flat_map(|m| m.values())
                    .for_each(|c| offer_to(c, frame, &mut d))
            }),
            Target::Connection(seq) => {
                if let Some(c) = self.conn_shard(seq).read().get(&seq) {
                    offer_to(c, frame, &mut d);
                }
            }
            Target::All => {
                for shard in self.conns.iter() {
                    shard
                        .read()
                        .values()
                        .for_each(|c| offer_to(c, frame, &mut d));
                }
            }
        }
        d
    }

    /// One page of the connections matching `filter`, in sequence order, starting after
    /// sequence `after`. Connections that stay live are never repeated nor skipped across
    /// pages, whatever comes and goes between calls.
    pub fn list(&self, filter: Filter<'_>, after: Option<u64>, limit: usize) -> Page<O> {
        let limit = limit.max(1);
        let start = after.map_or(0, |a| a.saturating_add(1));
        if after == Some(u64::MAX) {
            return Page {
                items: Vec::new(),
                total: 0,
                next_after: None,
            };
        }
        let topic_ok = |c: &Conn<O>| filter.topic.is_none_or(|t| c.has_topic(t));
        let role_ok = |c: &Conn<O>| {
            filter
                .role
                .is_none_or(|r| c.info.roles.iter().any(|x| x == r))
        };
        if let Some(user) = filter.user {
            self.users.with(user, |m| {
                scan_page(m.into_iter().flat_map(|m| m.values()), start, limit, |c| {
                    role_ok(c) && topic_ok(c)
                })
            })
        } else if let Some(role) = filter.role {
            self.roles.with(role, |m| {
                scan_page(m.into_iter().flat_map(|m| m.values()), start, limit, |c| {
                    topic_ok(c)
                })
            })
        } else if filter.topic.is_some() {
            let all = self.all_sorted();
            scan_page(all.iter(), start, limit, |c| topic_ok(c))
        } else {
            // No filter: merge the first `limit + 1` of each shard from the cursor on.
            let mut items: Vec<Arc<Conn<O>>> = Vec::new();
            for shard in self.conns.iter() {
                items.extend(
                    shard
                        .read()
                        .range(start..)
                        .take(limit + 1)
                        .map(|(_, c)| c.clone()),
                );
            }
            items.sort_unstable_by_key(|c| c.info.seq);
            Page::from_run(items, limit, self.len())
        }
    }

    fn all_sorted(&self) -> Vec<Arc<Conn<O>>> {
        let mut all = self.all();
        all.sort_unstable_by_key(|c| c.info.seq);
        all
    }
}

fn offer_to<O: Outbox>(conn: &Arc<Conn<O>>, frame: &O::Item, d: &mut Delivery<O>) {
    if conn.is_closing() {
        return;
    }
    let r = conn.outbox.offer(frame);
    conn.count_offer(r);
    match r {
        Offer::Queued => d.queued += 1,
        Offer::Full => {
            if conn.mark_closing() {
                d.overflowed.push(Arc::clone(conn));
            }
        }
        Offer::Closed => {}
    }
}

/// One page of `members` (already in sequence order, such as a topic's subscribers) that carry
/// `role` when given, after sequence `after`.
pub fn page_of<O>(
    members: &[Arc<Conn<O>>],
    role: Option<&str>,
    after: Option<u64>,
    limit: usize,
) -> Page<O> {
    if after == Some(u64::MAX) {
        return Page {
            items: Vec::new(),
            total: 0,
            next_after: None,
        };
    }
    let start = after.map_or(0, |a| a + 1);
    scan_page(members.iter(), start, limit.max(1), |c| {
        role.is_none_or(|r| c.info.roles.iter().any(|x| x == r))
    })
}

/// Pages through `members` (in sequence order), counting every match for `total`.
fn scan_page<'a, O: 'a>(
    members: impl Iterator<Item = &'a Arc<Conn<O>>>,
    start: u64,
    limit: usize,
    keep: impl Fn(&Conn<O>) -> bool,
) -> Page<O> {
    let mut items = Vec::new();
    let mut total = 0;
    let mut more = false;
    for c in members.filter(|c| keep(c)) {
        total += 1;
        if c.info.seq >= start {
            if items.len() < limit {
                items.push(Arc::clone(c));
            } else {
                more = true;
            }
        }
    }
    Page::ending(items, more, total)
}

/// The distinct entries of a small list, in order of first appearance.
fn distinct(items: &[String]) -> impl Iterator<Item = &str> {
    items
        .iter()
        .enumerate()
        .filter(move |(i, s)| !items[..*i].contains(s))
        .map(|(_, s)| s.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_set_is_sorted_without_repeats_and_frees_its_memory_when_empty() {
        let mut t = TopicSet::default();
        assert!(t.insert("b".into()));
        assert!(t.insert("#u".into()));
        assert!(t.insert("a".into()));
        assert!(!t.insert("a".into()));
        assert_eq!(t.iter().collect::<Vec<_>>(), ["#u", "a", "b"]);
        assert!(t.contains("b") && !t.contains("c"));
        assert!(t.remove("a") && !t.remove("a"));
        assert_eq!(t.len(), 2);
        assert_eq!(t.take(), vec!["#u".to_owned(), "b".to_owned()]);
        assert!(t.is_empty());
        t.insert("x".into());
        t.remove("x");
        assert_eq!(t.0.capacity(), 0);
    }

    /// An outbox that keeps what it is given, up to a capacity.
    #[derive(Default)]
    struct TestOutbox {
        cap: usize,
        got: Mutex<Vec<String>>,
        closed: Mutex<Option<u16>>,
    }

    impl Outbox for TestOutbox {
        type Item = String;
        fn offer(&self, frame: &String) -> Offer {
            let mut got = self.got.lock();
            if got.len() >= self.cap {
                return Offer::Full;
            }
            got.push(frame.clone());
            Offer::Queued
        }
        fn close_from(&self, code: u16, _reason: &str, _origin: crate::core::close::Origin) {
            self.closed.lock().get_or_insert(code);
        }
        fn ping(&self) {}
    }

    fn conn(seq: u64, user: &str, roles: &[&str], cap: usize) -> Arc<Conn<TestOutbox>> {
        Arc::new(Conn::new(
            ConnInfo {
                id: format!("n.{seq:016x}"),
                seq,
                user_id: user.into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                topic_patterns: Vec::new(),
                metadata: BTreeMap::new(),
                connected_at_ms: 0,
                remote_addr: String::new(),
                user_agent: String::new(),
                protocol: Default::default(),
            },
            None,
            TestOutbox {
                cap,
                ..Default::default()
            },
        ))
    }

    fn got(r: &Registry<TestOutbox>, seq: u64) -> Vec<String> {
        r.get(seq)
            .map(|c| c.outbox.got.lock().clone())
            .unwrap_or_default()
    }

    fn setup() -> Registry<TestOutbox> {
        let r = Registry::new();
        r.insert(conn(1, "alice", &["admin", "staff"], 10));
        r.insert(conn(2, "alice", &["staff"], 10));
        r.insert(conn(3, "bob", &["staff", "staff"], 10));
        r.insert(conn(4, "carol", &[], 10));
        r
    }

    #[test]
    fn each_target_reaches_exactly_its_connections() {
        let r = setup();
        let cases: [(Target, &[u64]); 6] = [
            (Target::User("alice"), &[1, 2]),
            (Target::User("nobody"), &[]),
            (Target::Role("staff"), &[1, 2, 3]),
            (Target::Role("admin"), &[1]),
            (Target::Connection(4), &[4]),
            (Target::All, &[1, 2, 3, 4]),
        ];
        for (i, (target, want)) in cases.iter().enumerate() {
            let frame = format!("m{i}");
            let d = r.deliver(*target, &frame);
            assert_eq!(d.queued as usize, want.len(), "{target:?}");
            for seq in 1..=4 {
                assert_eq!(
                    got(&r, seq).contains(&frame),
                    want.contains(&seq),
                    "{target:?} seq {seq}"
                );
            }
        }
        // bob's duplicated role "staff" gets the role message once (plus the broadcast)
        assert_eq!(got(&r, 3), vec!["m2", "m5"]);
    }

    #[test]
    fn removal_leaves_every_index() {
        let r = setup();
        assert_eq!((r.len(), r.users()), (4, 3));
        let c = r.remove(3).expect("present");
        assert!(c.is_closing());
        assert!(r.remove(3).is_none(), "second removal finds nothing");
        assert_eq!((r.len(), r.users()), (3, 2));
        assert_eq!(r.deliver(Target::User("bob"), &"x".into()).queued, 0);
        assert_eq!(r.deliver(Target::Role("staff"), &"x".into()).queued, 2);
        assert_eq!(r.deliver(Target::Connection(3), &"x".into()).queued, 0);
        assert!(r.get(3).is_none());
        r.remove(1);
        r.remove(2);
        assert_eq!(r.users(), 1);
        assert_eq!(r.user_connections("alice"), 0);
        assert_eq!(r.deliver(Target::Role("admin"), &"x".into()).queued, 0);
    }

    #[test]
    fn the_per_user_limit_is_checked_on_insert() {
        let r = Registry::new();
        assert_eq!(r.insert_limited(conn(1, "u", &["a"], 1), 2), Ok(()));
        assert_eq!(r.insert_limited(conn(2, "u", &["a"], 1), 2), Ok(()));
        assert_eq!(r.insert_limited(conn(3, "u", &["a"], 1), 2), Err(TooMany));
        assert!(r.get(3).is_none(), "a refused connection is in no index");
        assert_eq!(r.deliver(Target::Role("a"), &"x".into()).queued, 2);
        assert_eq!(r.insert_limited(conn(4, "v", &[], 1), 2), Ok(()));
        r.remove(1);
        assert_eq!(r.insert_limited(conn(5, "u", &[], 1), 2), Ok(()));
        assert_eq!((r.len(), r.user_connections("u")), (3, 2));
        let mut seen = Vec::new();
        r.for_each(|c| seen.push(c.info.seq));
        seen.sort();
        assert_eq!(seen, vec![2, 4, 5]);
    }

    #[test]
    fn heartbeat_state_follows_touch_and_ping() {
        let c = conn(1, "u", &[], 1);
        let s = c.heartbeat_state();
        assert_eq!(
            (s.last_seen_ms, s.ping_sent_ms, s.expires_at_ms),
            (0, None, None)
        );
        c.touch(50);
        c.mark_ping_sent(40);
        c.set_expires_at_ms(Some(99));
        let s = c.heartbeat_state();
        assert_eq!(
            (s.last_seen_ms, s.ping_sent_ms, s.expires_at_ms),
            (50, Some(40), Some(99))
        );
    }

    #[test]
    fn a_full_queue_is_reported_once_and_skipped_after() {
        let r = Registry::new();
        r.insert(conn(1, "u", &[], 1));
        r.insert(conn(2, "u", &[], 5));
        let d = r.deliver(Target::User("u"), &"a".into());
        assert_eq!((d.queued, d.overflowed.len()), (2, 0));
        let d = r.deliver(Target::User("u"), &"b".into());
        assert_eq!(d.queued, 1);
        assert_eq!(d.overflowed.len(), 1);
        assert_eq!(d.overflowed[0].info.seq, 1);
        assert_eq!(d.overflowed[0].messages_dropped(), 1);
        let d = r.deliver(Target::User("u"), &"c".into());
        assert_eq!(
            (d.queued, d.overflowed.len()),
            (1, 0),
            "a closing connection is skipped"
        );
        assert_eq!(r.get(2).unwrap().messages_sent(), 3);
    }

    #[test]
    fn pages_neither_repeat_nor_skip_connections_that_stay() {
        let r = Registry::new();
        for seq in 1..=50 {
            r.insert(conn(
                seq,
                if seq % 2 == 0 { "even" } else { "odd" },
                &["r"],
                1,
            ));
        }
        let mut seen = Vec::new();
        let mut after = None;
        let mut next_seq = 51;
        loop {
            let page = r.list(Filter::default(), after, 7);
            seen.extend(page.items.iter().map(|c| c.info.seq));
            // churn between pages: drop a seen one and an unseen one, add a new one
            if let Some(first) = page.items.first() {
                r.remove(first.info.seq);
            }
            r.remove(next_seq - 10);
            r.insert(conn(next_seq, "new", &[], 1));
            next_seq += 1;
            match page.next_after {
                Some(a) => after = Some(a),
                None => break,
            }
        }
        let mut sorted = seen.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), seen.len(), "no repeats");
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order");
        for seq in 1..=50u64 {
            if r.get(seq).is_some() {
                assert!(seen.contains(&seq), "{seq} stayed and must be listed");
            }
        }
    }

    #[test]
    fn a_sorted_member_list_pages_like_the_registry() {
        let r = setup();
        let members: Vec<_> = [1, 2, 3].iter().map(|s| r.get(*s).unwrap()).collect();
        let p = page_of(&members, None, None, 2);
        assert_eq!((p.items.len(), p.total, p.next_after), (2, 3, Some(2)));
        let p = page_of(&members, None, Some(2), 2);
        assert_eq!((p.items[0].info.seq, p.next_after), (3, None));
        let p = page_of(&members, Some("admin"), None, 10);
        assert_eq!((p.items.len(), p.total), (1, 1));
    }

    #[test]
    fn filters_combine_and_count_totals() {
        let r = setup();
        let p = r.list(
            Filter {
                user: Some("alice"),
                ..Default::default()
            },
            None,
            1,
        );
        assert_eq!((p.items.len(), p.total, p.next_after), (1, 2, Some(1)));
        let p = r.list(
            Filter {
                user: Some("alice"),
                ..Default::default()
            },
            Some(1),
            1,
        );
        assert_eq!((p.items[0].info.seq, p.total, p.next_after), (2, 2, None));
        let p = r.list(
            Filter {
                user: Some("alice"),
                role: Some("admin"),
                topic: None,
            },
            None,
            10,
        );
        assert_eq!((p.items.len(), p.total), (1, 1));
        let p = r.list(
            Filter {
                role: Some("staff"),
                ..Default::default()
            },
            None,
            10,
        );
        assert_eq!(
            p.items.iter().map(|c| c.info.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        let p = r.list(
            Filter {
                topic: Some("t"),
                ..Default::default()
            },
            None,
            10,
        );
        assert_eq!((p.items.len(), p.total), (0, 0));
        let p = r.list(Filter::default(), None, 3);
        assert_eq!((p.items.len(), p.total, p.next_after), (3, 4, Some(3)));
        let p = r.list(Filter::default(), Some(u64::MAX), 3);
        assert_eq!(p.items.len(), 0);
    }
}
