//! What travels between nodes over Redis pub/sub: channel names and the envelope. Pure.
//!
//! A message is a one-line JSON header, a newline, and a body: for a delivery or a topic
//! publication the body is the already-encoded frame, passed on as it is; for the rest it is
//! empty. Topic publications are written by the publish script, which builds the same header.
//!
//! Channels (prefix `rt:`; every topic-scoped key and channel carries the topic as a hash tag
//! `{topic}` so that a topic's keys and channel can move together to one shard):
//! `rt:c` every node (heartbeats, broadcast, questions to all), `rt:n:<node>` one node
//! (connection-targeted work and replies), `rt:u:<user>`, `rt:r:<role>`, `rt:t:{<topic>}`
//! the nodes holding that user, role or topic, and `rt:e` lifecycle events while someone
//! watches.

use serde::{Deserialize, Serialize};

use crate::core::model::{
    Command, ConnSnapshot, Cursor, Event, Interest, ListFilter, ListPage, Present, Route, Selector,
    StatsPart,
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

/// The channel an interest subscribes to.
pub fn interest_channel(i: &Interest) -> String {
    match i {
        Interest::User(u) => user_channel(u),
        Interest::Role(r) => role_channel(r),
        Interest::Topic(t) => topic_channel(t),
    }
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
        target: Selector,
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
    Presence(Vec<Present>),
    Stats(StatsPart),
    Ok,
    Failed(String),
}

/// The header of every message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k")]
pub enum Header {
    /// Deliver the body (a frame) to `route`'s local connections; reply a count.
    Deliver {
        from: String,
        rid: u64,
        route: Route,
    },
    /// A topic publication (written by the publish script); reply a count when `rid` > 0.
    Pub {
        from: String,
        rid: u64,
        topic: String,
        offset: u64,
        epoch: String,
    },
    /// A join or leave notice of a topic (the body), for the nodes' listeners.
    Presence {
        topic: String,
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
    },
    Leave {
        node: String,
    },
    Event {
        event: Box<Event>,
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

/// The header prefix the publish script completes with offset and epoch (the fields must be
/// in [`Header::Pub`]'s order). Topic and node names are restricted to characters that need
/// no JSON escaping.
pub fn pub_header_prefix(from: &str, rid: u64, topic: &str) -> String {
    format!("{{\"k\":\"Pub\",\"from\":\"{from}\",\"rid\":{rid},\"topic\":\"{topic}\",\"offset\":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_a_body() {
        let h = Header::Deliver {
            from: "a".into(),
            rid: 7,
            route: Route::User("u:1".into()),
        };
        let m = encode(&h, b"{\"type\":\"x\"}\n");
        let (back, body) = decode(&m).unwrap();
        assert_eq!(back, h);
        assert_eq!(body, b"{\"type\":\"x\"}\n");
        assert!(decode(b"no newline").is_err());
        assert!(decode(b"{}\n").is_err());
    }

    #[test]
    fn the_script_header_decodes_as_pub() {
        let head = format!("{}12,\"epoch\":\"ab\"}}", pub_header_prefix("n1", 3, "a:b"));
        let msg = format!("{head}\nBODY");
        let (h, body) = decode(msg.as_bytes()).unwrap();
        assert_eq!(
            h,
            Header::Pub {
                from: "n1".into(),
                rid: 3,
                topic: "a:b".into(),
                offset: 12,
                epoch: "ab".into()
            }
        );
        assert_eq!(body, b"BODY");
    }

    #[test]
    fn channels_tag_topics() {
        assert_eq!(topic_channel("a:b"), "rt:t:{a:b}");
        assert_eq!(topic_keys("x").1, "rt:hm:{x}");
        assert_eq!(
            interest_channel(&Interest::Role("admin".into())),
            "rt:r:admin"
        );
    }
}
