//! The WebSocket door: `GET /ws` authenticates the upgrade and hands the socket to a
//! [`session`] task. It only translates between frames and the hub; it decides nothing about
//! who receives what.

pub mod session;

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;

use crate::core::claims::AuthError;
use crate::core::{stream, token};
use crate::hub::Hub;
use crate::tls::PeerAddr;
use crate::websocket::{admit, configure, gate, json_error, node_full, peer, refused_upgrade};

/// `GET /ws`.
pub async fn upgrade(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(PeerAddr(remote)): ConnectInfo<PeerAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(refused) = gate(&hub, remote, &headers) {
        return refused;
    }
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let token = match token::extract(query.as_deref(), authorization) {
        Ok(t) => t,
        Err(e) => {
            hub.metrics().handshake("malformed");
            refused_upgrade(&hub, remote, 401, &e.to_string(), None);
            return json_error(StatusCode::UNAUTHORIZED, "unauthorized", &e.to_string());
        }
    };
    // A position to resume from is checked before the token is (a malformed one is the
    // client's bug whatever its token), and only with user streams on (else it is ignored).
    let resume = if hub.config.users.streams() {
        match stream::resume_from_query(query.as_deref()) {
            Ok(r) => r,
            Err(e) => {
                hub.metrics().handshake("malformed");
                refused_upgrade(&hub, remote, 400, &e.to_string(), None);
                return json_error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string());
            }
        }
    } else {
        None
    };
    let identity = match token {
        Some(t) => match hub.auth.verify(&t).await {
            Ok(identity) => {
                hub.metrics().handshake("ok");
                Some(identity)
            }
            Err(e) => return refuse(&hub, remote, &e),
        },
        None => None,
    };
    let max_per_user = hub.config.limits.max_connections_per_user as usize;
    if let Some(id) = &identity {
        if max_per_user > 0 && hub.user_connections(&id.user_id) >= max_per_user {
            hub.metrics().handshake("too_many_connections");
            let why = format!("this user already has {max_per_user} connections");
            refused_upgrade(&hub, remote, 429, &why, Some(&id.user_id));
            return json_error(StatusCode::TOO_MANY_REQUESTS, "too_many_connections", &why);
        }
    }
    let Some(admission) = admit(&hub) else {
        return node_full();
    };
    let peer = peer(remote, &headers);
    configure(ws, &hub).on_upgrade(move |socket| {
        // Spawn rather than await here: awaiting would keep the upgrade future and the
        // session future alive together, a measured +2 KiB per connection.
        tokio::spawn(session::run(socket, hub, identity, resume, peer, admission));
        std::future::ready(())
    })
}

fn refuse(hub: &Hub, remote: std::net::SocketAddr, e: &AuthError) -> Response {
    hub.metrics().handshake(e.label());
    refused_upgrade(hub, remote, 401, &e.to_string(), None);
    json_error(StatusCode::UNAUTHORIZED, "unauthorized", &e.to_string())
}
