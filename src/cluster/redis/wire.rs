//! What travels between nodes over Redis pub/sub, and what a topic's history keeps: channel
//! and key names, the envelope, and the compact encoding of a message. Pure.
//!
//! A pub/sub message is a one-line JSON header (small and rare enough for JSON), a newline,
//! and a body. The body of a delivery or a topic publication is the message in its compact
//! encoding ([`encode_message`]: Protobuf, the payload carried as the checked JSON bytes),
//! which is also what the history stream keeps; no protocol's frame crosses the cluster, and
//! each node's doors encode the event for their protocols. A topic publication is sent by the
//! publish script, which learns the offset and epoch: it puts a position line
//! `<offset> <epoch>` between the header (made here) and the body (made here), and builds
//! nothing else.
//!
//! Channels (prefix `rt:`; every topic-scoped key and channel carries the topic as a hash tag
//! `{topic}` so that a topic's keys and channel can move together to one shard):
//! `rt:c` every node (heartbeats, broadcast, questions to all), `rt:n:<node>` one node
//! (connection-targeted work and replies), `rt:u:<user>`, `rt:r:<role>`, `rt:t:{<topic>}`
//! the nodes holding that user, role or topic, and `rt:e` lifecycle events while someone
//! watches.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::cluster::compact;

use crate::core::event::Message;
use crate::core::model::{
    Command, ConnEvent, ConnSnapshot, Cursor, ListFilter, ListPage, PresenceEntry, StatsPart, Who,
};

pub const CONTROL: &str = "rt:c";
pub const EVENTS: &str = "rt:e";
/// Topics with a kept publication, scored by their last publish time (for GetStats).
pub const TOPIC_INDEX: &str = "rt:topics";

pub fn node_channel(node: &str) -> String {
    format!("rt:n:{node}")
}

pub fn user_channel(user: &str) -> String {
    format!("rt:u:{user}")
}

pub fn role_channel(role: &str) -> String {
    format!("rt:r:{role}")
}

pub fn topic_channel(topic: &str) -> String {
    format!("rt:t:{{{topic}}}")
}

/// The channel that reaches who `who` names: the nodes holding that user, role or topic, the
/// node holding that connection (read from its id), or every node. `None` for a string that
/// is not a connection id.
pub fn channel(who: &Who) -> Option<String> {
    Some(match who {
        Who::User(u) => user_channel(u),
        Who::Role(r) => role_channel(r),
        Who::Topic(t) => topic_channel(t),
        Who::Connection(id) => node_channel(crate::core::ids::parse_conn_id(id)?.0),
        Who::All => CONTROL.to_owned(),
    })
}

/// What a channel is keyed by, for choosing its Redis instance.
#[derive(Debug, PartialEq, Eq)]
pub enum Owner<'a> {
    Topic(&'a str),
    User(&'a str),
}

/// The topic or user a channel belongs to (`None`: a role's, a node's, or everyone's).
pub fn owner_of(channel: &str) -> Option<Owner<'_>> {
    if let Some(rest) = channel.strip_prefix("rt:t:{") {
        return rest.strip_suffix('}').map(Owner::Topic);
    }
    channel.strip_prefix("rt:u:").map(Owner::User)
}

/// The keys of a topic: its history stream, its meta hash (epoch `e`, top offset `s`) and
/// the prefix of its idempotency keys.
pub fn topic_keys(topic: &str) -> (String, String, String) {
    (
        format!("rt:h:{{{topic}}}"),
        format!("rt:hm:{{{topic}}}"),
        format!("rt:i:{{{topic}}}:"),
    )
}

/// A question or command for the nodes that hold its target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Command {
        target: Who,
        command: Command,
    },
    Get {
        id: String,
    },
    List {
        filter: ListFilter,
        after: Option<Cursor>,
        size: usize,
    },
    Presence {
        topic: String,
    },
    Stats,
    Watch,
}

/// One node's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Count(u32),
    NotFound,
    Conn(Box<ConnSnapshot>),
    Page(ListPage),
    Presence(Vec<PresenceEntry>),
    Stats(StatsPart),
    Ok,
    Failed(String),
}

/// The header of every message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k")]
pub enum Header {
    /// Deliver the body (a message, in its compact form) to `route`'s local connections;
    /// reply a count.
    Deliver {
        from: String,
        rid: u64,
        route: Who,
    },
    /// A topic publication (sent by the publish script, which adds the position line before
    /// the body); reply a count when `rid` > 0.
    Pub {
        from: String,
        rid: u64,
        topic: String,
    },
    /// A join or leave notice of a topic, for the nodes' listeners (no body).
    Presence {
        topic: String,
        joined: bool,
        user_id: String,
        connection_id: String,
    },
    Req {
        from: String,
        rid: u64,
        req: Request,
    },
    Resp {
        rid: u64,
        resp: Response,
    },
    /// A node is alive; `ready` says its pub/sub subscriptions are in place. A `hello` (sent
    /// each time the node's subscriptions are (re)made, numbered by `nonce`) asks the others to
    /// answer at once with their own beat carrying `ack` = that nonce. Only a hello or such an
    /// answer vouches that a node is subscribed now: a periodic beat may have waited out a
    /// Redis outage in a send queue.
    Beat {
        node: String,
        watching: bool,
        ready: bool,
        hello: bool,
        nonce: u64,
        ack: u64,
        /// A hash of the node's Redis instance list (0 from a build before `redis_urls`).
        #[serde(default)]
        instances: u64,
    },
    Leave {
        node: String,
    },
    Event {
        event: Box<ConnEvent>,
    },
}

/// Encodes a header and a body into one pub/sub message.
pub fn encode(h: &Header, body: &[u8]) -> Vec<u8> {
    // Serializing these plain types has no failure path; an empty header is never sent.
    let head = serde_json::to_vec(h).unwrap_or_default();
    let mut out = Vec::with_capacity(head.len() + 1 + body.len());
    out.extend_from_slice(&head);
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}

/// Splits a pub/sub message into its header and body.
pub fn decode(msg: &[u8]) -> Result<(Header, &[u8]), String> {
    let nl = msg
        .iter()
        .position(|b| *b == b'\n')
        .ok_or("no header line")?;
    let h = serde_json::from_slice(&msg[..nl]).map_err(|e| e.to_string())?;
    Ok((h, &msg[nl + 1..]))
}

/// The header line of a topic publication, for the publish script to send before the
/// position line it adds.
pub fn pub_header(from: &str, rid: u64, topic: &str) -> Vec<u8> {
    let h = Header::Pub {
        from: from.to_owned(),
        rid,
        topic: topic.to_owned(),
    };
    encode(&h, b"")
}

/// Splits a publication's body (after the header) into the position the script wrote and the
/// message.
pub fn split_position(body: &[u8]) -> Result<(u64, &str, &[u8]), String> {
    let nl = body
        .iter()
        .position(|b| *b == b'\n')
        .ok_or("no position line")?;
    let line = std::str::from_utf8(&body[..nl]).map_err(|_| "position is not UTF-8")?;
    let (offset, epoch) = line
        .split_once(' ')
        .ok_or("position is not `<offset> <epoch>`")?;
    let offset = offset.parse().map_err(|_| format!("offset {offset:?}"))?;
    Ok((offset, epoch, &body[nl + 1..]))
}

/// Encodes a message for the cluster's wire and the history stream (its compact form).
pub fn encode_message(m: &Message) -> Vec<u8> {
    compact::encode(m)
}

/// Decodes a message from the wire or the history stream. History kept by a version that
/// stored native JSON frames (`{"type":...}`) is read too.
pub fn decode_message(bytes: &[u8]) -> Result<Message, String> {
    if bytes.first() == Some(&b'{') {
        return legacy_frame(bytes);
    }
    compact::decode(bytes)
}

/// A message frame as earlier versions kept it in history.
fn legacy_frame(bytes: &[u8]) -> Result<Message, String> {
    #[derive(Deserialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: String,
        #[serde(borrow)]
        payload: &'a serde_json::value::RawValue,
        id: String,
        ts: i64,
    }
    let f: Frame<'_> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    Ok(Message {
        kind: f.kind.into(),
        payload: Bytes::copy_from_slice(f.payload.get().as_bytes()),
        id: f.id.into(),
        ts_ms: f.ts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_names_its_owner() {
        assert_eq!(owner_of(&topic_channel("a:b")), Some(Owner::Topic("a:b")));
        assert_eq!(owner_of(&topic_channel("#u")), Some(Owner::Topic("#u")));
        assert_eq!(owner_of(&user_channel("u:1")), Some(Owner::User("u:1")));
        assert_eq!(owner_of(&role_channel("r")), None);
        assert_eq!(owner_of(&node_channel("n")), None);
        assert_eq!(owner_of(CONTROL), None);
    }

    #[test]
    fn round_trip_with_a_body() {
        let h = Header::Deliver {
            from: "a".into(),
            rid: 7,
            route: Who::User("u:1".into()),
        };
        let m = encode(&h, b"{\"type\":\"x\"}\n");
        let (back, body) = decode(&m).unwrap();
        assert_eq!(back, h);
        assert_eq!(body, b"{\"type\":\"x\"}\n");
        assert!(decode(b"no newline").is_err());
        assert!(decode(b"{}\n").is_err());
    }

    #[test]
    fn a_publication_is_header_position_and_message() {
        let m = Message {
            kind: "t".into(),
            payload: Bytes::from_static(br#"{"a":[1,"\n"]}"#),
            id: "m1".into(),
            ts_ms: 5,
        };
        // What the publish script sends: header, then `<offset> <epoch>\n`, then the body.
        let mut msg = pub_header("n1", 3, "a:b");
        msg.extend_from_slice(b"12 ab\n");
        msg.extend_from_slice(&encode_message(&m));
        let (h, body) = decode(&msg).unwrap();
        assert_eq!(
            h,
            Header::Pub {
                from: "n1".into(),
                rid: 3,
                topic: "a:b".into(),
            }
        );
        let (offset, epoch, rest) = split_position(body).unwrap();
        assert_eq!((offset, epoch), (12, "ab"));
        assert_eq!(decode_message(rest).unwrap(), m);
        assert!(split_position(b"12ab\nx").is_err());
        assert!(split_position(b"x ab\nx").is_err());
        assert!(split_position(b"12 ab").is_err());
    }

    #[test]
    fn messages_decode_from_both_stored_forms_and_refuse_garbage() {
        let m = Message {
            kind: "order.updated".into(),
            payload: Bytes::from_static(b"null"),
            id: "x".into(),
            ts_ms: -1,
        };
        assert_eq!(decode_message(&encode_message(&m)).unwrap(), m);
        let legacy = br#"{"type":"order.updated","payload":null,"id":"x","ts":-1,"topic":"t","offset":3,"epoch":"e"}"#;
        assert_eq!(decode_message(legacy).unwrap(), m);
        assert!(decode_message(b"{not json").is_err());
        assert!(decode_message(&[0x0a, 0xff]).is_err());
    }

    #[test]
    fn channels_tag_topics() {
        assert_eq!(topic_channel("a:b"), "rt:t:{a:b}");
        assert_eq!(topic_keys("x").1, "rt:hm:{x}");
        assert_eq!(
            channel(&Who::Role("admin".into())).as_deref(),
            Some("rt:r:admin")
        );
        assert_eq!(
            channel(&Who::Connection("n-1.00000000000000ff".into())).as_deref(),
            Some("rt:n:n-1")
        );
        assert_eq!(channel(&Who::All).as_deref(), Some(CONTROL));
        assert_eq!(channel(&Who::Connection("nodot".into())), None);
    }
}
