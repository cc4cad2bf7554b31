//! The Redis stream consumer: a consumer group on the stream (created with the stream when
//! missing, from the stream's first entry), this node's id as the consumer. One node at a time
//! reads, under a lease: the key `<stream>:lease:<group>` holds the node id with a
//! `claim_idle_ms` expiry, renewed every second (a Lua check-and-extend), so a dead or stopped
//! node loses it. A new holder first takes every pending entry of the group (XAUTOCLAIM, in id
//! order) and applies them, then reads new ones. Entries are acknowledged after they are
//! applied; one that can never succeed is copied to `<stream>:failed` with an `error` field,
//! then acknowledged. Two connections: one blocks in XREADGROUP, the other renews and acks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamReadReply};
use secrecy::ExposeSecret;

use super::record::{backoff_ms, Outcome};
use super::{pause, reconnecting, Applier};
use crate::config::ConsumerConfig;

/// As the outbox's: every second, or a third of `claim_idle_ms` if that is shorter.
fn renew_every(claim_idle_ms: u64) -> Duration {
    Duration::from_millis((claim_idle_ms / 3).clamp(100, 1000))
}

/// Extends the lease if this node holds it, or takes it when free.
const CLAIM: &str = r#"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
elseif not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

pub async fn run(applier: Arc<Applier>, cfg: ConsumerConfig) {
    reconnecting(&applier, "Redis", || async {
        session(&applier, &cfg).await.map_err(|e| e.to_string())
    })
    .await;
}

async fn session(applier: &Applier, cfg: &ConsumerConfig) -> redis::RedisResult<()> {
    let client = redis::Client::open(cfg.url.expose_secret())?;
    // The reader blocks in XREADGROUP up to a second: its answers may take that long.
    let mut reader = client
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    let mut cmd = client.get_multiplexed_async_connection().await?;
    let (stream, group) = (&cfg.stream, &cfg.group);
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut cmd)
        .await;
    if let Err(e) = created {
        if e.code() != Some("BUSYGROUP") {
            return Err(e);
        }
    }
    applier.status.error(None);
    let me = applier.node_id().to_owned();
    let lease = format!("{stream}:lease:{group}");
    let failed_stream = format!("{stream}:failed");
    let claim = redis::Script::new(CLAIM);
    let idle = cfg.claim_idle_ms;
    let mut holding = false;
    let mut renew_at = Instant::now();
    let mut retries = 0u32;
    // After taking the lease: this node's pending entries first (id 0), then new ones (>).
    let mut from_pending = true;
    loop {
        if applier.stopping() {
            return Ok(());
        }
        if Instant::now() >= renew_at {
            let got: i32 = claim
                .key(&lease)
                .arg(&me)
                .arg(idle)
                .invoke_async(&mut cmd)
                .await?;
            let now = got == 1;
            if now && !holding {
                tracing::info!(consumer = %applier.name, stream = %stream, "consumer: stream held");
                take_pending(&mut cmd, stream, group, &me).await?;
                from_pending = true;
            }
            holding = now;
            applier
                .status
                .held(if holding { vec![0] } else { Vec::new() });
            backlog(applier, &mut cmd, stream, group).await;
            renew_at = Instant::now() + renew_every(cfg.claim_idle_ms);
        }
        if !holding {
            pause(applier, renew_every(cfg.claim_idle_ms).as_millis() as u64).await;
            continue;
        }
        let block = renew_at
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(cfg.poll_interval_ms))
            .as_millis()
            .max(1) as u64;
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(group)
            .arg(&me)
            .arg("COUNT")
            .arg(cfg.batch_size);
        if !from_pending {
            read.arg("BLOCK").arg(block);
        }
        read.arg("STREAMS")
            .arg(stream)
            .arg(if from_pending { "0" } else { ">" });
        let reply: Option<StreamReadReply> = read.query_async(&mut reader).await?;
        let entries: Vec<StreamId> = reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default();
        if from_pending && entries.is_empty() {
            from_pending = false;
            continue;
        }
        let mut acked: Vec<String> = Vec::with_capacity(entries.len());
        let mut failed = 0u64;
        let mut retry = None;
        for e in &entries {
            let method = field(e, "method");
            let payload = field(e, "payload");
            let outcome = match (&method, &payload) {
                (Some(m), Some(p)) => applier.apply(m, p.as_bytes()).await,
                _ => Outcome::Failed("an entry needs the fields method and payload".into()),
            };
            match outcome {
                Outcome::Applied => acked.push(e.id.clone()),
                Outcome::Failed(why) => {
                    tracing::warn!(consumer = %applier.name, id = %e.id, error = %why, "consumer: entry set aside in the failed stream");
                    let mut add = redis::cmd("XADD");
                    add.arg(&failed_stream).arg("*");
                    for k in e.map.keys() {
                        add.arg(k).arg(field(e, k).unwrap_or_default());
                    }
                    add.arg("id").arg(&e.id).arg("error").arg(&why);
                    let _: String = add.query_async(&mut cmd).await?;
                    acked.push(e.id.clone());
                    failed += 1;
                }
                Outcome::Retry(why) => {
                    retry = Some(why);
                    break;
                }
            }
            if applier.stopping() {
                break;
            }
        }
        if !acked.is_empty() {
            let n: u64 = redis::cmd("XACK")
                .arg(stream)
                .arg(group)
                .arg(&acked)
                .query_async(&mut cmd)
                .await?;
            let _ = n;
            applier.count("applied", acked.len() as u64 - failed);
            applier.count("failed", failed);
        }
        if let Some(why) = retry {
            applier.count("retried", 1);
            applier.status.error(Some(why));
            retries += 1;
            // What was read and not acknowledged is pending: read it again from there.
            from_pending = true;
            pause(applier, backoff_ms(retries)).await;
        } else {
            retries = 0;
            if from_pending && entries.len() < cfg.batch_size {
                from_pending = false;
            }
        }
    }
}

/// A field of an entry as text.
fn field(e: &StreamId, name: &str) -> Option<String> {
    e.map
        .get(name)
        .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
}

/// Makes every pending entry of the group this node's, so that it applies them (in id order)
/// before new ones.
async fn take_pending(
    cmd: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
    me: &str,
) -> redis::RedisResult<()> {
    let mut cursor = "0-0".to_owned();
    loop {
        let (next, _ids, _deleted): (String, Vec<String>, Vec<String>) = redis::cmd("XAUTOCLAIM")
            .arg(stream)
            .arg(group)
            .arg(me)
            .arg(0)
            .arg(&cursor)
            .arg("COUNT")
            .arg(1000)
            .arg("JUSTID")
            .query_async(cmd)
            .await?;
        if next == "0-0" {
            return Ok(());
        }
        cursor = next;
    }
}

/// How many entries wait (pending plus not yet delivered to the group) and the oldest's age.
async fn backlog(applier: &Applier, cmd: &mut MultiplexedConnection, stream: &str, group: &str) {
    let groups: redis::RedisResult<redis::Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(cmd)
        .await;
    let Ok(redis::Value::Array(groups)) = groups else {
        return;
    };
    for g in groups {
        let Ok(map) = redis::from_redis_value::<std::collections::HashMap<String, redis::Value>>(g)
        else {
            continue;
        };
        let name = map
            .get("name")
            .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok());
        if name.as_deref() != Some(group) {
            continue;
        }
        let num = |k: &str| {
            map.get(k)
                .and_then(|v| redis::from_redis_value::<i64>(v.clone()).ok())
                .unwrap_or(0)
        };
        let waiting = num("pending") + num("lag");
        // The oldest waiting entry: the first pending one, else the first after the group's
        // last delivered id; its id's time part is when it was added.
        let last = map
            .get("last-delivered-id")
            .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
            .unwrap_or_else(|| "0-0".into());
        let oldest: redis::RedisResult<redis::Value> = if num("pending") > 0 {
            redis::cmd("XPENDING")
                .arg(stream)
                .arg(group)
                .query_async(cmd)
                .await
        } else {
            redis::cmd("XRANGE")
                .arg(stream)
                .arg(format!("({last}"))
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query_async(cmd)
                .await
        };
        let oldest_ms = oldest.ok().and_then(|v| first_id_ms(&v));
        let lag = match (waiting, oldest_ms) {
            (w, Some(ms)) if w > 0 => ((crate::clock::now_ms() - ms).max(0)) as f64 / 1000.0,
            _ => 0.0,
        };
        applier.backlog(waiting, lag);
    }
}

/// The time part of the first entry id in an XPENDING summary or an XRANGE reply.
fn first_id_ms(v: &redis::Value) -> Option<i64> {
    let text = |v: &redis::Value| redis::from_redis_value::<String>(v.clone()).ok();
    let id = match v {
        // XPENDING summary: [count, smallest id, greatest id, consumers]
        redis::Value::Array(items) if items.len() == 4 && text(&items[1]).is_some() => {
            text(&items[1])?
        }
        // XRANGE: [[id, fields], ...]
        redis::Value::Array(items) => match items.first()? {
            redis::Value::Array(entry) => text(entry.first()?)?,
            _ => return None,
        },
        _ => return None,
    };
    id.split('-').next()?.parse().ok()
}
