//! Application messages: validation of what a backend sends, once, into the [`Message`] every
//! layer carries. Each door encodes it for its protocol (the native form is in
//! [`super::native`]), once per message and protocol.

use bytes::Bytes;
use serde_json::value::RawValue;

use super::event::Message;
use super::CoreError;

/// A message as a backend submitted it, before validation.
#[derive(Debug, Clone, Copy)]
pub struct MessageInput<'a> {
    pub kind: &'a str,
    pub payload_json: &'a str,
    pub id: &'a str,
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

impl ValidMessage<'_> {
    /// The message as every layer carries it, with its id (the caller's, or one the server
    /// made) and the time it was accepted.
    pub fn to_message(&self, id: &str, ts_ms: i64) -> Message {
        Message {
            kind: self.kind.into(),
            payload: Bytes::copy_from_slice(self.payload.get().as_bytes()),
            id: id.into(),
            ts_ms,
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn input<'a>(kind: &'a str, payload: &'a str, id: &'a str) -> MessageInput<'a> {
        MessageInput {
            kind,
            payload_json: payload,
            id,
        }
    }

    #[test]
    fn empty_payload_is_null_and_scalars_pass() {
        let m = validate("message", input("t", "", "x"), 100).unwrap();
        assert_eq!(m.to_message("x", 1).payload.as_ref(), b"null");
        let padded = validate("message", input("t", " {} ", ""), 100).unwrap();
        assert_eq!(padded.to_message("s", 1).payload.as_ref(), b"{}");
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
        assert_eq!(m.to_message("i", 1).payload.len(), deep.len());
        let unbalanced = "[".repeat(32_768);
        assert!(validate("message", input("t", &unbalanced, ""), 65_536).is_err());
    }
}
