//! The local topic table: for every topic this node holds (a connection subscribed or joining
//! on this node), its subscribers and where the topic's live stream stands here. It keeps no
//! history: offsets, epochs and history live in the history store (memory or the cluster's),
//! and publications reach this table as they arrive, in whatever order the transport gives.
//!
//! The stream position makes delivery exactly-once and in order per subscriber: the next
//! offset is delivered, an older one is a duplicate and dropped, a later one waits in
//! `pending` and reports a gap that the shell fills from history ([`Topics::on_publication`]
//! then [`Topics::skip_gap`] if history cannot fill it). A new epoch tells every subscriber
//! with a `subscribed` frame carrying `recovered: false`: never a silent gap.
//!
//! Joining (subscribe, with or without recovery) holds no lock across the history read:
//! [`Topics::begin_join`] starts buffering live publications for the connection, the shell
//! makes sure the node receives the topic's live stream and reads the history, and
//! [`Topics::finish_join`] merges the two by offset (deduplicated, contiguous), queues the
//! replay and the reply, and makes the connection a live subscriber.
//!
//! Pure: no I/O, no clock. Lock order: a connection's topic set, then a topic, then (adopting
//! parked connections, `park.rs`) a shard of the registry's user index.

mod join;
mod park;

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

mod subs;
use subs::Subs;

use super::model::name_hash;
use super::registry::{Conn, Offer, Outbox, Registry};

const SHARDS: usize = 32;
/// Publications held while waiting for a missing one; past this the gap is skipped.
pub const MAX_PENDING: usize = 1024;

/// A subscriber and the offset after which it takes publications (what it already has).
struct Sub<O> {
    conn: Arc<Conn<O>>,
    after: u64,
    /// Wants join and leave notices for this topic.
    listen: bool,
}

struct Joiner<O: Outbox> {
    ticket: u64,
    conn: Arc<Conn<O>>,
    /// Publications that arrived while joining: (epoch, offset, frame).
    seen: Vec<(Arc<str>, u64, O::Item)>,
}

/// Where the topic's live stream stands on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stream {
    epoch: Arc<str>,
    last: u64,
}

struct TopicState<O: Outbox> {
    subscribers: Subs<Sub<O>>,
    /// The subscribers' users (name hashes) with how many connections each, so that
    /// Presence counts them without listing anyone; none for a user stream (one user) or a
    /// topic without subscribers. Boxed: 8 bytes instead of a map's 48 in every state,
    /// since most states (user streams) never have one.
    #[allow(clippy::box_collection)]
    users: Option<Box<HashMap<u64, u32>>>,
    /// How many subscribers listen for joins and leaves.
    listeners: usize,
    joining: Vec<Joiner<O>>,
    stream: Option<Stream>,
    pending: BTreeMap<u64, O::Item>,
}

impl<O: Outbox> Default for TopicState<O> {
    fn default() -> Self {
        TopicState {
            subscribers: Default::default(),
            users: None,
            listeners: 0,
            joining: Vec::new(),
            stream: None,
            pending: BTreeMap::new(),
        }
    }
}

impl<O: Outbox> TopicState<O> {
    fn is_empty(&self) -> bool {
        self.subscribers.is_empty() && self.joining.is_empty()
    }

    /// A subscriber of user `user` (a name hash) came.
    fn user_came(&mut self, user: u64) {
        *self
            .users
            .get_or_insert_with(Default::default)
            .entry(user)
            .or_default() += 1;
    }

    /// A subscriber of user `user` left.
    fn user_left(&mut self, user: u64) {
        let Some(users) = self.users.as_mut() else {
            return;
        };
        if let std::collections::hash_map::Entry::Occupied(mut e) = users.entry(user) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
        if users.is_empty() {
            self.users = None;
        }
    }
}

type Shard<O> = RwLock<HashMap<String, Arc<Mutex<TopicState<O>>>>>;

pub struct Topics<O: Outbox> {
    shards: Box<[Shard<O>]>,
    hasher: RandomState,
    count: AtomicUsize,
    tickets: AtomicU64,
}

/// Why a subscribe did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeRefused {
    /// The connection is closing.
    Closing,
    /// It already has `max` subscriptions.
    TooMany,
}

/// A join in progress: hand it back to [`Topics::finish_join`] or [`Topics::cancel_join`].
#[derive(Debug)]
pub struct Ticket {
    topic: String,
    id: u64,
    seq: u64,
}

impl Ticket {
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

/// What [`Topics::begin_join`] did.
#[derive(Debug)]
pub enum JoinStart {
    Joining(Ticket),
    /// The connection is already subscribed.
    Already,
}

/// The history store's answer for a join: the topic's epoch and latest offset, and (when the
/// join asked to recover) the publications after the client's offset, oldest first.
#[derive(Debug, Clone)]
pub struct HistoryRead<F> {
    pub epoch: String,
    pub latest: u64,
    /// Publications after the requested offset, contiguous, oldest first.
    pub pubs: Vec<(u64, F)>,
    /// Whether `pubs` reaches back to the requested offset (everything missed is there).
    pub complete: bool,
}

/// What a finished join did.
pub struct Joined<O> {
    pub offset: u64,
    pub epoch: String,
    /// With a position: whether everything missed was replayed.
    pub recovered: Option<bool>,
    pub replayed: usize,
    /// Connections whose queue overflowed: the caller closes them.
    pub overflowed: Vec<Arc<Conn<O>>>,
}

/// What a live publication did on this node.
pub struct Arrival<O> {
    /// Subscribers it (and any pending publications it released) was queued to.
    pub queued: u32,
    /// Subscribers it will be queued to once the gap before it is filled (or skipped).
    pub waiting: u32,
    pub overflowed: Vec<Arc<Conn<O>>>,
    /// Offsets missing before it: `(after, before)`, both exclusive. The shell reads them from
    /// history and feeds them here, or calls [`Topics::skip_gap`].
    pub gap: Option<(u64, u64)>,
}

impl<O> Default for Arrival<O> {
    fn default() -> Self {
        Arrival {
            queued: 0,
            waiting: 0,
            overflowed: Vec::new(),
            gap: None,
        }
    }
}

/// A live publication as it reaches this node.
#[derive(Debug, Clone, Copy)]
pub struct LivePosition<'a> {
    pub epoch: &'a str,
    pub offset: u64,
}

impl<O: Outbox> Default for Topics<O>
where
    O::Item: Clone,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<O: Outbox> Topics<O>
where
    O::Item: Clone,
{
    pub fn new() -> Self {
        Topics {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            count: AtomicUsize::new(0),
            tickets: AtomicU64::new(1),
        }
    }

    fn shard(&self, topic: &str) -> &Shard<O> {
        &self.shards[(self.hasher.hash_one(topic) as usize) % SHARDS]
    }

    /// Topics held on this node (a subscriber or a joiner).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_held(&self, topic: &str) -> bool {
        self.shard(topic).read().contains_key(topic)
    }

    /// Every topic held here.
    pub fn names(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.len());
        for shard in self.shards.iter() {
            out.extend(shard.read().keys().cloned());
        }
        out
    }

    /// Where each held topic's stream stands here: (topic, epoch, last offset), with the
    /// user streams `users` has parked.
    pub fn positions(&self, users: &Registry<O>) -> Vec<(String, String, u64)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            for (name, state) in shard.read().iter() {
                if let Some(s) = &state.lock().stream {
                    out.push((name.clone(), s.epoch.to_string(), s.last));
                }
            }
        }
        // Parked user streams too (a stream held by some and parked by others is listed once).
        let held: std::collections::HashSet<String> = out.iter().map(|p| p.0.clone()).collect();
        out.extend(
            self.parked_positions(users)
                .into_iter()
                .filter(|p| !held.contains(&p.0)),
        );
        out
    }

    fn get(&self, topic: &str) -> Option<Arc<Mutex<TopicState<O>>>> {
        self.shard(topic).read().get(topic).cloned()
    }

    /// Takes a live publication: delivered to every subscriber in order, kept for joiners.
    /// `reset(offset, epoch)` makes the frame that tells subscribers a new epoch began.
    pub fn on_publication(
        &self,
        topic: &str,
        live: LivePosition<'_>,
        frame: &O::Item,
        reset: impl Fn(u64, &str) -> O::Item,
    ) -> Arrival<O> {
        let Some(state) = self.get(topic) else {
            return Arrival::default();
        };
        let mut t = state.lock();
        let mut out = Arrival::default();
        let epoch: Arc<str> = match &t.stream {
            Some(s) if *s.epoch == *live.epoch => Arc::clone(&s.epoch),
            _ => Arc::from(live.epoch),
        };
        for j in t.joining.iter_mut() {
            j.seen
                .push((Arc::clone(&epoch), live.offset, frame.clone()));
        }
        match t.stream.clone() {
            None => {
                t.stream = Some(Stream {
                    epoch,
                    last: live.offset,
                });
                deliver(&mut t, live.offset, frame, &mut out);
            }
            Some(s) if *s.epoch != *live.epoch => {
                let f = reset(live.offset - 1, live.epoch);
                let t = &mut *t;
                for sub in t.subscribers.values_mut() {
                    sub.after = live.offset - 1;
                    push_overflow(&sub.conn, &f, &mut out.overflowed);
                }
                t.pending.clear();
                t.stream = Some(Stream {
                    epoch,
                    last: live.offset,
                });
                deliver(t, live.offset, frame, &mut out);
            }
            Some(s) if live.offset <= s.last => {}
            Some(s) if live.offset == s.last + 1 => {
                advance(&mut t, live.offset, frame, &mut out);
            }
            Some(s) => {
                out.waiting = t
                    .subscribers
                    .values()
                    .filter(|sub| live.offset > sub.after)
                    .count() as u32;
                t.pending.insert(live.offset, frame.clone());
                let first = t.pending.keys().next().copied().unwrap_or(live.offset);
                out.gap = Some((s.last, first));
            }
        }
        out
    }

    /// Gives up on the offsets missing before the first pending publication (history no longer
    /// has them): subscribers are told their position was lost, then the pending ones flow.
    pub fn skip_gap(&self, topic: &str, reset: impl Fn(u64, &str) -> O::Item) -> Arrival<O> {
        let Some(state) = self.get(topic) else {
            return Arrival::default();
        };
        let mut t = state.lock();
        let mut out = Arrival::default();
        let Some(first) = t.pending.keys().next().copied() else {
            return out;
        };
        let Some(s) = t.stream.clone() else {
            return out;
        };
        let f = reset(first - 1, &s.epoch);
        for sub in t.subscribers.values_mut() {
            sub.after = sub.after.max(first - 1);
            push_overflow(&sub.conn, &f, &mut out.overflowed);
        }
        if let Some(st) = t.stream.as_mut() {
            st.last = first - 1;
        }
        if let Some(frame) = t.pending.remove(&first) {
            advance(&mut t, first, &frame, &mut out);
        }
        out
    }

    /// Where the topic's stream stands here: (epoch, last offset delivered), or where the
    /// connections `users` has parked on it were told.
    pub fn position(&self, topic: &str, users: &Registry<O>) -> Option<(String, u64)> {
        let Some(state) = self.get(topic) else {
            return self.parked_at(topic, users).map(|epoch| (epoch, 0));
        };
        let t = state.lock();
        t.stream.as_ref().map(|s| (s.epoch.to_string(), s.last))
    }

    /// Brings the stream to the store's position `(epoch, latest)` when history could not
    /// fill what is missing (a new epoch, or publications trimmed away): subscribers are told
    /// their position was lost, then any pending publication after `latest` flows.
    pub fn resync(
        &self,
        topic: &str,
        epoch: &str,
        latest: u64,
        users: &Registry<O>,
        reset: impl Fn(u64, &str) -> O::Item,
    ) -> Arrival<O> {
        // Parked connections of a user stream that moved on are told too: they join first
        // (at the position they were told), then are brought to the store's like the rest.
        let mut adopted = self.adopt(topic, users, &reset);
        let Some(state) = self.get(topic) else {
            return Arrival {
                overflowed: adopted,
                ..Arrival::default()
            };
        };
        let mut t = state.lock();
        let mut out = Arrival::default();
        out.overflowed.append(&mut adopted);
        let same = t.stream.as_ref().is_some_and(|s| *s.epoch == *epoch);
        if same && t.stream.as_ref().is_some_and(|s| s.last >= latest) {
            return out;
        }
        let f = reset(latest, epoch);
        for sub in t.subscribers.values_mut() {
            sub.after = latest;
            push_overflow(&sub.conn, &f, &mut out.overflowed);
        }
        if same {
            t.pending.retain(|o, _| *o > latest);
        } else {
            t.pending.clear();
        }
        t.stream = Some(Stream {
            epoch: Arc::from(epoch),
            last: latest,
        });
        if let Some(frame) = t.pending.remove(&(latest + 1)) {
            advance(&mut t, latest + 1, &frame, &mut out);
        }
        out
    }

    /// Whether a gap is still open (pending publications wait for a missing one).
    pub fn gap(&self, topic: &str) -> Option<(u64, u64)> {
        let state = self.get(topic)?;
        let t = state.lock();
        let first = *t.pending.keys().next()?;
        Some((t.stream.as_ref()?.last, first))
    }

    /// Unsubscribes `conn` from `topic` (or abandons its join); false when it was neither.
    pub fn unsubscribe(&self, topic: &str, conn: &Conn<O>) -> bool {
        let mut mine = conn.topic_set();
        if !mine.remove(topic) {
            return false;
        }
        self.remove_member(topic, conn.info.seq);
        drop(mine);
        true
    }

    /// Makes a subscriber of `topic` a listener for its joins and leaves; false when it is not
    /// subscribed.
    pub fn listen(&self, topic: &str, seq: u64) -> bool {
        let Some(state) = self.get(topic) else {
            return false;
        };
        let mut t = state.lock();
        let Some(sub) = t.subscribers.get_mut(seq) else {
            return false;
        };
        if !sub.listen {
            sub.listen = true;
            t.listeners += 1;
        }
        true
    }

    /// Whether some subscriber of `topic` on this node listens for joins and leaves.
    pub fn has_listeners(&self, topic: &str) -> bool {
        self.get(topic).is_some_and(|s| s.lock().listeners > 0)
    }

    /// Queues a join or leave notice to the listeners of `topic`; returns those whose queue
    /// was full (they are slow consumers).
    pub fn offer_listeners(&self, topic: &str, frame: &O::Item) -> Vec<Arc<Conn<O>>> {
        let mut overflowed = Vec::new();
        let Some(state) = self.get(topic) else {
            return overflowed;
        };
        let t = state.lock();
        if t.listeners == 0 {
            return overflowed;
        }
        for sub in t.subscribers.values().filter(|s| s.listen) {
            push_overflow(&sub.conn, frame, &mut overflowed);
        }
        overflowed
    }

    /// Unsubscribes a closing connection from everything; returns the topics it left, and its
    /// user stream when it held or had parked it (a user stream is not in the connection's
    /// topic set: it is always the one of its user).
    pub fn leave_all(&self, conn: &Conn<O>) -> Vec<String> {
        let mut topics = conn.topic_set().take();
        for t in &topics {
            self.remove_member(t, conn.info.seq);
        }
        let own = super::stream::of_user(&conn.info.user_id);
        // Either, in any order: an adoption takes only open connections, and one that took
        // this connection before it was marked closing holds the stream's lock until it is
        // a subscriber (`park.rs`). Both are evaluated (`|`, not `||`).
        if conn.unpark(false).is_some() | self.remove_member(&own, conn.info.seq) {
            topics.push(own);
        }
        topics
    }

    /// Takes `seq` out of `topic`'s subscribers and joiners; true when it was either.
    fn remove_member(&self, topic: &str, seq: u64) -> bool {
        let Some(state) = self.get(topic) else {
            return false;
        };
        let mut t = state.lock();
        let sub = t.subscribers.remove(seq);
        if sub.as_ref().is_some_and(|s| s.listen) {
            t.listeners -= 1;
        }
        if let Some(s) = &sub {
            t.user_left(name_hash(&s.conn.info.user_id));
        }
        let joiners = t.joining.len();
        t.joining.retain(|j| j.conn.info.seq != seq);
        let was = sub.is_some() || t.joining.len() != joiners;
        let empty = t.is_empty();
        drop(t);
        if empty {
            self.drop_if_empty(topic);
        }
        was
    }

    fn drop_if_empty(&self, topic: &str) {
        let mut map = self.shard(topic).write();
        // Look again under the write lock: a joiner may have come.
        if map.get(topic).is_some_and(|s| s.lock().is_empty()) {
            map.remove(topic);
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// How many live subscribers `topic` has here, and how many distinct users among them,
    /// without listing them (O(1)).
    pub fn counts(&self, topic: &str) -> (u64, u64) {
        self.get(topic).map_or((0, 0), |s| {
            let t = s.lock();
            let users = t.users.as_ref().map_or(0, |u| u.len());
            (t.subscribers.len() as u64, users as u64)
        })
    }

    /// A page of `topic`'s live subscribers here that carry `role` when given, after sequence
    /// `after`, with the total. Without a role it walks only the page (O(log n + limit)): a
    /// topic of 100k subscribers is paged without listing them all.
    pub fn page(
        &self,
        topic: &str,
        role: Option<&str>,
        after: Option<u64>,
        limit: usize,
    ) -> crate::core::registry::Page<O> {
        use crate::core::registry::{page_of, Page};
        if role.is_some() || after == Some(u64::MAX) {
            return page_of(&self.subscribers(topic), role, after, limit);
        }
        let Some(state) = self.get(topic) else {
            return page_of(&[], None, after, limit);
        };
        let t = state.lock();
        let start = after.map_or(0, |a| a + 1);
        let limit = limit.max(1);
        let items: Vec<Arc<Conn<O>>> = (t.subscribers.from(start))
            .take(limit + 1)
            .map(|s| Arc::clone(&s.conn))
            .collect();
        Page::from_run(items, limit, t.subscribers.len())
    }

    /// The live subscribers of `topic` here, in connection order.
    pub fn subscribers(&self, topic: &str) -> Vec<Arc<Conn<O>>> {
        self.get(topic)
            .map(|s| {
                s.lock()
                    .subscribers
                    .values()
                    .map(|s| Arc::clone(&s.conn))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Delivers the next offset, then whatever pending publications follow it.
fn advance<O: Outbox>(t: &mut TopicState<O>, offset: u64, frame: &O::Item, out: &mut Arrival<O>)
where
    O::Item: Clone,
{
    if let Some(s) = t.stream.as_mut() {
        s.last = offset;
    }
    deliver(t, offset, frame, out);
    loop {
        let Some(last) = t.stream.as_ref().map(|s| s.last) else {
            return;
        };
        match t.pending.remove(&(last + 1)) {
            Some(f) => {
                if let Some(s) = t.stream.as_mut() {
                    s.last = last + 1;
                }
                deliver(t, last + 1, &f, out);
            }
            None => break,
        }
    }
    // Anything older than the stream position is a duplicate now.
    let last = t.stream.as_ref().map_or(0, |s| s.last);
    t.pending.retain(|o, _| *o > last);
    if let Some(first) = t.pending.keys().next() {
        out.gap = Some((last, *first));
    } else {
        out.gap = None;
    }
}

fn deliver<O: Outbox>(t: &mut TopicState<O>, offset: u64, frame: &O::Item, out: &mut Arrival<O>) {
    for sub in t.subscribers.values_mut() {
        if offset <= sub.after {
            continue;
        }
        sub.after = offset;
        match offer(&sub.conn, frame) {
            Offer::Queued => out.queued += 1,
            Offer::Full => {
                if sub.conn.mark_closing() {
                    out.overflowed.push(Arc::clone(&sub.conn));
                }
            }
            Offer::Closed => {}
        }
    }
}

fn push_overflow<O: Outbox>(conn: &Arc<Conn<O>>, f: &O::Item, overflowed: &mut Vec<Arc<Conn<O>>>) {
    if offer(conn, f) == Offer::Full && conn.mark_closing() {
        overflowed.push(Arc::clone(conn));
    }
}

fn offer<O: Outbox>(conn: &Arc<Conn<O>>, frame: &O::Item) -> Offer {
    if conn.is_closing() {
        return Offer::Closed;
    }
    let r = conn.outbox.offer(frame);
    conn.count_offer(r);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::registry::ConnInfo;

    /// An outbox that records what it is offered, with a capacity.
    struct Rec {
        got: Mutex<Vec<String>>,
        cap: usize,
    }

    impl Outbox for Rec {
        type Item = Arc<String>;
        fn offer(&self, f: &Arc<String>) -> Offer {
            let mut g = self.got.lock();
            if g.len() >= self.cap {
                return Offer::Full;
            }
            g.push(f.to_string());
            Offer::Queued
        }
        fn close_from(&self, _: u16, _: &str, _: crate::core::close::Origin) {}
        fn ping(&self) {}
    }

    fn conn(seq: u64, cap: usize) -> Arc<Conn<Rec>> {
        conn_of(seq, cap, "u")
    }

    fn conn_of(seq: u64, cap: usize, user: &str) -> Arc<Conn<Rec>> {
        Arc::new(Conn::new(
            ConnInfo {
                id: format!("n.{seq:016x}"),
                seq,
                user_id: user.into(),
                roles: vec![],
                topic_patterns: vec![],
                metadata: Default::default(),
                connected_at_ms: 0,
                remote_addr: String::new(),
                user_agent: String::new(),
                protocol: Default::default(),
            },
            None,
            Rec {
                got: Mutex::new(Vec::new()),
                cap,
            },
        ))
    }

    fn got(c: &Conn<Rec>) -> Vec<String> {
        c.outbox.got.lock().clone()
    }

    fn f(s: &str) -> Arc<String> {
        Arc::new(s.to_owned())
    }

    fn reply(o: u64, e: &str, r: Option<bool>) -> Option<Arc<String>> {
        Some(Arc::new(format!("sub@{o}/{e}/{r:?}")))
    }

    fn reset(o: u64, e: &str) -> Arc<String> {
        Arc::new(format!("reset@{o}/{e}"))
    }

    fn pubs(range: std::ops::RangeInclusive<u64>) -> Vec<(u64, Arc<String>)> {
        range.map(|o| (o, f(&format!("p{o}")))).collect()
    }

    /// A read of a topic at `latest` with nothing replayed.
    fn at(epoch: &str, latest: u64) -> HistoryRead<Arc<String>> {
        HistoryRead {
            epoch: epoch.into(),
            latest,
            pubs: vec![],
            complete: true,
        }
    }

    fn join(
        t: &Topics<Rec>,
        c: &Arc<Conn<Rec>>,
        read: HistoryRead<Arc<String>>,
        since: Option<(u64, &str)>,
    ) -> Joined<Rec> {
        let JoinStart::Joining(ticket) = t.begin_join("t", c, 0).unwrap() else {
            panic!("already subscribed")
        };
        t.finish_join(ticket, read, since, reply, reset).unwrap()
    }

    fn live(t: &Topics<Rec>, e: &str, o: u64) -> Arrival<Rec> {
        t.on_publication(
            "t",
            LivePosition {
                epoch: e,
                offset: o,
            },
            &f(&format!("p{o}")),
            reset,
        )
    }

    #[test]
    fn presence_counts_follow_joins_and_leaves_without_listing_anyone() {
        let t = Topics::new();
        let conns = [conn_of(1, 9, "a"), conn_of(2, 9, "a"), conn_of(3, 9, "b")];
        for c in &conns {
            join(&t, c, at("E", 0), None);
        }
        assert_eq!(t.counts("t"), (3, 2));
        assert!(t.unsubscribe("t", &conns[0]));
        assert_eq!(t.counts("t"), (2, 2), "a still has a connection");
        t.leave_all(&conns[1]);
        assert_eq!(t.counts("t"), (1, 1));
        assert!(t.unsubscribe("t", &conns[2]));
        assert_eq!(t.counts("t"), (0, 0));
        assert!(!t.is_held("t"));
    }

    #[test]
    fn a_page_walks_only_itself_and_matches_the_scan() {
        let t = Topics::new();
        let conns: Vec<_> = (1..=5).map(|i| conn_of(i, 9, &format!("u{i}"))).collect();
        join(&t, &conns[0], at("E", 0), None);
        let seqs = |p: &crate::core::registry::Page<Rec>| -> Vec<u64> {
            p.items.iter().map(|c| c.info.seq).collect()
        };
        let one = t.page("t", None, None, 2);
        assert_eq!((seqs(&one), one.total, one.next_after), (vec![1], 1, None));
        assert!(t.page("t", None, Some(1), 2).items.is_empty());
        for c in &conns[1..] {
            join(&t, c, at("E", 0), None);
        }
        let mut after = None;
        let mut pages = Vec::new();
        loop {
            let p = t.page("t", None, after, 2);
            let scan = crate::core::registry::page_of(&t.subscribers("t"), None, after, 2);
            assert_eq!(
                (seqs(&p), p.total, p.next_after),
                (seqs(&scan), scan.total, scan.next_after)
            );
            pages.push(seqs(&p));
            match p.next_after {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(pages, [vec![1, 2], vec![3, 4], vec![5]]);
        assert!(t.page("nothing", None, None, 2).items.is_empty());
    }

    #[test]
    fn plain_join_then_live_in_order() {
        let t = Topics::new();
        let c = conn(1, 100);
        let read = at("E", 3);
        let j = join(&t, &c, read, None);
        assert_eq!((j.offset, j.recovered), (3, None));
        assert_eq!(live(&t, "E", 4).queued, 1);
        assert_eq!(live(&t, "E", 4).queued, 0, "a duplicate is dropped");
        assert_eq!(got(&c), ["sub@3/E/None", "p4"]);
        assert!(t.is_held("t"));
        assert!(t.unsubscribe("t", &c));
        assert!(!t.is_held("t"), "an empty topic is forgotten");
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn recovery_merges_history_and_buffered_live_without_duplicates() {
        let t = Topics::new();
        let c = conn(1, 100);
        let JoinStart::Joining(ticket) = t.begin_join("t", &c, 0).unwrap() else {
            panic!()
        };
        // Live publications arrive while the history is read; 6 is also in the read.
        live(&t, "E", 6);
        live(&t, "E", 7);
        let read = HistoryRead {
            epoch: "E".into(),
            latest: 6,
            pubs: pubs(3..=6),
            complete: true,
        };
        let j = t
            .finish_join(ticket, read, Some((2, "E")), reply, reset)
            .unwrap();
        assert_eq!((j.offset, j.recovered, j.replayed), (6, Some(true), 4));
        live(&t, "E", 7);
        live(&t, "E", 8);
        assert_eq!(
            got(&c),
            ["p3", "p4", "p5", "p6", "sub@6/E/Some(true)", "p7", "p8"]
        );
    }

    #[test]
    fn wrong_epoch_or_short_history_is_not_recovered() {
        let t = Topics::new();
        let c = conn(1, 100);
        let read = HistoryRead {
            epoch: "E".into(),
            latest: 9,
            pubs: pubs(5..=9),
            complete: false,
        };
        let j = join(&t, &c, read, Some((2, "E")));
        assert_eq!((j.offset, j.recovered, j.replayed), (9, Some(false), 0));
        let c2 = conn(2, 100);
        let read = HistoryRead {
            epoch: "E".into(),
            latest: 9,
            pubs: pubs(5..=9),
            complete: true,
        };
        let j = join(&t, &c2, read, Some((4, "OLD")));
        assert_eq!(j.recovered, Some(false));
        assert_eq!(got(&c2), ["sub@9/E/Some(false)"]);
    }

    #[test]
    fn gap_waits_for_catch_up_then_flows_in_order() {
        let t = Topics::new();
        let c = conn(1, 100);
        join(&t, &c, at("E", 1), None);
        let a = live(&t, "E", 4);
        assert_eq!(a.gap, Some((1, 4)));
        assert_eq!((a.queued, a.waiting), (0, 1));
        assert_eq!(t.gap("t"), Some((1, 4)));
        live(&t, "E", 2);
        let a = live(&t, "E", 3);
        assert_eq!(a.queued, 2, "3 and the pending 4");
        assert_eq!(a.gap, None);
        assert_eq!(got(&c), ["sub@1/E/None", "p2", "p3", "p4"]);
    }

    #[test]
    fn an_unfillable_gap_is_told_not_hidden() {
        let t = Topics::new();
        let c = conn(1, 100);
        join(&t, &c, at("E", 1), None);
        live(&t, "E", 5);
        live(&t, "E", 6);
        let a = t.skip_gap("t", reset);
        assert_eq!(a.queued, 2);
        assert_eq!(got(&c), ["sub@1/E/None", "reset@4/E", "p5", "p6"]);
    }

    #[test]
    fn a_new_epoch_resets_subscribers() {
        let t = Topics::new();
        let c = conn(1, 100);
        join(&t, &c, at("E", 7), None);
        live(&t, "F", 1);
        live(&t, "F", 2);
        assert_eq!(got(&c), ["sub@7/E/None", "reset@0/F", "p1", "p2"]);
    }

    #[test]
    fn a_read_ahead_of_the_live_stream_skips_what_the_reply_covers() {
        let t = Topics::new();
        let a = conn(1, 100);
        join(&t, &a, at("E", 2), None);
        // The second joiner's read already saw 3 and 4, which are still on their way here.
        let b = conn(2, 100);
        join(&t, &b, at("E", 4), None);
        live(&t, "E", 3);
        live(&t, "E", 4);
        live(&t, "E", 5);
        assert_eq!(got(&a), ["sub@2/E/None", "p3", "p4", "p5"]);
        assert_eq!(got(&b), ["sub@4/E/None", "p5"]);
    }

    #[test]
    fn resync_tells_subscribers_and_moves_on() {
        let t = Topics::new();
        let none = Registry::new();
        let c = conn(1, 100);
        join(&t, &c, at("E", 2), None);
        live(&t, "E", 9);
        assert_eq!(
            t.resync("t", "E", 8, &none, reset).queued,
            1,
            "the pending 9 flows"
        );
        assert_eq!(t.position("t", &none), Some(("E".into(), 9)));
        assert_eq!(
            t.resync("t", "E", 5, &none, reset).queued,
            0,
            "nothing to do"
        );
        t.resync("t", "F", 0, &none, reset);
        live(&t, "F", 1);
        assert_eq!(
            got(&c),
            ["sub@2/E/None", "reset@8/E", "p9", "reset@0/F", "p1"]
        );
    }

    #[test]
    fn limits_closing_and_cancel() {
        let t = Topics::new();
        let c = conn(1, 100);
        let JoinStart::Joining(ticket) = t.begin_join("t", &c, 1).unwrap() else {
            panic!()
        };
        assert!(matches!(t.begin_join("t", &c, 1), Ok(JoinStart::Already)));
        assert_eq!(
            t.begin_join("u", &c, 1).unwrap_err(),
            SubscribeRefused::TooMany
        );
        assert!(t.cancel_join(ticket, &c));
        assert!(c.topics().is_empty());
        assert!(!t.is_held("t"));
        c.mark_closing();
        assert_eq!(
            t.begin_join("t", &c, 0).unwrap_err(),
            SubscribeRefused::Closing
        );
    }

    #[test]
    fn a_full_queue_during_replay_is_reported_once() {
        let t = Topics::new();
        let c = conn(1, 2);
        let j = join(
            &t,
            &c,
            HistoryRead {
                epoch: "E".into(),
                latest: 5,
                pubs: pubs(1..=5),
                complete: true,
            },
            Some((0, "E")),
        );
        assert_eq!(j.overflowed.len(), 1);
        assert!(c.is_closing());
    }

    #[test]
    fn leaving_while_joining_cancels_the_join() {
        let t = Topics::new();
        let c = conn(1, 100);
        let JoinStart::Joining(ticket) = t.begin_join("t", &c, 0).unwrap() else {
            panic!()
        };
        assert_eq!(t.leave_all(&c), ["t"]);
        let read = at("E", 0);
        assert!(t.finish_join(ticket, read, None, reply, reset).is_none());
        assert!(got(&c).is_empty());
    }
}
