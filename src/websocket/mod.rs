//! What both WebSocket doors (the native `/ws` in `crate::ws` and the Centrifugo-compatible
//! endpoint in `crate::centrifuge`) share, below both: the checks every upgrade passes, the
//! socket's buffer sizes, and ([`socket`]) a connection's construction and the writing,
//! reading and closing of its socket. Neither door reaches into the other.

pub mod socket;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::core::origin;
use crate::hub::{Admission, Hub};

/// Bytes tungstenite reads per socket read. A push server reads little (pongs, small ops), and
/// every byte here is paid per connection (see docs/architecture.md).
pub const READ_BUFFER: usize = 512;

/// Frames are coalesced into this many bytes before a write to the socket.
pub const WRITE_BUFFER: usize = 4096;

/// The most a connection's write buffer may hold while its socket does not drain.
pub const MAX_WRITE_BUFFER: usize = 256 * 1024;

/// The checks every WebSocket upgrade passes first, on both endpoints: the node is not
/// shutting down (503) and the Origin is allowed (403). Returns the refusal, if any.
pub fn gate(hub: &Hub, remote: SocketAddr, headers: &HeaderMap) -> Option<Response> {
    if hub.is_shutting_down() {
        return Some(json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server is shutting down",
        ));
    }
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if !origin::allowed(origin, host, &hub.config.http.allowed_origins) {
        hub.metrics().handshake("origin_refused");
        refused_upgrade(hub, remote, 403, "Origin not allowed", None);
        return Some(json_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this Origin may not open WebSockets here (see http.allowed_origins)",
        ));
    }
    None
}

/// Logs a refused upgrade (see `node::refusals`): the HTTP status, why, who.
pub fn refused_upgrade(
    hub: &Hub,
    remote: SocketAddr,
    status: u16,
    reason: &str,
    user_id: Option<&str>,
) {
    hub.refused(crate::node::refusals::Refusal {
        what: "upgrade refused",
        code: status,
        reason,
        remote_addr: &remote.to_string(),
        user_id,
    });
}

/// A place under the node's connection cap (counted as `node_full` when there is none).
pub fn admit(hub: &Arc<Hub>) -> Option<Admission> {
    let a = hub.admit();
    if a.is_none() {
        hub.metrics().handshake("node_full");
    }
    a
}

/// The answer to an upgrade the node has no room for.
pub fn node_full() -> Response {
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "this node is full; try another",
    )
}

/// What the upgrade request says about the client.
pub fn peer(remote: std::net::SocketAddr, headers: &HeaderMap) -> socket::Peer {
    socket::Peer {
        remote_addr: remote.to_string(),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect())
            .unwrap_or_default(),
    }
}

/// The socket's buffers and size limits (the same on both endpoints).
pub fn configure(ws: WebSocketUpgrade, hub: &Hub) -> WebSocketUpgrade {
    let max = hub.config.limits.max_frame_bytes;
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_frame_size(max)
        .max_message_size(max)
}

/// `{"error": code, "message": ...}` with a status.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": code, "message": message}).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
