//! The native WebSocket protocol (`/ws`): parsing what a client sends, encoding the server's
//! replies, and [`event`], the native form of every [`Event`] the core queues (made once per
//! event, cached in the shared event by the session that writes it first).
//!
//! A frame with `"op"` is a control frame; a reply carries the `ref` of the frame it answers,
//! echoed exactly as the client sent it (string or number). An application message is
//! `{"type":...,"payload":...,"id":...,"ts":...}`, with `"topic"`, `"offset"` and `"epoch"`
//! after them for a topic publication.

use std::io::Write as _;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::event::{Event, Message};
use super::stream::{self, Resume};

/// A parsed client frame.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    Auth {
        token: String,
        /// Where the client stands in its user stream, when it resumes (section 7).
        since: Option<Resume>,
    },
    Ping {
        reference: Option<Value>,
    },
    Refresh {
        token: String,
        reference: Option<Value>,
    },
    Subscribe {
        topic: String,
        since: Option<Since>,
        reference: Option<Value>,
    },
    Unsubscribe {
        topic: String,
        reference: Option<Value>,
    },
}

/// The position a resubscribing client recovers from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    pub offset: u64,
    pub epoch: String,
}

/// Why a client frame was refused: always answered with `bad_request`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct BadFrame {
    pub message: String,
    /// The frame's `ref`, when it could be read, so the error reply can carry it.
    pub reference: Option<Value>,
}

fn bad(message: impl Into<String>, reference: Option<Value>) -> BadFrame {
    BadFrame {
        message: message.into(),
        reference,
    }
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<ClientFrame, BadFrame> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| bad(format!("invalid JSON: {e}"), None))?;
    let Value::Object(mut obj) = value else {
        return Err(bad("a frame must be a JSON object", None));
    };
    let reference = obj.remove("ref").filter(|r| !r.is_null());
    if let Some(r) = &reference {
        if !(r.is_string() || r.is_number()) {
            return Err(bad("ref must be a string or a number", None));
        }
    }
    let op = match obj.get("op") {
        Some(Value::String(op)) => op.as_str(),
        Some(_) => return Err(bad("op must be a string", reference)),
        None => return Err(bad("missing op", reference)),
    };
    match op {
        "auth" => Ok(ClientFrame::Auth {
            token: string_field(&obj, "auth", "token", &reference)?,
            since: auth_since(obj.get("since"))?,
        }),
        "ping" => Ok(ClientFrame::Ping { reference }),
        "refresh" => Ok(ClientFrame::Refresh {
            token: string_field(&obj, "refresh", "token", &reference)?,
            reference,
        }),
        "subscribe" => {
            let topic = string_field(&obj, "subscribe", "topic", &reference)?;
            let since = match obj.get("since") {
                None | Some(Value::Null) => None,
                Some(v) => Some(parse_since(v).ok_or_else(|| {
                    bad(
                        "since must be {\"offset\": <integer>, \"epoch\": <string>}",
                        reference.clone(),
                    )
                })?),
            };
            Ok(ClientFrame::Subscribe {
                topic,
                since,
                reference,
            })
        }
        "unsubscribe" => Ok(ClientFrame::Unsubscribe {
            topic: string_field(&obj, "unsubscribe", "topic", &reference)?,
            reference,
        }),
        other => {
            let shown: String = other.chars().take(32).collect();
            Err(bad(format!("unknown op {shown:?}"), reference))
        }
    }
}

fn string_field(
    obj: &Map<String, Value>,
    op: &str,
    field: &str,
    reference: &Option<Value>,
) -> Result<String, BadFrame> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(bad(
            format!("{op} needs a string field {field:?}"),
            reference.clone(),
        )),
    }
}

fn parse_since(v: &Value) -> Option<Since> {
    Some(Since {
        offset: v.get("offset")?.as_u64()?,
        epoch: v.get("epoch")?.as_str()?.to_owned(),
    })
}

/// The first frame's `"since":{"offset":17,"epoch":"e1"}`, checked as the query's `since` and
/// `epoch` are.
fn auth_since(v: Option<&Value>) -> Result<Option<Resume>, BadFrame> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let shape = || {
        bad(
            "since must be {\"offset\": <integer>, \"epoch\": <string>}",
            None,
        )
    };
    let Value::Object(o) = v else {
        return Err(shape());
    };
    let offset = match o.get("offset") {
        None => None,
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err(shape()),
    };
    let epoch = match o.get("epoch") {
        None => None,
        Some(Value::String(e)) => Some(e.as_str()),
        Some(_) => return Err(shape()),
    };
    stream::resume(offset.as_deref(), epoch).map_err(|e| bad(format!("since.{e}"), None))
}

fn with_ref(mut v: Value, reference: Option<&Value>) -> String {
    if let (Some(r), Value::Object(obj)) = (reference, &mut v) {
        obj.insert("ref".into(), r.clone());
    }
    v.to_string()
}

/// Where a connection starts in its user stream, for `connected` (with user streams on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStart {
    /// The latest offset: what follows is live.
    pub offset: u64,
    pub epoch: String,
    /// Set only when the client asked to resume.
    pub recovered: Option<bool>,
}

/// `{"op":"connected",...}`, the first frame of an authenticated connection; with user streams
/// on, the stream's `offset` and `epoch` (and `recovered` when the client asked to resume).
pub fn connected(
    connection_id: &str,
    user_id: &str,
    expires_at_ms: Option<i64>,
    ping_interval_ms: u64,
    stream: Option<&StreamStart>,
) -> String {
    let mut v = json!({
        "op": "connected",
        "connection_id": connection_id,
        "user_id": user_id,
        "expires_at": expires_at_ms,
        "ping_interval_ms": ping_interval_ms,
    });
    if let Some(s) = stream {
        v["offset"] = s.offset.into();
        v["epoch"] = s.epoch.as_str().into();
        if let Some(r) = s.recovered {
            v["recovered"] = r.into();
        }
    }
    v.to_string()
}

/// `{"op":"user_stream","offset":...,"epoch":...,"recovered":false}`: a live connection's
/// position in its user stream was lost (the broker lost its data): the client should refetch
/// its state and take the new position.
pub fn user_stream_lost(offset: u64, epoch: &str) -> String {
    json!({"op": "user_stream", "offset": offset, "epoch": epoch, "recovered": false}).to_string()
}

/// `{"op":"pong","ref":...}`.
pub fn pong(reference: Option<&Value>) -> String {
    with_ref(json!({"op": "pong"}), reference)
}

/// `{"op":"subscribed","topic":...,"offset":...,"epoch":...[,"recovered":...],"ref":...}`.
pub fn subscribed(
    topic: &str,
    offset: u64,
    epoch: &str,
    recovered: Option<bool>,
    reference: Option<&Value>,
) -> String {
    let mut v = json!({"op": "subscribed", "topic": topic, "offset": offset, "epoch": epoch});
    if let Some(r) = recovered {
        v["recovered"] = r.into();
    }
    with_ref(v, reference)
}

/// `{"op":"unsubscribed","topic":...,"ref":...}`.
pub fn unsubscribed(topic: &str, reference: Option<&Value>) -> String {
    with_ref(json!({"op": "unsubscribed", "topic": topic}), reference)
}

/// `{"op":"refreshed","expires_at":...,"ref":...}`.
pub fn refreshed(expires_at_ms: Option<i64>, reference: Option<&Value>) -> String {
    with_ref(
        json!({"op": "refreshed", "expires_at": expires_at_ms}),
        reference,
    )
}

/// `{"op":"join"|"leave","topic":...,"user_id":...,"connection_id":...}`: a subscriber came or
/// went. Queued only to connections that listen for it (the Centrifugo endpoint's
/// `join_leave`); not part of the native protocol.
pub fn presence(joined: bool, topic: &str, user_id: &str, connection_id: &str) -> String {
    json!({
        "op": if joined { "join" } else { "leave" },
        "topic": topic,
        "user_id": user_id,
        "connection_id": connection_id,
    })
    .to_string()
}

/// The native frame of an event.
pub fn event(e: &Event) -> Bytes {
    match e {
        Event::Message(m) => Bytes::from(write_message(m, None)),
        Event::Publication(p) => Bytes::from(write_message(
            &p.message,
            Some((
                stream::is_topic(&p.topic).then_some(&*p.topic),
                p.offset,
                &p.epoch,
            )),
        )),
        Event::Subscribed {
            topic,
            offset,
            epoch,
            ..
        } if !stream::is_topic(topic) => Bytes::from(user_stream_lost(*offset, epoch)),
        Event::Subscribed {
            topic,
            offset,
            epoch,
            recovered,
            reference,
        } => Bytes::from(subscribed(
            topic,
            *offset,
            epoch,
            *recovered,
            reference.as_ref(),
        )),
        Event::Unsubscribed { topic, reference } => {
            Bytes::from(unsubscribed(topic, reference.as_ref()))
        }
        Event::Presence(p) => {
            Bytes::from(presence(p.joined, &p.topic, &p.user_id, &p.connection_id))
        }
    }
}

/// The message object alone, `{"type":...,"payload":...,"id":...,"ts":...}` (also the `data`
/// of a Centrifugo publication).
pub fn message_object(m: &Message) -> Vec<u8> {
    write_message(m, None)
}

/// Writes a message, with its stream position when it has one (and its topic when that stream
/// is a topic; a user stream's messages carry no `"topic"`). The payload is the checked JSON
/// text, spliced as it is; strings are escaped by serde_json.
fn write_message(m: &Message, position: Option<(Option<&str>, u64, &str)>) -> Vec<u8> {
    let extra = position.map_or(0, |(t, _, e)| t.map_or(0, str::len) + e.len() + 48);
    let mut out = Vec::with_capacity(m.payload.len() + m.kind.len() + m.id.len() + 48 + extra);
    out.extend_from_slice(b"{\"type\":");
    json_string(&mut out, &m.kind);
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(&m.payload);
    out.extend_from_slice(b",\"id\":");
    json_string(&mut out, &m.id);
    // Writing into a Vec cannot fail.
    let _ = write!(out, ",\"ts\":{}", m.ts_ms);
    if let Some((topic, offset, epoch)) = position {
        if let Some(topic) = topic {
            out.extend_from_slice(b",\"topic\":");
            json_string(&mut out, topic);
        }
        let _ = write!(out, ",\"offset\":{offset},\"epoch\":");
        json_string(&mut out, epoch);
    }
    out.push(b'}');
    out
}

fn json_string(out: &mut Vec<u8>, s: &str) {
    // Serializing a str into a Vec has no failure path.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Error codes a client can receive in `{"op":"error","code":...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    /// The user already has `max_connections_per_user` connections.
    TooManyConnections,
    /// The connection already has `topics.max_subscriptions` subscriptions.
    TooManySubscriptions,
    /// The cluster broker cannot be reached right now; try again.
    Unavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// `{"op":"error","code":...,"message":...,"ref":...}`.
pub fn error(code: ErrorCode, message: &str, reference: Option<&Value>) -> String {
    with_ref(
        json!({"op": "error", "code": code.as_str(), "message": message}),
        reference,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_op() {
        assert_eq!(
            parse(r#"{"op":"auth","token":"t"}"#),
            Ok(ClientFrame::Auth {
                token: "t".into(),
                since: None
            })
        );
        assert_eq!(
            parse(r#"{"op":"ping","ref":"1"}"#),
            Ok(ClientFrame::Ping {
                reference: Some(json!("1"))
            })
        );
        assert_eq!(
            parse(r#"{"op":"ping","ref":7}"#),
            Ok(ClientFrame::Ping {
                reference: Some(json!(7))
            })
        );
        assert_eq!(
            parse(r#"{"op":"subscribe","topic":"a:b","since":{"offset":3,"epoch":"e"},"ref":"2"}"#),
            Ok(ClientFrame::Subscribe {
                topic: "a:b".into(),
                since: Some(Since {
                    offset: 3,
                    epoch: "e".into()
                }),
                reference: Some(json!("2"))
            })
        );
        assert_eq!(
            parse(r#"{"op":"unsubscribe","topic":"a"}"#),
            Ok(ClientFrame::Unsubscribe {
                topic: "a".into(),
                reference: None
            })
        );
        assert_eq!(
            parse(r#"{"op":"refresh","token":"x","ref":"5"}"#),
            Ok(ClientFrame::Refresh {
                token: "x".into(),
                reference: Some(json!("5"))
            })
        );
    }

    #[test]
    fn bad_frames_keep_their_ref_when_readable() {
        let e = parse(r#"{"op":"nope","ref":"9"}"#).unwrap_err();
        assert_eq!(e.reference, Some(json!("9")));
        assert!(e.message.contains("unknown op"), "{}", e.message);
        assert_eq!(parse("{").unwrap_err().reference, None);
        assert_eq!(
            parse("[]").unwrap_err().message,
            "a frame must be a JSON object"
        );
        assert_eq!(parse(r#"{"ref":"1"}"#).unwrap_err().message, "missing op");
        assert_eq!(
            parse(r#"{"op":1}"#).unwrap_err().message,
            "op must be a string"
        );
        assert!(parse(r#"{"op":"auth"}"#).is_err());
        assert!(parse(r#"{"op":"ping","ref":{}}"#).is_err());
        assert!(
            parse(r#"{"op":"subscribe","topic":"a","since":{"offset":-1,"epoch":"e"}}"#).is_err()
        );
    }

    fn message(payload: &'static str, id: &str) -> Message {
        Message {
            kind: "order.updated".into(),
            payload: Bytes::from_static(payload.as_bytes()),
            id: id.into(),
            ts_ms: 42,
        }
    }

    #[test]
    fn encodes_the_documented_message_frames() {
        let m = message(r#"{"n":1}"#, "m1");
        assert_eq!(
            event(&Event::Message(m.clone())).as_ref(),
            br#"{"type":"order.updated","payload":{"n":1},"id":"m1","ts":42}"#
        );
        let p = Event::Publication(crate::core::event::Publication {
            topic: "orders:42".into(),
            offset: 7,
            epoch: "e".into(),
            message: m.clone(),
        });
        assert_eq!(
            event(&p).as_ref(),
            br#"{"type":"order.updated","payload":{"n":1},"id":"m1","ts":42,"topic":"orders:42","offset":7,"epoch":"e"}"#
        );
        assert_eq!(message_object(&m), event(&Event::Message(m)).to_vec());
        // Strings are escaped; the payload is spliced as the checked text it is.
        let odd = message(r#"{"a":"\",\"topic\":1"}"#, "a\"b\n");
        let text = event(&Event::Message(odd));
        let back: Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(back["id"], "a\"b\n");
        assert_eq!(back["payload"]["a"], "\",\"topic\":1");
    }

    #[test]
    fn control_events_encode_as_their_frames() {
        let sub = Event::Subscribed {
            topic: "t".into(),
            offset: 3,
            epoch: "e".into(),
            recovered: Some(true),
            reference: Some(json!("r")),
        };
        assert_eq!(
            event(&sub).as_ref(),
            subscribed("t", 3, "e", Some(true), Some(&json!("r"))).as_bytes()
        );
        let unsub = Event::Unsubscribed {
            topic: "t".into(),
            reference: None,
        };
        assert_eq!(event(&unsub).as_ref(), unsubscribed("t", None).as_bytes());
        let join = Event::Presence(crate::core::event::Presence {
            joined: true,
            topic: "t".into(),
            user_id: "u".into(),
            connection_id: "n.1".into(),
        });
        assert_eq!(
            event(&join).as_ref(),
            presence(true, "t", "u", "n.1").as_bytes()
        );
    }

    #[test]
    fn replies_echo_ref() {
        assert_eq!(pong(Some(&json!("1"))), r#"{"op":"pong","ref":"1"}"#);
        assert_eq!(pong(None), r#"{"op":"pong"}"#);
        assert_eq!(
            error(ErrorCode::BadRequest, "m", Some(&json!(3))),
            r#"{"code":"bad_request","message":"m","op":"error","ref":3}"#
        );
        let c: Value = serde_json::from_str(&connected("n.1", "u", None, 25000, None)).unwrap();
        assert_eq!(
            c,
            json!({"op":"connected","connection_id":"n.1","user_id":"u","expires_at":null,"ping_interval_ms":25000})
        );
        let start = StreamStart {
            offset: 4,
            epoch: "e".into(),
            recovered: Some(true),
        };
        let c: Value =
            serde_json::from_str(&connected("n.1", "u", Some(9), 25000, Some(&start))).unwrap();
        assert_eq!(
            c,
            json!({"op":"connected","connection_id":"n.1","user_id":"u","expires_at":9,
                   "ping_interval_ms":25000,"offset":4,"epoch":"e","recovered":true})
        );
    }

    #[test]
    fn a_user_stream_message_has_a_position_and_no_topic() {
        let m = Message {
            kind: "k".into(),
            payload: bytes::Bytes::from_static(b"{}"),
            id: "i".into(),
            ts_ms: 1,
        };
        let p = Event::Publication(crate::core::event::Publication {
            topic: stream::of_user("alice").into(),
            offset: 3,
            epoch: "e".into(),
            message: m,
        });
        assert_eq!(
            event(&p).as_ref(),
            br#"{"type":"k","payload":{},"id":"i","ts":1,"offset":3,"epoch":"e"}"#
        );
        let lost = Event::position_lost(&stream::of_user("alice"), 7, "f");
        let v: Value = serde_json::from_slice(&event(&lost)).unwrap();
        assert_eq!(
            v,
            json!({"op":"user_stream","offset":7,"epoch":"f","recovered":false})
        );
    }

    #[test]
    fn the_first_frame_may_resume() {
        assert_eq!(
            parse(r#"{"op":"auth","token":"t","since":{"offset":17,"epoch":"e1"}}"#),
            Ok(ClientFrame::Auth {
                token: "t".into(),
                since: Some(Resume {
                    offset: 17,
                    epoch: "e1".into()
                })
            })
        );
        for bad_since in [
            r#"{"offset":17}"#,
            r#"{"epoch":"e"}"#,
            r#"{"offset":-1,"epoch":"e"}"#,
            r#"{"offset":1.5,"epoch":"e"}"#,
            r#"{"offset":"1","epoch":"e"}"#,
            r#"7"#,
        ] {
            let frame = format!(r#"{{"op":"auth","token":"t","since":{bad_since}}}"#);
            let e = parse(&frame).unwrap_err();
            assert!(e.message.contains("since"), "{bad_since}: {}", e.message);
        }
        let long = format!(
            r#"{{"op":"auth","token":"t","since":{{"offset":1,"epoch":"{}"}}}}"#,
            "e".repeat(65)
        );
        assert!(parse(&long).unwrap_err().message.contains("64"));
    }
}
