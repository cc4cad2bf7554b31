//! The pub/sub connection's supervisor: connects, subscribes this node's own channels and
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
use tokio::sync::mpsc;

use super::interest::SubOp;
use super::{members, wire, RedisCluster, REDIS_TIMEOUT};
use crate::clock::mono_ms;

/// Channels per SUBSCRIBE.
pub const BATCH: usize = 512;
/// A pub/sub connection that carried nothing this long is presumed dead.
pub const SILENCE: Duration = Duration::from_secs(10);

pub async fn run(c: Arc<RedisCluster>, mut ops: mpsc::UnboundedReceiver<SubOp>) {
    let mut stop = c.stopped();
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return;
        }
        match session(&c, &mut ops).await {
            Ended::Stopped => return,
            Ended::Lost(why) => {
                if c.pubsub_ready.swap(false, Ordering::AcqRel) {
                    tracing::warn!(reason = %why, "lost the Redis pub/sub connection; reconnecting");
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
        if c.pubsub_ready.load(Ordering::Acquire) {
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

async fn session(c: &Arc<RedisCluster>, ops: &mut mpsc::UnboundedReceiver<SubOp>) -> Ended {
    let mut stop = c.stopped();
    let ps = match tokio::time::timeout(REDIS_TIMEOUT, c.client.get_async_pubsub()).await {
        Ok(Ok(ps)) => ps,
        Ok(Err(e)) => return Ended::Lost(e.to_string()),
        Err(_) => return Ended::Lost("connect timed out".into()),
    };
    let (mut sink, mut stream) = ps.split();
    let mut channels = vec![
        wire::CONTROL.to_owned(),
        wire::EVENTS.to_owned(),
        wire::node_channel(&c.node_id),
    ];
    channels.extend(c.interest.channels());
    for batch in channels.chunks(BATCH) {
        match tokio::time::timeout(REDIS_TIMEOUT, sink.subscribe(batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Ended::Lost(e.to_string()),
            Err(_) => return Ended::Lost("subscribe timed out".into()),
        }
    }
    c.interest.settle_all();
    let last_rx = Arc::new(AtomicI64::new(mono_ms()));
    let reader = {
        let c = Arc::clone(c);
        let last_rx = Arc::clone(&last_rx);
        tokio::spawn(async move {
            while let Some(m) = stream.next().await {
                last_rx.store(mono_ms(), Ordering::Relaxed);
                c.on_message(m.get_payload_bytes());
            }
        })
    };
    let _abort = AbortOnDrop(reader.abort_handle());
    let mut reader = reader;
    // Whatever was published while this node could not hear it is read from history first.
    c.catch_up_all().await;
    // The other nodes may be resubscribing too: hear from each again before delivering.
    c.members.lock().unconfirm_all();
    c.hello_nonce.fetch_add(1, Ordering::AcqRel);
    c.pubsub_ready.store(true, Ordering::Release);
    c.local.metrics.cluster_subscribed.inc();
    tracing::info!(channels = channels.len(), "subscribed to Redis pub/sub");
    members::beat_to(c, None, members::Beat::Hello).await;
    let mut check = tokio::time::interval(Duration::from_secs(1));
    let mut deferred: Option<SubOp> = None;
    loop {
        let op = match deferred.take() {
            Some(op) => Some(op),
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
                    Some(op) => Some(op),
                    None => return Ended::Stopped,
                },
            },
        };
        match op {
            Some(SubOp::Subscribe(mut chs)) => {
                // Coalesce the subscribes already queued into one round trip.
                while chs.len() < BATCH {
                    match ops.try_recv() {
                        Ok(SubOp::Subscribe(more)) => chs.extend(more),
                        Ok(other) => {
                            deferred = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let r = tokio::time::timeout(REDIS_TIMEOUT, sink.subscribe(&chs)).await;
                let ok = matches!(r, Ok(Ok(())));
                c.interest.settle(&chs, ok);
                if !ok {
                    return Ended::Lost("subscribe failed".into());
                }
            }
            Some(SubOp::Unsubscribe(chs)) => {
                let r = tokio::time::timeout(REDIS_TIMEOUT, sink.unsubscribe(&chs)).await;
                if !matches!(r, Ok(Ok(()))) {
                    return Ended::Lost("unsubscribe failed".into());
                }
            }
            None => {}
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
