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
    watching: bool,
    /// A Watch request counts until then even if an older heartbeat says otherwise.
    watch_until_ms: i64,
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

    /// A heartbeat; returns whether this node must send its events to other nodes.
    pub fn beat(&mut self, node: &str, now: i64, watching: bool) -> bool {
        let m = self.nodes.entry(node.to_owned()).or_insert(Member {
            last_ms: now,
            watching,
            watch_until_ms: 0,
        });
        m.last_ms = now;
        m.watching = watching;
        self.export(now)
    }

    /// A node asked for every node's events.
    pub fn watching(&mut self, node: &str, now: i64) -> bool {
        let grace = self.watch_grace_ms;
        let m = self.nodes.entry(node.to_owned()).or_insert(Member {
            last_ms: now,
            watching: true,
            watch_until_ms: 0,
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

/// Publishes this node's heartbeat to `to` (a node) or to every node.
pub async fn beat_to(c: &RedisCluster, to: Option<&str>, hello: bool) {
    let msg = wire::encode(
        &wire::Header::Beat {
            node: c.node_id.clone(),
            watching: c.local.watchers() > 0,
            hello,
        },
        b"",
    );
    let channel = to.map_or_else(|| wire::CONTROL.to_owned(), wire::node_channel);
    let _ = c.publish_raw(&channel, msg).await;
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
                beat_to(&c, None, false).await;
                let export = c.members.lock().prune(now_ms(), ttl);
                c.local.set_export_events(export);
            }
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_nodes_go_and_live_ones_stay() {
        let mut m = Members::new("a".into());
        m.beat("a", 0, false);
        m.beat("b", 0, false);
        m.beat("c", 0, false);
        assert_eq!(m.live(100, 1000), 3);
        m.beat("b", 900, false);
        assert_eq!(m.live(1500, 1000), 2, "c fell silent");
        assert!(!m.leave("b", 1500));
        assert_eq!(m.live(1500, 1000), 1);
        // A node that keeps beating never goes, however long it runs.
        for t in (2000..100_000).step_by(300) {
            m.beat("d", t, false);
            m.prune(t, 1000);
            assert_eq!(m.live(t, 1000), 2);
        }
    }

    #[test]
    fn events_are_exported_while_another_node_watches() {
        let mut m = Members::new("a".into());
        assert!(
            !m.beat("a", 0, true),
            "our own watchers see our events directly"
        );
        assert!(m.watching("b", 0));
        assert!(
            m.beat("b", 1, false),
            "a stale beat does not undo a fresh Watch"
        );
        assert!(!m.beat("b", 20_000, false));
        assert!(m.beat("b", 20_001, true));
        assert!(!m.prune(40_000, 15_000), "a dead watcher stops the export");
    }
}
