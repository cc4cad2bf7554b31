//! Opaque page tokens for ListConnections: the position after which the next page starts,
//! a connection's (node id, sequence), so that a token made on one node pages on any other.
//! Clients must not parse them; the format is `base64url(version 2 ++ u64 big-endian ++ node
//! id bytes)`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

const VERSION: u8 = 2;

/// Encodes the position after which the next page starts.
pub fn encode(node: &str, after: u64) -> String {
    let mut raw = Vec::with_capacity(9 + node.len());
    raw.push(VERSION);
    raw.extend_from_slice(&after.to_be_bytes());
    raw.extend_from_slice(node.as_bytes());
    URL_SAFE_NO_PAD.encode(raw)
}

/// Decodes a token made by [`encode`]; `None` for anything else.
pub fn decode(token: &str) -> Option<(String, u64)> {
    let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
    let (&version, rest) = raw.split_first()?;
    if version != VERSION || rest.len() < 9 {
        return None;
    }
    let (seq, node) = rest.split_at(8);
    let node = std::str::from_utf8(node).ok()?;
    if crate::core::ids::validate_node_id(node).is_err() {
        return None;
    }
    Some((node.to_owned(), u64::from_be_bytes(seq.try_into().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        for v in [0, 1, 0xdead_beef, u64::MAX] {
            assert_eq!(decode(&encode("node-1", v)), Some(("node-1".into(), v)));
        }
        for bad in [
            "",
            "abc",
            "!!!",
            &URL_SAFE_NO_PAD.encode([2u8; 9]),
            &URL_SAFE_NO_PAD.encode([1u8; 12]),
            &URL_SAFE_NO_PAD.encode([2u8; 5]),
        ] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
