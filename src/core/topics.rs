//! The topic table: for every live topic, its subscribers and its history, behind one lock per
//! topic (inside a sharded map). Publishing assigns the next offset, keeps the publication and
//! queues its one encoded frame to every subscriber under that lock; subscribing with a
//! position queues the missed publications and then the `subscribed` reply under the same
//! lock. So a recovering subscriber's replay and the live stream join with no gap and no
//! duplicate.
//!
//! Lock order: a connection's topic set, then a topic. Publishing never takes the former.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::registry::{Conn, Offer, Outbox};
use super::topic::{History, Publication, Recovery};

const SHARDS: usize = 32;

/// Limits of the topic table.
#[derive(Debug, Clone, Copy)]
pub struct TopicLimits {
    pub history_size: usize,
    pub history_ttl_ms: u64,
}

struct TopicState<O: Outbox> {
    subscribers: BTreeMap<u64, Arc<Conn<O>>>,
    history: History<O::Frame>,
}

type Shard<O> = RwLock<HashMap<String, Arc<Mutex<TopicState<O>>>>>;

pub struct Topics<O: Outbox> {
    shards: Box<[Shard<O>]>,
    hasher: RandomState,
    count: AtomicUsize,
    limits: TopicLimits,
}

/// What a publish did.
pub struct Published<O> {
    pub offset: u64,
    pub epoch: String,
    /// Connections the publication was queued to (0 for an idempotent retry).
    pub queued: u32,
    /// True when the message id was already in the history: nothing was sent again.
    pub duplicate: bool,
    /// Subscribers whose queue was full: the caller closes them.
    pub overflowed: Vec<Arc<Conn<O>>>,
}

/// What a subscribe did.
pub struct Subscribed<O> {
    pub offset: u64,
    pub epoch: String,
    /// With a position: whether everything missed was replayed.
    pub recovered: Option<bool>,
    /// Publications replayed before the reply.
    pub replayed: usize,
    /// False when the connection was already subscribed.
    pub added: bool,
    /// The connection's queue overflowed during the replay: the caller closes it.
    pub overflowed: Option<Arc<Conn<O>>>,
}

/// Why a subscribe did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeRefused {
    /// The connection is closing.
    Closing,
    /// It already has `max` subscriptions.
    TooMany,
}

/// A publication as the History RPC returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub offset: u64,
    pub message_id: String,
    pub kind: String,
    pub payload_json: String,
    pub published_at_ms: i64,
}

/// Everything needed to make a publication, besides its offset and epoch.
pub struct NewPublication<'a> {
    pub message_id: &'a str,
    /// Whether `message_id` was chosen by the caller (only those make retries idempotent).
    pub caller_id: bool,
    pub kind: &'a str,
    pub payload_json: &'a str,
    pub now_ms: i64,
}

impl<O: Outbox> Topics<O>
where
    O::Frame: Clone,
{
    pub fn new(limits: TopicLimits) -> Self {
        Topics {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            count: AtomicUsize::new(0),
            limits,
        }
    }

    fn shard(&self, topic: &str) -> &Shard<O> {
        &self.shards[(self.hasher.hash_one(topic) as usize) % SHARDS]
    }

    /// Topics with a subscriber or a kept publication.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `f` on the topic's state, creating it (with `new_epoch()`) when absent. A shard
    /// lock is held throughout, so the sweeper cannot drop the state under `f`.
    fn with_topic<R>(
        &self,
        topic: &str,
        new_epoch: impl FnOnce() -> String,
        f: impl FnOnce(&mut TopicState<O>) -> R,
    ) -> R {
        let shard = self.shard(topic);
        {
            let map = shard.read();
            if let Some(state) = map.get(topic) {
                return f(&mut state.lock());
            }
        }
        let mut map = shard.write();
        let state = map.entry(topic.to_owned()).or_insert_with(|| {
            self.count.fetch_add(1, Ordering::Relaxed);
            Arc::new(Mutex::new(TopicState {
                subscribers: BTreeMap::new(),
                history: History::new(
                    new_epoch(),
                    self.limits.history_size,
                    self.limits.history_ttl_ms,
                ),
            }))
        });
        let mut t = state.lock();
        f(&mut t)
    }

    /// Publishes to `topic`: the next offset, kept in the history, its frame (made once by
    /// `frame(offset, epoch)`) queued to every subscriber. A caller-chosen id already in the
    /// history is not sent again and answers the original offset.
    pub fn publish(
        &self,
        topic: &str,
        p: NewPublication<'_>,
        new_epoch: impl FnOnce() -> String,
        frame: impl FnOnce(u64, &str) -> O::Frame,
    ) -> Published<O> {
        self.with_topic(topic, new_epoch, |t| {
            let epoch = t.history.epoch.clone();
            if p.caller_id {
                if let Some(offset) = t.history.find_id(p.message_id) {
                    return Published {
                        offset,
                        epoch,
                        queued: 0,
                        duplicate: true,
                        overflowed: Vec::new(),
                    };
                }
            }
            let offset = t.history.next_offset();
            let f = frame(offset, &epoch);
            let mut queued = 0;
            let mut overflowed = Vec::new();
            for conn in t.subscribers.values() {
                match offer(conn, &f) {
                    Offer::Queued => queued += 1,
                    Offer::Full => {
                        if conn.mark_closing() {
                            overflowed.push(Arc::clone(conn));
                        }
                    }
                    Offer::Closed => {}
                }
            }
            t.history.push(
                Publication {
                    offset,
                    message_id: if p.caller_id {
                        p.message_id.to_owned()
                    } else {
                        String::new()
                    },
                    kind: p.kind.to_owned(),
                    payload_json: p.payload_json.to_owned(),
                    published_at_ms: p.now_ms,
                    frame: f,
                },
                p.now_ms,
            );
            Published {
                offset,
                epoch,
                queued,
                duplicate: false,
                overflowed,
            }
        })
    }

    /// Subscribes `conn` to `topic` (at most `max` subscriptions per connection, 0: no limit).
    /// With `since`, the missed publications are queued first; then the frame `reply(offset,
    /// epoch, recovered)` is queued, all under the topic's lock.
    pub fn subscribe(
        &self,
        topic: &str,
        conn: &Arc<Conn<O>>,
        since: Option<(u64, &str)>,
        max: usize,
        new_epoch: impl FnOnce() -> String,
        reply: impl FnOnce(u64, &str, Option<bool>) -> O::Frame,
    ) -> Result<Subscribed<O>, SubscribeRefused> {
        let mut mine = conn.topic_set();
        if conn.is_closing() {
            return Err(SubscribeRefused::Closing);
        }
        let already = mine.contains(topic);
        if !already && max > 0 && mine.len() >= max {
            return Err(SubscribeRefused::TooMany);
        }
        let out = self.with_topic(topic, new_epoch, |t| {
            let epoch = t.history.epoch.clone();
            let latest = t.history.latest();
            let mut replayed = 0;
            let mut full = false;
            let recovered = since.map(|(offset, ep)| match t.history.recover(offset, ep) {
                Recovery::Replay { after, .. } if !already => {
                    for p in t.history.after(after, usize::MAX) {
                        if offer(conn, &p.frame) != Offer::Queued {
                            full = true;
                            break;
                        }
                        replayed += 1;
                    }
                    true
                }
                Recovery::Replay { .. } => true,
                Recovery::Lost => false,
            });
            let reply = reply(latest, &epoch, recovered);
            if full || offer(conn, &reply) != Offer::Queued {
                full = true;
            }
            t.subscribers.insert(conn.info.seq, Arc::clone(conn));
            (latest, epoch, recovered, replayed, full)
        });
        if !already {
            mine.insert(topic.to_owned());
        }
        drop(mine);
        let (offset, epoch, recovered, replayed, full) = out;
        Ok(Subscribed {
            offset,
            epoch,
            recovered,
            replayed,
            added: !already,
            overflowed: (full && conn.mark_closing()).then(|| Arc::clone(conn)),
        })
    }

    /// Unsubscribes `conn` from `topic`; false when it was not subscribed.
    pub fn unsubscribe(&self, topic: &str, conn: &Conn<O>) -> bool {
        let mut mine = conn.topic_set();
        if !mine.remove(topic) {
            return false;
        }
        self.remove_subscriber(topic, conn.info.seq);
        drop(mine);
        true
    }

    /// Unsubscribes a closing connection from everything; returns the topics it left.
    pub fn leave_all(&self, conn: &Conn<O>) -> Vec<String> {
        let topics: Vec<String> = std::mem::take(&mut *conn.topic_set()).into_iter().collect();
        for t in &topics {
            self.remove_subscriber(t, conn.info.seq);
        }
        topics
    }

    fn remove_subscriber(&self, topic: &str, seq: u64) {
        let map = self.shard(topic).read();
        if let Some(state) = map.get(topic) {
            state.lock().subscribers.remove(&seq);
        }
    }

    /// The subscribers of `topic`, in connection order.
    pub fn subscribers(&self, topic: &str) -> Vec<Arc<Conn<O>>> {
        let map = self.shard(topic).read();
        map.get(topic)
            .map(|s| s.lock().subscribers.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Kept publications after `since`, at most `limit`, with the epoch and latest offset;
    /// `None` for a topic with no state (never published, or forgotten).
    pub fn history(
        &self,
        topic: &str,
        since: u64,
        limit: usize,
        now_ms: i64,
    ) -> Option<(Vec<Kept>, String, u64)> {
        let map = self.shard(topic).read();
        let state = map.get(topic)?;
        let mut t = state.lock();
        t.history.evict(now_ms);
        let kept = t
            .history
            .after(since, limit)
            .map(|p| Kept {
                offset: p.offset,
                message_id: p.message_id.clone(),
                kind: p.kind.clone(),
                payload_json: p.payload_json.clone(),
                published_at_ms: p.published_at_ms,
            })
            .collect();
        Some((kept, t.history.epoch.clone(), t.history.latest()))
    }

    /// Drops expired publications, and topics left with no subscriber and no publication.
    /// Returns how many topics were dropped.
    pub fn sweep(&self, now_ms: i64) -> usize {
        let mut dropped = 0;
        for shard in self.shards.iter() {
            let mut empty = Vec::new();
            for (name, state) in shard.read().iter() {
                let mut t = state.lock();
                t.history.evict(now_ms);
                if t.subscribers.is_empty() && t.history.is_empty() {
                    empty.push(name.clone());
                }
            }
            if empty.is_empty() {
                continue;
            }
            let mut map = shard.write();
            for name in empty {
                // Look again under the write lock: a subscriber or publication may have come.
                let gone = map.get(&name).is_some_and(|s| {
                    let t = s.lock();
                    t.subscribers.is_empty() && t.history.is_empty()
                });
                if gone {
                    map.remove(&name);
                    self.count.fetch_sub(1, Ordering::Relaxed);
                    dropped += 1;
                }
            }
        }
        dropped
    }
}

fn offer<O: Outbox>(conn: &Arc<Conn<O>>, frame: &O::Frame) -> Offer {
    if conn.is_closing() {
        return Offer::Closed;
    }
    let r = conn.outbox.offer(frame);
    conn.count_offer(r);
    r
}
