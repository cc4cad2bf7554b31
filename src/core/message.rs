//! Application messages: validation of what a backend sends, and encoding to the one JSON text
//! frame every recipient gets. A message is validated and encoded once; the resulting bytes
//! are shared by all of its recipients.

use serde::Serialize;
use serde_json::value::RawValue;

use super::CoreError;

/// A message as a backend submitted it, before validation.
#[derive(Debug, Clone, Copy)]
pub struct MessageInput<'a> {
    pub kind: &'a str,
    pub payload_json: &'a str,
    pub id: &'a str,
}

/// Where a topic publication sits in its topic's history (added to the frame).
#[derive(Debug, Clone, Copy)]
pub struct TopicPosition<'a> {
    pub topic: &'a str,
    pub offset: u64,
    pub epoch: &'a str,
}

/// The longest `type`, in characters.
pub const MAX_TYPE_LEN: usize = 128;
/// The longest caller-chosen `id`, in characters.
pub const MAX_ID_LEN: usize = 64;

/// Checks a message type: 1..128 characters of `[A-Za-z0-9._:-]`.
pub fn validate_type(field: &str, kind: &str) -> Result<(), CoreError> {
    if kind.is_empty() {
        return Err(CoreError::invalid(field, "is required"));
    }
    if kind.len() > MAX_TYPE_LEN {
        return Err(CoreError::invalid(
            field,
            format!("is longer than {MAX_TYPE_LEN} characters"),
        ));
    }
    if let Some(c) = kind
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(CoreError::invalid(
            field,
            format!("contains {c:?}; allowed are A-Z a-z 0-9 . _ : -"),
        ));
    }
    Ok(())
}

/// A validated message, ready to encode. `payload` borrows the caller's JSON text.
#[derive(Debug)]
pub struct ValidMessage<'a> {
    pub kind: &'a str,
    pub payload: &'a RawValue,
    /// The caller's id, or `None` when the server must make one.
    pub id: Option<&'a str>,
}

/// Validates a message; `prefix` is how the caller names it (`message`), so errors read
/// `message.payload_json: ...`.
pub fn validate<'a>(
    prefix: &str,
    input: MessageInput<'a>,
    max_payload_bytes: usize,
) -> Result<ValidMessage<'a>, CoreError> {
    validate_type(&format!("{prefix}.type"), input.kind)?;
    let payload_field = || format!("{prefix}.payload_json");
    if input.payload_json.len() > max_payload_bytes {
        return Err(CoreError::invalid(
            payload_field(),
            format!(
                "is {} bytes, over the limit of {max_payload_bytes}",
                input.payload_json.len()
            ),
        ));
    }
    let payload: &RawValue = if input.payload_json.trim().is_empty() {
        null_payload()
    } else {
        let raw: &RawValue = serde_json::from_str(input.payload_json)
            .map_err(|e| CoreError::invalid(payload_field(), format!("is not valid JSON: {e}")))?;
        if let Some(at) = lone_surrogate(raw.get()) {
            return Err(CoreError::invalid(
                payload_field(),
                format!("has a \\u escape of a lone UTF-16 surrogate at byte {at} (not Unicode text; strict JSON parsers refuse it)"),
            ));
        }
        raw
    };
    let id = if input.id.is_empty() {
        None
    } else {
        let chars = input.id.chars().count();
        if chars > MAX_ID_LEN {
            return Err(CoreError::invalid(
                format!("{prefix}.id"),
                format!("is {chars} characters, over the limit of {MAX_ID_LEN}"),
            ));
        }
        Some(input.id)
    };
    Ok(ValidMessage {
        kind: input.kind,
        payload,
        id,
    })
}

/// The byte position of a `\uD800`..`\uDFFF` escape that is not part of a high-low pair, if
/// any. `text` is already known to be valid JSON, so every `\` is inside a string and starts an
/// escape.
fn lone_surrogate(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    let hex = |at: usize| -> Option<u16> { u16::from_str_radix(text.get(at..at + 4)?, 16).ok() };
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        if b.get(i + 1) != Some(&b'u') {
            i += 2; // a two-character escape such as \n or \\
            continue;
        }
        let unit = hex(i + 2)?;
        match unit {
            0xD800..=0xDBFF => {
                let low = (b.get(i + 6) == Some(&b'\\') && b.get(i + 7) == Some(&b'u'))
                    .then(|| hex(i + 8))
                    .flatten();
                match low {
                    Some(0xDC00..=0xDFFF) => i += 12,
                    _ => return Some(i),
                }
            }
            0xDC00..=0xDFFF => return Some(i),
            _ => i += 6,
        }
    }
    None
}

fn null_payload() -> &'static RawValue {
    // "null" is valid JSON, so this parse cannot fail; the literal lives for 'static.
    serde_json::from_str("null").expect("\"null\" is valid JSON")
}

#[derive(Serialize)]
struct AppFrame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    payload: &'a RawValue,
    id: &'a str,
    ts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<&'a str>,
}

/// Encodes the frame a recipient gets:
/// `{"type":...,"payload":...,"id":...,"ts":...[,"topic":...,"offset":...,"epoch":...]}`.
pub fn encode(
    msg: &ValidMessage<'_>,
    id: &str,
    ts_ms: i64,
    pos: Option<TopicPosition<'_>>,
) -> String {
    let frame = AppFrame {
        kind: msg.kind,
        payload: msg.payload,
        id,
        ts: ts_ms,
        topic: pos.map(|p| p.topic),
        offset: pos.map(|p| p.offset),
        epoch: pos.map(|p| p.epoch),
    };
    // Serializing borrowed strings, integers and an already-validated RawValue into a String
    // has no failure path.
    serde_json::to_string(&frame).expect("frame serialization cannot fail")
}

/// What a publication frame encoded with offset 0 and an empty epoch ends with.
const UNPOSITIONED_TAIL: &str = "0,\"epoch\":\"\"}";

/// The part of a publication frame before its offset: `frame` is the frame encoded with
/// offset 0 and an empty epoch. A store that assigns offsets elsewhere (the cluster's script)
/// completes it with [`complete_position`].
pub fn position_prefix(frame: &str) -> Option<&str> {
    frame.strip_suffix(UNPOSITIONED_TAIL)
}

/// Completes a frame from its [`position_prefix`], an offset and an epoch (the same
/// concatenation the cluster's publish script does).
pub fn complete_position(prefix: &str, offset: u64, epoch: &str) -> String {
    format!("{prefix}{offset},\"epoch\":\"{epoch}\"}}")
}

#[derive(serde::Deserialize)]
struct Position<'a> {
    #[serde(borrow)]
    topic: Option<std::borrow::Cow<'a, str>>,
    offset: Option<u64>,
    #[serde(borrow)]
    epoch: Option<std::borrow::Cow<'a, str>>,
}

/// Takes an encoded message frame apart (see [`crate::core::frame::MessageHead`]): the message
/// object without the topic position that [`encode`] appends, and that position. `None` when
/// `frame` is not a message frame.
pub fn head(frame: &bytes::Bytes) -> Option<crate::core::frame::MessageHead> {
    use crate::core::frame::MessageHead;
    let pos: Position<'_> = serde_json::from_slice(frame).ok()?;
    let (Some(topic), Some(offset)) = (pos.topic, pos.offset) else {
        return Some(MessageHead {
            data: frame.clone(),
            topic: None,
            offset: 0,
        });
    };
    let epoch = pos.epoch.unwrap_or_default();
    // The tail encode() wrote: `,"topic":<topic>,"offset":<n>,"epoch":<epoch>}`.
    let tail = format!(
        ",\"topic\":{},\"offset\":{offset},\"epoch\":{}}}",
        serde_json::Value::from(topic.as_ref()),
        serde_json::Value::from(epoch.as_ref())
    );
    let data = if frame.ends_with(tail.as_bytes()) {
        let mut d = Vec::with_capacity(frame.len() - tail.len() + 1);
        d.extend_from_slice(&frame[..frame.len() - tail.len()]);
        d.push(b'}');
        bytes::Bytes::from(d)
    } else {
        // Not our encoder's layout (cannot happen for frames this server made): re-encode.
        let back: ReadBack<'_> = serde_json::from_slice(frame).ok()?;
        let msg = ValidMessage {
            kind: &back.kind,
            payload: back.payload,
            id: None,
        };
        bytes::Bytes::from(encode(&msg, &back.id, back.ts, None))
    };
    Some(MessageHead {
        data,
        topic: Some(topic.into()),
        offset,
    })
}

/// The message object of a kept publication (for history replies).
pub fn object(kind: &str, payload_json: &str, id: &str, ts_ms: i64) -> String {
    let payload: &RawValue = serde_json::from_str(payload_json).unwrap_or_else(|_| null_payload());
    let msg = ValidMessage {
        kind,
        payload,
        id: None,
    };
    encode(&msg, id, ts_ms, None)
}

/// A publication frame read back (for the History RPC).
#[derive(Debug, serde::Deserialize)]
pub struct ReadBack<'a> {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(borrow)]
    pub payload: &'a RawValue,
    pub id: String,
    pub ts: i64,
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_positioned_frame_splits_and_completes() {
        let m = validate("message", input("t", "[1]", ""), 100).unwrap();
        let pos = |offset, epoch| TopicPosition {
            topic: "a:b",
            offset,
            epoch,
        };
        let template = encode(&m, "m", 5, Some(pos(0, "")));
        let prefix = position_prefix(&template).unwrap();
        assert_eq!(
            complete_position(prefix, 12, "ab12"),
            encode(&m, "m", 5, Some(pos(12, "ab12")))
        );
        let back: ReadBack<'_> = serde_json::from_str(&template).unwrap();
        assert_eq!(
            (back.kind.as_str(), back.payload.get(), back.ts),
            ("t", "[1]", 5)
        );
        assert_eq!(position_prefix(&encode(&m, "m", 5, None)), None);
    }

    use super::*;

    fn input<'a>(kind: &'a str, payload: &'a str, id: &'a str) -> MessageInput<'a> {
        MessageInput {
            kind,
            payload_json: payload,
            id,
        }
    }

    #[test]
    fn a_frame_comes_apart_into_the_message_object_and_its_position() {
        let m = validate("message", input("t", r#"{"a":"\",\"topic\":1"}"#, ""), 100).unwrap();
        let pos = TopicPosition {
            topic: "a:b",
            offset: 12,
            epoch: "e1",
        };
        let plain = encode(&m, "m", 5, None);
        let publication = bytes::Bytes::from(encode(&m, "m", 5, Some(pos)));
        let h = head(&publication).unwrap();
        assert_eq!(std::str::from_utf8(&h.data).unwrap(), plain);
        assert_eq!((h.topic.as_deref(), h.offset), (Some("a:b"), 12));
        let direct = head(&bytes::Bytes::from(plain.clone())).unwrap();
        assert_eq!(
            (direct.data.as_ref(), direct.topic),
            (plain.as_bytes(), None)
        );
        assert_eq!(object("t", r#"{"a":"\",\"topic\":1"}"#, "m", 5), plain);
        assert!(head(&bytes::Bytes::from_static(b"{")).is_none());
    }

    #[test]
    fn encodes_the_documented_frame() {
        let m = validate("message", input("order.updated", r#"{"n":1}"#, ""), 100).unwrap();
        assert_eq!(m.id, None);
        assert_eq!(
            encode(&m, "m1", 42, None),
            r#"{"type":"order.updated","payload":{"n":1},"id":"m1","ts":42}"#
        );
        let pos = TopicPosition {
            topic: "orders:42",
            offset: 7,
            epoch: "e",
        };
        assert_eq!(
            encode(&m, "m1", 42, Some(pos)),
            r#"{"type":"order.updated","payload":{"n":1},"id":"m1","ts":42,"topic":"orders:42","offset":7,"epoch":"e"}"#
        );
    }

    #[test]
    fn empty_payload_is_null_and_scalars_pass() {
        let m = validate("message", input("t", "", "x"), 100).unwrap();
        assert_eq!(
            encode(&m, "x", 1, None),
            r#"{"type":"t","payload":null,"id":"x","ts":1}"#
        );
        for ok in ["1", "\"s\"", "true", "null", "[1,2]", " {} "] {
            validate("message", input("t", ok, ""), 100).unwrap();
        }
    }

    #[test]
    fn lone_surrogate_escapes_are_refused_and_pairs_pass() {
        let check = |payload: &str| validate("message", input("t", payload, ""), 1000).is_ok();
        assert!(!check(r#""\ud800""#), "a lone high surrogate");
        assert!(!check(r#""\udc00""#), "a lone low surrogate");
        assert!(
            !check(r#"["\ud83d x"]"#),
            "a high surrogate not followed by a low one"
        );
        assert!(
            !check(r#""\ud83d\u0041""#),
            "a high surrogate followed by a non-surrogate"
        );
        assert!(check(r#""\ud83d\ude00""#), "a pair (an emoji)");
        assert!(
            check(r#""\\ud800""#),
            "an escaped backslash, then the letters ud800"
        );
        assert!(check(r#"{"a":"\n\u0041\"\\"}"#));
        assert_eq!(lone_surrogate(r#""\ud800""#), Some(1));
        assert_eq!(lone_surrogate(r#"["ok","\ud800\ud800"]"#), Some(7));
    }

    #[test]
    fn strings_are_escaped() {
        let m = validate("message", input("t", "1", ""), 100).unwrap();
        assert_eq!(
            encode(&m, "a\"b\n", 1, None),
            r#"{"type":"t","payload":1,"id":"a\"b\n","ts":1}"#
        );
    }

    #[test]
    fn rejects_bad_fields_naming_them() {
        let err = |i| match validate("message", i, 10) {
            Err(CoreError::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        };
        assert_eq!(err(input("", "1", "")), "message.type");
        assert_eq!(err(input("a b", "1", "")), "message.type");
        let long_type = "x".repeat(129);
        assert_eq!(err(input(&long_type, "1", "")), "message.type");
        assert_eq!(err(input("t", "{", "")), "message.payload_json");
        assert_eq!(err(input("t", "1 2", "")), "message.payload_json");
        assert_eq!(err(input("t", "[1,2,3,4,5,6]", "")), "message.payload_json");
        let long_id = "i".repeat(65);
        assert_eq!(err(input("t", "1", &long_id)), "message.id");
        let (max_type, max_id) = ("x".repeat(128), "é".repeat(64));
        assert!(validate("message", input(&max_type, "1", &max_id), 10).is_ok());
    }

    #[test]
    fn deepest_nesting_the_size_limit_allows_does_not_crash() {
        // 64 KiB of brackets: the deepest payload the default limit lets through.
        let deep = "[".repeat(32_768) + &"]".repeat(32_768);
        let m = validate("message", input("t", &deep, ""), 65_536).unwrap();
        assert_eq!(
            encode(&m, "i", 1, None).len(),
            deep.len() + r#"{"type":"t","payload":,"id":"i","ts":1}"#.len()
        );
        let unbalanced = "[".repeat(32_768);
        assert!(validate("message", input("t", &unbalanced, ""), 65_536).is_err());
    }
}
