//! The cluster family on Redis (or Valkey): any number of nodes share one Redis, or several
//! (`[broker] redis_urls`: topics and users spread by a hash of their name, what neither owns
//! on the first), and every RPC answers the same on any node.
//!
//! - Two connections per node and instance: a multiplexed command connection
//!   (`ConnectionManager`, which reconnects by itself) and a dedicated pub/sub connection owned
//!   by a [`supervisor`], which reconnects, resubscribes everything this node holds there, and
//!   has every held topic of that instance caught up from history (and this node's counts
//!   there written again) before it reports ready again. Every command runs under a timeout.
//! - Who ([`interest`]): a node subscribes to `rt:u:<user>`, `rt:r:<role>` and
//!   `rt:t:{topic}` only while it holds a connection for them (reference counted, with a
//!   deferred unsubscribe), so a delivery reaches only the nodes that need it.
//! - Deliveries wait for no node: one script run publishes on the narrowest channel and
//!   answers how many connections it reached from the counts every node keeps in Redis
//!   ([`counts`]), in which a node's share counts only while it is alive.
//! - Request/reply, for commands and questions: one PUBLISH on the narrowest channel; PUBLISH
//!   answers how many nodes received it, and the caller waits for that many replies on its
//!   own node channel (its own share is answered in process). No node is ever waited for
//!   that is not there: a dead node's subscriptions die with its connection.
//! - Topics: the publish script assigns the offset, keeps the history, records idempotency and
//!   publishes, in one round trip; each node's topic table orders what arrives and repairs
//!   gaps from history.
//! - Membership ([`members`]): heartbeats on `rt:c`; a node silent for `node_ttl_ms` is gone.
//!
//! One file per concern: this one holds the connections (start, the command connection, the
//! one function that picks the instance owning a key); [`request`] the request/reply
//! bookkeeping; [`dispatch`] what arrives on pub/sub; [`history`] reads and gap repair;
//! [`store`], [`broker`], [`control`] and [`users`] the seam traits; [`counts`] the
//! connection counts; [`wire`] and [`scripts`] the formats. Pure parts (wire encoding, key names, reply parsing, the instance choice,
//! membership and interest bookkeeping) are unit-tested in their files.

pub mod interest;
mod members;
mod scripts;
mod supervisor;
pub mod wire;

mod broker;
mod control;
mod counts;
mod dispatch;
mod history;
mod request;
mod store;
mod users;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use redis::Script;
use tokio::sync::{mpsc, watch};

use super::{BoxFuture, Broker, Control, HistoryStore};
use crate::clock::now_ms;
use crate::core::model::{name_hash, Who};
use crate::core::CoreError;
use crate::node::LocalNode;
use wire::Header;

/// The longest any one Redis command may take.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a request waits for the nodes' replies.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(1);

/// What the cluster family needs from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The instances, the first holding what no topic or user owns.
    pub redis_urls: Vec<String>,
    pub node_ttl_ms: u64,
    pub history_size: usize,
    pub history_ttl_ms: u64,
    /// The same for user streams (`[users]`).
    pub user_history_size: usize,
    pub user_history_ttl_ms: u64,
    pub offline_grace_ms: u64,
    pub last_seen_ttl_ms: u64,
}

impl Settings {
    /// How many messages, and for how long, the stream `name` keeps.
    pub fn kept(&self, name: &str) -> (usize, u64) {
        match crate::core::stream::is_topic(name) {
            true => (self.history_size, self.history_ttl_ms),
            false => (self.user_history_size, self.user_history_ttl_ms),
        }
    }
}

pub struct RedisCluster {
    node_id: String,
    local: Arc<LocalNode>,
    /// Runs commands on this node's connections (the hub, registered once it exists).
    pub(in crate::cluster) handler: crate::cluster::HandlerSlot,
    settings: Settings,
    /// The Redis instances, each with its command connection and pub/sub supervisor; the
    /// first holds membership, roles, connection ids and whatever no topic or user owns.
    instances: Vec<Instance>,
    /// A hash of the instance list, which every node's heartbeat carries: nodes that
    /// disagree on it would look for the same topic in different places.
    instances_hash: u64,
    /// Set when a live node's list differs from this one's: this node is not ready.
    instances_mismatch: AtomicBool,
    interest: interest::Interests,
    pending: Mutex<HashMap<u64, request::Pending>>,
    /// The workers that deliver what the pub/sub reader hands them (see `dispatch`).
    workers: dispatch::Workers,
    next_rid: AtomicU64,
    members: Mutex<members::Members>,
    /// Numbers this node's hellos (one per (re)subscription to the first instance); answers
    /// echo it.
    hello_nonce: AtomicU64,
    catching_up: Mutex<HashSet<String>>,
    publish_script: Script,
    deliver_script: Script,
    presence_script: Script,
    read_script: Script,
    /// This node's connection counts on each instance, and their writers' queues.
    counts: Vec<counts::Counts>,
    user_scripts: users::UserScripts,
    /// Itself, weakly: for work a sync call hands to a task (a user's connection closed).
    me: std::sync::OnceLock<std::sync::Weak<RedisCluster>>,
    stop: watch::Sender<bool>,
}

/// One Redis instance: its command connection and the state of its pub/sub connection.
pub(super) struct Instance {
    /// Its URL without the password, for messages.
    shown: String,
    client: redis::Client,
    cmd: ConnectionManager,
    /// The last command on it went through.
    cmd_ok: AtomicBool,
    /// This node's subscriptions on it are in place.
    pubsub_ready: AtomicBool,
}

/// What a command is about, for [`RedisCluster::commands`] to choose the instance that owns it.
#[derive(Debug, Clone, Copy)]
enum Key<'a> {
    /// A pub/sub channel, by name: the instance of the topic or user it names, else the first.
    Channel(&'a str),
    /// A topic's keys (history, meta, idempotency, counts) and its channel; a user stream's
    /// are its user's.
    Topic(&'a str),
    /// A user's keys (online state, counts) and channel.
    User(&'a str),
    /// State of the whole cluster (membership, roles, connection ids): the first instance.
    Global,
    /// One instance, by position.
    Instance(usize),
}

impl Key<'_> {
    /// Which of `n` instances owns this key: a topic's keys and channel stay together, a user
    /// stream stays with its user, and adding an instance moves only the keys it takes (jump
    /// consistent hash of the name's FNV-1a hash). Cluster-wide state lives on the first.
    fn instance(self, n: usize) -> usize {
        match self {
            Key::Topic(name) => match crate::core::stream::user_of(name) {
                Some(user) => jump_hash(name_hash(user), n),
                None => jump_hash(name_hash(name), n),
            },
            Key::User(user) => jump_hash(name_hash(user), n),
            Key::Channel(ch) => match wire::owner_of(ch) {
                Some(wire::Owner::Topic(t)) => Key::Topic(t).instance(n),
                Some(wire::Owner::User(u)) => Key::User(u).instance(n),
                None => 0,
            },
            Key::Global => 0,
            Key::Instance(i) => i.min(n.saturating_sub(1)),
        }
    }
}

/// Which of `n` instances keeps topic `topic` (a user stream `#<user>`: its user's), as
/// every node computes it (for tools and tests).
pub fn topic_instance(topic: &str, n: usize) -> usize {
    Key::Topic(topic).instance(n)
}

/// Which of `n` instances keeps user `user`'s online state, channel and stream.
pub fn user_instance(user: &str, n: usize) -> usize {
    Key::User(user).instance(n)
}

/// Lamping and Veach's jump consistent hash: a bucket in `0..n` for `key`, such that growing
/// `n` by one moves only the keys that land in the new bucket.
fn jump_hash(mut key: u64, n: usize) -> usize {
    let (mut b, mut j) = (-1i64, 0i64);
    let n = n.max(1) as i64;
    while j < n {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1i64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

pub use crate::config::redacted_url as redacted;

/// The client and the command connection (multiplexed, reconnecting by itself), with
/// TCP_NODELAY: requests and replies are small writes that must not wait for an ACK (Nagle
/// with delayed ACKs costs 40 ms a round trip).
/// With `required`, the instance must answer now; otherwise (an instance other than the
/// first) a node starts without it, connecting when it can: meanwhile its topics and users
/// answer UNAVAILABLE, as when it goes away later.
async fn connect(
    redis_url: &str,
    shown: &str,
    required: bool,
) -> Result<(redis::Client, ConnectionManager, bool), String> {
    let info = redis::IntoConnectionInfo::into_connection_info(redis_url)
        .map_err(|e| format!("{shown}: {e}"))?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    let client = redis::Client::open(info).map_err(|e| format!("{shown}: {e}"))?;
    let cfg = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    let now = tokio::time::timeout(
        REDIS_TIMEOUT * 2,
        ConnectionManager::new_with_config(client.clone(), cfg.clone()),
    )
    .await
    .map_err(|_| format!("cannot reach Redis at {shown}: timed out"))
    .and_then(|r| r.map_err(|e| format!("cannot reach Redis at {shown}: {e}")));
    match now {
        Ok(cmd) => Ok((client, cmd, true)),
        Err(e) if required => Err(e),
        Err(e) => {
            tracing::warn!(redis = %shown, error = %e, "starting without this Redis instance; its topics and users are unavailable until it answers");
            let cmd = ConnectionManager::new_lazy_with_config(client.clone(), cfg)
                .map_err(|e| format!("{shown}: {e}"))?;
            Ok((client, cmd, false))
        }
    }
}

/// A node id must be unique: it names the node's channel and every connection id. Refused
/// when a live node already listens on this id's channel.
async fn refuse_duplicate(
    cmd: &ConnectionManager,
    node_id: &str,
    shown: &str,
) -> Result<(), String> {
    let mut probe = cmd.clone();
    let taken: Result<(String, i64), _> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(wire::node_channel(node_id))
        .query_async(&mut probe)
        .await;
    if matches!(taken, Ok((_, n)) if n > 0) {
        return Err(format!(
            "another node with id {node_id:?} is live on Redis at {shown}; give each node its own [node] id (or leave it empty)"
        ));
    }
    Ok(())
}

impl RedisCluster {
    /// Connects to Redis, subscribes this node's channels and starts its background tasks.
    pub async fn start(
        config: &crate::config::Config,
        local: Arc<LocalNode>,
    ) -> Result<Arc<Self>, String> {
        let settings = Settings {
            redis_urls: config.broker.instances(),
            node_ttl_ms: config.broker.node_ttl_ms,
            history_size: config.topics.history_size,
            history_ttl_ms: config.topics.history_ttl_ms,
            user_history_size: config.users.history_size,
            user_history_ttl_ms: config.users.history_ttl_ms,
            offline_grace_ms: config.users.offline_grace_ms,
            last_seen_ttl_ms: config.users.last_seen_ttl_ms,
        };
        let mut instances = Vec::new();
        let mut shown_all = Vec::new();
        let mut up = Vec::new();
        for (i, url) in settings.redis_urls.iter().enumerate() {
            let shown = redacted(url);
            let (client, cmd, answered) = connect(url, &shown, i == 0).await?;
            if answered {
                up.push(i);
            }
            shown_all.push(shown.clone());
            instances.push(Instance {
                shown,
                client,
                cmd,
                cmd_ok: AtomicBool::new(true),
                pubsub_ready: AtomicBool::new(false),
            });
        }
        let url = shown_all.join(", ");
        refuse_duplicate(&instances[0].cmd, &local.id, &instances[0].shown).await?;
        let (mut ops_txs, mut ops_rxs) = (Vec::new(), Vec::new());
        for _ in &instances {
            let (tx, rx) = mpsc::unbounded_channel();
            ops_txs.push(tx);
            ops_rxs.push(rx);
        }
        let counts = instances.iter().map(|_| counts::Counts::new()).collect();
        let node_id = local.id.clone();
        let cluster = Arc::new(RedisCluster {
            node_id: node_id.clone(),
            local: Arc::clone(&local),
            handler: Default::default(),
            settings,
            instances,
            instances_hash: name_hash(&shown_all.join("\n")),
            instances_mismatch: AtomicBool::new(false),
            interest: interest::Interests::new(ops_txs),
            pending: Mutex::new(HashMap::new()),
            workers: dispatch::Workers::new(),
            next_rid: AtomicU64::new(1),
            members: Mutex::new(members::Members::new(node_id)),
            hello_nonce: AtomicU64::new(0),
            catching_up: Mutex::new(HashSet::new()),
            publish_script: Script::new(&format!("{}{}", counts::LIVE, scripts::PUBLISH)),
            deliver_script: Script::new(&format!("{}{}", counts::LIVE, scripts::DELIVER)),
            presence_script: Script::new(&format!("{}{}", counts::LIVE, counts::PRESENCE)),
            read_script: Script::new(scripts::READ),
            counts,
            user_scripts: users::UserScripts::new(),
            me: std::sync::OnceLock::new(),
            stop: watch::channel(false).0,
        });
        let _ = cluster.me.set(Arc::downgrade(&cluster));
        cluster.mark_alive(true).await;
        cluster.install_sinks();
        cluster.start_workers();
        for (i, ops_rx) in ops_rxs.into_iter().enumerate() {
            tokio::spawn(supervisor::run(Arc::clone(&cluster), i, ops_rx));
            tokio::spawn(Arc::clone(&cluster).write_counts(i));
        }
        tokio::spawn(members::heartbeat(Arc::clone(&cluster)));
        tokio::spawn(interest::dissolver(Arc::clone(&cluster)));
        if !cluster.wait_subscribed(&up).await {
            cluster.stop.send_replace(true);
            return Err(format!(
                "cannot subscribe to Redis at {}",
                cluster.instances[0].shown
            ));
        }
        tracing::info!(redis = %url, node_id = %cluster.node_id, "joined the cluster");
        Ok(cluster)
    }

    /// Where this node's lifecycle events (while another node watches) and its topics' join
    /// and leave notices go: out over Redis. Joins and leaves go on the topic's channel, which
    /// every node holding the topic hears (this one included); each offers them to its own
    /// listeners. Weak: the sinks live in the node, which the cluster holds.
    fn install_sinks(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        self.local.set_event_sink(Box::new(move |ev| {
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
        let weak = Arc::downgrade(self);
        self.local.set_presence_sink(Box::new(move |topic, make| {
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
    }

    /// Waits (at most 5 s) until the supervisors have this node's channels subscribed on
    /// the instances that answered at start (the first always did).
    async fn wait_subscribed(&self, up: &[usize]) -> bool {
        for _ in 0..100 {
            if up.iter().all(|&i| self.subscribed(i)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
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
        // Its users' connections are gone with it: the next sweep, on any node, says so.
        self.mark_alive(false).await;
        self.stop.send_replace(true);
    }

    fn stopped(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Which instance owns `key`.
    fn instance_of(&self, key: Key<'_>) -> usize {
        key.instance(self.instances.len())
    }

    /// Whether this node's subscriptions on instance `i` are in place.
    fn subscribed(&self, i: usize) -> bool {
        self.instances[i].pubsub_ready.load(Ordering::Acquire)
    }

    /// The command connection of the Redis instance that owns `key`, and its position. Every
    /// command goes through here (and the pub/sub side through [`interest`] and one
    /// [`supervisor`] per instance), so the callers never choose an instance.
    fn commands(&self, key: Key<'_>) -> (usize, ConnectionManager) {
        let i = self.instance_of(key);
        (i, self.instances[i].cmd.clone())
    }

    /// Runs one command under the timeout on the instance that owns `key`.
    async fn query<T: redis::FromRedisValue>(
        &self,
        key: Key<'_>,
        cmd: &redis::Cmd,
    ) -> Result<T, CoreError> {
        let (i, mut con) = self.commands(key);
        self.outcome(
            i,
            tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async(&mut con)).await,
        )
    }

    /// Runs a script under the timeout on the instance that owns `key`.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        key: Key<'_>,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, CoreError> {
        let (i, mut con) = self.commands(key);
        self.outcome(
            i,
            tokio::time::timeout(REDIS_TIMEOUT, inv.invoke_async(&mut con)).await,
        )
    }

    /// Runs a pipeline under the timeout on the instance that owns `key`.
    async fn pipeline<T: redis::FromRedisValue>(
        &self,
        key: Key<'_>,
        pipe: &redis::Pipeline,
    ) -> Result<T, CoreError> {
        let (i, mut con) = self.commands(key);
        self.outcome(
            i,
            tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async(&mut con)).await,
        )
    }

    /// A command's result on instance `i`; connection trouble marks the instance down
    /// (the node is unready while the first one is).
    fn outcome<T>(
        &self,
        i: usize,
        r: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, CoreError> {
        let ok = &self.instances[i].cmd_ok;
        match r {
            Ok(Ok(v)) => {
                ok.store(true, Ordering::Release);
                Ok(v)
            }
            Ok(Err(e)) => {
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                {
                    ok.store(false, Ordering::Release);
                }
                Err(CoreError::Unavailable(e.to_string()))
            }
            Err(_) => {
                ok.store(false, Ordering::Release);
                Err(CoreError::Unavailable(format!(
                    "Redis at {} did not answer in time",
                    self.instances[i].shown
                )))
            }
        }
    }

    async fn publish_raw(&self, channel: &str, msg: Vec<u8>) -> Result<usize, CoreError> {
        self.query(
            Key::Channel(channel),
            redis::cmd("PUBLISH").arg(channel).arg(msg),
        )
        .await
    }

    /// Whether a delivery or request on the instance owning `key` now reaches every node
    /// that holds a recipient: this node's subscriptions there are in place, and, on the first
    /// instance, so are every other live node's since this node last reconnected (after a
    /// Redis restart a PUBLISH would otherwise count 0 for a node that has not resubscribed
    /// yet, a false "nobody there"). On another instance a node that has not resubscribed yet
    /// is not counted either (its counts there are written again after it resubscribes), and
    /// its topics catch up from history.
    fn cluster_ready(&self, key: Key<'_>) -> Result<(), CoreError> {
        let i = self.instance_of(key);
        if !self.subscribed(i) {
            return Err(CoreError::Unavailable(format!(
                "the pub/sub connection to Redis at {} is down",
                self.instances[i].shown
            )));
        }
        if i == 0
            && !self
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

    /// The channel that reaches `who`; NOT_FOUND for a connection id that names no node.
    fn channel_of(&self, who: &Who) -> Result<String, CoreError> {
        wire::channel(who).ok_or_else(|| match who {
            Who::Connection(id) => not_found(id),
            _ => CoreError::invalid("target", "reaches nobody"),
        })
    }
}

fn not_found(id: &str) -> CoreError {
    CoreError::NotFound {
        what: format!("connection {id:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_over_instances_and_move_little_when_one_is_added() {
        let names: Vec<String> = (0..2000).map(|i| format!("topic:{i}")).collect();
        for name in &names {
            assert_eq!(Key::Topic(name).instance(1), 0);
        }
        assert_eq!(Key::Global.instance(8), 0);
        let mut per = [0usize; 4];
        let mut moved = 0;
        for name in &names {
            let four = Key::Topic(name).instance(4);
            per[four] += 1;
            let five = Key::Channel(&wire::topic_channel(name)).instance(5);
            if five != four {
                assert_eq!(five, 4, "a key only ever moves to the new instance");
                moved += 1;
            }
        }
        assert!(per.iter().all(|&n| (400..600).contains(&n)), "{per:?}");
        assert!((300..500).contains(&moved), "about a fifth moved: {moved}");
        assert_eq!(
            Key::Topic("a").instance(3),
            jump_hash(name_hash("a"), 3),
            "stable across calls and builds"
        );
    }

    #[test]
    fn a_user_its_stream_and_its_channel_live_together_and_the_rest_on_the_first() {
        for user in ["u", "alice", "user:42", "x"] {
            let home = Key::User(user).instance(7);
            assert_eq!(Key::Topic(&format!("#{user}")).instance(7), home);
            assert_eq!(Key::Channel(&wire::user_channel(user)).instance(7), home);
            assert_eq!(
                Key::Channel(&wire::topic_channel(&format!("#{user}"))).instance(7),
                home
            );
        }
        for ch in [
            wire::role_channel("r"),
            wire::node_channel("n"),
            wire::CONTROL.into(),
        ] {
            assert_eq!(Key::Channel(&ch).instance(7), 0, "{ch}");
        }
        assert_eq!(Key::Instance(3).instance(7), 3);
        let spread: std::collections::HashSet<usize> = (0..50)
            .map(|i| Key::User(&format!("u{i}")).instance(4))
            .collect();
        assert_eq!(spread.len(), 4, "users spread too");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redacted("redis://:s3cret@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(redacted("redis://h:6379"), "redis://h:6379");
    }
}
