//! One Centrifugo-protocol connection's task: the `connect` command (authentication, within
//! `auth_timeout_ms`), registration, then one loop like the native one: it writes what the
//! core queues (through the [`Translator`]), answers commands in order, sends protocol pings
//! when the sweeper asks, and closes with a code the SDKs read right. No lock is held across a
//! socket write; the registry is touched only to register and unregister.
//!
//! Replies keep command order: before each command, what the core has queued so far (the
//! replies of earlier subscribe and unsubscribe commands, which the core queues before it
//! returns) is translated first.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures_util::SinkExt;

use super::codec::Codec;
use super::command::{self, code, error_reply, Closing};
use super::translate::Translator;
use super::wire::{
    Command, ConnectResult, Publication as WirePublication, Reply, SubscribeRequest,
    SubscribeResult,
};
use crate::clock::{mono_ms, now_ms};
use crate::core::claims::{AuthError, Identity};
use crate::core::close::{self, centrifuge_codes as cc};
use crate::core::event::Event;
use crate::core::native::message_object;
use crate::core::rate::TokenBucket;
use crate::core::stream::{self, Resume};
use crate::hub::{Admission, ConnectError, Hub};
use crate::node::outbox::{Control, SharedEvent, WsOutbox};
use crate::node::refusals::Refusal;
use crate::node::WsConn;
use crate::websocket::socket::{
    close, error_code, lost, new_conn, next_data_frame, write, Ended, Peer, CLOSE_TIMEOUT,
};

/// The server version the connect and refresh replies name.
pub(super) const VERSION: &str = concat!("boundary-realtime ", env!("CARGO_PKG_VERSION"));
/// The most frames taken from the queue for one flush.
const WRITE_BATCH: usize = 128;
/// Connect commands answered 109 (token expired) before the socket is given up.
const MAX_CONNECT_ATTEMPTS: u32 = 3;

/// What the connect command brought.
struct Start {
    identity: Identity,
    id: u32,
    /// Where the personal channel resumes from (the connect command's `subs`).
    resume: Option<Resume>,
    rest: Vec<Command>,
}

/// Runs one connection to its end.
pub async fn run(
    mut socket: WebSocket,
    hub: Arc<Hub>,
    codec: Codec,
    peer: Peer,
    _admitted: Admission,
) {
    let Some(start) = Box::pin(await_connect(&mut socket, &hub, codec, &peer)).await else {
        return;
    };
    let outbox = WsOutbox::with_dialect(hub.config.limits.send_queue, close::centrifuge);
    let conn = new_conn(&hub, start.identity, peer, codec.protocol(), outbox);
    let max_per_user = hub.config.limits.max_connections_per_user as usize;
    // Valid configuration has user streams whenever it has the personal channel.
    let personal = hub.config.centrifuge.personal_channel;
    let resume = start.resume.filter(|_| personal);
    let stream_start = match hub.connect(&conn, max_per_user, resume.as_ref()).await {
        Ok(s) => s,
        Err(e) => {
            match e {
                ConnectError::TooMany(_) => {
                    hub.metrics().handshake("too_many_connections");
                    close(&mut socket, cc::CONNECTION_LIMIT, "connection limit").await;
                }
                ConnectError::Unavailable(why) => {
                    hub.metrics().handshake("cluster_unavailable");
                    let reply = error_reply(codec, start.id, code::INTERNAL, &why, true);
                    if send_all(&mut socket, &conn, codec, vec![reply])
                        .await
                        .is_ok()
                    {
                        close(&mut socket, cc::INTERNAL, "internal server error").await;
                    }
                }
            }
            return;
        }
    };
    // With the personal channel, what the join queued (a recovery's publications, then any
    // live ones) goes into the connect reply, as the SDKs expect; the rest follows it.
    let mut early = Vec::new();
    conn.outbox.try_recv_many(&mut early, usize::MAX);
    let mut subs = std::collections::HashMap::new();
    if let (true, Some(s)) = (personal, stream_start) {
        let channel = stream::of_user(&conn.info.user_id);
        let recovered = s.recovered == Some(true);
        let mut publications = Vec::new();
        if recovered {
            early.retain(|e| match e.event() {
                Event::Publication(p) if *p.topic == *channel => {
                    publications.push(WirePublication {
                        data: Bytes::from(message_object(&p.message)),
                        offset: p.offset,
                    });
                    false
                }
                _ => true,
            });
        }
        subs.insert(
            channel,
            SubscribeResult {
                recoverable: true,
                positioned: true,
                epoch: s.epoch,
                offset: s.offset,
                recovered,
                was_recovering: s.recovered.is_some(),
                publications,
            },
        );
    }
    let now = now_ms();
    let (expires, ttl) = ttl_of(conn.expires_at_ms(), now).unwrap_or((true, 1));
    let ping_s = (hub.config.limits.ping_interval_ms / 1000).clamp(1, u64::from(u32::MAX)) as u32;
    let connected = codec.encode(&Reply {
        id: start.id,
        connect: Some(ConnectResult {
            client: conn.info.id.clone(),
            version: VERSION.to_owned(),
            expires,
            ttl,
            subs,
            ping: ping_s,
            pong: true,
        }),
        ..Default::default()
    });
    let ended = serve(
        &mut socket,
        &hub,
        &conn,
        codec,
        connected,
        early,
        start.rest,
    )
    .await;
    conn.outbox.finish();
    hub.disconnected(&conn, ended.code, &ended.reason);
}

/// `(expires, ttl)` for a token's `exp`: `(false, 0)` without one, the whole seconds left
/// (at least 1) before it; `None` once it has passed.
pub(super) fn ttl_of(expires_at_ms: Option<i64>, now_ms: i64) -> Option<(bool, u32)> {
    match expires_at_ms {
        None => Some((false, 0)),
        Some(exp) if exp <= now_ms => None,
        Some(exp) => {
            let secs = ((exp - now_ms) / 1000).clamp(1, i64::from(u32::MAX));
            Some((true, secs as u32))
        }
    }
}

/// Waits for the first command, `connect`, within `auth_timeout_ms`. An expired token is
/// answered with error 109 (the SDK fetches a new one and connects again); any other bad
/// token closes with 3500, which the SDKs do not retry.
async fn await_connect(
    socket: &mut WebSocket,
    hub: &Hub,
    codec: Codec,
    peer: &Peer,
) -> Option<Start> {
    let metrics = &hub.metrics();
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(hub.config.limits.auth_timeout_ms);
    let mut shutdown = hub.shutdown_signal();
    let mut attempts = 0;
    loop {
        let msg = next_frame_before(socket, hub, deadline, &mut shutdown, peer).await?;
        let Connect {
            id,
            token,
            subs,
            rest: commands,
        } = match connect_command(&msg, codec) {
            None => continue,
            Some(Ok(c)) => c,
            Some(Err(label)) => {
                metrics.handshake(label);
                close(socket, cc::BAD_REQUEST, "bad request").await;
                return None;
            }
        };
        let verified = hub.auth.verify(&token).await;
        // Past here the token has expired (or expires within the second): answer 109.
        match verified {
            Ok(identity) if ttl_of(identity.expires_at_ms, now_ms()).is_some() => {
                metrics.handshake("ok");
                // The personal channel's position, when the SDK recovers it.
                let personal = stream::of_user(&identity.user_id);
                let resume = subs.get(&personal).filter(|s| s.recover).map(|s| Resume {
                    offset: s.offset,
                    epoch: s.epoch.clone(),
                });
                return Some(Start {
                    identity,
                    id,
                    resume,
                    rest: commands,
                });
            }
            Ok(_) | Err(AuthError::Expired) => {}
            Err(e) => {
                metrics.handshake(e.label());
                refused(hub, peer, cc::INVALID_TOKEN, &e.to_string());
                close(socket, cc::INVALID_TOKEN, "invalid token").await;
                return None;
            }
        }
        metrics.handshake("expired");
        attempts += 1;
        let reply = error_reply(codec, id, code::TOKEN_EXPIRED, "token expired", false);
        let sent = socket.send(to_message(codec, reply)).await.is_ok();
        if !sent || attempts >= MAX_CONNECT_ATTEMPTS {
            return None;
        }
    }
}

/// The next data frame before the connect deadline; `None` once the socket was closed (at
/// the deadline with 3502, at shutdown, or because the client left).
async fn next_frame_before(
    socket: &mut WebSocket,
    hub: &Hub,
    deadline: tokio::time::Instant,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    peer: &Peer,
) -> Option<Message> {
    let next = tokio::select! {
        r = tokio::time::timeout_at(deadline, next_data_frame(socket)) => r,
        _ = async { let _ = shutdown.wait_for(|down| *down).await; } => {
            close(socket, cc::SHUTDOWN, "shutdown").await;
            return None;
        }
    };
    match next {
        Err(_) => {
            hub.metrics().handshake("timeout");
            refused(
                hub,
                peer,
                cc::STALE,
                "no connect command within auth_timeout_ms",
            );
            close(socket, cc::STALE, "stale").await;
            None
        }
        Ok(Err(code)) => {
            hub.metrics().handshake("abandoned");
            if code == close::TOO_LARGE {
                close(socket, close::TOO_LARGE, "message size limit exceeded").await;
            }
            None
        }
        Ok(Ok(m)) => Some(m),
    }
}

/// Logs a connection refused before it connected.
fn refused(hub: &Hub, peer: &Peer, code: u16, reason: &str) {
    hub.refused(Refusal {
        what: "connection closed",
        code,
        reason,
        remote_addr: &peer.remote_addr,
        user_id: None,
    });
}

/// A connect command, and the commands its frame carried after it.
struct Connect {
    id: u32,
    token: String,
    subs: std::collections::HashMap<String, SubscribeRequest>,
    rest: Vec<Command>,
}

/// The connect command a frame starts with (its id and token) and the commands after it;
/// `None` for a frame that carries no commands (a ping), `Err` with the handshake metric's
/// label when the frame is not a connect.
fn connect_command(msg: &Message, codec: Codec) -> Option<Result<Connect, &'static str>> {
    let decoded = match msg {
        Message::Text(t) => codec.decode(t.as_bytes(), false),
        Message::Binary(b) => codec.decode(b, true),
        _ => return None,
    };
    let Ok(mut commands) = decoded else {
        return Some(Err("malformed"));
    };
    let first = commands.remove(0);
    match (first.connect, first.id > 0) {
        (Some(connect), true) => Some(Ok(Connect {
            id: first.id,
            token: connect.token,
            subs: connect.subs,
            rest: commands,
        })),
        _ => Some(Err("missing")),
    }
}

/// The connection loop.
async fn serve(
    socket: &mut WebSocket,
    hub: &Hub,
    conn: &Arc<WsConn>,
    codec: Codec,
    connected: Bytes,
    early: Vec<SharedEvent>,
    first: Vec<Command>,
) -> Ended {
    let personal = hub.config.centrifuge.personal_channel;
    let mut t = Translator::new(codec, &conn.info.user_id, personal);
    let mut out = vec![connected];
    for e in &early {
        t.event(e, &mut out);
    }
    let mut bad = 0u32;
    let limits = &hub.config.limits;
    if let Err(c) = Box::pin(commands(hub, conn, &mut t, first, &mut out, &mut bad)).await {
        let _ = send_all(socket, conn, codec, out).await;
        return close_now(hub, socket, conn, c).await;
    }
    if let Err(ended) = send_all(socket, conn, codec, std::mem::take(&mut out)).await {
        return ended;
    }
    let mut bucket = TokenBucket::new(
        limits.client_rate,
        limits.client_rate.saturating_mul(2),
        mono_ms(),
    );
    let mut batch: Vec<SharedEvent> = Vec::new();
    loop {
        tokio::select! {
            biased;
            ctl = conn.outbox.control() => match ctl {
                // Already in this protocol's codes (the outbox's dialect).
                Control::Close(req) => return close(socket, req.code, &req.reason).await,
                Control::Ping => {
                    if let Err(ended) = send_all(socket, conn, codec, vec![codec.ping()]).await {
                        return ended;
                    }
                }
            },
            _ = conn.outbox.recv_many(&mut batch, WRITE_BATCH) => {
                for f in batch.drain(..) {
                    t.event(&f, &mut out);
                }
                if let Err(ended) = send_all(socket, conn, codec, std::mem::take(&mut out)).await {
                    return ended;
                }
            }
            msg = socket.recv() => {
                conn.touch(now_ms());
                if !bucket.take(mono_ms()) {
                    return close_now(hub, socket, conn, (cc::TOO_MANY_REQUESTS, "too many requests")).await;
                }
                let cmds = match read(msg, codec) {
                    Read::Commands(cmds) => cmds,
                    Read::Skip => continue,
                    Read::PeerClosed(ended) => {
                        // Let tungstenite send its close reply, then end.
                        let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.flush()).await;
                        return ended;
                    }
                    Read::Lost(why) => return lost(why),
                    Read::Close(c) => return close_now(hub, socket, conn, c).await,
                };
                let outcome = Box::pin(commands(hub, conn, &mut t, cmds, &mut out, &mut bad)).await;
                if let Err(ended) = send_all(socket, conn, codec, std::mem::take(&mut out)).await {
                    return ended;
                }
                if let Err(c) = outcome {
                    return close_now(hub, socket, conn, c).await;
                }
                if bad >= limits.max_bad_frames {
                    return close_now(hub, socket, conn, (cc::BAD_REQUEST, "bad request")).await;
                }
            }
        }
    }
}

/// What a read from the client calls for.
enum Read {
    Commands(Vec<Command>),
    /// A ping or pong: nothing to do.
    Skip,
    /// The client sent its close frame.
    PeerClosed(Ended),
    Lost(&'static str),
    Close(Closing),
}

fn read(msg: Option<Result<Message, axum::Error>>, codec: Codec) -> Read {
    let decoded = match msg {
        Some(Ok(Message::Text(text))) => codec.decode(text.as_bytes(), false),
        Some(Ok(Message::Binary(b))) => codec.decode(&b, true),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Read::Skip,
        Some(Ok(Message::Close(frame))) => {
            let (code, reason) = frame
                .map(|f| (f.code, f.reason.to_string()))
                .unwrap_or((1005, String::new()));
            return Read::PeerClosed(Ended { code, reason });
        }
        Some(Err(e)) => {
            return match error_code(e) {
                close::TOO_LARGE => Read::Close((close::TOO_LARGE, "message size limit exceeded")),
                _ => Read::Lost("read failed"),
            }
        }
        None => return Read::Lost("connection lost"),
    };
    match decoded {
        Ok(cmds) => Read::Commands(cmds),
        Err(_) => Read::Close((cc::BAD_REQUEST, "bad request")),
    }
}

/// Answers `cmds` in order into `out`, after what the core has queued so far.
async fn commands(
    hub: &Hub,
    conn: &Arc<WsConn>,
    t: &mut Translator,
    cmds: Vec<Command>,
    out: &mut Vec<Bytes>,
    bad: &mut u32,
) -> Result<(), Closing> {
    for cmd in cmds {
        drain(conn, t, out);
        command::run(hub, conn, t, cmd, out, bad).await?;
    }
    drain(conn, t, out);
    Ok(())
}

/// Translates what the core has queued so far (without waiting).
fn drain(conn: &WsConn, t: &mut Translator, out: &mut Vec<Bytes>) {
    let mut batch = Vec::new();
    conn.outbox.try_recv_many(&mut batch, usize::MAX);
    for f in &batch {
        t.event(f, out);
    }
}

fn to_message(codec: Codec, b: Bytes) -> Message {
    match codec {
        // Our JSON encoder writes UTF-8; the fallback (an empty text) is never reached.
        Codec::Json => Message::Text(Utf8Bytes::try_from(b).unwrap_or_default()),
        Codec::Protobuf => Message::Binary(b),
    }
}

/// Writes `out` (each a WebSocket message), fed then flushed once.
async fn send_all(
    socket: &mut WebSocket,
    conn: &WsConn,
    codec: Codec,
    out: Vec<Bytes>,
) -> Result<(), Ended> {
    if out.is_empty() {
        return Ok(());
    }
    write(
        socket,
        conn,
        out.into_iter().map(move |b| to_message(codec, b)),
    )
    .await
}

/// Takes the connection out of the registry at once, then runs the close handshake.
async fn close_now(hub: &Hub, socket: &mut WebSocket, conn: &WsConn, c: Closing) -> Ended {
    hub.closed_by_session(conn, c.0, c.1);
    close(socket, c.0, c.1).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_down_and_is_never_zero() {
        assert_eq!(ttl_of(None, 5), Some((false, 0)));
        assert_eq!(ttl_of(Some(10_999), 1_000), Some((true, 9)));
        assert_eq!(ttl_of(Some(1_500), 1_000), Some((true, 1)));
        assert_eq!(ttl_of(Some(1_000), 1_000), None);
    }
}
