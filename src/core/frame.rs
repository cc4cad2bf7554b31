//! The encoded frame: one JSON text, made once and shared (behind an `Arc`) by every
//! recipient on this node, whichever door or broker carried it. Pure bytes: no socket type
//! here; the WebSocket door turns it into its own text message when it writes.
//!
//! A frame also carries, made on first use and then shared the same way, its encodings for
//! the Centrifugo-compatible endpoint (JSON and Protobuf): a message is re-encoded once per
//! protocol per node, not once per recipient.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

/// One encoded JSON text frame. Always valid UTF-8.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    text: Bytes,
    /// Other encodings, made on first use (boxed: one pointer while unused).
    alt: OnceLock<Box<AltEncodings>>,
}

/// The encodings of one frame for another protocol, each made at most once.
#[derive(Debug, Clone, Default)]
pub struct AltEncodings {
    /// A message frame taken apart: `None` when the frame is not a message.
    pub head: OnceLock<Option<MessageHead>>,
    /// The JSON encoding (made only for message frames).
    pub json: OnceLock<Bytes>,
    /// The Protobuf encoding, likewise.
    pub protobuf: OnceLock<Bytes>,
}

/// A message frame taken apart: the message object alone (`{"type","payload","id","ts"}`)
/// and, for a topic publication, where it sits in its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageHead {
    pub data: Bytes,
    pub topic: Option<Box<str>>,
    pub offset: u64,
}

impl PartialEq for Frame {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Frame {}

/// The queue item: one pointer.
pub type SharedFrame = Arc<Frame>;

impl Frame {
    /// The frame's bytes (UTF-8 JSON).
    pub fn bytes(&self) -> &Bytes {
        &self.text
    }

    /// A frame from bytes that arrived from elsewhere (another node); `None` unless UTF-8.
    pub fn from_utf8(bytes: Bytes) -> Option<Frame> {
        std::str::from_utf8(&bytes).ok()?;
        Some(Frame {
            text: bytes,
            alt: OnceLock::new(),
        })
    }

    /// Whether this is an application message (`{"type":...}`, made by
    /// [`super::message::encode`], which always writes `type` first) rather than a control
    /// frame (`{"op":...}` and friends, whose keys never start with `type`).
    pub fn is_message(&self) -> bool {
        self.text.starts_with(b"{\"type\":")
    }

    /// This frame's other encodings (made empty on first call).
    pub fn alt(&self) -> &AltEncodings {
        self.alt.get_or_init(Box::default)
    }

    pub fn as_str(&self) -> &str {
        // Valid UTF-8 by construction (a String or a checked Bytes); never empty-on-error.
        std::str::from_utf8(&self.text).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

impl From<String> for Frame {
    fn from(s: String) -> Self {
        Frame {
            text: Bytes::from(s),
            alt: OnceLock::new(),
        }
    }
}

/// A shared frame from a string.
pub fn shared(s: String) -> SharedFrame {
    Arc::new(Frame::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_checked() {
        assert!(Frame::from_utf8(Bytes::from_static(b"{\"a\":1}")).is_some());
        assert!(Frame::from_utf8(Bytes::from_static(&[0xff, 0xfe])).is_none());
        assert_eq!(Frame::from("{}".to_owned()).as_str(), "{}");
    }
}
