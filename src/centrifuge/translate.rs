//! One Centrifugo connection's view of what the core queues to it. The core queues the same
//! typed events as for a native connection (messages, publications, `Subscribed` and
//! `Unsubscribed`, join and leave); this turns them into Centrifugo replies and pushes, with
//! the little state that
//! needs: which channels the client subscribed itself and which the server did, and the
//! subscribe commands whose reply is still on its way, so that the publications the core
//! replays before a `subscribed` reply go into that reply's `publications` (never partial:
//! only when recovered). Pure: no I/O.

use std::collections::HashMap;

use bytes::Bytes;

use super::codec::Codec;
use super::wire::{
    ClientInfo, Join, Publication, Push, Reply, Subscribe, SubscribeResult, Unsubscribe,
};
use crate::core::event::{self, Event, Shared};
use crate::core::native::message_object;
use crate::core::stream;

/// Unsubscribe push codes: 2000 ends the subscription, 2500 asks the SDK to subscribe again
/// (the stream position was lost).
pub const UNSUBSCRIBE_SERVER: u32 = 2000;
pub const UNSUBSCRIBE_INSUFFICIENT_STATE: u32 = 2500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Subscribed by the client's own subscribe command.
    Client,
    /// Subscribed by the Subscribe RPC (a server-side subscription for the SDK).
    Server,
}

#[derive(Debug)]
struct Pending {
    id: u32,
    channel: String,
    recover: bool,
    /// Publications the core queued before the reply (offset, message object).
    pubs: Vec<(u64, Bytes)>,
}

/// What one connection has subscribed, and what it waits for.
#[derive(Debug)]
pub struct Translator {
    codec: Codec,
    subs: HashMap<Box<str>, Kind>,
    pending: Vec<Pending>,
    /// `[centrifuge] personal_channel`: the user stream is the channel `#<user>`.
    personal: bool,
}

/// A `subscribed` event, borrowed.
struct Position<'a> {
    topic: &'a str,
    offset: u64,
    epoch: &'a str,
    recovered: Option<bool>,
}

impl Translator {
    /// A translator for a connection of `user`; with `personal`, subscribed server-side to
    /// its personal channel (listed in the connect reply).
    pub fn new(codec: Codec, user: &str, personal: bool) -> Self {
        let mut subs = HashMap::new();
        if personal {
            subs.insert(stream::of_user(user).into_boxed_str(), Kind::Server);
        }
        Translator {
            codec,
            subs,
            pending: Vec::new(),
            personal,
        }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Whether `channel` is subscribed (by the client or the server) or being subscribed.
    pub fn has(&self, channel: &str) -> bool {
        self.subs.contains_key(channel) || self.pending.iter().any(|p| p.channel == channel)
    }

    /// Whether `channel` is subscribed (a subscribe reply or push was sent).
    pub fn subscribed(&self, channel: &str) -> bool {
        self.subs.contains_key(channel)
    }

    /// A subscribe command was handed to the core; its reply will come through the queue,
    /// carrying `id` as its reference.
    pub fn expect(&mut self, id: u32, channel: &str, recover: bool) {
        self.pending.push(Pending {
            id,
            channel: channel.to_owned(),
            recover,
            pubs: Vec::new(),
        });
    }

    /// The core refused a subscribe command (its error reply is the caller's).
    pub fn cancel(&mut self, id: u32) {
        self.pending.retain(|p| p.id != id);
    }

    /// Appends what a queued event becomes for this connection to `out` (nothing, one, or
    /// several encoded replies and pushes).
    pub fn event(&mut self, shared: &Shared, out: &mut Vec<Bytes>) {
        match shared.event() {
            Event::Message(_) => {
                out.extend(self.codec.message_push(shared, self.personal).cloned())
            }
            Event::Publication(p) => self.publication(shared, p, out),
            // A user stream's lost position, without a personal channel the SDK knows nothing of.
            Event::Subscribed { topic, .. } if !self.personal && !stream::is_topic(topic) => {}
            Event::Subscribed {
                topic,
                offset,
                epoch,
                recovered,
                reference,
            } => {
                let pos = Position {
                    topic,
                    offset: *offset,
                    epoch,
                    recovered: *recovered,
                };
                match reference.as_ref().and_then(command_id) {
                    Some(id) => self.subscribe_reply(id, &pos, out),
                    None => self.server_subscribed(&pos, out),
                }
            }
            Event::Unsubscribed { topic, reference } => {
                match reference.as_ref().and_then(command_id) {
                    Some(id) => {
                        self.subs.remove(&**topic);
                        out.push(self.codec.encode(&Reply {
                            id,
                            unsubscribe: Some(Default::default()),
                            ..Default::default()
                        }));
                    }
                    None if self.subs.remove(&**topic).is_some() => {
                        out.push(self.unsubscribe_push(
                            topic.to_string(),
                            UNSUBSCRIBE_SERVER,
                            "server unsubscribe",
                        ))
                    }
                    None => {}
                }
            }
            // Queued only to subscribers that asked for them (`join_leave`).
            Event::Presence(p) if self.subs.contains_key(&*p.topic) => out.push(self.presence(p)),
            Event::Presence(_) => {}
        }
    }

    fn publication(&mut self, shared: &Shared, p: &event::Publication, out: &mut Vec<Bytes>) {
        if !self.personal && !stream::is_topic(&p.topic) {
            // The user stream without a personal channel: a `message` push.
            out.extend(self.codec.message_push(shared, false).cloned());
        } else if let Some(pending) = self.pending.iter_mut().find(|x| *x.channel == *p.topic) {
            pending
                .pubs
                .push((p.offset, Bytes::from(message_object(&p.message))));
        } else if self.subs.contains_key(&*p.topic) {
            out.extend(self.codec.message_push(shared, self.personal).cloned());
        }
        // Otherwise: a publication of a channel this connection has just left.
    }

    fn presence(&self, p: &event::Presence) -> Bytes {
        let info = Some(Join {
            info: Some(ClientInfo {
                user: p.user_id.to_string(),
                client: p.connection_id.to_string(),
            }),
        });
        let (join, leave) = if p.joined { (info, None) } else { (None, info) };
        self.codec.encode(&Reply {
            push: Some(Push {
                channel: p.topic.to_string(),
                join,
                leave,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn subscribe_reply(&mut self, id: u32, c: &Position<'_>, out: &mut Vec<Bytes>) {
        let Some(at) = self.pending.iter().position(|p| p.id == id) else {
            return;
        };
        let p = self.pending.swap_remove(at);
        let recovered = p.recover && c.recovered == Some(true);
        // Replayed publications (up to the reply's offset) belong in the reply when recovered
        // and nowhere otherwise; later ones are live and follow the reply.
        let (replayed, live): (Vec<_>, Vec<_>) =
            p.pubs.into_iter().partition(|(o, _)| *o <= c.offset);
        let publications = if recovered {
            replayed
                .into_iter()
                .map(|(offset, data)| Publication { data, offset })
                .collect()
        } else {
            Vec::new()
        };
        out.push(self.codec.encode(&Reply {
            id,
            subscribe: Some(SubscribeResult {
                recoverable: true,
                positioned: true,
                epoch: c.epoch.to_owned(),
                offset: c.offset,
                publications,
                recovered,
                was_recovering: p.recover,
            }),
            ..Default::default()
        }));
        self.subs.insert(p.channel.clone().into(), Kind::Client);
        for (offset, data) in live {
            out.push(self.publication_push(&p.channel, offset, data));
        }
    }

    fn server_subscribed(&mut self, c: &Position<'_>, out: &mut Vec<Bytes>) {
        let kind = self.subs.get(c.topic).copied();
        match (kind, c.recovered) {
            // The Subscribe RPC: announce the new server-side subscription.
            (None, None) => {
                self.subs.insert(c.topic.into(), Kind::Server);
                out.push(self.subscribe_push(c));
            }
            // The stream was reset (a new epoch): the position the SDK holds is gone.
            (Some(Kind::Client), Some(false)) => {
                self.subs.remove(c.topic);
                out.push(self.unsubscribe_push(
                    c.topic.to_owned(),
                    UNSUBSCRIBE_INSUFFICIENT_STATE,
                    "insufficient state",
                ));
            }
            (Some(Kind::Server), Some(false)) => out.push(self.subscribe_push(c)),
            // Already subscribed: nothing changes for the SDK.
            _ => {}
        }
    }

    fn subscribe_push(&self, c: &Position<'_>) -> Bytes {
        self.codec.encode(&Reply {
            push: Some(Push {
                channel: c.topic.to_owned(),
                subscribe: Some(Subscribe {
                    recoverable: true,
                    positioned: true,
                    epoch: c.epoch.to_owned(),
                    offset: c.offset,
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn unsubscribe_push(&self, channel: String, code: u32, reason: &str) -> Bytes {
        self.codec.encode(&Reply {
            push: Some(Push {
                channel,
                unsubscribe: Some(Unsubscribe {
                    code,
                    reason: reason.to_owned(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn publication_push(&self, channel: &str, offset: u64, data: Bytes) -> Bytes {
        self.codec.encode(&Reply {
            push: Some(Push {
                channel: channel.to_owned(),
                publication: Some(Publication { data, offset }),
                ..Default::default()
            }),
            ..Default::default()
        })
    }
}

/// The command id a reply answers: the core echoes the reference the session gave it.
fn command_id(reference: &serde_json::Value) -> Option<u32> {
    reference.as_u64().and_then(|id| u32::try_from(id).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::{Message, SharedEvent};

    fn publication(topic: &str, offset: u64) -> SharedEvent {
        Shared::new(Event::Publication(event::Publication {
            topic: topic.into(),
            offset,
            epoch: "e".into(),
            message: Message {
                kind: "t".into(),
                payload: Bytes::from(offset.to_string()),
                id: format!("m{offset}").into(),
                ts_ms: 1,
            },
        }))
    }

    fn subscribed(
        topic: &str,
        offset: u64,
        epoch: &str,
        recovered: Option<bool>,
        reference: Option<u32>,
    ) -> SharedEvent {
        Shared::new(Event::Subscribed {
            topic: topic.into(),
            offset,
            epoch: epoch.into(),
            recovered,
            reference: reference.map(serde_json::Value::from),
        })
    }

    fn unsubscribed(topic: &str) -> SharedEvent {
        Shared::new(Event::Unsubscribed {
            topic: topic.into(),
            reference: None,
        })
    }

    fn run(t: &mut Translator, events: &[SharedEvent]) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for e in events {
            t.event(e, &mut out);
        }
        out.iter()
            .map(|b| serde_json::from_slice(b).unwrap())
            .collect()
    }

    fn data(offset: u64) -> serde_json::Value {
        serde_json::json!({"type":"t","payload":offset,"id":format!("m{offset}"),"ts":1})
    }

    #[test]
    fn replayed_publications_go_into_a_recovered_reply_and_live_ones_follow() {
        let mut t = Translator::new(Codec::Json, "u", false);
        t.expect(3, "news", true);
        let reply = subscribed("news", 6, "e", Some(true), Some(3));
        let got = run(
            &mut t,
            &[
                publication("news", 5),
                publication("news", 6),
                reply,
                publication("news", 7),
            ],
        );
        assert_eq!(
            got,
            vec![
                serde_json::json!({"id":3,"subscribe":{"recoverable":true,"positioned":true,"epoch":"e","offset":6,
                    "recovered":true,"was_recovering":true,
                    "publications":[{"data":data(5),"offset":5},{"data":data(6),"offset":6}]}}),
                serde_json::json!({"push":{"channel":"news","pub":{"data":data(7),"offset":7}}}),
            ]
        );
        assert!(t.subscribed("news"));
    }

    #[test]
    fn an_unrecovered_reply_carries_no_publications() {
        let mut t = Translator::new(Codec::Json, "u", false);
        t.expect(4, "news", true);
        let reply = subscribed("news", 9, "e2", Some(false), Some(4));
        let got = run(&mut t, &[publication("news", 9), reply]);
        assert_eq!(
            got,
            vec![
                serde_json::json!({"id":4,"subscribe":{"recoverable":true,"positioned":true,"epoch":"e2","offset":9,"was_recovering":true}})
            ]
        );
    }

    #[test]
    fn server_side_subscribe_reset_and_unsubscribe() {
        let mut t = Translator::new(Codec::Json, "u", false);
        let got = run(
            &mut t,
            &[
                subscribed("a", 2, "e", None, None),
                publication("a", 3),
                publication("other", 1),
                unsubscribed("a"),
                publication("a", 4),
            ],
        );
        assert_eq!(
            got,
            vec![
                serde_json::json!({"push":{"channel":"a","subscribe":{"recoverable":true,"positioned":true,"epoch":"e","offset":2}}}),
                serde_json::json!({"push":{"channel":"a","pub":{"data":data(3),"offset":3}}}),
                serde_json::json!({"push":{"channel":"a","unsubscribe":{"code":2000,"reason":"server unsubscribe"}}}),
            ]
        );
        // A client subscription whose stream was reset is told to subscribe again.
        t.expect(1, "b", false);
        let reply = subscribed("b", 0, "e", None, Some(1));
        let reset = subscribed("b", 5, "e9", Some(false), None);
        let got = run(&mut t, &[reply, reset]);
        assert_eq!(
            got[1],
            serde_json::json!({"push":{"channel":"b","unsubscribe":{"code":2500,"reason":"insufficient state"}}})
        );
        assert!(!t.has("b"));
    }
}
