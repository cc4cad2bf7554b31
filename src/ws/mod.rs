//! The WebSocket door: `GET /ws` authenticates the upgrade and hands the socket to a
//! [`session`] task. It only translates between frames and the hub; it decides nothing about
//! who receives what.

pub mod outbox;
pub mod session;

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::core::claims::AuthError;
use crate::core::{origin, token};
use crate::hub::{Admission, Hub};
use crate::tls::PeerAddr;

/// Bytes tungstenite reads per socket read. A push server reads little (pongs, small ops), and
/// every byte here is paid per connection (see docs/architecture.md).
pub const READ_BUFFER: usize = 512;
/// Frames are coalesced into this many bytes before a write to the socket.
pub const WRITE_BUFFER: usize = 4096;
/// The most a connection's write buffer may hold while its socket does not drain.
pub const MAX_WRITE_BUFFER: usize = 256 * 1024;

/// `GET /ws`.
pub async fn upgrade(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(PeerAddr(remote)): ConnectInfo<PeerAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(refused) = gate(&hub, &headers) {
        return refused;
    }
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let token = match token::extract(query.as_deref(), authorization) {
        Ok(t) => t,
        Err(e) => {
            hub.local().metrics.handshake("malformed");
            return json_error(StatusCode::UNAUTHORIZED, "unauthorized", &e.to_string());
        }
    };
    let identity = match token {
        Some(t) => match hub.auth.verify(&t).await {
            Ok(identity) => {
                hub.local().metrics.handshake("ok");
                Some(identity)
            }
            Err(e) => return refuse(&hub, &e),
        },
        None => None,
    };
    let max_per_user = hub.config.limits.max_connections_per_user as usize;
    if let Some(id) = &identity {
        if max_per_user > 0 && hub.local().registry.user_connections(&id.user_id) >= max_per_user {
            hub.local().metrics.handshake("too_many_connections");
            return json_error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                &format!("this user already has {max_per_user} connections"),
            );
        }
    }
    let Some(admission) = admit(&hub) else {
        return node_full();
    };
    let peer = peer(remote, &headers);
    configure(ws, &hub).on_upgrade(move |socket| {
        // Spawn rather than await here: awaiting would keep the upgrade future and the
        // session future alive together, a measured +2 KiB per connection.
        tokio::spawn(session::run(socket, hub, identity, peer, admission));
        std::future::ready(())
    })
}

/// The checks every WebSocket upgrade passes first, on both endpoints: the node is not
/// shutting down (503) and the Origin is allowed (403). Returns the refusal, if any.
pub fn gate(hub: &Hub, headers: &HeaderMap) -> Option<Response> {
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
        hub.local().metrics.handshake("origin_refused");
        return Some(json_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this Origin may not open WebSockets here (see http.allowed_origins)",
        ));
    }
    None
}

/// A place under the node's connection cap (counted as `node_full` when there is none).
pub fn admit(hub: &Arc<Hub>) -> Option<Admission> {
    let a = hub.admit();
    if a.is_none() {
        hub.local().metrics.handshake("node_full");
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
pub fn peer(remote: std::net::SocketAddr, headers: &HeaderMap) -> session::Peer {
    session::Peer {
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

fn refuse(hub: &Hub, e: &AuthError) -> Response {
    hub.local().metrics.handshake(e.label());
    json_error(StatusCode::UNAUTHORIZED, "unauthorized", &e.to_string())
}

/// `{"error": code, "message": ...}` with a status.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": code, "message": message}).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
