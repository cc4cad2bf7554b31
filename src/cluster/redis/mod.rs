//! The cluster family on Redis (or Valkey): any number of nodes share one Redis, and every RPC
//! answers the same on any node.
//!
//! - Two connections per node: a multiplexed command connection (`ConnectionManager`, which
//!   reconnects by itself) and a dedicated pub/sub connection owned by [`supervisor`], which
//!   reconnects, resubscribes everything this node holds, and has every held topic caught up
//!   from history before it reports ready again. Every command runs under a timeout.
//! - Interest ([`interest`]): a node subscribes to `rt:u:<user>`, `rt:r:<role>` and
//!   `rt:t:{topic}` only while it holds a connection for them (reference counted, with a
//!   deferred unsubscribe), so a delivery reaches only the nodes that need it.
//! - Request/reply: a delivery, command or question is one PUBLISH on the narrowest channel;
//!   PUBLISH answers how many nodes received it, and the caller waits for that many replies on
//!   its own node channel (its own share is answered in process). No node is ever waited for
//!   that is not there: a dead node's subscriptions die with its connection.
//! - Topics: the publish script assigns the offset, keeps the history, records idempotency and
//!   publishes, in one round trip; each node's topic table orders what arrives and repairs
//!   gaps from history.
//! - Membership ([`members`]): heartbeats on `rt:c`; a node silent for `node_ttl_ms` is gone.

mod interest;
mod members;
mod scripts;
mod supervisor;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use redis::streams::{StreamId, StreamRangeReply};
use redis::{Script, Value};
use tokio::sync::{mpsc, oneshot, watch};

use super::{BoxFuture, Broker, Control, HistoryStore};
use crate::clock::now_ms;
use crate::core::event::{Event, Message, Presence, Publication, Shared, SharedEvent};
use crate::core::ids::parse_conn_id;
use crate::core::model::{
    merge_pages, name_hash, Command, ConnSnapshot, Cursor, HistoryPage, HistoryQuery, Interest,
    Kept, ListFilter, ListPage, NewPublication, Present, Published, Route, Selector, StatsPart,
    META_TTL_MS,
};
use crate::core::registry::Target;
use crate::core::topics::{HistoryRead, Live};
use crate::core::CoreError;
use crate::node::{position_lost, LocalNode};
use wire::{Header, Request, Response};

/// The longest any one Redis command may take.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a request waits for the nodes' replies.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(1);

struct Pending {
    expected: Option<usize>,
    got: Vec<Response>,
    done: Option<oneshot::Sender<Vec<Response>>>,
}

/// What the cluster family needs from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub redis_url: String,
    pub node_ttl_ms: u64,
    pub history_size: usize,
    pub history_ttl_ms: u64,
}

pub struct RedisCluster {
    node_id: String,
    local: Arc<LocalNode>,
    /// Runs commands on this node's connections (the hub, registered once it exists).
    pub(in crate::cluster) handler: crate::cluster::HandlerSlot,
    settings: Settings,
    client: redis::Client,
    cmd: ConnectionManager,
    interest: interest::Interests,
    pending: Mutex<HashMap<u64, Pending>>,
    next_rid: AtomicU64,
    members: Mutex<members::Members>,
    pubsub_ready: AtomicBool,
    /// Numbers this node's hellos (one per (re)subscription); answers echo it.
    hello_nonce: AtomicU64,
    cmd_ok: AtomicBool,
    catching_up: Mutex<HashSet<String>>,
    publish_script: Script,
    read_script: Script,
    stop: watch::Sender<bool>,
}

/// The URL without its password, for messages.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

impl RedisCluster {
    /// Connects to Redis, subscribes this node's channels and starts its background tasks.
    pub async fn start(
        config: &crate::config::Config,
        local: Arc<LocalNode>,
    ) -> Result<Arc<Self>, String> {
        let settings = Settings {
            redis_url: config.broker.redis_url.clone(),
            node_ttl_ms: config.broker.node_ttl_ms,
            history_size: config.topics.history_size,
            history_ttl_ms: config.topics.history_ttl_ms,
        };
        let url = redacted(&settings.redis_url);
        // TCP_NODELAY: requests and replies are small writes that must not wait for an ACK
        // (Nagle with delayed ACKs costs 40 ms a round trip).
        let info = redis::IntoConnectionInfo::into_connection_info(settings.redis_url.as_str())
            .map_err(|e| format!("{url}: {e}"))?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info).map_err(|e| format!("{url}: {e}"))?;
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let cmd = tokio::time::timeout(
            REDIS_TIMEOUT * 2,
            ConnectionManager::new_with_config(client.clone(), cfg),
        )
        .await
        .map_err(|_| format!("cannot reach Redis at {url}: timed out"))?
        .map_err(|e| format!("cannot reach Redis at {url}: {e}"))?;
        // A node id must be unique: it names the node's channel and every connection id.
        let mut probe = cmd.clone();
        let taken: Result<(String, i64), _> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(wire::node_channel(&local.id))
            .query_async(&mut probe)
            .await;
        if matches!(taken, Ok((_, n)) if n > 0) {
            return Err(format!(
                "another node with id {:?} is live on Redis at {url}; give each node its own [node] id (or leave it empty)",
                local.id
            ));
        }
        let (ops_tx, ops_rx) = mpsc::unbounded_channel();
        let node_id = local.id.clone();
        let cluster = Arc::new(RedisCluster {
            node_id: node_id.clone(),
            local: Arc::clone(&local),
            handler: Default::default(),
            settings,
            client,
            cmd,
            interest: interest::Interests::new(ops_tx),
            pending: Mutex::new(HashMap::new()),
            next_rid: AtomicU64::new(1),
            members: Mutex::new(members::Members::new(node_id)),
            pubsub_ready: AtomicBool::new(false),
            hello_nonce: AtomicU64::new(0),
            cmd_ok: AtomicBool::new(true),
            catching_up: Mutex::new(HashSet::new()),
            publish_script: Script::new(scripts::PUBLISH),
            read_script: Script::new(scripts::READ),
            stop: watch::channel(false).0,
        });
        let weak = Arc::downgrade(&cluster);
        local.set_event_sink(Box::new(move |ev| {
            if let Some(c) = weak.upgrade() {
                let msg = wire::encode(
                    &Header::Event {
                        event: Box::new(ev.clone()),
                    },
                    b"",
                );
                tokio::spawn(async move {
                    let _ = c.publish_raw(wire::EVENTS, msg).await;
                });
            }
        }));
        // Joins and leaves go on the topic's channel, which every node holding the topic
        // hears (this one included); each offers them to its own listeners.
        let weak = Arc::downgrade(&cluster);
        local.set_presence_sink(Box::new(move |topic, make| {
            if let Some(c) = weak.upgrade() {
                let notice = make();
                let head = Header::Presence {
                    topic: topic.to_owned(),
                    joined: notice.joined,
                    user_id: notice.user_id.into(),
                    connection_id: notice.connection_id.into(),
                };
                let msg = wire::encode(&head, b"");
                let channel = wire::topic_channel(topic);
                tokio::spawn(async move {
                    let _ = c.publish_raw(&channel, msg).await;
                });
            }
        }));
        tokio::spawn(supervisor::run(Arc::clone(&cluster), ops_rx));
        tokio::spawn(members::heartbeat(Arc::clone(&cluster)));
        tokio::spawn(interest::dissolver(Arc::clone(&cluster)));
        let mut ready = false;
        for _ in 0..100 {
            if cluster.pubsub_ready.load(Ordering::Acquire) {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !ready {
            cluster.stop.send_replace(true);
            return Err(format!("cannot subscribe to Redis at {url}"));
        }
        tracing::info!(redis = %url, node_id = %cluster.node_id, "joined the cluster");
        Ok(cluster)
    }

    /// Says goodbye to the other nodes and stops the background tasks.
    pub async fn leave(&self) {
        let msg = wire::encode(
            &Header::Leave {
                node: self.node_id.clone(),
            },
            b"",
        );
        let _ = self.publish_raw(wire::CONTROL, msg).await;
        self.stop.send_replace(true);
    }

    fn stopped(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Runs one command under the timeout; connection trouble marks the node unready.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, CoreError> {
        let mut con = self.cmd.clone();
        self.outcome(tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async(&mut con)).await)
    }

    fn outcome<T>(
        &self,
        r: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, CoreError> {
        match r {
            Ok(Ok(v)) => {
                self.cmd_ok.store(true, Ordering::Release);
                Ok(v)
            }
            Ok(Err(e)) => {
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                {
                    self.cmd_ok.store(false, Ordering::Release);
                }
                Err(CoreError::Unavailable(e.to_string()))
            }
            Err(_) => {
                self.cmd_ok.store(false, Ordering::Release);
                Err(CoreError::Unavailable(
                    "Redis did not answer in time".into(),
                ))
            }
        }
    }

    async fn publish_raw(&self, channel: &str, msg: Vec<u8>) -> Result<usize, CoreError> {
        self.query(redis::cmd("PUBLISH").arg(channel).arg(msg))
            .await
    }

    /// A pending request: its id, where its replies arrive, and the pub/sub generation it was
    /// made in (see [`RedisCluster::collect`]).
    fn new_pending(&self) -> (u64, oneshot::Receiver<Vec<Response>>, u64) {
        let rid = self.next_rid.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(
            rid,
            Pending {
                expected: None,
                got: Vec::new(),
                done: Some(tx),
            },
        );
        (rid, rx, self.hello_nonce.load(Ordering::Acquire))
    }

    /// Sets how many replies `rid` waits for; completes it when they are all in.
    fn expect(&self, rid: u64, n: usize) {
        let mut p = self.pending.lock();
        if let Some(e) = p.get_mut(&rid) {
            e.expected = Some(n);
            if e.got.len() >= n {
                if let Some(tx) = e.done.take() {
                    let _ = tx.send(std::mem::take(&mut e.got));
                }
                p.remove(&rid);
            }
        }
    }

    fn on_response(&self, rid: u64, resp: Response) {
        let mut p = self.pending.lock();
        if let Some(e) = p.get_mut(&rid) {
            e.got.push(resp);
            if e.expected.is_some_and(|n| e.got.len() >= n) {
                if let Some(tx) = e.done.take() {
                    let _ = tx.send(std::mem::take(&mut e.got));
                }
                p.remove(&rid);
            }
        }
    }

    /// Waits for the replies of `rid` until the deadline. A node that does not answer in time
    /// while Redis is fine (a hung node) is left out of the count; when this node lost Redis
    /// meanwhile, nobody can say what was delivered: UNAVAILABLE, never a false success.
    async fn collect(
        &self,
        rid: u64,
        rx: oneshot::Receiver<Vec<Response>>,
        generation: u64,
    ) -> Result<Vec<Response>, CoreError> {
        match tokio::time::timeout(REQUEST_DEADLINE, rx).await {
            Ok(Ok(v)) => Ok(v),
            _ => {
                let partial = self.pending.lock().remove(&rid).map(|p| p.got);
                self.local.metrics.cluster_incomplete.inc();
                // Lost Redis meanwhile, even if it is back already (a new generation).
                if !self.pubsub_ready.load(Ordering::Acquire)
                    || self.hello_nonce.load(Ordering::Acquire) != generation
                {
                    return Err(CoreError::Unavailable(
                        "Redis went away before every node had answered".into(),
                    ));
                }
                tracing::warn!(
                    rid,
                    "a cluster request timed out waiting for a node's reply"
                );
                Ok(partial.unwrap_or_default())
            }
        }
    }

    /// Publishes a request or delivery to `channel` and gathers one reply per receiving node.
    async fn ask(
        &self,
        channel: &str,
        header: impl FnOnce(u64) -> Header,
        body: &[u8],
    ) -> Result<Vec<Response>, CoreError> {
        // Every delivery, command and question: only while each live node can hear it.
        self.cluster_ready()?;
        let (rid, rx, gen) = self.new_pending();
        let msg = wire::encode(&header(rid), body);
        let n = match self.publish_raw(channel, msg).await {
            Ok(n) => n,
            Err(e) => {
                self.pending.lock().remove(&rid);
                return Err(e);
            }
        };
        self.expect(rid, n);
        if n == 0 {
            return Ok(Vec::new());
        }
        self.collect(rid, rx, gen).await
    }

    async fn request(&self, channel: &str, req: Request) -> Result<Vec<Response>, CoreError> {
        let from = self.node_id.clone();
        self.ask(channel, |rid| Header::Req { from, rid, req }, b"")
            .await
    }

    /// Sends a reply to `from` (in process when it is this node).
    fn reply(self: &Arc<Self>, from: &str, rid: u64, resp: Response) {
        if from == self.node_id {
            self.on_response(rid, resp);
            return;
        }
        let msg = wire::encode(&Header::Resp { rid, resp }, b"");
        let channel = wire::node_channel(from);
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let _ = me.publish_raw(&channel, msg).await;
        });
    }

    /// One pub/sub message. Never waits: slow work is spawned.
    fn on_message(self: &Arc<Self>, payload: &[u8]) {
        let (h, body) = match wire::decode(payload) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "ignored a malformed cluster message");
                return;
            }
        };
        match h {
            Header::Deliver { from, rid, route } => {
                let Some(message) = message_of(body) else {
                    return;
                };
                let event = Shared::new(Event::Message(message));
                let l = &self.local;
                let resp = match &route {
                    Route::User(u) => Response::Count(l.deliver(Target::User(u), &event)),
                    Route::Role(r) => Response::Count(l.deliver(Target::Role(r), &event)),
                    Route::All => Response::Count(l.deliver(Target::All, &event)),
                    Route::Connection(id) => match l.get(id) {
                        Some(c) => {
                            Response::Count(l.deliver(Target::Connection(c.info.seq), &event))
                        }
                        None => Response::NotFound,
                    },
                };
                self.reply(&from, rid, resp);
            }
            Header::Pub { from, rid, topic } => {
                let (offset, epoch, body) = match wire::split_position(body) {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "ignored a malformed cluster publication");
                        return;
                    }
                };
                let Some(message) = message_of(body) else {
                    return;
                };
                let event = Shared::new(Event::Publication(Publication {
                    topic: topic.as_str().into(),
                    offset,
                    epoch: epoch.into(),
                    message,
                }));
                let a = self
                    .local
                    .on_publication(&topic, Live { epoch, offset }, &event);
                if a.gap.is_some() {
                    self.catch_up(topic);
                }
                if rid > 0 {
                    self.reply(&from, rid, Response::Count(a.queued + a.waiting));
                }
            }
            Header::Presence {
                topic,
                joined,
                user_id,
                connection_id,
            } => self.local.offer_listeners(Presence {
                joined,
                topic: topic.into(),
                user_id: user_id.into(),
                connection_id: connection_id.into(),
            }),
            Header::Req { from, rid, req } => match req {
                Request::Command { target, command } => {
                    let me = Arc::clone(self);
                    tokio::spawn(async move {
                        let resp = me.run_command(target, command).await;
                        me.reply(&from, rid, resp);
                    });
                }
                other => {
                    let resp = self.answer(&from, other);
                    self.reply(&from, rid, resp);
                }
            },
            Header::Resp { rid, resp } => self.on_response(rid, resp),
            Header::Beat {
                node,
                watching,
                ready,
                hello,
                nonce,
                ack,
            } => {
                let vouches =
                    hello || (ack != 0 && ack == self.hello_nonce.load(Ordering::Acquire));
                let export = self
                    .members
                    .lock()
                    .beat(&node, now_ms(), watching, ready, vouches);
                self.local.set_export_events(export);
                if hello && node != self.node_id {
                    let me = Arc::clone(self);
                    tokio::spawn(async move {
                        members::beat_to(&me, Some(&node), members::Beat::Answer(nonce)).await
                    });
                }
            }
            Header::Leave { node } => {
                let export = self.members.lock().leave(&node, now_ms());
                self.local.set_export_events(export);
            }
            Header::Event { event } => {
                if event.conn.node_id != self.node_id {
                    self.local.inject_event(*event);
                }
            }
        }
    }

    async fn run_command(&self, target: Selector, command: Command) -> Response {
        let Ok(handler) = self.handler.get() else {
            return Response::Failed("the node is shutting down".into());
        };
        match handler.run_local(target, command).await {
            Ok(n) => Response::Count(n),
            Err(CoreError::NotFound { .. }) => Response::NotFound,
            Err(e) => Response::Failed(e.to_string()),
        }
    }

    /// Answers a question about this node's connections.
    fn answer(&self, from: &str, req: Request) -> Response {
        let l = &self.local;
        match req {
            Request::Get { id } => match l.get(&id) {
                Some(c) => Response::Conn(Box::new(l.snapshot(&c))),
                None => Response::NotFound,
            },
            Request::List {
                filter,
                after,
                size,
            } => Response::Page(l.list(&filter, after.as_ref(), size)),
            Request::Presence { topic } => Response::Presence(l.presence(&topic)),
            Request::Stats => Response::Stats(l.stats_part()),
            Request::Watch => {
                let export = self.members.lock().watching(from, now_ms());
                l.set_export_events(export);
                Response::Ok
            }
            Request::Command { .. } => Response::Failed("not a question".into()),
        }
    }

    /// Reads what a topic's stream here is missing and feeds it in order; when history cannot
    /// fill the gap (trimmed, or a new epoch), subscribers are told and the stream moves on.
    fn catch_up(self: &Arc<Self>, topic: String) {
        if !self.catching_up.lock().insert(topic.clone()) {
            return;
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            me.catch_up_now(&topic).await;
            me.catching_up.lock().remove(&topic);
        });
    }

    async fn catch_up_now(&self, topic: &str) {
        if self.local.topics.gap(topic).is_some() {
            self.local.metrics.cluster_gap_repairs.inc();
        }
        for attempt in 0..5 {
            let Some((epoch, last)) = self.local.topics.position(topic) else {
                return;
            };
            let read = match self.read_topic(topic, Some(last), true).await {
                Ok(r) => r,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
                    continue;
                }
            };
            if read.epoch == epoch {
                for (o, f) in &read.pubs {
                    self.local.on_publication(
                        topic,
                        Live {
                            epoch: &epoch,
                            offset: *o,
                        },
                        f,
                    );
                }
            }
            let behind = self
                .local
                .topics
                .position(topic)
                .is_some_and(|(e, l)| e != read.epoch || l < read.latest);
            if behind || self.local.topics.gap(topic).is_some() {
                let a =
                    self.local
                        .topics
                        .resync(topic, &read.epoch, read.latest, position_lost(topic));
                self.local.close_slow(&a.overflowed);
                if self.local.topics.gap(topic).is_some() {
                    let a = self.local.topics.skip_gap(topic, position_lost(topic));
                    self.local.close_slow(&a.overflowed);
                }
            }
            return;
        }
    }

    /// Every held topic, caught up (after the pub/sub connection came back).
    async fn catch_up_all(self: &Arc<Self>) {
        for (topic, _, _) in self.local.topics.positions() {
            self.catch_up_now(&topic).await;
        }
    }

    async fn read_topic(
        &self,
        topic: &str,
        since: Option<u64>,
        create: bool,
    ) -> Result<HistoryRead<SharedEvent>, CoreError> {
        let count = self.settings.history_size.max(1) + 1;
        let (epoch, latest, entries) = self.read_raw(topic, since, count, create, false).await?;
        let pubs: Vec<(u64, SharedEvent)> = entries
            .into_iter()
            .filter_map(|e| {
                let event = Event::Publication(Publication {
                    topic: topic.into(),
                    offset: e.offset,
                    epoch: epoch.as_str().into(),
                    message: e.message?,
                });
                Some((e.offset, Shared::new(event)))
            })
            .collect();
        let complete = match since {
            Some(s) if s == latest => true,
            Some(s) => pubs.first().is_some_and(|(o, _)| *o == s + 1),
            None => false,
        };
        Ok(HistoryRead {
            epoch,
            latest,
            pubs,
            complete,
        })
    }

    async fn read_raw(
        &self,
        topic: &str,
        since: Option<u64>,
        count: usize,
        create: bool,
        reverse: bool,
    ) -> Result<(String, u64, Vec<Entry>), CoreError> {
        let (stream, meta, _) = wire::topic_keys(topic);
        let mut inv = self.read_script.prepare_invoke();
        inv.key(&stream)
            .key(&meta)
            .arg(since.map_or(-1, |s| s as i64))
            .arg(count)
            .arg(self.meta_ttl_ms())
            .arg(super::memory::new_epoch())
            .arg(if create { "1" } else { "0" })
            .arg(if reverse { "1" } else { "0" });
        let mut con = self.cmd.clone();
        let v: Value =
            self.outcome(tokio::time::timeout(REDIS_TIMEOUT, inv.invoke_async(&mut con)).await)?;
        let bad = || CoreError::Unavailable("unexpected answer from the read script".into());
        let Value::Array(parts) = v else {
            return Err(bad());
        };
        let [epoch, latest, entries] = <[Value; 3]>::try_from(parts).map_err(|_| bad())?;
        let epoch = as_string(&epoch).ok_or_else(bad)?;
        let latest = as_u64(&latest).ok_or_else(bad)?;
        let min_ts = now_ms() - self.settings.history_ttl_ms as i64;
        let entries = parse_entries(entries)
            .into_iter()
            .filter(|e| e.ts >= min_ts)
            .collect();
        Ok((epoch, latest, entries))
    }

    fn meta_ttl_ms(&self) -> u64 {
        self.settings.history_ttl_ms.max(META_TTL_MS)
    }

    /// Whether a delivery now reaches every node that holds a recipient: this node's
    /// subscriptions are in place, and so are every other live node's since this node last
    /// reconnected (after a Redis restart a PUBLISH would otherwise count 0 for a node that
    /// has not resubscribed yet, a false "nobody there").
    fn cluster_ready(&self) -> Result<(), CoreError> {
        if !self.pubsub_ready.load(Ordering::Acquire) {
            return Err(CoreError::Unavailable(
                "the Redis pub/sub connection is down".into(),
            ));
        }
        if !self
            .members
            .lock()
            .all_ready(now_ms(), self.settings.node_ttl_ms)
        {
            return Err(CoreError::Unavailable(
                "the cluster is resubscribing after a Redis reconnect".into(),
            ));
        }
        Ok(())
    }

    fn channel_of(&self, target: &Selector) -> Result<String, CoreError> {
        match target {
            Selector::Connection(id) => match parse_conn_id(id) {
                Some((node, _)) => Ok(wire::node_channel(node)),
                None => Err(not_found(id)),
            },
            Selector::User(u) => Ok(wire::user_channel(u)),
        }
    }
}

fn not_found(id: &str) -> CoreError {
    CoreError::NotFound {
        what: format!("connection {id:?}"),
    }
}

/// A message from the wire; `None` (logged) when it does not decode.
fn message_of(body: &[u8]) -> Option<Message> {
    match wire::decode_message(body) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(error = %e, "ignored a cluster message that does not decode");
            None
        }
    }
}

/// A history entry read back from the stream: its offset, the message (`None` when it does
/// not decode), the caller's id (or empty) and when it was kept.
struct Entry {
    offset: u64,
    message: Option<Message>,
    message_id: String,
    ts: i64,
}

fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => as_string(other)?.parse().ok(),
    }
}

/// XRANGE's answer, read with the redis crate's stream types; an entry whose id is not
/// `<offset>-0` is skipped, one whose message does not decode is kept without it (so the
/// reader sees the offset and does not take the read for complete past it).
fn parse_entries(v: Value) -> Vec<Entry> {
    let reply: StreamRangeReply = match redis::from_redis_value(v) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "unexpected history entries from the read script");
            return Vec::new();
        }
    };
    reply.ids.iter().filter_map(entry_of).collect()
}

fn entry_of(e: &StreamId) -> Option<Entry> {
    let offset = e.id.split('-').next()?.parse().ok()?;
    let message = e.get::<Vec<u8>>("f").and_then(|f| message_of(&f));
    Some(Entry {
        offset,
        message,
        message_id: e.get("m").unwrap_or_default(),
        ts: e.get("t").unwrap_or(0),
    })
}

impl Broker for RedisCluster {
    fn deliver(&self, route: Route, message: Message) -> BoxFuture<'_, Result<u32, CoreError>> {
        Box::pin(async move {
            let channel = match &route {
                Route::User(u) => wire::user_channel(u),
                Route::Role(r) => wire::role_channel(r),
                Route::All => wire::CONTROL.to_owned(),
                Route::Connection(id) => self.channel_of(&Selector::Connection(id.clone()))?,
            };
            let from = self.node_id.clone();
            let by_connection = matches!(route, Route::Connection(_));
            let id = match &route {
                Route::Connection(id) => id.clone(),
                _ => String::new(),
            };
            let body = wire::encode_message(&message);
            let replies = self
                .ask(&channel, |rid| Header::Deliver { from, rid, route }, &body)
                .await?;
            let mut n = 0;
            let mut found = false;
            for r in replies {
                if let Response::Count(c) = r {
                    n += c;
                    found = true;
                }
            }
            if by_connection && !found {
                return Err(not_found(&id));
            }
            Ok(n)
        })
    }

    fn hold(&self, keys: Vec<Interest>) -> BoxFuture<'_, Result<(), CoreError>> {
        Box::pin(async move {
            if !self.pubsub_ready.load(Ordering::Acquire) {
                return Err(CoreError::Unavailable(
                    "the Redis pub/sub connection is down".into(),
                ));
            }
            self.interest.hold(&keys).await
        })
    }

    fn release(&self, keys: Vec<Interest>) {
        self.interest.release(&keys);
    }

    fn ready(&self) -> bool {
        self.cluster_ready().is_ok() && self.cmd_ok.load(Ordering::Acquire)
    }
}

impl HistoryStore for RedisCluster {
    fn publish(&self, p: NewPublication) -> BoxFuture<'_, Result<Published, CoreError>> {
        Box::pin(async move {
            self.cluster_ready()?;
            let (stream, meta, idem_prefix) = wire::topic_keys(&p.topic);
            let caller_id: &str = if p.caller_id { &p.message.id } else { "" };
            let idem = format!("{idem_prefix}{caller_id}");
            let (rid, rx, gen) = self.new_pending();
            let mut inv = self.publish_script.prepare_invoke();
            inv.key(&stream)
                .key(&meta)
                .key(&idem)
                .key(wire::TOPIC_INDEX)
                .arg(wire::encode_message(&p.message))
                .arg(wire::pub_header(&self.node_id, rid, &p.topic))
                .arg(self.settings.history_size)
                .arg(self.settings.history_ttl_ms)
                .arg(self.meta_ttl_ms())
                .arg(super::memory::new_epoch())
                .arg(caller_id)
                .arg(wire::topic_channel(&p.topic))
                .arg(p.message.ts_ms)
                .arg(&p.topic);
            let mut con = self.cmd.clone();
            let r = tokio::time::timeout(REDIS_TIMEOUT, inv.invoke_async(&mut con)).await;
            let v: Value = match self.outcome(r) {
                Ok(v) => v,
                Err(e) => {
                    self.pending.lock().remove(&rid);
                    return Err(e);
                }
            };
            let bad = || CoreError::Unavailable("unexpected answer from the publish script".into());
            let Value::Array(parts) = v else {
                self.pending.lock().remove(&rid);
                return Err(bad());
            };
            let parsed = <[Value; 3]>::try_from(parts).ok().and_then(|[o, e, n]| {
                let n = match n {
                    Value::Int(i) => i,
                    _ => return None,
                };
                Some((as_u64(&o)?, as_string(&e)?, n))
            });
            let Some((offset, epoch, n)) = parsed else {
                self.pending.lock().remove(&rid);
                return Err(bad());
            };
            if n < 0 {
                self.pending.lock().remove(&rid);
                return Ok(Published {
                    offset,
                    epoch,
                    connections: 0,
                });
            }
            self.expect(rid, n as usize);
            let replies = if n == 0 {
                Vec::new()
            } else {
                self.collect(rid, rx, gen).await?
            };
            let connections = replies
                .iter()
                .map(|r| match r {
                    Response::Count(c) => *c,
                    _ => 0,
                })
                .sum();
            Ok(Published {
                offset,
                epoch,
                connections,
            })
        })
    }

    fn read(
        &self,
        topic: &str,
        since: Option<u64>,
    ) -> BoxFuture<'_, Result<HistoryRead<SharedEvent>, CoreError>> {
        let topic = topic.to_owned();
        Box::pin(async move { self.read_topic(&topic, since, true).await })
    }

    fn history(
        &self,
        topic: &str,
        q: HistoryQuery,
    ) -> BoxFuture<'_, Result<HistoryPage, CoreError>> {
        let topic = topic.to_owned();
        Box::pin(async move {
            // A count of 0 would read everything (XRANGE's COUNT 0): ask for the position alone.
            let (since, reverse) = match q.limit {
                0 => (None, false),
                _ => (q.since.or((!q.reverse).then_some(0)), q.reverse),
            };
            let count = q.limit.max(1);
            let (epoch, latest, entries) =
                self.read_raw(&topic, since, count, false, reverse).await?;
            let publications = entries
                .iter()
                .filter_map(|e| Some(Kept::of(e.offset, &e.message_id, e.message.as_ref()?)))
                .collect();
            Ok(HistoryPage {
                publications,
                epoch,
                latest,
            })
        })
    }

    fn kept_topics(&self) -> BoxFuture<'_, Result<Vec<u64>, CoreError>> {
        Box::pin(async move {
            let oldest = now_ms() - self.settings.history_ttl_ms as i64;
            let mut pipe = redis::pipe();
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(wire::TOPIC_INDEX)
                .arg("-inf")
                .arg(format!("({oldest}"))
                .ignore()
                .cmd("ZRANGE")
                .arg(wire::TOPIC_INDEX)
                .arg(0)
                .arg(-1);
            let mut con = self.cmd.clone();
            let r = tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async(&mut con)).await;
            let (names,): (Vec<String>,) = self.outcome(r)?;
            Ok(names.iter().map(|n| name_hash(n)).collect())
        })
    }
}

impl Control for RedisCluster {
    fn command(&self, target: Selector, command: Command) -> BoxFuture<'_, Result<u32, CoreError>> {
        Box::pin(async move {
            let channel = self.channel_of(&target)?;
            let by_connection = match &target {
                Selector::Connection(id) => Some(id.clone()),
                Selector::User(_) => None,
            };
            let replies = self
                .request(&channel, Request::Command { target, command })
                .await?;
            let mut n = 0;
            let mut found = false;
            for r in replies {
                match r {
                    Response::Count(c) => {
                        n += c;
                        found = true;
                    }
                    Response::Failed(why) => {
                        tracing::warn!(error = %why, "a node failed a command")
                    }
                    _ => {}
                }
            }
            match by_connection {
                Some(id) if !found => Err(not_found(&id)),
                _ => Ok(n),
            }
        })
    }

    fn get(&self, connection_id: &str) -> BoxFuture<'_, Result<ConnSnapshot, CoreError>> {
        let id = connection_id.to_owned();
        Box::pin(async move {
            let channel = self.channel_of(&Selector::Connection(id.clone()))?;
            let replies = self
                .request(&channel, Request::Get { id: id.clone() })
                .await?;
            replies
                .into_iter()
                .find_map(|r| match r {
                    Response::Conn(c) => Some(*c),
                    _ => None,
                })
                .ok_or_else(|| not_found(&id))
        })
    }

    fn list(
        &self,
        filter: ListFilter,
        after: Option<Cursor>,
        size: usize,
    ) -> BoxFuture<'_, Result<ListPage, CoreError>> {
        Box::pin(async move {
            let channel = match (&filter.user, &filter.role, &filter.topic) {
                (Some(u), _, _) => wire::user_channel(u),
                (None, Some(r), _) => wire::role_channel(r),
                (None, None, Some(t)) => wire::topic_channel(t),
                _ => wire::CONTROL.to_owned(),
            };
            let replies = self
                .request(
                    &channel,
                    Request::List {
                        filter,
                        after,
                        size,
                    },
                )
                .await?;
            let pages = replies
                .into_iter()
                .filter_map(|r| match r {
                    Response::Page(p) => Some(p),
                    _ => None,
                })
                .collect();
            Ok(merge_pages(pages, size))
        })
    }

    fn presence(&self, topic: &str) -> BoxFuture<'_, Result<Vec<Present>, CoreError>> {
        let channel = wire::topic_channel(topic);
        let topic = topic.to_owned();
        Box::pin(async move {
            let replies = self.request(&channel, Request::Presence { topic }).await?;
            let mut all: Vec<Present> = replies
                .into_iter()
                .flat_map(|r| match r {
                    Response::Presence(p) => p,
                    _ => Vec::new(),
                })
                .collect();
            all.sort_by(|a, b| a.connection_id.cmp(&b.connection_id));
            Ok(all)
        })
    }

    fn stats(&self) -> BoxFuture<'_, Result<(Vec<StatsPart>, u32), CoreError>> {
        Box::pin(async move {
            let replies = self.request(wire::CONTROL, Request::Stats).await?;
            let parts = replies
                .into_iter()
                .filter_map(|r| match r {
                    Response::Stats(s) => Some(s),
                    _ => None,
                })
                .collect();
            let nodes = self
                .members
                .lock()
                .live(now_ms(), self.settings.node_ttl_ms);
            Ok((parts, nodes))
        })
    }

    fn watch(&self) -> BoxFuture<'_, Result<(), CoreError>> {
        Box::pin(async move {
            self.request(wire::CONTROL, Request::Watch).await?;
            Ok(())
        })
    }

    fn unwatch(&self) {}
}
