//! Opaque page tokens for ListConnections: the position after which the next page starts.
//! Clients must not parse them; the format is `base64url(version byte 1 ++ u64 big-endian)`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

const VERSION: u8 = 1;

/// Encodes the position after which the next page starts.
pub fn encode(after: u64) -> String {
    let mut raw = [0u8; 9];
    raw[0] = VERSION;
    raw[1..].copy_from_slice(&after.to_be_bytes());
    URL_SAFE_NO_PAD.encode(raw)
}

/// Decodes a token made by [`encode`]; `None` for anything else.
pub fn decode(token: &str) -> Option<u64> {
    let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
    let (&version, rest) = raw.split_first()?;
    if version != VERSION {
        return None;
    }
    Some(u64::from_be_bytes(rest.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        for v in [0, 1, 0xdead_beef, u64::MAX] {
            assert_eq!(decode(&encode(v)), Some(v));
        }
        for bad in [
            "",
            "abc",
            "!!!",
            &URL_SAFE_NO_PAD.encode([2u8; 9]),
            &URL_SAFE_NO_PAD.encode([1u8; 5]),
        ] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
