//! Who is online, in Redis: every node's connection count per user and the online state live
//! in Redis, changed only by the scripts below, so each transition is decided once, by one
//! script run, whichever nodes race (PROTOCOL.md section 7). GetUsers reads them without
//! asking any node.
//!
//! Keys: `rt:uc:{u}` a hash node id -> that node's live connections of user `u`; `rt:us:{u}` a
//! hash with `since` (online period start), `closed` (when the last connection closed, while
//! the grace runs) or `seen` (once offline; the key then expires after `last_seen_ttl_ms`);
//! `rt:uoff` a sorted set of users in their grace, scored by when it ends; `rt:un:<node>` the
//! users a node has connections of, `rt:unodes` the nodes with such users, and
//! `rt:alive:<node>`, refreshed by the node's heartbeat, which expires `node_ttl_ms` after a
//! node went silent: the next sweep then takes that node's users away, as if their
//! connections had closed when the cluster declared the node dead.

use redis::{Script, Value};

use super::wire::{self, Header};
use super::{BoxFuture, Key, RedisCluster};
use crate::cluster::Users;
use crate::core::model::{ConnEvent, ConnEventKind};
use crate::core::users::UserState;
use crate::core::CoreError;

/// The most users one sweep takes offline (the rest wait for the next sweep).
const SWEEP_LIMIT: usize = 1000;

pub(super) fn counts_key(user: &str) -> String {
    format!("rt:uc:{{{user}}}")
}

pub(super) fn state_key(user: &str) -> String {
    format!("rt:us:{{{user}}}")
}

pub(super) fn alive_key(node: &str) -> String {
    format!("rt:alive:{node}")
}

const OFFLINE: &str = "rt:uoff";
pub(super) const NODES: &str = "rt:unodes";

/// A connection opened. KEYS: counts, state, rt:uoff, rt:un:<node>, rt:unodes, alive.
/// ARGV: node, user, now, node ttl ms, the USER_ONLINE event message. Returns 1 when the
/// user came online (and published the event on `rt:e`), else 0.
pub const OPENED: &str = r#"
local uc, us, uoff, un, unodes, alive = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local node, user, now, ttl, event = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
redis.call('SET', alive, '1', 'PX', ttl)
redis.call('SADD', unodes, node)
redis.call('SADD', un, user)
redis.call('HINCRBY', uc, node, 1)
local total = 0
for _, v in ipairs(redis.call('HVALS', uc)) do total = total + tonumber(v) end
if total ~= 1 then return 0 end
if redis.call('ZREM', uoff, user) == 1 then
  redis.call('HDEL', us, 'closed')
  return 0
end
redis.call('DEL', us)
redis.call('HSET', us, 'since', now)
redis.call('PUBLISH', 'rt:e', event)
return 1
"#;

/// A connection closed. KEYS: counts, state, rt:uoff, rt:un:<node>. ARGV: node, user, now,
/// grace ms. With the user's last connection, its grace begins.
pub const CLOSED: &str = r#"
local uc, us, uoff, un = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local node, user, now, grace = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('HINCRBY', uc, node, -1) <= 0 then
  redis.call('HDEL', uc, node)
  redis.call('SREM', un, user)
end
local total = 0
for _, v in ipairs(redis.call('HVALS', uc)) do total = total + tonumber(v) end
if total <= 0 and redis.call('HEXISTS', us, 'since') == 1
    and not redis.call('ZSCORE', uoff, user) then
  redis.call('ZADD', uoff, now + grace, user)
  redis.call('HSET', us, 'closed', now)
end
return total
"#;

/// The sweep (run after `counts::FORGET`). KEYS: rt:uoff, rt:unodes. ARGV: now, last-seen ttl ms, grace ms, limit. First
/// takes dead nodes' users away (their grace starts now) and their connection counts
/// (`super::counts`), then takes offline every user whose
/// grace ended: returns {user, closed, user, closed, ...}, each user once, ever.
pub const SWEEP: &str = r#"
local uoff, unodes = KEYS[1], KEYS[2]
local now, seen_ttl, grace, limit = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4]
local function total(uc)
  local t = 0
  for _, v in ipairs(redis.call('HVALS', uc)) do t = t + tonumber(v) end
  return t
end
for _, node in ipairs(redis.call('SMEMBERS', unodes)) do
  if redis.call('EXISTS', 'rt:alive:' .. node) == 0 then
    local un = 'rt:un:' .. node
    for _, user in ipairs(redis.call('SMEMBERS', un)) do
      local uc, us = 'rt:uc:{' .. user .. '}', 'rt:us:{' .. user .. '}'
      redis.call('HDEL', uc, node)
      if total(uc) <= 0 and redis.call('HEXISTS', us, 'since') == 1
          and not redis.call('ZSCORE', uoff, user) then
        redis.call('ZADD', uoff, now + grace, user)
        redis.call('HSET', us, 'closed', now)
      end
    end
    redis.call('DEL', un)
    forget(node, 'rt:nk:' .. node, 'rt:ntu:' .. node)
    redis.call('DEL', 'rt:cx:' .. node)
    redis.call('SREM', unodes, node)
  end
end
local out = {}
for _, user in ipairs(redis.call('ZRANGEBYSCORE', uoff, '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', uoff, user)
  local uc, us = 'rt:uc:{' .. user .. '}', 'rt:us:{' .. user .. '}'
  if total(uc) <= 0 then
    local closed = redis.call('HGET', us, 'closed') or tostring(now)
    redis.call('DEL', us)
    redis.call('HSET', us, 'seen', closed)
    redis.call('PEXPIRE', us, seen_ttl)
    table.insert(out, user)
    table.insert(out, closed)
  else
    redis.call('HDEL', us, 'closed')
  end
end
return out
"#;

/// A node's count of a user, taken again after it (re)subscribed. KEYS: counts, state,
/// rt:uoff, rt:un:<node>, rt:unodes, alive. ARGV: node, user, now, node ttl ms, the
/// USER_ONLINE event message, count (> 0). Sets the node's count; a user Redis does not know online
/// (the broker lost its data) comes online again: returns 1 and publishes the event.
pub const RECOUNT: &str = r#"
local uc, us, uoff, un, unodes, alive = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local node, user, now, ttl, event, n = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
redis.call('SET', alive, '1', 'PX', ttl)
redis.call('SADD', unodes, node)
redis.call('SADD', un, user)
redis.call('HSET', uc, node, n)
if redis.call('HEXISTS', us, 'since') == 1 then
  return 0
end
redis.call('ZREM', uoff, user)
redis.call('DEL', us)
redis.call('HSET', us, 'since', now)
redis.call('PUBLISH', 'rt:e', event)
return 1
"#;

/// GetUsers' read (run after `counts::LIVE`). KEYS: counts, state, for each user. Returns
/// per user {live connections, since, closed, seen} ("" for a field not set): a dead node's
/// connections are not counted, as in deliveries.
pub const READ: &str = r#"
local out = {}
for i = 1, #KEYS, 2 do
  local f = redis.call('HMGET', KEYS[i + 1], 'since', 'closed', 'seen')
  table.insert(out, {live(KEYS[i]), f[1] or '', f[2] or '', f[3] or ''})
end
return out
"#;

/// The scripts, loaded once per node.
pub(super) struct UserScripts {
    opened: Script,
    closed: Script,
    sweep: Script,
    recount: Script,
    read: Script,
}

impl UserScripts {
    pub(super) fn new() -> Self {
        UserScripts {
            opened: Script::new(OPENED),
            closed: Script::new(CLOSED),
            sweep: Script::new(&format!("{}{SWEEP}", super::counts::FORGET)),
            recount: Script::new(RECOUNT),
            read: Script::new(&format!("{}{READ}", super::counts::LIVE)),
        }
    }
}

fn event_message(kind: ConnEventKind, user: &str, node: &str, at_ms: i64) -> Vec<u8> {
    wire::encode(
        &Header::Event {
            event: Box::new(ConnEvent::user(kind, user, node, at_ms)),
        },
        b"",
    )
}

impl RedisCluster {
    async fn closed_now(&self, user: &str, now_ms: i64) -> Result<(), CoreError> {
        let mut inv = self.user_scripts.closed.prepare_invoke();
        inv.key(counts_key(user))
            .key(state_key(user))
            .key(OFFLINE)
            .key(format!("rt:un:{}", self.node_id))
            .arg(&self.node_id)
            .arg(user)
            .arg(now_ms)
            .arg(self.settings.offline_grace_ms);
        let _: i64 = self.invoke(Key::User(user), &inv).await?;
        Ok(())
    }

    /// Takes this node's count of every user it holds on instance `i` again (after each
    /// (re)subscribe: a Redis that restarted empty learns them back, and users it had
    /// forgotten come online again, told to every watcher). Best effort: a user whose recount
    /// fails keeps its old count.
    pub(super) async fn recount_users(&self, i: usize) {
        let mut counts: std::collections::HashMap<String, u32> = Default::default();
        self.local.registry.for_each(|c| {
            if self.instance_of(Key::User(&c.info.user_id)) == i {
                *counts.entry(c.info.user_id.clone()).or_default() += 1;
            }
        });
        for (user, n) in counts {
            let now = crate::clock::now_ms();
            let script = &self.user_scripts.recount;
            if let Ok(true) = self.count_user(script, &user, now, Some(n)).await {
                self.local.emit_user(ConnEventKind::UserOnline, &user, now);
            }
        }
    }

    /// Runs OPENED (`n` None) or RECOUNT (`n` the count) for `user`: the same keys and
    /// arguments. True when the user came online (the script published USER_ONLINE).
    async fn count_user(
        &self,
        script: &Script,
        user: &str,
        now_ms: i64,
        n: Option<u32>,
    ) -> Result<bool, CoreError> {
        let event = event_message(ConnEventKind::UserOnline, user, &self.node_id, now_ms);
        let mut inv = script.prepare_invoke();
        inv.key(counts_key(user))
            .key(state_key(user))
            .key(OFFLINE)
            .key(format!("rt:un:{}", self.node_id))
            .key(NODES)
            .key(alive_key(&self.node_id))
            .arg(&self.node_id)
            .arg(user)
            .arg(now_ms)
            .arg(self.settings.node_ttl_ms)
            .arg(event);
        if let Some(n) = n {
            inv.arg(n);
        }
        let online: i64 = self.invoke(Key::User(user), &inv).await?;
        Ok(online == 1)
    }

    /// This node's liveness for the sweep and for the counts, on every instance (refreshed
    /// by the heartbeat); gone on leave. Returns the instances where it had lapsed (this node
    /// was silent for longer than `node_ttl_ms`, stopped or cut off, and the others counted
    /// it out, or the instance restarted): its counts there must be taken again.
    pub(super) async fn mark_alive(&self, alive: bool) -> Vec<usize> {
        let key = alive_key(&self.node_id);
        let cmd = match alive {
            true => {
                let mut c = redis::cmd("SET");
                c.arg(&key)
                    .arg(1)
                    .arg("PX")
                    .arg(self.settings.node_ttl_ms)
                    .arg("GET");
                c
            }
            false => {
                let mut c = redis::cmd("DEL");
                c.arg(&key);
                c
            }
        };
        let mut lapsed = Vec::new();
        for i in 0..self.instances.len() {
            if matches!(self.query(Key::Instance(i), &cmd).await, Ok(Value::Nil)) && alive {
                lapsed.push(i);
            }
        }
        lapsed
    }
}

impl Users for RedisCluster {
    fn opened(&self, user: &str, now_ms: i64) -> BoxFuture<'_, Result<bool, CoreError>> {
        let user = user.to_owned();
        Box::pin(async move {
            self.count_user(&self.user_scripts.opened, &user, now_ms, None)
                .await
        })
    }

    fn closed(&self, user: &str, now_ms: i64) {
        let Some(me) = self.me.get().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        let user = user.to_owned();
        tokio::spawn(async move {
            // A failure leaves this node's count high until the node is declared dead or
            // the count is taken again: logged, never a panic.
            if let Err(e) = me.closed_now(&user, now_ms).await {
                tracing::debug!(error = %e, "a user's connection close was not counted");
            }
        });
    }

    fn offline_due(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<(String, i64)>, CoreError>> {
        Box::pin(async move {
            let mut inv = self.user_scripts.sweep.prepare_invoke();
            inv.key(OFFLINE)
                .key(NODES)
                .arg(now_ms)
                .arg(self.settings.last_seen_ttl_ms)
                .arg(self.settings.offline_grace_ms)
                .arg(SWEEP_LIMIT);
            // Each instance keeps its own users' graces; one that does not answer now is swept
            // next time.
            let mut flat: Vec<String> = Vec::new();
            let mut failed = None;
            for i in 0..self.instances.len() {
                match self.invoke::<Vec<String>>(Key::Instance(i), &inv).await {
                    Ok(v) => flat.extend(v),
                    Err(e) => failed = Some(e),
                }
            }
            if let (Some(e), true) = (failed, flat.is_empty()) {
                return Err(e);
            }
            let gone: Vec<(String, i64)> = flat
                .chunks_exact(2)
                .map(|p| (p[0].clone(), p[1].parse().unwrap_or(now_ms)))
                .collect();
            for (user, at) in &gone {
                let msg = event_message(ConnEventKind::UserOffline, user, &self.node_id, *at);
                let _ = self.publish_raw(wire::EVENTS, msg).await;
            }
            Ok(gone)
        })
    }

    fn users(
        &self,
        ids: Vec<String>,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<UserState>, CoreError>> {
        Box::pin(async move {
            // One script run per instance, with the users it keeps, put back in order.
            type Row = (i64, String, String, String);
            let mut rows: Vec<Option<Row>> = vec![None; ids.len()];
            for i in 0..self.instances.len() {
                let mine: Vec<usize> = (0..ids.len())
                    .filter(|&j| self.instance_of(Key::User(&ids[j])) == i)
                    .collect();
                if mine.is_empty() {
                    continue;
                }
                let mut inv = self.user_scripts.read.prepare_invoke();
                for &j in &mine {
                    inv.key(counts_key(&ids[j])).key(state_key(&ids[j]));
                }
                let got: Vec<Row> = self.invoke(Key::Instance(i), &inv).await?;
                if got.len() != mine.len() {
                    return Err(CoreError::Unavailable(
                        "unexpected answer from Redis to a users read".into(),
                    ));
                }
                for (&j, row) in mine.iter().zip(got) {
                    rows[j] = Some(row);
                }
            }
            let mut out = Vec::with_capacity(ids.len());
            for (id, row) in ids.iter().zip(rows) {
                // Every user belongs to one instance, which answered for it.
                let (live, since, closed, seen) = row.unwrap_or_default();
                let at = |f: &str| f.parse::<i64>().ok();
                let fields = [at(&since), at(&closed), at(&seen)];
                let field = |i: usize| fields[i];
                let connections = live.clamp(0, i64::from(u32::MAX));
                out.push(UserState::of(
                    id,
                    connections as u32,
                    field(0),
                    field(1).is_some(),
                    field(2),
                    now_ms,
                    self.settings.last_seen_ttl_ms,
                ));
            }
            Ok(out)
        })
    }
}
