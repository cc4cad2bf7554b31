//! What a node does with each pub/sub message: deliveries and publications to its own
//! connections, commands and questions answered for its share, replies, heartbeats and
//! lifecycle events. Never waits: slow work is spawned.
//!
//! The reader does not fan out itself: a delivery, a publication or a join/leave notice goes
//! to one of several workers, chosen by its user, role or topic, so order is kept per key
//! while keys are served in parallel. A worker's queue is bounded; when it is full the
//! reader drops the message rather than wait (counted; a topic catches up from history at its
//! next publication, as after a gap). Replies, beats, requests and events are small and are
//! handled by the reader at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::wire::{self, Header, Request, Response};
use super::{members, RedisCluster};
use crate::clock::now_ms;
use crate::core::event::{Event, Message, Presence, Publication, Shared};
use crate::core::model::{Command, Who};
use crate::core::topic_table::LivePosition;
use crate::core::CoreError;

/// How many messages a dispatch worker holds before the reader drops more for it.
pub const WORKER_QUEUE: usize = 4096;

/// One message for a worker: its header and body.
pub(super) struct Work {
    header: Header,
    body: Vec<u8>,
}

/// The key whose messages a worker keeps in order: the route of a delivery, the topic of a
/// publication or notice; `None` for what the reader handles itself.
fn order_key(h: &Header) -> Option<(&'static str, &str)> {
    match h {
        Header::Deliver { route, .. } => Some(match route {
            Who::User(u) => ("u", u.as_str()),
            Who::Role(r) => ("r", r.as_str()),
            Who::Connection(c) => ("c", c.as_str()),
            Who::Topic(t) => ("t", t.as_str()),
            Who::All => ("a", ""),
        }),
        Header::Pub { topic, .. } | Header::Presence { topic, .. } => Some(("t", topic.as_str())),
        _ => None,
    }
}

/// The worker (of `n`) that owns a key.
fn worker_of((kind, name): (&str, &str), n: usize) -> usize {
    let h = crate::core::model::name_hash(kind) ^ crate::core::model::name_hash(name);
    (h % n.max(1) as u64) as usize
}

/// The dispatch workers' queues (and their receivers until the workers start).
pub(super) struct Workers {
    senders: Vec<mpsc::Sender<Work>>,
    receivers: parking_lot::Mutex<Vec<mpsc::Receiver<Work>>>,
}

impl Workers {
    /// One worker per core, at least two.
    pub(super) fn new() -> Self {
        let n = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(2);
        let (senders, receivers) = (0..n).map(|_| mpsc::channel(WORKER_QUEUE)).unzip();
        Workers {
            senders,
            receivers: parking_lot::Mutex::new(receivers),
        }
    }
}

impl RedisCluster {
    /// Starts the dispatch workers (once, at start); each runs until the node stops.
    pub(super) fn start_workers(self: &Arc<Self>) {
        for mut rx in std::mem::take(&mut *self.workers.receivers.lock()) {
            let me = Arc::clone(self);
            let mut stop = self.stopped();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        w = rx.recv() => match w {
                            Some(w) => me.handle(w.header, &w.body),
                            None => return,
                        },
                        _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
                    }
                }
            });
        }
    }

    /// One pub/sub message, from the reader: handled now, or queued to the worker that owns
    /// its key. Never waits.
    pub(super) fn on_message(self: &Arc<Self>, payload: &[u8]) {
        let (h, body) = match wire::decode(payload) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "ignored a malformed cluster message");
                return;
            }
        };
        let Some(key) = order_key(&h) else {
            return self.handle(h, body);
        };
        let w = worker_of(key, self.workers.senders.len());
        let work = Work {
            header: h,
            body: body.to_vec(),
        };
        if let Err(mpsc::error::TrySendError::Full(work)) = self.workers.senders[w].try_send(work) {
            self.local.metrics.cluster_dispatch_dropped.inc();
            // Whoever waits for this node's count hears "none here" rather than waiting out
            // its deadline.
            match work.header {
                Header::Deliver { from, rid, .. } | Header::Pub { from, rid, .. } if rid > 0 => {
                    self.reply(&from, rid, Response::Count(0));
                }
                _ => {}
            }
        }
    }

    /// One decoded message.
    fn handle(self: &Arc<Self>, h: Header, body: &[u8]) {
        match h {
            Header::Deliver { from, rid, route } => self.on_deliver(&from, rid, &route, body),
            Header::Pub { from, rid, topic } => self.on_publication(&from, rid, topic, body),
            Header::Presence {
                topic,
                joined,
                user_id,
                connection_id,
            } => self.local.offer_listeners(Presence {
                joined,
                topic: topic.into(),
                user_id: user_id.into(),
                connection_id: connection_id.into(),
            }),
            Header::Req { from, rid, req } => match req {
                Request::Command { target, command } => {
                    let me = Arc::clone(self);
                    tokio::spawn(async move {
                        let resp = me.run_command(target, command).await;
                        me.reply(&from, rid, resp);
                    });
                }
                other => {
                    let resp = self.answer(&from, other);
                    self.reply(&from, rid, resp);
                }
            },
            Header::Resp { rid, resp } => self.on_response(rid, resp),
            Header::Beat {
                node,
                watching,
                ready,
                hello,
                nonce,
                ack,
                instances,
            } => {
                let vouches =
                    hello || (ack != 0 && ack == self.hello_nonce.load(Ordering::Acquire));
                let export = {
                    let mut m = self.members.lock();
                    let export = m.beat(&node, now_ms(), watching, ready, vouches);
                    m.instances(&node, instances);
                    export
                };
                if instances != 0 && instances != self.instances_hash {
                    self.check_instances();
                }
                self.local.set_export_events(export);
                if hello && node != self.node_id {
                    let me = Arc::clone(self);
                    tokio::spawn(async move {
                        members::beat_to(&me, Some(&node), members::Beat::Answer(nonce)).await
                    });
                }
            }
            Header::Leave { node } => {
                let export = self.members.lock().leave(&node, now_ms());
                self.local.set_export_events(export);
            }
            Header::Event { event } => {
                if event.conn.node_id != self.node_id {
                    self.local.inject_event(*event);
                }
            }
        }
    }

    pub(super) async fn run_command(&self, target: Who, command: Command) -> Response {
        let Ok(handler) = self.handler.get() else {
            return Response::Failed("the node is shutting down".into());
        };
        match handler.run_local(target, command).await {
            Ok(n) => Response::Count(n),
            Err(CoreError::NotFound { .. }) => Response::NotFound,
            Err(e) => Response::Failed(e.to_string()),
        }
    }

    /// Answers a question about this node's connections.
    pub(super) fn answer(&self, from: &str, req: Request) -> Response {
        let l = &self.local;
        match req {
            Request::Get { id } => match l.get(&id) {
                Some(c) => Response::Conn(Box::new(l.snapshot(&c))),
                None => Response::NotFound,
            },
            Request::List {
                filter,
                after,
                size,
            } => Response::Page(l.list(&filter, after.as_ref(), size)),
            Request::Presence { topic } => Response::Presence(l.presence(&topic)),
            Request::Stats => Response::Stats(l.stats_part()),
            Request::Watch => {
                let export = self.members.lock().watching(from, now_ms());
                l.set_export_events(export);
                Response::Ok
            }
            Request::Command { .. } => Response::Failed("not a question".into()),
        }
    }

    /// A delivery to this node's connections of `route`; replies with the count when asked
    /// (`rid` > 0; a delivery through the deliver script counts without asking).
    fn on_deliver(self: &Arc<Self>, from: &str, rid: u64, route: &Who, body: &[u8]) {
        let Some(message) = message_of(body) else {
            return;
        };
        let event = Shared::new(Event::Message(message));
        let resp = match self.local.deliver_to(route, &event) {
            Some(n) => Response::Count(n),
            None => Response::NotFound,
        };
        if rid > 0 {
            self.reply(from, rid, resp);
        }
    }

    /// A topic publication, at the position the publish script wrote.
    fn on_publication(self: &Arc<Self>, from: &str, rid: u64, topic: String, body: &[u8]) {
        let (offset, epoch, body) = match wire::split_position(body) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "ignored a malformed cluster publication");
                return;
            }
        };
        let Some(message) = message_of(body) else {
            return;
        };
        let event = Shared::new(Event::Publication(Publication {
            topic: topic.as_str().into(),
            offset,
            epoch: epoch.into(),
            message,
        }));
        let a = self
            .local
            .on_publication(&topic, LivePosition { epoch, offset }, &event);
        if a.gap.is_some() {
            self.catch_up(topic);
        }
        if rid > 0 {
            self.reply(from, rid, Response::Count(a.queued + a.waiting));
        }
    }
}

/// A message from the wire; `None` (logged) when it does not decode.
pub(super) fn message_of(body: &[u8]) -> Option<Message> {
    match wire::decode_message(body) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(error = %e, "ignored a cluster message that does not decode");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_keeps_one_worker_and_keys_spread() {
        let pub_of = |topic: &str| Header::Pub {
            from: "n".into(),
            rid: 0,
            topic: topic.into(),
        };
        let notice = Header::Presence {
            topic: "t1".into(),
            joined: true,
            user_id: "u".into(),
            connection_id: "n.1".into(),
        };
        // A topic's publications and its notices go to the same worker, whatever the node.
        assert_eq!(order_key(&pub_of("t1")), order_key(&notice));
        let deliver = |route: Who| Header::Deliver {
            from: "n".into(),
            rid: 1,
            route,
        };
        assert_eq!(
            order_key(&deliver(Who::User("t1".into()))),
            Some(("u", "t1"))
        );
        assert_eq!(order_key(&deliver(Who::All)), Some(("a", "")));
        assert_eq!(order_key(&Header::Leave { node: "x".into() }), None);
        let mut per = [0usize; 4];
        for i in 0..4000 {
            let w = worker_of(("t", &format!("topic-{i}")), 4);
            assert_eq!(w, worker_of(("t", &format!("topic-{i}")), 4), "stable");
            per[w] += 1;
        }
        assert!(per.iter().all(|&n| (800..1200).contains(&n)), "{per:?}");
    }
}
