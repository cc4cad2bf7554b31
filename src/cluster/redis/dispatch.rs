//! What a node does with each pub/sub message: deliveries and publications to its own
//! connections, commands and questions answered for its share, replies, heartbeats and
//! lifecycle events. Never waits: slow work is spawned.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::wire::{self, Header, Request, Response};
use super::{members, RedisCluster};
use crate::clock::now_ms;
use crate::core::event::{Event, Message, Presence, Publication, Shared};
use crate::core::model::{Command, Who};
use crate::core::topic_table::LivePosition;
use crate::core::CoreError;

impl RedisCluster {
    /// One pub/sub message. Never waits: slow work is spawned.
    pub(super) fn on_message(self: &Arc<Self>, payload: &[u8]) {
        let (h, body) = match wire::decode(payload) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "ignored a malformed cluster message");
                return;
            }
        };
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
            } => {
                let vouches =
                    hello || (ack != 0 && ack == self.hello_nonce.load(Ordering::Acquire));
                let export = self
                    .members
                    .lock()
                    .beat(&node, now_ms(), watching, ready, vouches);
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
            Request::PresenceCounts { topic } => {
                Response::PresenceCounts(l.presence_counts(&topic))
            }
            Request::Stats => Response::Stats(l.stats_part()),
            Request::Watch => {
                let export = self.members.lock().watching(from, now_ms());
                l.set_export_events(export);
                Response::Ok
            }
            Request::Command { .. } => Response::Failed("not a question".into()),
        }
    }

    /// A delivery to this node's connections of `route`; replies with the count.
    fn on_deliver(self: &Arc<Self>, from: &str, rid: u64, route: &Who, body: &[u8]) {
        let Some(message) = message_of(body) else {
            return;
        };
        let event = Shared::new(Event::Message(message));
        let resp = match self.local.deliver_to(route, &event) {
            Some(n) => Response::Count(n),
            None => Response::NotFound,
        };
        self.reply(from, rid, resp);
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
