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
fn forgettable(name: &str, h: &History<SharedEvent>, now_ms: i64) -> bool {
    let idle = now_ms - h.touched_ms >= i64::try_from(META_TTL_MS).unwrap_or(0);
    h.is_empty() && ((h.latest() > 0 && stream::is_topic(name)) || idle)
}

/// A fresh epoch for a topic whose history starts (again).
pub fn new_epoch() -> String {
    crate::random::hex(4)
}

type HistShard = RwLock<HashMap<String, Arc<Mutex<History<SharedEvent>>>>>;

/// The in-memory family for one node.
pub struct Memory {
    local: Arc<LocalNode>,
    limits: HistoryLimits,
    /// The limits of user streams (`[users]`).
    user_limits: HistoryLimits,
    shards: Box<[HistShard]>,
    hasher: RandomState,
    /// Runs commands on this node's connections (the hub, registered once it exists).
    pub(super) handler: super::HandlerSlot,
    /// Who is online (every connection is on this node).
    users: Mutex<UserTable>,
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
            hasher: RandomState::new(),
            handler: Default::default(),
            users: Mutex::new(UserTable::new(
                users.offline_grace_ms,
                users.last_seen_ttl_ms,
            )),
        })
    }

    fn shard(&self, topic: &str) -> &HistShard {
        &self.shards[(self.hasher.hash_one(topic) as usize) % SHARDS]
    }

    fn topic(&self, topic: &str) -> Arc<Mutex<History<SharedEvent>>> {
        if let Some(h) = self.shard(topic).read().get(topic) {
            return Arc::clone(h);
        }
        let limits = match stream::is_topic(topic) {
            true => self.limits,
            false => self.user_limits,
        };
        let mut map = self.shard(topic).write();
        Arc::clone(map.entry(topic.to_owned()).or_insert_with(|| {
            Arc::new(Mutex::new(History::new(
                new_epoch(),
                limits.size,
                limits.ttl_ms,
            )))
        }))
    }

    /// Drops expired publications, and the history of topics with none left that nobody here
    /// holds (so an idle topic restarts with a new epoch). Returns how many were dropped.
    pub fn sweep(&self, now_ms: i64) -> usize {
        let mut dropped = 0;
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
        let message_id = if caller_id {
            message.id.to_string()
        } else {
            String::new()
        };
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
        // History keeps its own copy of the event, not the one being delivered: the writers
        // cache that one's encodings in it, which would stay as long as the entry (measured:
        // 31% of a user stream's kept memory). A replay encodes again, once per protocol.
        let kept = Shared::new(event.event().clone());
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

    fn hold(&self, _keys: Vec<Who>) -> BoxFuture<'_, Result<(), CoreError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn release(&self, _keys: Vec<Who>) {}

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
        let h = self.topic(topic);
        let mut h = h.lock();
        let now = crate::clock::now_ms();
        h.evict(now);
        h.touched_ms = now;
        let latest = h.latest();
        let (pubs, complete) = match since {
            Some(s) if s <= latest => {
                let pubs: Vec<(u64, SharedEvent)> = h
                    .after(s, usize::MAX)
                    .map(|p| (p.offset, Arc::clone(&p.event)))
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
                        .filter_map(|p| match p.event.event() {
                            Event::Publication(publication) => Some(KeptPublication::of(
                                p.offset,
                                &p.message_id,
                                &publication.message,
                            )),
                            _ => None,
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

    fn presence_counts(
        &self,
        topic: &str,
    ) -> BoxFuture<'_, Result<Vec<PresenceCounts>, CoreError>> {
        Box::pin(std::future::ready(Ok(vec![self
            .local
            .presence_counts(topic)])))
    }

    fn stats(&self) -> BoxFuture<'_, Result<(Vec<StatsPart>, u32), CoreError>> {
        Box::pin(std::future::ready(Ok((vec![self.local.stats_part()], 1))))
    }

    fn watch(&self) -> BoxFuture<'_, Result<(), CoreError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn unwatch(&self) {}
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
        Box::pin(std::future::ready(Ok(self.users.lock().due(now_ms))))
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
