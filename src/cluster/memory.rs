//! The single-node family: every connection is on this node and topic history is kept in
//! memory ([`crate::core::history::History`] per topic, in a sharded map). Publishing appends and
//! hands the publication to the local topic table under the topic's history lock, so a single
//! node never sees a gap. Commands and questions are answered by this node alone.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::{BoxFuture, Broker, Control, HistoryStore, Users};
use crate::core::event::{Event, Message, Publication, Shared, SharedEvent};
use crate::core::history::{History, HistoryEntry};
use crate::core::model::{
    Command, ConnSnapshot, Cursor, Delivered, Delivery, HistoryPage, HistoryQuery, KeptPublication,
    ListFilter, ListPage, PresenceCounts, PresenceEntry, StatsPart, StreamPosition, Who,
    META_TTL_MS,
};
use crate::core::stream;
use crate::core::topic_table::{HistoryRead, LivePosition};
use crate::core::users::{UserState, UserTable};
use crate::core::CoreError;
use crate::node::LocalNode;

const SHARDS: usize = 32;

/// Limits of the in-memory history.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    pub size: usize,
    pub ttl_ms: u64,
}

/// Whether a stream's state may go: nothing kept, and either it is a topic that had
/// publications (they have all expired, so a subscriber that missed them must be told: the
/// topic restarts with a new epoch) or it has not been used for [`META_TTL_MS`] (so a quiet
/// topic keeps its epoch across reconnects, as in Redis, and a user stream's position outlives
/// its messages: a client that missed nothing resumes however long it was idle).
fn forgettable(name: &str, h: &History<Kept>, now_ms: i64) -> bool {
    let idle = now_ms - h.touched_ms >= i64::try_from(META_TTL_MS).unwrap_or(0);
    h.is_empty() && ((h.latest() > 0 && stream::is_topic(name)) || idle)
}

/// A kept message decoded. It was encoded here from a validated message, so it decodes; were
/// it ever not to, the entry is skipped and logged rather than taking the node down.
fn unkeep(p: &HistoryEntry<Kept>) -> Option<Message> {
    super::compact::decode(&p.event)
        .map_err(|e| tracing::error!(offset = p.offset, error = %e, "kept message unreadable"))
        .ok()
}

/// A fresh epoch for a topic whose history starts (again).
pub fn new_epoch() -> String {
    crate::random::hex(4)
}

/// A kept message in its compact form ([`super::compact`]): one allocation, exactly as long as
/// the encoding (measured: an event with its own fields cost ~555 bytes per 100-byte message
/// of a user stream, this ~200). A replay decodes it again.
type Kept = Box<[u8]>;

type HistShard = RwLock<HashMap<String, Arc<Mutex<History<Kept>>>>>;

/// The epoch of a user stream that has no history yet, when its user is not in the user table
/// (which keeps it for the users it knows, at no cost): 24 bytes here, not a [`History`]
/// (about 250). Keyed by the name's hash: two names
/// sharing one only share an epoch, which is harmless (an epoch is compared within one
/// stream); the first message takes it over.
#[derive(Debug, Clone, Copy)]
struct Fresh {
    epoch: u32,
    touched_ms: i64,
}

/// The in-memory family for one node.
pub struct Memory {
    local: Arc<LocalNode>,
    limits: HistoryLimits,
    /// The limits of user streams (`[users]`).
    user_limits: HistoryLimits,
    shards: Box<[HistShard]>,
    /// Per history shard (taken inside its lock, before `users`): the epochs of user streams
    /// without history whose users the user table does not know.
    fresh: Box<[Mutex<HashMap<u64, Fresh>>]>,
    hasher: RandomState,
    /// Runs commands on this node's connections (the hub, registered once it exists).
    pub(super) handler: super::HandlerSlot,
    /// Who is online (every connection is on this node).
    users: Mutex<UserTable>,
    /// Admin console sessions ended by a sign-out, with when each would have ended anyway
    /// (pruned past that on every sign-out, so it holds at most the sign-outs of one
    /// session lifetime).
    ended_sessions: Mutex<HashMap<String, i64>>,
}

impl Memory {
    pub fn new(
        local: Arc<LocalNode>,
        limits: HistoryLimits,
        user_limits: HistoryLimits,
        users: &crate::config::UsersConfig,
    ) -> Arc<Self> {
        // Joins and leaves reach this node's listeners only (one node). Weak: the sink lives
        // in the node it points to.
        let weak = Arc::downgrade(&local);
        local.set_presence_sink(Box::new(move |topic, make| {
            if let Some(l) = weak.upgrade() {
                if l.topics.has_listeners(topic) {
                    l.offer_listeners(make());
                }
            }
        }));
        Arc::new(Memory {
            local,
            limits,
            user_limits,
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            fresh: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            handler: Default::default(),
            users: Mutex::new(UserTable::new(
                users.offline_grace_ms,
                users.last_seen_ttl_ms,
            )),
            ended_sessions: Mutex::new(HashMap::new()),
        })
    }

    fn shard(&self, topic: &str) -> &HistShard {
        &self.shards[self.slot(topic)]
    }

    fn slot(&self, topic: &str) -> usize {
        (self.hasher.hash_one(topic) as usize) % SHARDS
    }

    fn topic(&self, topic: &str) -> Arc<Mutex<History<Kept>>> {
        if let Some(h) = self.shard(topic).read().get(topic) {
            return Arc::clone(h);
        }
        let limits = match stream::is_topic(topic) {
            true => self.limits,
            false => self.user_limits,
        };
        let mut map = self.shard(topic).write();
        Arc::clone(map.entry(topic.to_owned()).or_insert_with(|| {
            let epoch = match stream::is_topic(topic) {
                true => new_epoch(),
                false => self.take_fresh(topic),
            };
            Arc::new(Mutex::new(History::new(epoch, limits.size, limits.ttl_ms)))
        }))
    }

    /// The epoch a user stream without history has shown (called under its shard's lock,
    /// which is what keeps a first message from racing a reader of the fresh epoch; the
    /// fresh shard's lock, taken next, makes a reader's look-up-or-make one step): the one it
    /// was given, or the one this node's connections hold or are parked at (offset 0, so
    /// nothing was ever sent in between: a stream cannot be forgotten while held), or a new
    /// one. Kept with its user in the user table while the user is known there (it costs
    /// nothing: see `users.rs`), else in `fresh`, touched at `now_ms`.
    fn fresh_epoch(&self, topic: &str, now_ms: i64, take: bool) -> String {
        let key = self.hasher.hash_one(topic);
        let user = stream::user_of(topic);
        let mut fresh = self.fresh[self.slot(topic)].lock();
        let with_user = user.and_then(|u| match take {
            true => self.users.lock().take_stream_epoch(u),
            false => self.users.lock().stream_epoch(u),
        });
        let known = with_user
            .or_else(|| fresh.get(&key).map(|f| f.epoch))
            .map(stream::epoch_text)
            .or_else(|| {
                self.local
                    .topics
                    .position(topic, &self.local.registry)
                    .and_then(|(epoch, last)| (last == 0).then_some(epoch))
            });
        let epoch = known.unwrap_or_else(new_epoch);
        if take {
            fresh.remove(&key);
        } else if let Some(e) = stream::epoch_number(&epoch) {
            // Every epoch made here is one; one that is not is simply not recorded (the
            // stream then shows a new epoch later: a resume is refused, never wrong).
            if user.is_some_and(|u| self.users.lock().set_stream_epoch(u, e)) {
                // Moved to its user (a name sharing the hash keeps its own).
                if fresh.get(&key).is_some_and(|f| f.epoch == e) {
                    fresh.remove(&key);
                }
            } else {
                fresh.insert(
                    key,
                    Fresh {
                        epoch: e,
                        touched_ms: now_ms,
                    },
                );
            }
        }
        epoch
    }

    /// Epochs of users the user table forgot (offline past `last_seen_ttl_ms`) go on in
    /// `fresh` until their position's day is over.
    fn keep_forgotten_epochs(&self, now_ms: i64) {
        let forgotten = self.users.lock().take_forgotten_epochs();
        let ttl = i64::try_from(META_TTL_MS).unwrap_or(i64::MAX);
        for (user, epoch, seen) in forgotten {
            if now_ms.saturating_sub(seen) >= ttl {
                continue;
            }
            let topic = stream::of_user(&user);
            let key = self.hasher.hash_one(&topic);
            self.fresh[self.slot(&topic)].lock().insert(
                key,
                Fresh {
                    epoch,
                    touched_ms: seen,
                },
            );
        }
    }

    fn take_fresh(&self, topic: &str) -> String {
        self.fresh_epoch(topic, 0, true)
    }

    /// Drops expired publications, and the history of topics with none left that nobody here
    /// holds (so an idle topic restarts with a new epoch). Returns how many were dropped.
    pub fn sweep(&self, now_ms: i64) -> usize {
        let ttl = i64::try_from(META_TTL_MS).unwrap_or(i64::MAX);
        let mut dropped = 0;
        for fresh in self.fresh.iter() {
            let mut fresh = fresh.lock();
            let before = fresh.len();
            // A stream still held here keeps its epoch in the topic table (see fresh_epoch).
            fresh.retain(|_, f| now_ms - f.touched_ms < ttl);
            dropped += before - fresh.len();
        }
        for shard in self.shards.iter() {
            let mut empty = Vec::new();
            for (name, h) in shard.read().iter() {
                let mut h = h.lock();
                h.evict(now_ms);
                if forgettable(name, &h, now_ms) && !self.local.topics.is_held(name) {
                    empty.push(name.clone());
                }
            }
            if empty.is_empty() {
                continue;
            }
            let mut map = shard.write();
            for name in empty {
                let gone = map
                    .get(&name)
                    .is_some_and(|h| forgettable(&name, &h.lock(), now_ms))
                    && !self.local.topics.is_held(&name);
                if gone {
                    map.remove(&name);
                    dropped += 1;
                }
            }
        }
        dropped
    }

    /// A publication: the topic's next offset, kept, and handed to this node's subscribers
    /// under the history lock (in offset order, no gap).
    fn publish(&self, topic: &str, message: Message, caller_id: bool) -> Delivered {
        let h = self.topic(topic);
        let mut h = h.lock();
        let epoch = h.epoch.clone();
        if caller_id {
            if let Some(offset) = h.find_id(&message.id) {
                return Delivered {
                    connections: 0,
                    position: Some(StreamPosition { offset, epoch }),
                };
            }
        }
        let offset = h.next_offset();
        let now = message.ts_ms;
        let message_id: Box<str> = if caller_id {
            message.id.clone()
        } else {
            Box::default()
        };
        let kept = super::compact::encode(&message).into_boxed_slice();
        let event = Shared::new(Event::Publication(Publication {
            topic: topic.into(),
            offset,
            epoch: epoch.as_str().into(),
            message,
        }));
        // Handed to the local topic table under the history lock: in offset order, no gap.
        let arrival = self.local.on_publication(
            topic,
            LivePosition {
                epoch: &epoch,
                offset,
            },
            &event,
        );
        // History keeps the compact form, not the event being delivered: the writers cache
        // that one's encodings in it, which would stay as long as the entry.
        h.push(
            HistoryEntry {
                offset,
                message_id,
                published_at_ms: now,
                event: kept,
            },
            now,
        );
        Delivered {
            connections: arrival.queued,
            position: Some(StreamPosition { offset, epoch }),
        }
    }
}

impl Broker for Memory {
    fn deliver(&self, d: Delivery) -> BoxFuture<'_, Result<Delivered, CoreError>> {
        let result = match d.to {
            Who::Topic(topic) => Ok(self.publish(&topic, d.message, d.caller_id)),
            to => {
                let event = Shared::new(Event::Message(d.message));
                self.local
                    .deliver_to(&to, &event)
                    .map(|connections| Delivered {
                        connections,
                        position: None,
                    })
                    .ok_or_else(|| CoreError::NotFound {
                        what: match &to {
                            Who::Connection(id) => format!("connection {id:?}"),
                            other => format!("{other:?}"),
                        },
                    })
            }
        };
        Box::pin(std::future::ready(result))
    }

    fn hold<'a>(&'a self, _user: &'a str, _keys: Vec<Who>) -> BoxFuture<'a, Result<(), CoreError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn release(&self, _user: &str, _keys: Vec<Who>) {}

    fn ready(&self) -> bool {
        true
    }
}

impl HistoryStore for Memory {
    fn read(
        &self,
        topic: &str,
        since: Option<u64>,
    ) -> BoxFuture<'_, Result<HistoryRead<SharedEvent>, CoreError>> {
        let now = crate::clock::now_ms();
        if !stream::is_topic(topic) {
            let shard = self.shard(topic).read();
            if !shard.contains_key(topic) {
                // A user stream that never had a message: its epoch, at offset 0, and no
                // state made for it.
                let epoch = self.fresh_epoch(topic, now, false);
                drop(shard);
                return Box::pin(std::future::ready(Ok(HistoryRead {
                    epoch,
                    latest: 0,
                    pubs: Vec::new(),
                    complete: since == Some(0),
                })));
            }
        }
        let h = self.topic(topic);
        let mut h = h.lock();
        h.evict(now);
        h.touched_ms = now;
        let latest = h.latest();
        let (pubs, complete) = match since {
            Some(s) if s <= latest => {
                let pubs: Vec<(u64, SharedEvent)> = h
                    .after(s, usize::MAX)
                    .filter_map(|p| {
                        let event = Event::Publication(Publication {
                            topic: topic.into(),
                            offset: p.offset,
                            epoch: h.epoch.as_str().into(),
                            message: unkeep(p)?,
                        });
                        Some((p.offset, Shared::new(event)))
                    })
                    .collect();
                let complete = s == latest || pubs.first().is_some_and(|(o, _)| *o == s + 1);
                (pubs, complete)
            }
            _ => (Vec::new(), false),
        };
        Box::pin(std::future::ready(Ok(HistoryRead {
            epoch: h.epoch.clone(),
            latest,
            pubs,
            complete,
        })))
    }

    fn history(
        &self,
        topic: &str,
        q: HistoryQuery,
    ) -> BoxFuture<'_, Result<HistoryPage, CoreError>> {
        let found = self.shard(topic).read().get(topic).cloned();
        let page = match found {
            None => HistoryPage::default(),
            Some(h) => {
                let mut h = h.lock();
                h.evict(crate::clock::now_ms());
                let chosen: Box<dyn Iterator<Item = _>> = if q.reverse {
                    Box::new(h.before(q.since.unwrap_or(u64::MAX), q.limit))
                } else {
                    Box::new(h.after(q.since.unwrap_or(0), q.limit))
                };
                HistoryPage {
                    publications: chosen
                        .filter_map(|p| {
                            Some(KeptPublication::of(p.offset, &p.message_id, &unkeep(p)?))
                        })
                        .collect(),
                    epoch: h.epoch.clone(),
                    latest: h.latest(),
                }
            }
        };
        Box::pin(std::future::ready(Ok(page)))
    }

    fn kept_topics(&self) -> BoxFuture<'_, Result<Vec<u64>, CoreError>> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            // Topics with publications (a topic only subscribed to or read has no state to
            // count, as in Redis's topic index).
            out.extend(
                shard
                    .read()
                    .iter()
                    .filter(|(k, h)| stream::is_topic(k) && h.lock().latest() > 0)
                    .map(|(k, _)| crate::core::model::name_hash(k)),
            );
        }
        Box::pin(std::future::ready(Ok(out)))
    }

    fn sweep(&self, now_ms: i64) {
        Memory::sweep(self, now_ms);
    }
}

impl Control for Memory {
    fn command(&self, target: Who, command: Command) -> BoxFuture<'_, Result<u32, CoreError>> {
        Box::pin(async move {
            let handler = self.handler.get()?;
            handler.run_local(target, command).await
        })
    }

    fn get(&self, connection_id: &str) -> BoxFuture<'_, Result<ConnSnapshot, CoreError>> {
        let r = self
            .local
            .get(connection_id)
            .map(|c| self.local.snapshot(&c))
            .ok_or_else(|| CoreError::NotFound {
                what: format!("connection {connection_id:?}"),
            });
        Box::pin(std::future::ready(r))
    }

    fn list(
        &self,
        filter: ListFilter,
        after: Option<Cursor>,
        size: usize,
    ) -> BoxFuture<'_, Result<ListPage, CoreError>> {
        Box::pin(std::future::ready(Ok(self.local.list(
            &filter,
            after.as_ref(),
            size,
        ))))
    }

    fn presence(&self, topic: &str) -> BoxFuture<'_, Result<Vec<PresenceEntry>, CoreError>> {
        Box::pin(std::future::ready(Ok(self.local.presence(topic))))
    }

    fn presence_counts(&self, topic: &str) -> BoxFuture<'_, Result<PresenceCounts, CoreError>> {
        Box::pin(std::future::ready(Ok(self.local.presence_counts(topic))))
    }

    fn stats(&self) -> BoxFuture<'_, Result<(Vec<StatsPart>, u32), CoreError>> {
        Box::pin(std::future::ready(Ok((vec![self.local.stats_part()], 1))))
    }

    fn watch(&self) -> BoxFuture<'_, Result<(), CoreError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn unwatch(&self) {}

    fn end_session(&self, id: &str, until_ms: i64) -> BoxFuture<'_, Result<(), CoreError>> {
        let now = crate::clock::now_ms();
        let mut ended = self.ended_sessions.lock();
        ended.retain(|_, until| *until > now);
        ended.insert(id.to_owned(), until_ms);
        Box::pin(std::future::ready(Ok(())))
    }

    fn session_ended(&self, id: &str) -> BoxFuture<'_, Result<bool, CoreError>> {
        let ended = self.ended_sessions.lock().contains_key(id);
        Box::pin(std::future::ready(Ok(ended)))
    }
}

impl Users for Memory {
    fn opened(&self, user: &str, now_ms: i64) -> BoxFuture<'_, Result<bool, CoreError>> {
        let online = self.users.lock().opened(user, now_ms);
        Box::pin(std::future::ready(Ok(online)))
    }

    fn closed(&self, user: &str, now_ms: i64) {
        self.users.lock().closed(user, now_ms);
    }

    fn offline_due(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<(String, i64)>, CoreError>> {
        let due = self.users.lock().due(now_ms);
        self.keep_forgotten_epochs(now_ms);
        Box::pin(std::future::ready(Ok(due)))
    }

    fn users(
        &self,
        ids: Vec<String>,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<UserState>, CoreError>> {
        let t = self.users.lock();
        let out = ids.iter().map(|u| t.state(u, now_ms)).collect();
        Box::pin(std::future::ready(Ok(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures_util::FutureExt;

    fn memory() -> Arc<Memory> {
        let limits = HistoryLimits {
            size: 32,
            ttl_ms: 60_000,
        };
        let local = Arc::new(LocalNode::new("n1".into(), 0, 1, "m".into(), 16));
        Memory::new(local, limits, limits, &Default::default())
    }

    fn message(n: u64) -> Message {
        Message {
            kind: "t".into(),
            payload: Bytes::from(n.to_string()),
            id: format!("m{n}").into(),
            ts_ms: crate::clock::now_ms(),
        }
    }

    fn read(m: &Memory, name: &str, since: Option<u64>) -> HistoryRead<SharedEvent> {
        // The memory engine answers at once (its futures are ready).
        m.read(name, since).now_or_never().unwrap().unwrap()
    }

    fn payloads(r: &HistoryRead<SharedEvent>) -> Vec<(u64, String)> {
        r.pubs
            .iter()
            .map(|(o, e)| match e.event() {
                Event::Publication(p) => (*o, String::from_utf8_lossy(&p.message.payload).into()),
                other => panic!("not a publication: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_user_stream_without_messages_keeps_an_epoch_and_no_history() {
        let m = memory();
        let first = read(&m, "#ann", None);
        assert_eq!((first.latest, first.epoch.len()), (0, 8));
        assert_eq!(read(&m, "#ann", Some(0)).epoch, first.epoch);
        assert!(read(&m, "#ann", Some(0)).complete);
        assert!(
            m.shards.iter().all(|s| s.read().is_empty()),
            "no history made for a stream without messages"
        );
        // The first message takes that epoch over: a client that saw offset 0 recovers it.
        let d = m.publish("#ann", message(1), false);
        assert_eq!(
            d.position,
            Some(StreamPosition {
                offset: 1,
                epoch: first.epoch.clone()
            })
        );
        let r = read(&m, "#ann", Some(0));
        assert_eq!((r.epoch.as_str(), r.complete), (first.epoch.as_str(), true));
        assert_eq!(payloads(&r), [(1, "1".to_owned())]);
        assert!(m.fresh.iter().all(|f| f.lock().is_empty()), "taken over");
    }

    #[test]
    fn a_known_users_fresh_epoch_lives_with_the_user_until_it_is_forgotten() {
        let m = memory();
        let now = crate::clock::now_ms();
        let day = i64::try_from(META_TTL_MS).unwrap();
        let fresh_len = |m: &Memory| m.fresh.iter().map(|f| f.lock().len()).sum::<usize>();
        assert_eq!(m.opened("ann", now).now_or_never().unwrap(), Ok(true));
        let first = read(&m, "#ann", None).epoch;
        assert_eq!(fresh_len(&m), 0, "kept with the user, not in the fresh map");
        m.closed("ann", now);
        m.offline_due(now).now_or_never().unwrap().unwrap();
        assert_eq!(
            read(&m, "#ann", Some(0)).epoch,
            first,
            "kept while last seen"
        );
        // Forgotten by the user table (last_seen_ttl_ms, a day by default): in the fresh map
        // for what is left of its day, then gone.
        m.offline_due(now + day).now_or_never().unwrap().unwrap();
        assert_eq!(fresh_len(&m), 0, "its day is over too");

        let short = crate::config::UsersConfig {
            last_seen_ttl_ms: 1_000,
            ..Default::default()
        };
        let limits = HistoryLimits {
            size: 32,
            ttl_ms: 60_000,
        };
        let local = Arc::new(LocalNode::new("n1".into(), 0, 1, "m".into(), 16));
        let m = Memory::new(local, limits, limits, &short);
        m.opened("bob", now).now_or_never().unwrap().unwrap();
        let first = read(&m, "#bob", None).epoch;
        m.closed("bob", now);
        m.offline_due(now + 10_000).now_or_never().unwrap().unwrap();
        assert_eq!(m.users.lock().len(), 0, "bob forgotten");
        assert_eq!(fresh_len(&m), 1, "his epoch goes on in the fresh map");
        assert_eq!(read(&m, "#bob", Some(0)).epoch, first);
        // Taken over by the first message, from either place.
        m.publish("#bob", message(1), false);
        assert_eq!(fresh_len(&m), 0);
    }

    #[test]
    fn a_fresh_epoch_is_forgotten_after_a_day_unused() {
        let m = memory();
        let first = read(&m, "#bob", None).epoch;
        let now = crate::clock::now_ms();
        m.sweep(now + 1_000);
        assert_eq!(read(&m, "#bob", Some(0)).epoch, first, "kept while in use");
        m.sweep(now + i64::try_from(META_TTL_MS).unwrap() + 1_000);
        assert!(m.fresh.iter().all(|f| f.lock().is_empty()));
        let again = read(&m, "#bob", Some(0));
        assert_ne!(
            again.epoch, first,
            "a new life (2^-32 chance of a false failure)"
        );
    }

    #[test]
    fn kept_messages_replay_from_their_compact_form() {
        let m = memory();
        for n in 1..=40 {
            m.publish("news", message(n), true);
        }
        let r = read(&m, "news", Some(35));
        assert_eq!(
            payloads(&r),
            (36..=40).map(|n| (n, n.to_string())).collect::<Vec<_>>()
        );
        assert!(r.complete);
        // Size 32: offsets 9..=40 are kept, and an id kept answers its offset.
        assert!(!read(&m, "news", Some(7)).complete);
        assert!(read(&m, "news", Some(8)).complete);
        let retry = m.publish("news", message(40), true);
        assert_eq!(retry.position.map(|p| p.offset), Some(40));
        let page = m
            .history(
                "news",
                HistoryQuery {
                    since: None,
                    limit: 2,
                    reverse: true,
                },
            )
            .now_or_never()
            .unwrap()
            .unwrap();
        let got: Vec<_> = page
            .publications
            .iter()
            .map(|p| (p.offset, p.message_id.as_str(), p.payload_json.as_str()))
            .collect();
        assert_eq!(got, [(40, "m40", "40"), (39, "m39", "39")]);
    }
}
