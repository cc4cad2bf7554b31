//! One Centrifugo connection's view of what the core queues to it. The core queues the same
//! frames as for a native connection (messages, and `subscribed`/`unsubscribed` control
//! frames); this turns them into Centrifugo replies and pushes, with the little state that
//! needs: which channels the client subscribed itself and which the server did, and the
//! subscribe commands whose reply is still on its way, so that the publications the core
//! replays before a `subscribed` reply go into that reply's `publications` (never partial:
//! only when recovered). Pure: no I/O.

use std::collections::HashMap;

use bytes::Bytes;
use serde::Deserialize;

use super::codec::{message_head, Codec};
use super::wire::{
    ClientInfo, Join, Publication, Push, Reply, Subscribe, SubscribeResult, Unsubscribe,
};
use crate::core::frame::Frame;

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
}

/// The control frames of the core that reach a connection.
#[derive(Deserialize)]
struct Control {
    op: String,
    #[serde(default)]
    topic: String,
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    epoch: String,
    recovered: Option<bool>,
    #[serde(rename = "ref")]
    reference: Option<u32>,
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    connection_id: String,
}

impl Translator {
    pub fn new(codec: Codec) -> Self {
        Translator {
            codec,
            subs: HashMap::new(),
            pending: Vec::new(),
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

    /// Appends what `frame` becomes for this connection to `out` (nothing, one, or several
    /// encoded replies and pushes).
    pub fn frame(&mut self, frame: &Frame, out: &mut Vec<Bytes>) {
        if let Some(head) = message_head(frame) {
            let Some(topic) = &head.topic else {
                if let Some(push) = self.codec.message_push(frame) {
                    out.push(push.clone());
                }
                return;
            };
            if let Some(p) = self.pending.iter_mut().find(|p| *p.channel == **topic) {
                p.pubs.push((head.offset, head.data.clone()));
            } else if self.subs.contains_key(&**topic) {
                if let Some(push) = self.codec.message_push(frame) {
                    out.push(push.clone());
                }
            }
            // Otherwise: a publication of a channel this connection has just left.
            return;
        }
        let Ok(c) = serde_json::from_slice::<Control>(frame.bytes()) else {
            return;
        };
        match (c.op.as_str(), c.reference) {
            ("subscribed", Some(id)) => self.subscribe_reply(id, &c, out),
            ("subscribed", None) => self.server_subscribed(&c, out),
            ("unsubscribed", Some(id)) => {
                self.subs.remove(c.topic.as_str());
                out.push(self.codec.encode(&Reply {
                    id,
                    unsubscribe: Some(Default::default()),
                    ..Default::default()
                }));
            }
            ("unsubscribed", None) if self.subs.remove(c.topic.as_str()).is_some() => {
                out.push(self.unsubscribe_push(c.topic, UNSUBSCRIBE_SERVER, "server unsubscribe"));
            }
            // Queued only to subscribers that asked for them (`join_leave`).
            (op @ ("join" | "leave"), None) if self.subs.contains_key(c.topic.as_str()) => {
                let info = Some(Join {
                    info: Some(ClientInfo {
                        user: c.user_id,
                        client: c.connection_id,
                    }),
                });
                let (join, leave) = if op == "join" {
                    (info, None)
                } else {
                    (None, info)
                };
                out.push(self.codec.encode(&Reply {
                    push: Some(Push {
                        channel: c.topic,
                        join,
                        leave,
                        ..Default::default()
                    }),
                    ..Default::default()
                }));
            }
            // Nothing else is queued to a connection by the core.
            _ => {}
        }
    }

    fn subscribe_reply(&mut self, id: u32, c: &Control, out: &mut Vec<Bytes>) {
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
                epoch: c.epoch.clone(),
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

    fn server_subscribed(&mut self, c: &Control, out: &mut Vec<Bytes>) {
        let kind = self.subs.get(c.topic.as_str()).copied();
        match (kind, c.recovered) {
            // The Subscribe RPC: announce the new server-side subscription.
            (None, None) => {
                self.subs.insert(c.topic.as_str().into(), Kind::Server);
                out.push(self.subscribe_push(c));
            }
            // The stream was reset (a new epoch): the position the SDK holds is gone.
            (Some(Kind::Client), Some(false)) => {
                self.subs.remove(c.topic.as_str());
                out.push(self.unsubscribe_push(
                    c.topic.clone(),
                    UNSUBSCRIBE_INSUFFICIENT_STATE,
                    "insufficient state",
                ));
            }
            (Some(Kind::Server), Some(false)) => out.push(self.subscribe_push(c)),
            // Already subscribed: nothing changes for the SDK.
            _ => {}
        }
    }

    fn subscribe_push(&self, c: &Control) -> Bytes {
        self.codec.encode(&Reply {
            push: Some(Push {
                channel: c.topic.clone(),
                subscribe: Some(Subscribe {
                    recoverable: true,
                    positioned: true,
                    epoch: c.epoch.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::frames;
    use crate::core::message::{encode, validate, MessageInput, TopicPosition};

    fn publication(topic: &str, offset: u64) -> Frame {
        let input = MessageInput {
            kind: "t",
            payload_json: &offset.to_string(),
            id: "",
        };
        let m = validate("message", input, 100).unwrap();
        let pos = TopicPosition {
            topic,
            offset,
            epoch: "e",
        };
        Frame::from(encode(&m, &format!("m{offset}"), 1, Some(pos)))
    }

    fn run(t: &mut Translator, frames: &[Frame]) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for f in frames {
            t.frame(f, &mut out);
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
        let mut t = Translator::new(Codec::Json);
        t.expect(3, "news", true);
        let reply = Frame::from(frames::subscribed(
            "news",
            6,
            "e",
            Some(true),
            Some(&3.into()),
        ));
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
        let mut t = Translator::new(Codec::Json);
        t.expect(4, "news", true);
        let reply = Frame::from(frames::subscribed(
            "news",
            9,
            "e2",
            Some(false),
            Some(&4.into()),
        ));
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
        let mut t = Translator::new(Codec::Json);
        let got = run(
            &mut t,
            &[
                Frame::from(frames::subscribed("a", 2, "e", None, None)),
                publication("a", 3),
                publication("other", 1),
                Frame::from(frames::unsubscribed("a", None)),
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
        let reply = Frame::from(frames::subscribed("b", 0, "e", None, Some(&1.into())));
        let reset = Frame::from(frames::subscribed("b", 5, "e9", Some(false), None));
        let got = run(&mut t, &[reply, reset]);
        assert_eq!(
            got[1],
            serde_json::json!({"push":{"channel":"b","unsubscribe":{"code":2500,"reason":"insufficient state"}}})
        );
        assert!(!t.has("b"));
    }
}
