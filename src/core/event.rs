//! The one event model: what the hub hands to connections, typed. A direct message, a topic
//! publication with its position, and the control notices a subscriber gets (subscribed,
//! unsubscribed, join, leave). Every layer passes these along as data; only a door turns one
//! into bytes, for its own protocol, once per event and protocol: the encodings are cached in
//! the [`Shared`] cell every recipient's queue points to, so a broadcast to ten thousand
//! connections encodes each protocol's form once. The cluster carries events in its own
//! compact encoding (`cluster::redis::wire`), never as a protocol's frame.
//!
//! Pure: no I/O, no clock. A door's encoder is passed in ([`Shared::encoded`]).

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde_json::Value;

/// An application message, validated once (see [`super::message::validate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `type`: 1..128 characters of `[A-Za-z0-9._:-]`.
    pub kind: Box<str>,
    /// The payload as JSON text, checked once and never re-serialized.
    pub payload: Bytes,
    /// The caller's id, or one the server made.
    pub id: Box<str>,
    /// When the hub accepted it (unix ms).
    pub ts_ms: i64,
}

/// A message published to a topic, at its place in the topic's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub topic: Box<str>,
    /// 1, 2, 3, ... without a gap within one epoch.
    pub offset: u64,
    /// Names the stream's life: a new epoch means the offsets started again.
    pub epoch: Box<str>,
    pub message: Message,
}

/// A subscriber came to or left a topic (queued only to connections that asked for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub joined: bool,
    pub topic: Box<str>,
    pub user_id: Box<str>,
    pub connection_id: Box<str>,
}

/// Everything the core queues to a connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A message to a user, a role, one connection or everyone: no stream position.
    Message(Message),
    /// A topic publication, live or replayed from history.
    Publication(Publication),
    /// The connection is subscribed to `topic` at `offset` of `epoch`. With `reference`, the
    /// answer to the connection's own subscribe; without, a server-side subscribe, or (with
    /// `recovered: Some(false)`) the news that its position in the topic was lost.
    Subscribed {
        topic: Box<str>,
        offset: u64,
        epoch: Box<str>,
        recovered: Option<bool>,
        reference: Option<Value>,
    },
    /// The connection left `topic` (its own unsubscribe when `reference` is set).
    Unsubscribed {
        topic: Box<str>,
        reference: Option<Value>,
    },
    /// A join or leave notice of a topic.
    Presence(Presence),
}

impl Event {
    /// The topic a publication or notice is about (`None` for a direct message).
    pub fn topic(&self) -> Option<&str> {
        match self {
            Event::Message(_) => None,
            Event::Publication(p) => Some(&p.topic),
            Event::Subscribed { topic, .. } | Event::Unsubscribed { topic, .. } => Some(topic),
            Event::Presence(p) => Some(&p.topic),
        }
    }

    /// A `subscribed` notice telling a subscriber its position was lost (a new epoch, or a
    /// gap history could not fill): the client must resubscribe or refetch.
    pub fn position_lost(topic: &str, offset: u64, epoch: &str) -> Event {
        Event::Subscribed {
            topic: topic.into(),
            offset,
            epoch: epoch.into(),
            recovered: Some(false),
            reference: None,
        }
    }
}

/// The protocols an event is encoded for: one cache slot each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// The native JSON protocol of `/ws`.
    Native,
    /// The Centrifugo protocol v2, JSON.
    CentrifugeJson,
    /// The Centrifugo protocol v2, Protobuf.
    CentrifugeProtobuf,
}

/// One event as every recipient on this node shares it (behind an `Arc`), with its encodings,
/// each made by the first recipient that needs it and then reused.
#[derive(Debug)]
pub struct Shared {
    event: Event,
    native: OnceLock<Bytes>,
    /// The Centrifugo encodings (boxed: one pointer while no such connection asks).
    centrifuge: OnceLock<Box<[OnceLock<Bytes>; 2]>>,
}

/// The queue item: one pointer.
pub type SharedEvent = Arc<Shared>;

impl Shared {
    pub fn new(event: Event) -> SharedEvent {
        Arc::new(Shared {
            event,
            native: OnceLock::new(),
            centrifuge: OnceLock::new(),
        })
    }

    pub fn event(&self) -> &Event {
        &self.event
    }

    /// This event in `wire`'s form: encoded by `encode` the first time, the same bytes after.
    pub fn encoded(&self, wire: Wire, encode: impl FnOnce(&Event) -> Bytes) -> &Bytes {
        let slot = match wire {
            Wire::Native => &self.native,
            Wire::CentrifugeJson => &self.centrifuge.get_or_init(Box::default)[0],
            Wire::CentrifugeProtobuf => &self.centrifuge.get_or_init(Box::default)[1],
        };
        slot.get_or_init(|| encode(&self.event))
    }
}

impl PartialEq for Shared {
    fn eq(&self, other: &Self) -> bool {
        self.event == other.event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        Message {
            kind: "t".into(),
            payload: Bytes::from_static(b"1"),
            id: "m".into(),
            ts_ms: 5,
        }
    }

    #[test]
    fn each_wire_is_encoded_once_and_shared() {
        let e = Shared::new(Event::Message(message()));
        let mut calls = 0;
        for _ in 0..3 {
            let b = e.encoded(Wire::Native, |_| {
                calls += 1;
                Bytes::from_static(b"native")
            });
            assert_eq!(b.as_ref(), b"native");
        }
        let j = e.encoded(Wire::CentrifugeJson, |_| Bytes::from_static(b"json"));
        assert_eq!(j.as_ref(), b"json");
        let p = e.encoded(Wire::CentrifugeProtobuf, |_| Bytes::from_static(b"pb"));
        assert_eq!(p.as_ref(), b"pb");
        assert_eq!(calls, 1);
        assert_eq!(
            e.encoded(Wire::CentrifugeJson, |_| unreachable!()).as_ref(),
            b"json"
        );
    }

    #[test]
    fn an_event_names_its_topic() {
        assert_eq!(Event::Message(message()).topic(), None);
        let p = Event::Publication(Publication {
            topic: "a".into(),
            offset: 1,
            epoch: "e".into(),
            message: message(),
        });
        assert_eq!(p.topic(), Some("a"));
        assert_eq!(
            Event::position_lost("b", 3, "e"),
            Event::Subscribed {
                topic: "b".into(),
                offset: 3,
                epoch: "e".into(),
                recovered: Some(false),
                reference: None
            }
        );
    }
}
