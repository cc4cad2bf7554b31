//! The two encodings of the Centrifugo protocol: JSON (commands and replies one per line,
//! text frames) and Protobuf (each message varint-length-delimited, binary frames). Decoding
//! a client frame, encoding a reply, and the push a shared message or publication becomes,
//! made once per event and protocol (cached in the shared event) and then shared by every
//! recipient. Pure.

use bytes::Bytes;
use prost::Message as _;

use super::wire::{Command, Message, Publication, Push, Reply};
use crate::core::event::{Event, Shared, Wire};
use crate::core::native::message_object;
use crate::core::registry::Protocol;
use crate::core::stream;

/// The most commands one client frame may carry (a connect and a subscribe per allowed
/// subscription fit easily).
pub const MAX_COMMANDS_PER_FRAME: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Json,
    Protobuf,
}

/// Why a client frame could not be read (the connection is closed with 3501).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

impl Codec {
    pub fn protocol(self) -> Protocol {
        match self {
            Codec::Json => Protocol::CentrifugeJson,
            Codec::Protobuf => Protocol::CentrifugeProtobuf,
        }
    }

    /// The commands of one client frame, in order. JSON frames must be text, Protobuf frames
    /// binary (the caller says which it got).
    pub fn decode(self, frame: &[u8], binary: bool) -> Result<Vec<Command>, DecodeError> {
        let mut commands = Vec::new();
        match self {
            Codec::Json => {
                if binary {
                    return Err(DecodeError(
                        "a binary frame on the JSON protocol (use text frames, or the \
                         centrifuge-protobuf subprotocol)"
                            .into(),
                    ));
                }
                for (n, line) in frame.split(|b| *b == b'\n').enumerate() {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    if line.trim_ascii_start().first() != Some(&b'{') {
                        return Err(DecodeError(format!("command {}: not a JSON object", n + 1)));
                    }
                    let cmd: Command = serde_json::from_slice(line)
                        .map_err(|e| DecodeError(format!("command {}: {e}", n + 1)))?;
                    commands.push(cmd);
                    if commands.len() > MAX_COMMANDS_PER_FRAME {
                        return Err(too_many());
                    }
                }
            }
            Codec::Protobuf => {
                if !binary {
                    return Err(DecodeError(
                        "a text frame on the Protobuf protocol (use binary frames)".into(),
                    ));
                }
                let mut buf = frame;
                while !buf.is_empty() {
                    let cmd = Command::decode_length_delimited(&mut buf)
                        .map_err(|e| DecodeError(format!("command {}: {e}", commands.len() + 1)))?;
                    commands.push(cmd);
                    if commands.len() > MAX_COMMANDS_PER_FRAME {
                        return Err(too_many());
                    }
                }
            }
        }
        if commands.is_empty() {
            return Err(DecodeError("an empty frame".into()));
        }
        Ok(commands)
    }

    /// One reply or push, encoded.
    pub fn encode(self, reply: &Reply) -> Bytes {
        match self {
            // Serializing our own types, whose `data` is our own valid JSON, cannot fail; an
            // empty output would read as a ping, so the fallback is never sent in practice.
            Codec::Json => Bytes::from(serde_json::to_vec(reply).unwrap_or_default()),
            Codec::Protobuf => Bytes::from(reply.encode_length_delimited_to_vec()),
        }
    }

    /// The server's ping: a reply with neither id nor push.
    pub fn ping(self) -> Bytes {
        match self {
            Codec::Json => Bytes::from_static(b"{}"),
            Codec::Protobuf => Bytes::from_static(&[0]),
        }
    }

    /// The push a shared message or publication becomes (a message push, or a publication
    /// push on its channel), made once per event and codec. `None` for a control event.
    ///
    /// A user stream's message is a publication of the personal channel `#<user>` when
    /// `personal` (`[centrifuge] personal_channel`), else a `message` push. `personal` is the
    /// node's setting, the same for every connection, so the cached bytes fit them all.
    pub fn message_push(self, shared: &Shared, personal: bool) -> Option<&Bytes> {
        if !matches!(shared.event(), Event::Message(_) | Event::Publication(_)) {
            return None;
        }
        let wire = match self {
            Codec::Json => Wire::CentrifugeJson,
            Codec::Protobuf => Wire::CentrifugeProtobuf,
        };
        Some(shared.encoded(wire, |e| self.push_of(e, personal)))
    }

    fn push_of(self, event: &Event, personal: bool) -> Bytes {
        let (channel, data, offset) = match event {
            Event::Message(m) => (None, message_object(m), 0),
            Event::Publication(p) if !personal && !stream::is_topic(&p.topic) => {
                (None, message_object(&p.message), 0)
            }
            Event::Publication(p) => (Some(&*p.topic), message_object(&p.message), p.offset),
            _ => return Bytes::new(),
        };
        match (self, channel) {
            (Codec::Json, None) => {
                let mut b = Vec::with_capacity(data.len() + 32);
                b.extend_from_slice(b"{\"push\":{\"message\":{\"data\":");
                b.extend_from_slice(&data);
                b.extend_from_slice(b"}}}");
                Bytes::from(b)
            }
            (Codec::Json, Some(topic)) => {
                let channel = serde_json::Value::from(topic).to_string();
                let mut b = Vec::with_capacity(data.len() + channel.len() + 64);
                b.extend_from_slice(b"{\"push\":{\"channel\":");
                b.extend_from_slice(channel.as_bytes());
                b.extend_from_slice(b",\"pub\":{\"data\":");
                b.extend_from_slice(&data);
                b.extend_from_slice(format!(",\"offset\":{offset}}}}}}}").as_bytes());
                Bytes::from(b)
            }
            (Codec::Protobuf, channel) => {
                let data = Bytes::from(data);
                let push = match channel {
                    None => Push {
                        message: Some(Message { data }),
                        ..Default::default()
                    },
                    Some(t) => Push {
                        channel: t.to_owned(),
                        publication: Some(Publication { data, offset }),
                        ..Default::default()
                    },
                };
                self.encode(&Reply {
                    push: Some(push),
                    ..Default::default()
                })
            }
        }
    }
}

fn too_many() -> DecodeError {
    DecodeError(format!(
        "more than {MAX_COMMANDS_PER_FRAME} commands in one frame"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::centrifuge::wire::{ConnectRequest, SubscribeRequest};
    use crate::core::event::{Publication, SharedEvent};
    use crate::core::message::{validate, MessageInput};

    fn message(topic: Option<&str>) -> SharedEvent {
        let input = MessageInput {
            kind: "chat",
            payload_json: r#"{"text":"hi"}"#,
            id: "",
        };
        let m = validate("message", input, 1000)
            .unwrap()
            .to_message("m1", 7);
        Shared::new(match topic {
            None => Event::Message(m),
            Some(topic) => Event::Publication(Publication {
                topic: topic.into(),
                offset: 42,
                epoch: "e1".into(),
                message: m,
            }),
        })
    }

    #[test]
    fn json_commands_one_per_line_unknown_fields_ignored() {
        let frame = b"{\"id\":1,\"connect\":{\"token\":\"t\",\"name\":\"js\",\"headers\":{}}}\n\
            {\"id\":2,\"subscribe\":{\"channel\":\"news\",\"flag\":1,\"recover\":true,\"offset\":5,\"epoch\":\"e\"}}\n{}";
        let cmds = Codec::Json.decode(frame, false).unwrap();
        assert_eq!(cmds.len(), 3);
        assert_eq!(cmds[0].connect.as_ref().unwrap().token, "t");
        let s = cmds[1].subscribe.as_ref().unwrap();
        assert_eq!(
            (s.channel.as_str(), s.recover, s.offset, s.epoch.as_str()),
            ("news", true, 5, "e")
        );
        assert_eq!(cmds[2], Command::default());
        assert!(Codec::Json.decode(b"", false).is_err());
        assert!(Codec::Json.decode(b"{\"id\":1", false).is_err());
        assert!(Codec::Json.decode(b"{}", true).is_err());
        assert!(Codec::Json.decode(b"[]", false).is_err());
    }

    #[test]
    fn protobuf_commands_are_length_delimited() {
        let a = Command {
            id: 1,
            connect: Some(ConnectRequest {
                token: "t".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let b = Command {
            id: 2,
            subscribe: Some(SubscribeRequest {
                channel: "news".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut frame = a.encode_length_delimited_to_vec();
        frame.extend(b.encode_length_delimited_to_vec());
        assert_eq!(Codec::Protobuf.decode(&frame, true).unwrap(), vec![a, b]);
        assert!(Codec::Protobuf
            .decode(&frame[..frame.len() - 1], true)
            .is_err());
        assert!(Codec::Protobuf.decode(&frame, false).is_err());
        // A pong: one empty message.
        assert_eq!(
            Codec::Protobuf.decode(&[0], true).unwrap(),
            vec![Command::default()]
        );
    }

    #[test]
    fn json_pushes_carry_the_message_object() {
        let direct = message(None);
        assert_eq!(
            Codec::Json.message_push(&direct, false).unwrap().as_ref(),
            br#"{"push":{"message":{"data":{"type":"chat","payload":{"text":"hi"},"id":"m1","ts":7}}}}"#
        );
        let publication = message(Some("news"));
        assert_eq!(
            Codec::Json.message_push(&publication, false).unwrap().as_ref(),
            br#"{"push":{"channel":"news","pub":{"data":{"type":"chat","payload":{"text":"hi"},"id":"m1","ts":7},"offset":42}}}"#
        );
        // Made once: the second call returns the same bytes.
        let a = Codec::Json
            .message_push(&publication, false)
            .unwrap()
            .as_ptr();
        assert_eq!(
            a,
            Codec::Json
                .message_push(&publication, false)
                .unwrap()
                .as_ptr()
        );
        let control = Shared::new(Event::Unsubscribed {
            topic: "news".into(),
            reference: None,
        });
        assert!(Codec::Json.message_push(&control, false).is_none());
    }

    #[test]
    fn protobuf_pushes_decode_to_the_same_content() {
        #[derive(Clone, PartialEq, prost::Message)]
        struct P {
            #[prost(message, optional, tag = "4")]
            push: Option<Q>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct Q {
            #[prost(string, tag = "2")]
            channel: String,
            #[prost(message, optional, tag = "4")]
            publication: Option<R>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct R {
            #[prost(bytes = "vec", tag = "4")]
            data: Vec<u8>,
            #[prost(uint64, tag = "6")]
            offset: u64,
        }
        let f = message(Some("news"));
        let mut bytes = Codec::Protobuf.message_push(&f, false).unwrap().clone();
        let got = P::decode_length_delimited(&mut bytes).unwrap();
        let q = got.push.unwrap();
        let r = q.publication.unwrap();
        assert_eq!((q.channel.as_str(), r.offset), ("news", 42));
        assert_eq!(
            r.data,
            br#"{"type":"chat","payload":{"text":"hi"},"id":"m1","ts":7}"#
        );
        assert_eq!(Codec::Protobuf.ping().as_ref(), &[0]);
    }
}
