//! The supervisor of one Redis instance's pub/sub connection (one per instance): connects, subscribes this node's own channels and
//! every channel it holds (in batches of [`BATCH`]), starts the reader, has every held topic
//! caught up from history, then reports ready and serves subscribe/unsubscribe requests in
//! order. When the connection fails (or carries nothing, not even this node's own heartbeats,
//! for [`SILENCE`]) it reports not ready and starts over with a jittered backoff.
//!
//! The reader never waits: each message is handled in place ([`RedisCluster::on_message`]
//! only queues frames and spawns slow work), and the client library buffers what arrives
//! meanwhile, so a slow node never stalls Redis.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::mpsc;

use super::interest::SubOp;
use super::{members, wire, RedisCluster, REDIS_TIMEOUT};
use crate::clock::mono_ms;

/// Channels per SUBSCRIBE.
pub const BATCH: usize = 512;
/// A pub/sub connection that carried nothing this long is presumed dead.
pub const SILENCE: Duration = Duration::from_secs(10);

pub async fn run(c: Arc<RedisCluster>, i: usize, mut ops: mpsc::UnboundedReceiver<SubOp>) {
    let mut stop = c.stopped();
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return;
        }
        match session(&c, i, &mut ops).await {
            Ended::Stopped => return,
            Ended::Lost(why) => {
                if c.instances[i].pubsub_ready.swap(false, Ordering::AcqRel) {
                    tracing::warn!(
                        redis = %c.instances[i].shown,
                        reason = %why,
                        "lost the Redis pub/sub connection; reconnecting"
                    );
                }
            }
        }
        // Requests made while down fail at once rather than wait for the reconnect.
        while let Ok(op) = ops.try_recv() {
            if let SubOp::Subscribe(chs) = op {
                c.interest.settle(&chs, false);
            }
        }
        let jitter = Duration::from_millis(rand_ms(backoff.as_millis() as u64));
        tokio::select! {
            _ = tokio::time::sleep(backoff / 2 + jitter / 2) => {}
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
        if c.subscribed(i) {
            backoff = Duration::from_millis(100);
        }
    }
}

fn rand_ms(max: u64) -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b) % max.max(1)
}

enum Ended {
    Stopped,
    Lost(String),
}

async fn session(
    c: &Arc<RedisCluster>,
    i: usize,
    ops: &mut mpsc::UnboundedReceiver<SubOp>,
) -> Ended {
    let mut stop = c.stopped();
    let client = &c.instances[i].client;
    let ps = match tokio::time::timeout(REDIS_TIMEOUT, client.get_async_pubsub()).await {
        Ok(Ok(ps)) => ps,
        Ok(Err(e)) => return Ended::Lost(e.to_string()),
        Err(_) => return Ended::Lost("connect timed out".into()),
    };
    let (mut sink, stream) = ps.split();
    let channels = match subscribe_all(c, i, &mut sink).await {
        Ok(n) => n,
        Err(ended) => return ended,
    };
    let last_rx = Arc::new(AtomicI64::new(mono_ms()));
    let mut reader = spawn_reader(c, stream, Arc::clone(&last_rx));
    let _abort = AbortOnDrop(reader.abort_handle());
    announce_ready(c, i, channels).await;
    let mut check = tokio::time::interval(Duration::from_secs(1));
    let mut deferred: Option<SubOp> = None;
    loop {
        let op = match deferred.take() {
            Some(op) => op,
            None => tokio::select! {
                _ = &mut reader => return Ended::Lost("the connection closed".into()),
                _ = async { let _ = stop.wait_for(|s| *s).await; } => return Ended::Stopped,
                _ = check.tick() => {
                    if mono_ms() - last_rx.load(Ordering::Relaxed) > SILENCE.as_millis() as i64 {
                        return Ended::Lost("no traffic, not even our own heartbeats".into());
                    }
                    continue;
                }
                op = ops.recv() => match op {
                    Some(op) => op,
                    None => return Ended::Stopped,
                },
            },
        };
        if let Err(ended) = apply(c, &mut sink, op, ops, &mut deferred).await {
            return ended;
        }
    }
}

/// Subscribes this node's own channels on instance `i` and every channel it holds interest in
/// there, in batches; returns how many. Every instance carries the node's channel (the counts
/// there take a node as alive while it listens on it, and it carries the node's own pings,
/// see `members::heartbeat`) and the events channel (a user's online event is published
/// where the user lives); the first also carries membership and requests.
async fn subscribe_all(c: &RedisCluster, i: usize, sink: &mut PubSubSink) -> Result<usize, Ended> {
    let mut channels = vec![wire::EVENTS.to_owned(), wire::node_channel(&c.node_id)];
    if i == 0 {
        channels.push(wire::CONTROL.to_owned());
    }
    channels.extend(c.interest.channels(i));
    for batch in channels.chunks(BATCH) {
        match tokio::time::timeout(REDIS_TIMEOUT, sink.subscribe(batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Ended::Lost(e.to_string())),
            Err(_) => return Err(Ended::Lost("subscribe timed out".into())),
        }
    }
    c.interest.settle_all(i);
    Ok(channels.len())
}

/// The task that hands every pub/sub message to the node, noting when the last one came.
fn spawn_reader(
    c: &Arc<RedisCluster>,
    mut stream: PubSubStream,
    last_rx: Arc<AtomicI64>,
) -> tokio::task::JoinHandle<()> {
    let c = Arc::clone(c);
    tokio::spawn(async move {
        while let Some(m) = stream.next().await {
            last_rx.store(mono_ms(), Ordering::Relaxed);
            c.on_message(m.get_payload_bytes());
        }
    })
}

/// Subscribed again: catch up, then say so. Whatever was published while this node could not
/// hear it is read from history first; the other nodes may be resubscribing too, so each must
/// vouch again before this node delivers.
async fn announce_ready(c: &Arc<RedisCluster>, i: usize, channels: usize) {
    c.catch_up_all(i).await;
    c.recount_users(i).await;
    // Redis may have lost this node's counts too: set whole before deliveries count on them
    // (a failure is retried by the writer).
    let _ = c.counts_reset(i).await;
    if i == 0 {
        c.members.lock().unconfirm_all();
        c.hello_nonce.fetch_add(1, Ordering::AcqRel);
    }
    c.instances[i].pubsub_ready.store(true, Ordering::Release);
    c.local.metrics.cluster_subscribed.inc();
    tracing::info!(channels, redis = %c.instances[i].shown, "subscribed to Redis pub/sub");
    if i == 0 {
        members::beat_to(c, None, members::Beat::Hello).await;
    }
}

/// Carries out one subscription change, coalescing the subscribes already queued behind it
/// into one round trip (an op of another kind found on the way is kept in `deferred`).
async fn apply(
    c: &RedisCluster,
    sink: &mut PubSubSink,
    op: SubOp,
    ops: &mut mpsc::UnboundedReceiver<SubOp>,
    deferred: &mut Option<SubOp>,
) -> Result<(), Ended> {
    match op {
        SubOp::Subscribe(mut chs) => {
            while chs.len() < BATCH {
                match ops.try_recv() {
                    Ok(SubOp::Subscribe(more)) => chs.extend(more),
                    Ok(other) => {
                        *deferred = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let r = tokio::time::timeout(REDIS_TIMEOUT, sink.subscribe(&chs)).await;
            let ok = matches!(r, Ok(Ok(())));
            c.interest.settle(&chs, ok);
            if !ok {
                return Err(Ended::Lost("subscribe failed".into()));
            }
        }
        SubOp::Unsubscribe(chs) => {
            let r = tokio::time::timeout(REDIS_TIMEOUT, sink.unsubscribe(&chs)).await;
            if !matches!(r, Ok(Ok(()))) {
                return Err(Ended::Lost("unsubscribe failed".into()));
            }
        }
    }
    Ok(())
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
