//! How many connections each node holds, kept in Redis so that a delivery answers from one
//! script run instead of waiting for every receiving node to reply (PROTOCOL.md section 3: no
//! waiting on other nodes).
//!
//! Keys: `rt:tc:{t}` and `rt:rc:{r}` hashes node id -> that node's subscribers of topic `t`
//! and connections with role `r` (a user's are `rt:uc:{u}`, kept by [`super::users`]: one
//! count, read by deliveries and by online/offline alike); `rt:cx:<node>` the set of the
//! node's live connection ids (SendToConnection's NOT_FOUND, and everyone's count);
//! `rt:nk:<node>` the count keys the node has a field in, so that the sweep can take a dead
//! node's share away; `rt:unodes` the nodes with any of these; `rt:tu:{t}` a hash user ->
//! how many nodes hold a connection of that user subscribed to topic `t` (its length is the
//! topic's distinct users, for Presence's counts), with `rt:ntu:<node>` the node's entries
//! there (`<key>\n<user>`), for the sweep.
//!
//! A node writes its changes in batches: [`Counts::hold`] and [`Counts::release`] record a change in this node's own
//! tally and queues it, one writer task sends everything queued as one script run, and a
//! caller that must be counted before it goes on (a connection before `connected`, a
//! subscriber before `subscribed`) awaits the batch that carries its change. Decrements are
//! not awaited. After a write failed, or after Redis may have lost its data, the next batch
//! sets this node's whole tally instead of adding to it.
//!
//! Reading ([`LIVE`]): a node's share counts only while the node is alive, meaning its
//! `rt:alive:<node>` key stands (refreshed by its heartbeat) and its node channel has a
//! subscriber (a killed node's pub/sub connection is gone at once, so its share is too).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use redis::Script;
use tokio::sync::{oneshot, Notify};

use super::{Key, RedisCluster, REDIS_TIMEOUT};
use crate::core::model::Who;
use crate::core::stream;
use crate::core::CoreError;

/// The most count keys (or connection ids) one script run carries.
const BATCH: usize = 4096;

pub(super) fn topic_counts_key(topic: &str) -> String {
    match stream::user_of(topic) {
        Some(user) => super::users::counts_key(user),
        None => format!("rt:tc:{{{topic}}}"),
    }
}

pub(super) fn role_counts_key(role: &str) -> String {
    format!("rt:rc:{{{role}}}")
}

pub(super) fn conns_key(node: &str) -> String {
    format!("rt:cx:{node}")
}

pub(super) fn keys_key(node: &str) -> String {
    format!("rt:nk:{node}")
}

pub(super) fn topic_users_key(topic: &str) -> String {
    format!("rt:tu:{{{topic}}}")
}

pub(super) fn node_topic_users_key(node: &str) -> String {
    format!("rt:ntu:{node}")
}

/// The Lua helpers every counting script starts with: `alive(node)` (memoized per run) and
/// `live(hash)`, the sum of the live nodes' shares in a hash of node -> count.
pub const LIVE: &str = r#"
local alive_memo = {}
local function alive(node)
  local a = alive_memo[node]
  if a == nil then
    a = redis.call('EXISTS', 'rt:alive:' .. node) == 1
      and tonumber(redis.call('PUBSUB', 'NUMSUB', 'rt:n:' .. node)[2]) > 0
    alive_memo[node] = a
  end
  return a
end
local function live(h)
  local t = 0
  local kv = redis.call('HGETALL', h)
  for i = 1, #kv, 2 do
    if alive(kv[i]) then t = t + tonumber(kv[i + 1]) end
  end
  return t
end
"#;

/// A Lua helper for the scripts that take a node's whole share away (a reset, the sweep of a
/// dead node): `forget(node, nk, ntu)` deletes its fields in every count hash it is in and
/// its users from every topic-user hash, then `nk` and `ntu` themselves.
pub const FORGET: &str = r#"
local function forget(node, nk, ntu)
  for _, k in ipairs(redis.call('SMEMBERS', nk)) do redis.call('HDEL', k, node) end
  for _, e in ipairs(redis.call('SMEMBERS', ntu)) do
    local cut = string.find(e, '\n', 1, true)
    local k, u = string.sub(e, 1, cut - 1), string.sub(e, cut + 1)
    if redis.call('HINCRBY', k, u, -1) <= 0 then redis.call('HDEL', k, u) end
  end
  redis.call('DEL', nk, ntu)
end
"#;

/// A topic's counts (run after [`LIVE`]). KEYS: rt:tc:{t}, rt:tu:{t}. Returns {the live
/// nodes' subscribers, distinct users}.
pub const PRESENCE: &str = r#"
return {live(KEYS[1]), redis.call('HLEN', KEYS[2])}
"#;

/// Applies a batch (run after [`FORGET`]). KEYS: rt:nk:<node>, rt:cx:<node>, rt:unodes, rt:alive:<node>,
/// rt:ntu:<node>, then n count hashes, then p topic-user hashes. ARGV: node, mode (`add`, or
/// `set`: this node's whole tally, its old share cleared first, and the node marked alive for
/// node ttl ms), node ttl ms, m, n, then m connection changes (`+id` or `-id`), then one
/// number per count hash (a change, or with `set` the count), then for each topic-user hash
/// a user and +1 or -1 (this node holds the user there now, or no longer).
const APPLY: &str = r#"
local nk, cx, nodes, alive, ntu = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local node, mode, ttl = ARGV[1], ARGV[2], ARGV[3]
local m, n = tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('SADD', nodes, node)
if mode == 'set' then
  forget(node, nk, ntu)
  redis.call('DEL', cx)
  redis.call('SET', alive, '1', 'PX', ttl)
end
for i = 1, m do
  local op = ARGV[5 + i]
  if string.sub(op, 1, 1) == '+' then
    redis.call('SADD', cx, string.sub(op, 2))
  else
    redis.call('SREM', cx, string.sub(op, 2))
  end
end
for i = 1, n do
  local k = KEYS[5 + i]
  local v = redis.call('HINCRBY', k, node, tonumber(ARGV[5 + m + i]))
  if v <= 0 then
    redis.call('HDEL', k, node)
    redis.call('SREM', nk, k)
  else
    redis.call('SADD', nk, k)
  end
end
local base = 5 + m + n
for i = 6 + n, #KEYS do
  local k = KEYS[i]
  local j = base + 2 * (i - 6 - n)
  local user, d = ARGV[j + 1], tonumber(ARGV[j + 2])
  local entry = k .. '\n' .. user
  if d > 0 then
    redis.call('HINCRBY', k, user, 1)
    redis.call('SADD', ntu, entry)
  elseif redis.call('SREM', ntu, entry) == 1 then
    if redis.call('HINCRBY', k, user, -1) <= 0 then redis.call('HDEL', k, user) end
  end
end
return 1
"#;

/// A change to the tally that concerns the broker's counts (users are counted elsewhere).
enum Change {
    Conn(String),
    Hash(String),
    /// A topic's subscriber, with its user: the topic's count and its distinct users.
    Subscriber(String, String),
}

fn change_of(user: &str, who: &Who) -> Option<Change> {
    match who {
        Who::Connection(id) => Some(Change::Conn(id.clone())),
        Who::Role(r) => Some(Change::Hash(role_counts_key(r))),
        // A user stream counts as its user's connections, which the users module keeps.
        Who::Topic(t) if stream::is_topic(t) => {
            Some(Change::Subscriber(t.clone(), user.to_owned()))
        }
        Who::Topic(_) | Who::User(_) | Who::All => None,
    }
}

#[derive(Default)]
struct State {
    /// This node's count per key (only keys above zero).
    tally: HashMap<String, i64>,
    /// Changes per key not written yet.
    deltas: HashMap<String, i64>,
    /// Connection ids added (true) or removed, in order, not written yet.
    conns: Vec<(String, bool)>,
    /// This node's connections per (topic-user key, user), only pairs above zero.
    pairs: HashMap<(String, String), u32>,
    /// Pairs that appeared (+1) or went (-1) on this node, not written yet.
    pair_deltas: HashMap<(String, String), i64>,
    /// Callers waiting for the next batch.
    waiters: Vec<oneshot::Sender<Result<(), CoreError>>>,
    /// The next batch sets the whole tally (a write failed, or Redis may have lost it).
    reset: bool,
}

impl State {
    fn idle(&self) -> bool {
        self.deltas.is_empty()
            && self.conns.is_empty()
            && self.pair_deltas.is_empty()
            && !self.reset
    }

    fn add_hash(&mut self, key: String, by: i64) {
        let n = self.tally.entry(key.clone()).or_default();
        *n += by;
        if *n <= 0 {
            self.tally.remove(&key);
        }
        *self.deltas.entry(key).or_default() += by;
    }

    /// A subscriber of `user` came to or left the topic whose distinct users `key` counts:
    /// the pair changes in Redis only when this node's first comes or its last goes.
    fn add_pair(&mut self, key: String, user: String, by: i64) {
        let pair = (key, user);
        let n = self.pairs.entry(pair.clone()).or_default();
        let before = *n;
        *n = n.saturating_add_signed(by as i32);
        let after = *n;
        if after == 0 {
            self.pairs.remove(&pair);
        }
        let step = match (before, after) {
            (0, a) if a > 0 => 1,
            (b, 0) if b > 0 => -1,
            _ => 0,
        };
        if step != 0 {
            let d = self.pair_deltas.entry(pair.clone()).or_default();
            *d += step;
            if *d == 0 {
                self.pair_deltas.remove(&pair);
            }
        }
    }
}

/// This node's tally and its queue of changes to write.
pub(super) struct Counts {
    state: Mutex<State>,
    wake: Notify,
    apply: Script,
}

impl Counts {
    pub(super) fn new() -> Self {
        Counts {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            apply: Script::new(&format!("{FORGET}{APPLY}")),
        }
    }

    /// Records `keys` held for a connection of `user`; the receiver resolves once a batch
    /// with the change is written.
    pub(super) fn hold(
        &self,
        user: &str,
        keys: &[Who],
    ) -> oneshot::Receiver<Result<(), CoreError>> {
        let (tx, rx) = oneshot::channel();
        if let Some(tx) = self.record(user, keys, 1, Some(tx)) {
            // Nothing here for the broker to count: counted already.
            let _ = tx.send(Ok(()));
        }
        rx
    }

    /// Records `keys` released (written with the next batch; nobody waits).
    pub(super) fn release(&self, user: &str, keys: &[Who]) {
        self.record(user, keys, -1, None);
    }

    /// Adds `by` for each key the broker counts, queues the changes and wakes the writer;
    /// `waiter` is handed back when there was none.
    fn record(
        &self,
        user: &str,
        keys: &[Who],
        by: i64,
        waiter: Option<oneshot::Sender<Result<(), CoreError>>>,
    ) -> Option<oneshot::Sender<Result<(), CoreError>>> {
        let mut changes = keys.iter().filter_map(|k| change_of(user, k)).peekable();
        if changes.peek().is_none() {
            return waiter;
        }
        {
            let mut s = self.state.lock();
            for change in changes {
                match change {
                    Change::Conn(id) => s.conns.push((id, by > 0)),
                    Change::Hash(key) => s.add_hash(key, by),
                    Change::Subscriber(topic, user) => {
                        s.add_hash(topic_counts_key(&topic), by);
                        s.add_pair(topic_users_key(&topic), user, by);
                    }
                }
            }
            s.waiters.extend(waiter);
        }
        self.wake.notify_one();
        None
    }

    /// Makes the next batch set the whole tally (after Redis may have lost it); the receiver
    /// resolves once it is written.
    fn reset(&self) -> oneshot::Receiver<Result<(), CoreError>> {
        let (tx, rx) = oneshot::channel();
        {
            let mut s = self.state.lock();
            s.reset = true;
            s.waiters.push(tx);
        }
        self.wake.notify_one();
        rx
    }
}

/// One batch, taken from the queue.
struct Batch {
    set: bool,
    conns: Vec<(String, bool)>,
    counts: Vec<(String, i64)>,
    /// (topic-user key, user) pairs that appeared (+1) or went (-1); with a set, every pair.
    pairs: Vec<((String, String), i64)>,
    waiters: Vec<oneshot::Sender<Result<(), CoreError>>>,
}

/// Which instance keeps the count of `who`: a topic's is with the topic; connection ids and
/// roles are on the first; users are counted by [`super::users`].
fn instance_of_change(c: &RedisCluster, who: &Who) -> Option<usize> {
    change_of("", who)?;
    Some(match who {
        Who::Topic(t) => c.instance_of(Key::Topic(t)),
        _ => 0,
    })
}

impl RedisCluster {
    /// Counts `keys` held for a connection of `user`, on the instances that keep them;
    /// resolves once every instance involved has written them.
    pub(super) async fn count_hold(&self, user: &str, keys: &[Who]) -> Result<(), CoreError> {
        let mut per: Vec<Vec<Who>> = vec![Vec::new(); self.instances.len()];
        for k in keys {
            if let Some(i) = instance_of_change(self, k) {
                per[i].push(k.clone());
            }
        }
        let waits: Vec<_> = per
            .iter()
            .enumerate()
            .filter(|(_, ks)| !ks.is_empty())
            .map(|(i, ks)| self.counts[i].hold(user, ks))
            .collect();
        for rx in waits {
            self.counted(rx).await?;
        }
        Ok(())
    }

    /// Counts `keys` released (not waited for).
    pub(super) fn count_release(&self, user: &str, keys: &[Who]) {
        for k in keys {
            if let Some(i) = instance_of_change(self, k) {
                self.counts[i].release(user, std::slice::from_ref(k));
            }
        }
    }

    /// Makes the next batch of counts on instance `i` set this node's whole tally there
    /// (after Redis may have lost it, or swept it while this node was silent).
    pub(super) async fn counts_reset(&self, i: usize) -> Result<(), CoreError> {
        let rx = self.counts[i].reset();
        self.counted(rx).await
    }

    /// Takes what is queued for instance `i`; with a reset, the whole tally there (and on the
    /// first instance every live connection id).
    fn take_batch(&self, i: usize) -> Option<Batch> {
        let mut s = self.counts[i].state.lock();
        if s.idle() {
            return None;
        }
        let set = std::mem::take(&mut s.reset);
        let mut conns = Vec::new();
        let pairs: Vec<((String, String), i64)> = if set {
            s.pair_deltas.clear();
            s.pairs.keys().map(|p| (p.clone(), 1)).collect()
        } else {
            s.pair_deltas.drain().collect()
        };
        let counts: Vec<(String, i64)> = if set {
            s.deltas.clear();
            // On the first instance, the registry now, then the changes queued since: adding an id twice or
            // removing one already gone is harmless, and a connection registers only after
            // its id was queued, and leaves the registry before its removal is.
            if i == 0 {
                self.local
                    .registry
                    .for_each(|c| conns.push((c.info.id.clone(), true)));
            }
            s.tally.iter().map(|(k, v)| (k.clone(), *v)).collect()
        } else {
            s.deltas.drain().filter(|(_, d)| *d != 0).collect()
        };
        conns.append(&mut s.conns);
        Some(Batch {
            set,
            conns,
            counts,
            pairs,
            waiters: std::mem::take(&mut s.waiters),
        })
    }

    /// Writes one batch to instance `i` (in runs of at most [`BATCH`] items; a set's first
    /// run clears).
    async fn write_batch(&self, i: usize, b: &Batch) -> Result<(), CoreError> {
        let mut conns: &[(String, bool)] = &b.conns;
        let mut counts: &[(String, i64)] = &b.counts;
        let mut pairs: &[((String, String), i64)] = &b.pairs;
        let mut first = true;
        while first || !conns.is_empty() || !counts.is_empty() || !pairs.is_empty() {
            let (c_now, c_rest) = conns.split_at(conns.len().min(BATCH));
            let (n_now, n_rest) = counts.split_at(counts.len().min(BATCH));
            let (p_now, p_rest) = pairs.split_at(pairs.len().min(BATCH));
            let mut inv = self.counts[i].apply.prepare_invoke();
            inv.key(keys_key(&self.node_id))
                .key(conns_key(&self.node_id))
                .key(super::users::NODES)
                .key(super::users::alive_key(&self.node_id))
                .key(node_topic_users_key(&self.node_id));
            for (k, _) in n_now {
                inv.key(k);
            }
            for ((k, _), _) in p_now {
                inv.key(k);
            }
            let mode = if b.set && first { "set" } else { "add" };
            inv.arg(&self.node_id)
                .arg(mode)
                .arg(self.settings.node_ttl_ms)
                .arg(c_now.len())
                .arg(n_now.len());
            for (id, added) in c_now {
                inv.arg(format!("{}{id}", if *added { '+' } else { '-' }));
            }
            for (_, v) in n_now {
                inv.arg(*v);
            }
            for ((_, user), d) in p_now {
                inv.arg(user).arg(*d);
            }
            let _: i64 = self.invoke(Key::Instance(i), &inv).await?;
            conns = c_rest;
            counts = n_rest;
            pairs = p_rest;
            first = false;
        }
        Ok(())
    }

    /// The writer of instance `i`: one batch at a time, until the node stops. A failed batch
    /// makes the next one a reset (its changes are in the tally, so nothing is lost once
    /// Redis answers).
    pub(super) async fn write_counts(self: Arc<Self>, i: usize) {
        let mut stop = self.stopped();
        let counts = &self.counts[i];
        loop {
            while let Some(b) = self.take_batch(i) {
                let r = self.write_batch(i, &b).await;
                if let Err(e) = &r {
                    tracing::debug!(error = %e, "connection counts not written; retrying whole");
                    counts.state.lock().reset = true;
                }
                let failed = r.is_err();
                for w in b.waiters {
                    let _ = w.send(r.clone());
                }
                if failed {
                    // Wait for a change or a while before trying again.
                    tokio::select! {
                        _ = counts.wake.notified() => {}
                        _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            }
            tokio::select! {
                _ = counts.wake.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Waits until the change behind `rx` is written.
    pub(super) async fn counted(
        &self,
        rx: oneshot::Receiver<Result<(), CoreError>>,
    ) -> Result<(), CoreError> {
        match tokio::time::timeout(REDIS_TIMEOUT * 2, rx).await {
            Ok(Ok(r)) => r,
            _ => Err(CoreError::Unavailable(
                "Redis did not take this node's connection counts in time".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tally_follows_holds_and_releases_and_users_are_not_in_it() {
        let c = Counts::new();
        let keys = [
            Who::Connection("n.0000000000000001".into()),
            Who::User("u".into()),
            Who::Role("admin".into()),
            Who::Topic("news".into()),
            Who::Topic("#u".into()),
        ];
        drop(c.hold("u", &keys));
        drop(c.hold("u", &keys[2..4]));
        c.release("u", &keys[3..4]);
        let s = c.state.lock();
        assert_eq!(s.tally.get("rt:rc:{admin}"), Some(&2));
        assert_eq!(s.tally.get("rt:tc:{news}"), Some(&1));
        // A user's count (and its stream's) is the users module's.
        assert_eq!(s.tally.len(), 2);
        assert_eq!(s.deltas.get("rt:tc:{news}"), Some(&1));
        assert_eq!(s.conns, [("n.0000000000000001".to_owned(), true)]);
        assert_eq!(s.waiters.len(), 2, "a release is not waited for");
        // A topic's distinct users change in Redis only with a node's first or last
        // connection of the user there.
        assert_eq!(
            s.pair_deltas
                .get(&("rt:tu:{news}".to_owned(), "u".to_owned())),
            Some(&1)
        );
        drop(s);
        drop(c.hold("u", &keys[3..4]));
        drop(c.hold("v", &keys[3..4]));
        c.release("u", &keys[3..4]);
        let s = c.state.lock();
        let pair = |u: &str| ("rt:tu:{news}".to_owned(), u.to_owned());
        assert_eq!(s.pairs.get(&pair("u")), Some(&1));
        assert_eq!(s.pairs.get(&pair("v")), Some(&1));
        assert_eq!(
            s.pair_deltas.get(&pair("u")),
            Some(&1),
            "still one change: first came"
        );
        drop(s);
        c.release("u", &keys[3..4]);
        c.release("v", &keys[3..4]);
        let s = c.state.lock();
        assert!(s.pairs.is_empty());
        assert!(
            s.pair_deltas.is_empty(),
            "came and went before a write: nothing to write"
        );
        assert_eq!(s.tally.get("rt:tc:{news}"), None);
        drop(s);
        // Nothing to count: answered at once.
        let mut rx = c.hold("u", &[Who::User("u".into())]);
        assert!(matches!(rx.try_recv(), Ok(Ok(()))));
    }
}
