//! The console's numbers: once a second, while a console watches (and for a few minutes
//! after, so a reload still shows the chart), one cluster-wide GetStats becomes a sample:
//! totals, each node's line, and messages sent and dropped per second. The last
//! [`SERIES_LEN`] samples make the chart. However many consoles are open, one task asks; each
//! console's stream reads the latest sample from a `watch` channel. Counts come from counters:
//! nobody is listed here.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;

use crate::core::model::NodeStats;
use crate::hub::Hub;

/// Samples kept for the chart (5 minutes at one a second).
pub const SERIES_LEN: usize = 300;
/// How often a sample is taken.
pub const TICK: Duration = Duration::from_secs(1);
/// How long sampling goes on after the last console closed.
const LINGER_MS: i64 = 300_000;

/// One point of the chart.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    pub at: i64,
    pub sent_per_sec: f64,
    pub dropped_per_sec: f64,
    pub connections: u64,
}

/// What a console is sent every tick.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    pub at: i64,
    /// The node that answered (the one the console talks to).
    pub node_id: String,
    pub totals: Totals,
    pub nodes: Vec<NodeLine>,
    pub point: Option<Point>,
    /// Why this tick has no numbers (the broker unreachable, say); the last ones stand.
    pub error: Option<String>,
    /// This node's consumers: counts, backlog, what it holds.
    pub consumers: Vec<crate::consumers::status::Snapshot>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub connections: u64,
    pub users: u64,
    pub topics: u64,
    pub nodes: u32,
    pub messages_sent: u64,
    pub messages_dropped: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeLine {
    pub node_id: String,
    pub connections: u64,
    pub users: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub started_at: i64,
}

/// Per-second rates from two readings of every node's counters. A node is matched with its
/// previous reading by id and start time (a restarted node starts from zero: it adds its new
/// count, never a negative one); a node new since the last reading adds nothing yet.
pub fn rates(
    prev: &HashMap<(String, i64), (u64, u64)>,
    now: &[NodeStats],
    secs: f64,
) -> (f64, f64) {
    let (mut sent, mut dropped) = (0u64, 0u64);
    for n in now {
        if let Some((s, d)) = prev.get(&(n.node_id.clone(), n.started_at_ms)) {
            sent += n.messages_sent.saturating_sub(*s);
            dropped += n.messages_dropped.saturating_sub(*d);
        }
    }
    let secs = secs.max(0.001);
    (sent as f64 / secs, dropped as f64 / secs)
}

struct State {
    running: bool,
    series: VecDeque<Point>,
}

/// The node's one sampler, started by the first console and stopped a while after the last.
pub struct Sampler {
    hub: Arc<Hub>,
    /// This node's consumers (section 9), shown with their backlog.
    consumers: Vec<Arc<crate::consumers::status::Status>>,
    state: Mutex<State>,
    latest: watch::Sender<Option<Arc<Sample>>>,
}

impl Sampler {
    pub fn new(
        hub: Arc<Hub>,
        consumers: Vec<Arc<crate::consumers::status::Status>>,
    ) -> Arc<Sampler> {
        Arc::new(Sampler {
            hub,
            consumers,
            state: Mutex::new(State {
                running: false,
                series: VecDeque::with_capacity(SERIES_LEN),
            }),
            latest: watch::channel(None).0,
        })
    }

    /// A console's view: the chart so far and the samples to come. Starts the sampler if it
    /// is not running.
    pub fn watch(self: &Arc<Self>) -> (Vec<Point>, watch::Receiver<Option<Arc<Sample>>>) {
        let mut st = self.state.lock();
        let rx = self.latest.subscribe();
        if !st.running {
            st.running = true;
            tokio::spawn(Arc::clone(self).run());
        }
        (st.series.iter().copied().collect(), rx)
    }

    /// The latest sample, if the sampler has taken one.
    pub fn latest(&self) -> Option<Arc<Sample>> {
        self.latest.borrow().clone()
    }

    fn consumers(&self) -> Vec<crate::consumers::status::Snapshot> {
        self.consumers.iter().map(|c| c.snapshot()).collect()
    }

    async fn run(self: Arc<Self>) {
        let mut prev: HashMap<(String, i64), (u64, u64)> = HashMap::new();
        let mut prev_at: Option<i64> = None;
        let mut idle_since: Option<i64> = None;
        let mut shutdown = self.hub.shutdown_signal();
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.wait_for(|down| *down) => break,
            }
            let now = crate::clock::now_ms();
            let sample = match self.hub.stats_by_node().await {
                Ok((s, nodes)) => {
                    let point = prev_at.map(|at| {
                        let (sent, dropped) = rates(&prev, &nodes, (now - at) as f64 / 1000.0);
                        Point {
                            at: now,
                            sent_per_sec: sent,
                            dropped_per_sec: dropped,
                            connections: s.connections,
                        }
                    });
                    prev = nodes
                        .iter()
                        .map(|n| {
                            (
                                (n.node_id.clone(), n.started_at_ms),
                                (n.messages_sent, n.messages_dropped),
                            )
                        })
                        .collect();
                    prev_at = Some(now);
                    Sample {
                        at: now,
                        node_id: s.node_id,
                        totals: Totals {
                            connections: s.connections,
                            users: s.users,
                            topics: s.topics,
                            nodes: s.nodes,
                            messages_sent: s.messages_sent,
                            messages_dropped: s.messages_dropped,
                        },
                        nodes: nodes
                            .into_iter()
                            .map(|n| NodeLine {
                                node_id: n.node_id,
                                connections: n.connections,
                                users: n.users,
                                messages_sent: n.messages_sent,
                                messages_dropped: n.messages_dropped,
                                started_at: n.started_at_ms,
                            })
                            .collect(),
                        point,
                        error: None,
                        consumers: self.consumers(),
                    }
                }
                Err(e) => {
                    // The next good reading starts the rates afresh.
                    prev_at = None;
                    let last = self.latest();
                    Sample {
                        at: now,
                        node_id: self.hub.node_id().to_owned(),
                        totals: last.as_ref().map(|l| l.totals.clone()).unwrap_or_default(),
                        nodes: last.map(|l| l.nodes.clone()).unwrap_or_default(),
                        point: None,
                        error: Some(e.to_string()),
                        consumers: self.consumers(),
                    }
                }
            };
            let mut st = self.state.lock();
            if let Some(p) = sample.point {
                if st.series.len() == SERIES_LEN {
                    st.series.pop_front();
                }
                st.series.push_back(p);
            }
            self.latest.send_replace(Some(Arc::new(sample)));
            if self.latest.receiver_count() > 0 {
                idle_since = None;
            } else if now - *idle_since.get_or_insert(now) >= LINGER_MS {
                // Under the lock `watch` takes: a console arriving now starts a new task.
                st.running = false;
                st.series.clear();
                return;
            }
        }
        self.state.lock().running = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, started: i64, sent: u64, dropped: u64) -> NodeStats {
        NodeStats {
            node_id: id.into(),
            connections: 0,
            users: 0,
            messages_sent: sent,
            messages_dropped: dropped,
            started_at_ms: started,
        }
    }

    #[test]
    fn rates_add_each_nodes_growth_and_never_go_negative() {
        let prev: HashMap<(String, i64), (u64, u64)> = [
            (("a".to_owned(), 1), (100, 5)),
            (("b".to_owned(), 1), (1_000, 0)),
        ]
        .into();
        // a grew by 200 and 1; b restarted (new start time: nothing counted yet); c is new.
        let now = [
            node("a", 1, 300, 6),
            node("b", 2, 10, 0),
            node("c", 1, 50, 0),
        ];
        assert_eq!(rates(&prev, &now, 2.0), (100.0, 0.5));
        // A counter that went back (it cannot, but a mixed-up reading must not panic).
        assert_eq!(rates(&prev, &[node("a", 1, 50, 0)], 1.0), (0.0, 0.0));
    }
}
