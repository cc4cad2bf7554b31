//! The encoded frame: one JSON text, made once and shared (behind an `Arc`) by every
//! recipient on this node, whichever door or broker carried it. Pure bytes: no socket type
//! here; the WebSocket door turns it into its own text message when it writes.

use std::sync::Arc;

use bytes::Bytes;

/// One encoded JSON text frame. Always valid UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    text: Bytes,
}

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
        Some(Frame { text: bytes })
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
