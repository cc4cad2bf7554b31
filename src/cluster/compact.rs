//! The compact form of a message: Protobuf, the payload carried as the checked JSON bytes. It
//! is what crosses the cluster (`redis::wire`), what the Redis history stream keeps, and what
//! the memory engine's history keeps (one allocation per kept message, decoded again on a
//! replay). Pure; the field numbers are part of the stored format: keep them.

use bytes::Bytes;
use prost::Message as _;

use crate::core::event::Message;

#[derive(Clone, PartialEq, prost::Message)]
struct WireMessage {
    #[prost(string, tag = "1")]
    kind: String,
    #[prost(bytes = "bytes", tag = "2")]
    payload: Bytes,
    #[prost(string, tag = "3")]
    id: String,
    #[prost(int64, tag = "4")]
    ts_ms: i64,
}

/// A message in its compact form (exactly as long as it needs to be).
pub fn encode(m: &Message) -> Vec<u8> {
    WireMessage {
        kind: m.kind.to_string(),
        payload: m.payload.clone(),
        id: m.id.to_string(),
        ts_ms: m.ts_ms,
    }
    .encode_to_vec()
}

/// A message back from its compact form.
pub fn decode(bytes: &[u8]) -> Result<Message, String> {
    let w = WireMessage::decode(bytes).map_err(|e| e.to_string())?;
    // Made from checked JSON text, by this node or another; a payload that is not even UTF-8
    // could not be sent as a text frame.
    std::str::from_utf8(&w.payload).map_err(|_| "payload is not UTF-8".to_owned())?;
    Ok(Message {
        kind: w.kind.into(),
        payload: w.payload,
        id: w.id.into(),
        ts_ms: w.ts_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_exactly_sized_and_refuses_garbage() {
        let m = Message {
            kind: "order.updated".into(),
            payload: Bytes::from_static(br#"{"a":1}"#),
            id: "x".into(),
            ts_ms: -1,
        };
        let e = encode(&m);
        assert_eq!(e.len(), e.capacity(), "one exact allocation");
        assert_eq!(decode(&e).unwrap(), m);
        assert!(decode(&[0x0a, 0xff]).is_err());
        let bad_payload = WireMessage {
            kind: "t".into(),
            payload: Bytes::from_static(&[0xff]),
            id: String::new(),
            ts_ms: 0,
        };
        assert!(decode(&bad_payload.encode_to_vec()).is_err());
    }
}
