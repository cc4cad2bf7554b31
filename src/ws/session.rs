//! One WebSocket connection's task: first-frame authentication when the upgrade carried no
//! token, registration, then one loop that writes queued frames (coalesced: feed what the
//! queue holds, flush once), reads client frames, and closes when asked. No lock is held
//! across a socket write; the registry is touched only to register and unregister.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::SinkExt;

use crate::clock::{mono_ms, now_ms};
use crate::core::claims::Identity;
use crate::core::close::{
    GOING_AWAY as CLOSE_GOING_AWAY, RATE_LIMITED as CLOSE_RATE_LIMITED,
    TOO_LARGE as CLOSE_TOO_LARGE, TOO_MANY_BAD_FRAMES as CLOSE_TOO_MANY_BAD_FRAMES,
    TOO_MANY_CONNECTIONS as CLOSE_TOO_MANY_CONNECTIONS, TRY_AGAIN_LATER as CLOSE_TRY_AGAIN_LATER,
    UNAUTHORIZED as CLOSE_UNAUTHORIZED,
};
use crate::core::event::Wire;
use crate::core::native::{self, ClientFrame, ErrorCode};
use crate::core::rate::TokenBucket;
use crate::core::registry::Protocol;
use crate::core::stream::Resume;
use crate::core::topic;
use crate::core::topic_table::SubscribeRefused;
use crate::hub::{Admission, ConnectError, Hub, SubscribeError};
use crate::node::outbox::{Control, SharedEvent, WsOutbox};
use crate::node::refusals::Refusal;
use crate::node::WsConn;
use crate::websocket::socket::{
    close, error_code, lost, new_conn, next_data_frame, write, Ended, Peer, CLOSE_TIMEOUT,
};
use axum::extract::ws::Utf8Bytes;

/// The most frames taken from the queue for one flush.
const WRITE_BATCH: usize = 128;

/// Runs one connection to its end.
pub async fn run(
    mut socket: WebSocket,
    hub: Arc<Hub>,
    identity: Option<Identity>,
    resume: Option<Resume>,
    peer: Peer,
    _admitted: Admission,
) {
    let (identity, resume) = match identity {
        Some(identity) => (identity, resume),
        None => match Box::pin(first_frame_auth(&mut socket, &hub, &peer)).await {
            Some(authed) => authed,
            None => return,
        },
    };
    // With user streams off, a position to resume from means nothing (section 7).
    let resume = resume.filter(|_| hub.config.users.streams());
    let outbox = WsOutbox::new(hub.config.limits.send_queue);
    let conn = new_conn(&hub, identity, peer, Protocol::Native, outbox);
    let max_per_user = hub.config.limits.max_connections_per_user as usize;
    let start = match hub.connect(&conn, max_per_user, resume.as_ref()).await {
        Ok(start) => start,
        Err(e) => {
            let (code, close_code, reason, message) = match e {
                ConnectError::TooMany(_) => {
                    hub.metrics().handshake("too_many_connections");
                    (
                        ErrorCode::TooManyConnections,
                        CLOSE_TOO_MANY_CONNECTIONS,
                        "too many connections",
                        format!("this user already has {max_per_user} connections"),
                    )
                }
                ConnectError::Unavailable(why) => {
                    hub.metrics().handshake("cluster_unavailable");
                    (
                        ErrorCode::Unavailable,
                        CLOSE_TRY_AGAIN_LATER,
                        "try again later",
                        why,
                    )
                }
            };
            let reply = native::error(code, &message, None);
            if socket.send(Message::Text(reply.into())).await.is_ok() {
                close(&mut socket, close_code, reason).await;
            }
            return;
        }
    };
    let connected = native::connected(
        &conn.info.id,
        &conn.info.user_id,
        conn.expires_at_ms(),
        hub.config.limits.ping_interval_ms,
        start.as_ref(),
    );
    let ended = serve(&mut socket, &hub, &conn, connected).await;
    conn.outbox.finish();
    hub.disconnected(&conn, ended.code, &ended.reason);
}

/// Waits for `{"op":"auth","token":...[,"since":...]}` within `auth_timeout`. On failure
/// (a malformed `since` included), answers `unauthorized` and closes with 4001.
async fn first_frame_auth(
    socket: &mut WebSocket,
    hub: &Hub,
    peer: &Peer,
) -> Option<(Identity, Option<Resume>)> {
    let metrics = &hub.metrics();
    let wait = Duration::from_millis(hub.config.limits.auth_timeout_ms);
    let mut shutdown = hub.shutdown_signal();
    let first = tokio::select! {
        r = tokio::time::timeout(wait, next_data_frame(socket)) => r,
        _ = async { let _ = shutdown.wait_for(|down| *down).await; } => {
            close(socket, CLOSE_GOING_AWAY, "server shutting down").await;
            return None;
        }
    };
    let refusal = match first {
        Err(_) => {
            metrics.handshake("timeout");
            "authentication timed out".to_owned()
        }
        Ok(Err(code)) => {
            metrics.handshake("abandoned");
            if code == CLOSE_TOO_LARGE {
                close(socket, CLOSE_TOO_LARGE, "frame too large").await;
            }
            return None;
        }
        Ok(Ok(Message::Text(text))) => match native::parse(text.as_str()) {
            Ok(ClientFrame::Auth { token, since }) => match hub.auth.verify(&token).await {
                Ok(identity) => {
                    metrics.handshake("ok");
                    return Some((identity, since));
                }
                Err(e) => {
                    metrics.handshake(e.label());
                    e.to_string()
                }
            },
            Err(bad) if text.as_str().contains("\"auth\"") => {
                metrics.handshake("malformed");
                bad.message
            }
            _ => {
                metrics.handshake("missing");
                "the first frame must be {\"op\":\"auth\",\"token\":...}".to_owned()
            }
        },
        Ok(Ok(_)) => {
            metrics.handshake("missing");
            "the first frame must be {\"op\":\"auth\",\"token\":...}".to_owned()
        }
    };
    hub.refused(Refusal {
        what: "connection closed",
        code: CLOSE_UNAUTHORIZED,
        reason: &refusal,
        remote_addr: &peer.remote_addr,
        user_id: None,
    });
    let reply = native::error(ErrorCode::Unauthorized, &refusal, None);
    if socket.send(Message::Text(reply.into())).await.is_ok() {
        close(socket, CLOSE_UNAUTHORIZED, "unauthorized").await;
    }
    None
}

/// The connection loop.
async fn serve(socket: &mut WebSocket, hub: &Hub, conn: &Arc<WsConn>, connected: String) -> Ended {
    if let Err(ended) = write(socket, conn, [Message::Text(connected.into())]).await {
        return ended;
    }
    let limits = &hub.config.limits;
    let max_bad = limits.max_bad_frames;
    let mut bucket = TokenBucket::new(
        limits.client_rate,
        limits.client_rate.saturating_mul(2),
        mono_ms(),
    );
    let mut bad_frames = 0u32;
    let mut batch: Vec<SharedEvent> = Vec::new();
    loop {
        tokio::select! {
            biased;
            ctl = conn.outbox.control() => match ctl {
                Control::Close(req) => return close(socket, req.code, &req.reason).await,
                Control::Ping => {
                    if let Err(ended) = write(socket, conn, [Message::Ping(Default::default())]).await {
                        return ended;
                    }
                }
            },
            _ = conn.outbox.recv_many(&mut batch, WRITE_BATCH) => {
                let frames = batch.drain(..).map(|f| Message::Text(text_of(&f)));
                if let Err(ended) = write(socket, conn, frames).await {
                    return ended;
                }
            }
            msg = socket.recv() => {
                conn.touch(now_ms());
                if !bucket.take(mono_ms()) {
                    return close_now(hub, socket, conn, CLOSE_RATE_LIMITED, "rate limited").await;
                }
                let reply = match msg {
                    Some(Ok(Message::Text(text))) => Box::pin(on_text(hub, conn, text.as_str())).await,
                    Some(Ok(Message::Binary(_))) => Reply::Bad(native::error(
                        ErrorCode::BadRequest,
                        "binary frames are not supported; send JSON text frames",
                        None,
                    )),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Reply::None,
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = frame
                            .map(|f| (f.code, f.reason.to_string()))
                            .unwrap_or((1005, String::new()));
                        // Let tungstenite send its close reply, then end.
                        let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.flush()).await;
                        return Ended { code, reason };
                    }
                    Some(Err(e)) => match error_code(e) {
                        CLOSE_TOO_LARGE => {
                            return close_now(hub, socket, conn, CLOSE_TOO_LARGE, "frame too large").await;
                        }
                        _ => return lost("read failed"),
                    },
                    None => return lost("connection lost"),
                };
                let text = match reply {
                    Reply::None => continue,
                    Reply::Ok(text) => text,
                    Reply::Bad(text) => {
                        bad_frames += 1;
                        text
                    }
                };
                if let Err(ended) = write(socket, conn, [Message::Text(text.into())]).await {
                    return ended;
                }
                if bad_frames >= max_bad {
                    return close_now(hub, socket, conn, CLOSE_TOO_MANY_BAD_FRAMES, "too many bad frames").await;
                }
            }
        }
    }
}

/// The text message for a queued event: its native form, encoded once per event.
fn text_of(e: &SharedEvent) -> Utf8Bytes {
    let bytes = e.encoded(Wire::Native, native::event);
    // Our encoder writes UTF-8 (JSON of checked text); checked again by the type.
    Utf8Bytes::try_from(bytes.clone()).unwrap_or_default()
}

/// Takes the connection out of the registry at once, then runs the close handshake.
async fn close_now(
    hub: &Hub,
    socket: &mut WebSocket,
    conn: &WsConn,
    code: u16,
    reason: &str,
) -> Ended {
    hub.closed_by_session(conn, code, reason);
    close(socket, code, reason).await
}

enum Reply {
    None,
    Ok(String),
    /// A reply to a bad frame: it counts toward `max_bad_frames`.
    Bad(String),
}

async fn on_text(hub: &Hub, conn: &Arc<WsConn>, text: &str) -> Reply {
    match native::parse(text) {
        Ok(ClientFrame::Ping { reference }) => Reply::Ok(native::pong(reference.as_ref())),
        Ok(ClientFrame::Auth { .. }) => Reply::Bad(native::error(
            ErrorCode::BadRequest,
            "already authenticated; use refresh to change the token",
            None,
        )),
        Ok(ClientFrame::Refresh { token, reference }) => match hub.auth.verify(&token).await {
            Ok(id) if id.user_id == conn.info.user_id => {
                conn.set_expires_at_ms(id.expires_at_ms);
                Reply::Ok(native::refreshed(id.expires_at_ms, reference.as_ref()))
            }
            Ok(_) => Reply::Ok(native::error(
                ErrorCode::Unauthorized,
                "the token is for another user",
                reference.as_ref(),
            )),
            Err(e) => Reply::Ok(native::error(
                ErrorCode::Unauthorized,
                &e.to_string(),
                reference.as_ref(),
            )),
        },
        Ok(ClientFrame::Subscribe {
            topic,
            since,
            reference,
        }) => {
            let r = reference.as_ref();
            if let Err(e) = topic::validate_name("topic", &topic) {
                return Reply::Bad(native::error(ErrorCode::BadRequest, &e.to_string(), r));
            }
            if !hub.may_subscribe(conn, &topic) {
                let msg = format!("not allowed to subscribe to {topic:?}");
                return Reply::Ok(native::error(ErrorCode::Forbidden, &msg, r));
            }
            let max = hub.config.topics.max_subscriptions;
            match hub
                .subscribe(conn, &topic, since.as_ref(), r, max, false)
                .await
            {
                Ok(()) | Err(SubscribeError::Refused(SubscribeRefused::Closing)) => Reply::None,
                Err(SubscribeError::Refused(SubscribeRefused::TooMany)) => {
                    Reply::Ok(native::error(
                        ErrorCode::TooManySubscriptions,
                        &format!("this connection already has {max} subscriptions"),
                        r,
                    ))
                }
                Err(SubscribeError::Unavailable(why)) => {
                    Reply::Ok(native::error(ErrorCode::Unavailable, &why, r))
                }
            }
        }
        Ok(ClientFrame::Unsubscribe { topic, reference }) => {
            if let Err(e) = topic::validate_name("topic", &topic) {
                return Reply::Bad(native::error(
                    ErrorCode::BadRequest,
                    &e.to_string(),
                    reference.as_ref(),
                ));
            }
            hub.unsubscribe(conn, &topic, reference.as_ref());
            Reply::None
        }
        Err(bad) => Reply::Bad(native::error(
            ErrorCode::BadRequest,
            &bad.message,
            bad.reference.as_ref(),
        )),
    }
}
