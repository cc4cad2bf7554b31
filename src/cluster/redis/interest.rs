//! What this node subscribes to: a reference count per channel (`rt:u:`, `rt:r:`, `rt:t:`).
//! The first holder of a channel asks the supervisor to SUBSCRIBE and every holder waits for
//! Redis to acknowledge it; the last release leaves the channel idle, and the dissolver
//! unsubscribes it once it has been idle for [`LINGER`] (so churn costs no round trips).
//! Subscribe and unsubscribe requests go to the supervisor in the order they were decided,
//! under the same lock, so a late UNSUBSCRIBE can never undo a newer SUBSCRIBE.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use super::{wire, Key, RedisCluster, REDIS_TIMEOUT};
use crate::core::model::Who;
use crate::core::CoreError;

/// How long an unused channel stays subscribed.
pub const LINGER: Duration = Duration::from_secs(1);

/// A request to the supervisor, which owns the pub/sub connection.
#[derive(Debug)]
pub enum SubOp {
    Subscribe(Vec<String>),
    Unsubscribe(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubState {
    Pending,
    Subscribed,
    Failed,
}

struct Entry {
    count: usize,
    state: watch::Sender<SubState>,
    idle_since: Option<Instant>,
}

pub struct Interests {
    map: Mutex<HashMap<String, Entry>>,
    /// One supervisor per Redis instance; a channel goes to the one that owns it.
    ops: Vec<mpsc::UnboundedSender<SubOp>>,
}

impl Interests {
    pub fn new(ops: Vec<mpsc::UnboundedSender<SubOp>>) -> Self {
        Interests {
            map: Mutex::new(HashMap::new()),
            ops,
        }
    }

    /// Which instance's supervisor subscribes `channel`.
    fn instance(&self, channel: &str) -> usize {
        Key::Channel(channel).instance(self.ops.len())
    }

    /// Sends each instance its share of `op`'s channels (under the map's lock: in order).
    fn send(&self, channels: Vec<String>, subscribe: bool) -> bool {
        let mut per: Vec<Vec<String>> = vec![Vec::new(); self.ops.len()];
        for ch in channels {
            per[self.instance(&ch)].push(ch);
        }
        let mut ok = true;
        for (tx, chs) in self.ops.iter().zip(per) {
            if chs.is_empty() {
                continue;
            }
            let op = match subscribe {
                true => SubOp::Subscribe(chs),
                false => SubOp::Unsubscribe(chs),
            };
            ok &= tx.send(op).is_ok();
        }
        ok
    }

    /// Holds every key; resolves once Redis acknowledged each channel's subscription. A
    /// connection id is not a channel of its own (its node's channel is always subscribed):
    /// it is skipped, here and in [`Interests::release`].
    pub async fn hold(&self, keys: &[Who]) -> Result<(), CoreError> {
        let mut waits = Vec::with_capacity(keys.len());
        {
            let mut map = self.map.lock();
            let mut fresh = Vec::new();
            for k in keys.iter().filter(|k| !matches!(k, Who::Connection(_))) {
                let ch = wire::channel(k).unwrap_or_default();
                let e = map.entry(ch.clone()).or_insert_with(|| {
                    fresh.push(ch.clone());
                    Entry {
                        count: 0,
                        state: watch::channel(SubState::Pending).0,
                        idle_since: None,
                    }
                });
                if *e.state.borrow() == SubState::Failed && !fresh.contains(&ch) {
                    e.state.send_replace(SubState::Pending);
                    fresh.push(ch);
                }
                e.count += 1;
                e.idle_since = None;
                waits.push(e.state.subscribe());
            }
            if !fresh.is_empty() && !self.send(fresh, true) {
                drop(map);
                self.release(keys);
                return Err(CoreError::Unavailable(
                    "the cluster link has stopped".into(),
                ));
            }
        }
        for mut rx in waits {
            let r =
                tokio::time::timeout(REDIS_TIMEOUT * 2, rx.wait_for(|s| *s != SubState::Pending))
                    .await;
            let ok = matches!(&r, Ok(Ok(s)) if **s == SubState::Subscribed);
            drop(r);
            if !ok {
                self.release(keys);
                return Err(CoreError::Unavailable(
                    "Redis did not acknowledge a subscription".into(),
                ));
            }
        }
        Ok(())
    }

    /// Releases every key once.
    pub fn release(&self, keys: &[Who]) {
        let mut map = self.map.lock();
        let now = Instant::now();
        for k in keys.iter().filter(|k| !matches!(k, Who::Connection(_))) {
            if let Some(e) = map.get_mut(&wire::channel(k).unwrap_or_default()) {
                e.count = e.count.saturating_sub(1);
                if e.count == 0 {
                    e.idle_since = Some(now);
                }
            }
        }
    }

    /// Records Redis's answer to a SUBSCRIBE of `channels`.
    pub fn settle(&self, channels: &[String], ok: bool) {
        let map = self.map.lock();
        let state = if ok {
            SubState::Subscribed
        } else {
            SubState::Failed
        };
        for ch in channels {
            if let Some(e) = map.get(ch) {
                e.state.send_replace(state);
            }
        }
    }

    /// Every channel held or lingering on instance `i` (to subscribe again after a
    /// reconnect).
    pub fn channels(&self, i: usize) -> Vec<String> {
        let map = self.map.lock();
        map.keys()
            .filter(|ch| self.instance(ch) == i)
            .cloned()
            .collect()
    }

    /// After a reconnect to instance `i` subscribed every channel it owns.
    pub fn settle_all(&self, i: usize) {
        for (ch, e) in self.map.lock().iter() {
            if self.instance(ch) == i {
                e.state.send_replace(SubState::Subscribed);
            }
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.map.lock().is_empty()
    }

    /// Unsubscribes the channels idle for longer than `linger`.
    pub fn dissolve(&self, linger: Duration) {
        let mut map = self.map.lock();
        let now = Instant::now();
        let gone: Vec<String> = map
            .iter()
            .filter(|(_, e)| e.count == 0 && e.idle_since.is_some_and(|t| now - t >= linger))
            .map(|(k, _)| k.clone())
            .collect();
        if gone.is_empty() {
            return;
        }
        for k in &gone {
            map.remove(k);
        }
        // Sent under the lock: ordered before any later SUBSCRIBE of the same channel.
        self.send(gone, false);
    }
}

/// Unsubscribes idle channels twice a second until the node stops.
pub async fn dissolver(c: Arc<RedisCluster>) {
    let mut stop = c.stopped();
    let mut tick = tokio::time::interval(LINGER / 2);
    loop {
        tokio::select! {
            _ = tick.tick() => c.interest.dissolve(LINGER),
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_holder_subscribes_last_release_lingers_then_unsubscribes() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let i = Arc::new(Interests::new(vec![tx]));
        let keys = vec![Who::User("a".into())];
        let i2 = Arc::clone(&i);
        let k2 = keys.clone();
        let first = tokio::spawn(async move { i2.hold(&k2).await });
        let Some(SubOp::Subscribe(chs)) = rx.recv().await else {
            panic!("expected a subscribe")
        };
        assert_eq!(chs, ["rt:u:a"]);
        i.settle(&chs, true);
        first.await.unwrap().unwrap();
        // A second holder needs no round trip.
        i.hold(&keys).await.unwrap();
        assert!(rx.try_recv().is_err());
        i.release(&keys);
        i.release(&keys);
        i.dissolve(Duration::from_secs(3600));
        assert!(rx.try_recv().is_err(), "still lingering");
        i.dissolve(Duration::ZERO);
        let Some(SubOp::Unsubscribe(chs)) = rx.recv().await else {
            panic!("expected an unsubscribe")
        };
        assert_eq!(chs, ["rt:u:a"]);
        assert!(i.is_empty());
    }

    #[tokio::test]
    async fn a_refused_subscribe_fails_every_waiter_and_can_be_retried() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let i = Arc::new(Interests::new(vec![tx]));
        let keys = vec![Who::Topic("t".into())];
        let i2 = Arc::clone(&i);
        let k2 = keys.clone();
        let first = tokio::spawn(async move { i2.hold(&k2).await });
        let Some(SubOp::Subscribe(chs)) = rx.recv().await else {
            panic!()
        };
        i.settle(&chs, false);
        assert!(first.await.unwrap().is_err());
        let i2 = Arc::clone(&i);
        let retry = tokio::spawn(async move { i2.hold(&keys).await });
        let Some(SubOp::Subscribe(chs)) = rx.recv().await else {
            panic!("a failed channel is subscribed again")
        };
        i.settle(&chs, true);
        retry.await.unwrap().unwrap();
    }
}
