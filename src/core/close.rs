//! Every WebSocket close code the server sends, in one table, and how each reads on the
//! Centrifugo-compatible endpoint. Pure: codes and reasons only.
//!
//! The native endpoint sends these codes as they are (docs/protocol.md). The Centrifugo SDKs
//! decide from the code whether to reconnect (3000-3499 and 4000-4499 reconnect, 3500-3999 and
//! 4500-4999 stop) and need a non-empty, non-JSON reason; [`centrifuge`] translates.

/// RFC 6455: the server is going away (shutdown).
pub const GOING_AWAY: u16 = 1001;
/// RFC 6455: a frame over `max_frame_bytes`.
pub const TOO_LARGE: u16 = 1009;
/// RFC 6455: try again later (the cluster broker could not be reached at connect).
pub const TRY_AGAIN_LATER: u16 = 1013;
/// What a connection that ends without a close frame is recorded with (never sent).
pub const ABNORMAL: u16 = 1006;
/// The Disconnect RPC's default code.
pub const DISCONNECTED: u16 = 4000;
/// No valid token (first-frame auth), or the token's `exp` passed without a refresh.
pub const UNAUTHORIZED: u16 = 4001;
/// The token's `exp` (plus leeway) passed: the same code as [`UNAUTHORIZED`].
pub const TOKEN_EXPIRED: u16 = UNAUTHORIZED;
/// The connection's send queue overflowed.
pub const SLOW_CONSUMER: u16 = 4008;
/// Client frames arrived faster than `client_rate`.
pub const RATE_LIMITED: u16 = 4029;
/// `max_bad_frames` bad frames.
pub const TOO_MANY_BAD_FRAMES: u16 = 4400;
/// No pong (or any frame) within `pong_timeout_ms` of a ping.
pub const HEARTBEAT_LOST: u16 = 4408;
/// Addition to the contract: a first-frame-authenticated connection over
/// `max_connections_per_user` (an upgrade with its token in the URL or header gets HTTP 429).
pub const TOO_MANY_CONNECTIONS: u16 = 4429;

/// The reason sent with [`TOKEN_EXPIRED`] by the sweeper.
pub const REASON_TOKEN_EXPIRED: &str = "token expired";

/// Whether a close the server decided on is one an operator may be asked about ("why was I
/// refused?"): a token refused or expired, the client's rate, bad frames, a missed heartbeat,
/// on either endpoint. These are logged (see `node::refusals`).
pub fn is_refusal(code: u16) -> bool {
    use centrifuge_codes as c;
    matches!(
        code,
        UNAUTHORIZED
            | RATE_LIMITED
            | TOO_MANY_BAD_FRAMES
            | HEARTBEAT_LOST
            | c::EXPIRED
            | c::INVALID_TOKEN
            | c::TOO_MANY_REQUESTS
            | c::BAD_REQUEST
            | c::NO_PONG
            | c::STALE
    )
}

/// Centrifugo protocol codes used on that endpoint only.
pub mod centrifuge_codes {
    pub const SHUTDOWN: u16 = 3001;
    pub const INTERNAL: u16 = 3004;
    pub const EXPIRED: u16 = 3005;
    pub const SLOW: u16 = 3008;
    pub const NO_PONG: u16 = 3012;
    pub const TOO_MANY_REQUESTS: u16 = 3013;
    pub const INVALID_TOKEN: u16 = 3500;
    pub const BAD_REQUEST: u16 = 3501;
    pub const STALE: u16 = 3502;
    pub const CONNECTION_LIMIT: u16 = 3504;
}

/// Where a close request came from: the server's own rules, or a backend's Disconnect call
/// (whose 4000-4999 code passes through unchanged on every endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Server,
    Backend,
}

/// The longest close reason (a close frame's payload is at most 125 bytes).
pub const MAX_REASON_BYTES: usize = 123;

/// The code and reason a Centrifugo SDK gets for a close the core asked for with `code` and
/// `reason`.
pub fn centrifuge(code: u16, reason: &str, origin: Origin) -> (u16, String) {
    use centrifuge_codes as c;
    if origin == Origin::Backend {
        return (code, sdk_reason(reason, "disconnected"));
    }
    let (code, fixed) = match code {
        GOING_AWAY => (c::SHUTDOWN, "shutdown"),
        TOKEN_EXPIRED => (c::EXPIRED, "connection expired"),
        SLOW_CONSUMER => (c::SLOW, "slow"),
        RATE_LIMITED => (c::TOO_MANY_REQUESTS, "too many requests"),
        TOO_MANY_BAD_FRAMES => (c::BAD_REQUEST, "bad request"),
        HEARTBEAT_LOST => (c::NO_PONG, "no pong"),
        TOO_MANY_CONNECTIONS => (c::CONNECTION_LIMIT, "connection limit"),
        TRY_AGAIN_LATER => (c::INTERNAL, "internal server error"),
        TOO_LARGE => (TOO_LARGE, "message size limit exceeded"),
        other => return (other, sdk_reason(reason, "connection closed")),
    };
    (code, fixed.to_owned())
}

/// A reason the SDKs read right: non-empty, not parseable as JSON (the JS SDK would take a JSON
/// reason for legacy reconnect advice), at most [`MAX_REASON_BYTES`].
pub fn sdk_reason(reason: &str, fallback: &str) -> String {
    let r = reason.trim();
    let mut out = if r.is_empty() {
        fallback.to_owned()
    } else if serde_json::from_str::<serde_json::Value>(r).is_ok() {
        format!("{fallback}: {r}")
    } else {
        r.to_owned()
    };
    if out.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_codes_map_to_what_the_sdks_expect() {
        let m = |code| centrifuge(code, "whatever", Origin::Server);
        assert_eq!(m(GOING_AWAY), (3001, "shutdown".into()));
        assert_eq!(m(TOKEN_EXPIRED), (3005, "connection expired".into()));
        assert_eq!(m(SLOW_CONSUMER), (3008, "slow".into()));
        assert_eq!(m(RATE_LIMITED), (3013, "too many requests".into()));
        assert_eq!(m(TOO_MANY_BAD_FRAMES), (3501, "bad request".into()));
        assert_eq!(m(HEARTBEAT_LOST), (3012, "no pong".into()));
    }

    #[test]
    fn backend_codes_pass_through_with_a_readable_reason() {
        assert_eq!(
            centrifuge(4001, "token expired", Origin::Backend),
            (4001, "token expired".into())
        );
        assert_eq!(
            centrifuge(4500, "", Origin::Backend),
            (4500, "disconnected".into())
        );
        assert_eq!(
            centrifuge(4000, "123", Origin::Backend),
            (4000, "disconnected: 123".into())
        );
        let long = "é".repeat(100);
        let (_, r) = centrifuge(4000, &long, Origin::Backend);
        assert!(r.len() <= MAX_REASON_BYTES && r.len() >= MAX_REASON_BYTES - 1);
    }
}
