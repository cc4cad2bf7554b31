//! Cluster membership: every node publishes a heartbeat on `rt:c` every third of
//! `node_ttl_ms`; a node not heard from for `node_ttl_ms` is gone (a goodbye removes it at
//! once). The heartbeat also says whether the node has watchers, so that the others send it
//! their lifecycle events only while someone watches. [`Members`] is pure (time passed in).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{wire, RedisCluster};
use crate::clock::now_ms;

struct Member {
    last_ms: i64,
    /// Its subscriptions were in place at its last beat.
    ready: bool,
    /// Heard from since this node's pub/sub connection last (re)connected.
    confirmed: bool,
    watching: bool,
    /// A Watch request counts until then even if an older heartbeat says otherwise.
    watch_until_ms: i64,
    /// The hash of its Redis instance list (0: not said).
    instances: u64,
}

pub struct Members {
    me: String,
    nodes: HashMap<String, Member>,
    /// How long a Watch request keeps a node watching without a heartbeat confirming it.
    watch_grace_ms: i64,
}

impl Members {
    pub fn new(me: String) -> Self {
        Members {
            me,
            nodes: HashMap::new(),
            watch_grace_ms: 10_000,
        }
    }

    fn export(&self, now: i64) -> bool {
        self.nodes
            .iter()
            .any(|(id, m)| *id != self.me && (m.watching || m.watch_until_ms > now))
    }

    /// A heartbeat; `vouches` when it is a hello or the answer to this node's latest hello
    /// (see `wire::Header::Beat`). Returns whether this node must send its events to others.
    pub fn beat(
        &mut self,
        node: &str,
        now: i64,
        watching: bool,
        ready: bool,
        vouches: bool,
    ) -> bool {
        // A node seen for the first time is taken at its word (a new node holds no connection
        // before its subscriptions are made); a known one must vouch after this node's
        // reconnect.
        let m = self.nodes.entry(node.to_owned()).or_insert(Member {
            last_ms: now,
            ready,
            confirmed: ready,
            watching,
            watch_until_ms: 0,
            instances: 0,
        });
        m.last_ms = now;
        m.watching = watching;
        if !ready {
            m.ready = false;
        } else if vouches {
            m.ready = true;
            m.confirmed = true;
        }
        self.export(now)
    }

    /// This node's pub/sub connection came back: until each live node is heard from again with
    /// its subscriptions in place, a PUBLISH's receiver count may miss it.
    pub fn unconfirm_all(&mut self) {
        for m in self.nodes.values_mut() {
            m.confirmed = false;
        }
    }

    /// Whether every other live node has said, since this node's last reconnect, that its
    /// subscriptions are in place (so deliveries reach every node that holds a recipient).
    pub fn all_ready(&self, now: i64, ttl_ms: u64) -> bool {
        self.nodes.iter().all(|(id, m)| {
            *id == self.me || now - m.last_ms >= ttl_ms as i64 || (m.confirmed && m.ready)
        })
    }

    /// Records the hash of `node`'s Redis instance list (from its heartbeat).
    pub fn instances(&mut self, node: &str, hash: u64) {
        if let Some(m) = self.nodes.get_mut(node) {
            m.instances = hash;
        }
    }

    /// A live node whose Redis instance list differs from `mine` (it would look for topics
    /// and users in other places), if any.
    pub fn mismatched(&self, mine: u64, now: i64, ttl_ms: u64) -> Option<&str> {
        self.nodes
            .iter()
            .find(|(id, m)| {
                **id != self.me
                    && now - m.last_ms < ttl_ms as i64
                    && m.instances != 0
                    && m.instances != mine
            })
            .map(|(id, _)| id.as_str())
    }

    /// A node asked for every node's events.
    pub fn watching(&mut self, node: &str, now: i64) -> bool {
        let grace = self.watch_grace_ms;
        let m = self.nodes.entry(node.to_owned()).or_insert(Member {
            last_ms: now,
            ready: true,
            confirmed: true,
            watching: true,
            watch_until_ms: 0,
            instances: 0,
        });
        m.watch_until_ms = now + grace;
        self.export(now)
    }

    pub fn leave(&mut self, node: &str, now: i64) -> bool {
        self.nodes.remove(node);
        self.export(now)
    }

    /// Forgets nodes silent for `ttl_ms`; returns whether to export events.
    pub fn prune(&mut self, now: i64, ttl_ms: u64) -> bool {
        let me = self.me.clone();
        self.nodes
            .retain(|id, m| *id == me || now - m.last_ms < ttl_ms as i64);
        self.export(now)
    }

    /// Live nodes, this one included.
    pub fn live(&self, now: i64, ttl_ms: u64) -> u32 {
        let others = self
            .nodes
            .iter()
            .filter(|(id, m)| **id != self.me && now - m.last_ms < ttl_ms as i64)
            .count();
        1 + others as u32
    }
}

/// What a heartbeat is.
#[derive(Debug, Clone, Copy)]
pub enum Beat {
    Periodic,
    /// This node's subscriptions were just (re)made: everyone answer.
    Hello,
    /// The answer to another node's hello with that nonce.
    Answer(u64),
}

fn beat_message(c: &RedisCluster, kind: Beat) -> Vec<u8> {
    wire::encode(
        &wire::Header::Beat {
            node: c.node_id.clone(),
            watching: c.local.watchers() > 0,
            ready: c.subscribed(0),
            hello: matches!(kind, Beat::Hello),
            nonce: c.hello_nonce.load(std::sync::atomic::Ordering::Acquire),
            ack: match kind {
                Beat::Answer(n) => n,
                _ => 0,
            },
            instances: c.instances_hash,
        },
        b"",
    )
}

/// Publishes this node's heartbeat to `to` (a node) or to every node.
pub async fn beat_to(c: &RedisCluster, to: Option<&str>, kind: Beat) {
    let channel = to.map_or_else(|| wire::CONTROL.to_owned(), wire::node_channel);
    let _ = c.publish_raw(&channel, beat_message(c, kind)).await;
}

/// A heartbeat to this node itself on every instance but the first (which carries the real
/// ones): its pub/sub connection there carries something, so silence means it is dead.
async fn ping_others(c: &RedisCluster) {
    let channel = wire::node_channel(&c.node_id);
    for i in 1..c.instances.len() {
        let msg = beat_message(c, Beat::Periodic);
        let cmd = redis::cmd("PUBLISH").arg(&channel).arg(msg).clone();
        let _: Result<i64, _> = c.query(super::Key::Instance(i), &cmd).await;
    }
}

impl RedisCluster {
    /// Whether a live node disagrees on the Redis instance list; logs the change.
    pub(super) fn check_instances(&self) {
        let ttl = self.settings.node_ttl_ms;
        let other = (self.members.lock())
            .mismatched(self.instances_hash, now_ms(), ttl)
            .map(str::to_owned);
        let was = self
            .instances_mismatch
            .swap(other.is_some(), std::sync::atomic::Ordering::AcqRel);
        match (other, was) {
            (Some(node), false) => tracing::error!(
                node = %node,
                "node {node:?} lists other Redis instances in [broker] redis_urls (every node must list the same, in the same order); this node is not ready until they agree"
            ),
            (None, true) => tracing::info!("every live node lists the same Redis instances again"),
            _ => {}
        }
    }
}

/// Beats every third of `node_ttl_ms` and forgets silent nodes, until the node stops.
pub async fn heartbeat(c: Arc<RedisCluster>) {
    let ttl = c.settings.node_ttl_ms;
    let mut tick = tokio::time::interval(Duration::from_millis((ttl / 3).max(200)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = c.stopped();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // Until every live node has vouched for its subscriptions since this node's
                // last reconnect (a hello may have been lost while Redis came back), ask again.
                let all = c.members.lock().all_ready(now_ms(), ttl);
                let kind = if all { Beat::Periodic } else { Beat::Hello };
                beat_to(&c, None, kind).await;
                ping_others(&c).await;
                for i in c.mark_alive(true).await {
                    // Counted out while silent (a sweep may have taken its share), or the
                    // instance lost its data: taken again.
                    tracing::warn!(
                        redis = %c.instances[i].shown,
                        "this node's liveness had lapsed there; counting its connections again"
                    );
                    let _ = c.counts_reset(i).await;
                    c.recount_users(i).await;
                }
                let export = c.members.lock().prune(now_ms(), ttl);
                c.local.set_export_events(export);
                c.check_instances();
            }
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_a_reconnect_every_live_node_must_say_it_is_subscribed_again() {
        let mut m = Members::new("a".into());
        m.beat("b", 0, false, true, true);
        m.beat("c", 0, false, true, true);
        assert!(m.all_ready(10, 1000));
        m.unconfirm_all();
        assert!(!m.all_ready(10, 1000));
        m.beat("b", 20, false, false, true);
        m.beat("c", 20, false, true, true);
        assert!(!m.all_ready(30, 1000), "b is still resubscribing");
        m.beat("b", 40, false, true, true);
        assert!(m.all_ready(50, 1000));
        m.unconfirm_all();
        m.beat("b", 60, false, true, true);
        m.beat("c", 65, false, true, false);
        assert!(
            !m.all_ready(70, 1000),
            "a periodic beat from c does not vouch: it may have waited out the outage"
        );
        assert!(
            m.all_ready(1066, 1000),
            "c fell silent: nothing to wait for"
        );
    }

    #[test]
    fn a_new_node_is_taken_at_its_word() {
        let mut m = Members::new("a".into());
        m.beat("b", 0, false, true, false);
        assert!(
            m.all_ready(1, 1000),
            "a joining node does not stall the cluster"
        );
        m.beat("c", 0, false, false, false);
        assert!(!m.all_ready(1, 1000), "until it is subscribed");
        m.beat("c", 5, false, true, false);
        assert!(!m.all_ready(6, 1000), "then it must vouch");
        m.beat("c", 7, false, true, true);
        assert!(m.all_ready(8, 1000));
    }

    #[test]
    fn silent_nodes_go_and_live_ones_stay() {
        let mut m = Members::new("a".into());
        m.beat("a", 0, false, true, true);
        m.beat("b", 0, false, true, true);
        m.beat("c", 0, false, true, true);
        assert_eq!(m.live(100, 1000), 3);
        m.beat("b", 900, false, true, true);
        assert_eq!(m.live(1500, 1000), 2, "c fell silent");
        assert!(!m.leave("b", 1500));
        assert_eq!(m.live(1500, 1000), 1);
        // A node that keeps beating never goes, however long it runs.
        for t in (2000..100_000).step_by(300) {
            m.beat("d", t, false, true, false);
            m.prune(t, 1000);
            assert_eq!(m.live(t, 1000), 2);
        }
    }

    #[test]
    fn events_are_exported_while_another_node_watches() {
        let mut m = Members::new("a".into());
        assert!(
            !m.beat("a", 0, true, true, true),
            "our own watchers see our events directly"
        );
        assert!(m.watching("b", 0));
        assert!(
            m.beat("b", 1, false, true, true),
            "a stale beat does not undo a fresh Watch"
        );
        assert!(!m.beat("b", 20_000, false, true, true));
        assert!(m.beat("b", 20_001, true, true, true));
        assert!(!m.prune(40_000, 15_000), "a dead watcher stops the export");
    }
}
