//! One WebSocket's plumbing, the same for both doors: a registry connection for an
//! authenticated identity, reading the next data frame, writing queued frames (fed, one
//! flush, given up as soon as a close is requested) and the close handshake. No lock is held
//! across a socket write.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::SinkExt;

use crate::clock::now_ms;
use crate::core::claims::Identity;
use crate::core::close::{ABNORMAL as CLOSE_ABNORMAL, TOO_LARGE as CLOSE_TOO_LARGE};
use crate::core::registry::{Conn, ConnInfo, Protocol};
use crate::hub::Hub;
use crate::node::outbox::WsOutbox;
use crate::node::WsConn;

/// How long the close handshake may take before the TCP connection is dropped.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the upgrade request said about the client.
pub struct Peer {
    pub remote_addr: String,
    pub user_agent: String,
}

/// How a connection ended.
pub(crate) struct Ended {
    pub(crate) code: u16,
    pub(crate) reason: String,
}

/// A connection for an authenticated identity, with this node's next id (both endpoints).
pub(crate) fn new_conn(
    hub: &Hub,
    identity: Identity,
    peer: Peer,
    protocol: Protocol,
    outbox: WsOutbox,
) -> Arc<WsConn> {
    let (id, seq) = hub.next_conn_id();
    Arc::new(Conn::new(
        ConnInfo {
            id,
            seq,
            user_id: identity.user_id,
            roles: identity.roles,
            topic_patterns: identity.topics,
            metadata: identity.metadata,
            connected_at_ms: now_ms(),
            remote_addr: peer.remote_addr,
            user_agent: peer.user_agent,
            protocol,
        },
        identity.expires_at_ms,
        outbox,
    ))
}

/// The next text or binary frame; `Err(close code)` when the socket ends or fails first.
pub(crate) async fn next_data_frame(socket: &mut WebSocket) -> Result<Message, u16> {
    loop {
        match socket.recv().await {
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => return Ok(m),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None => return Err(CLOSE_ABNORMAL),
            Some(Err(e)) => return Err(error_code(e)),
        }
    }
}

/// The close code a read error calls for: 1009 for a frame over the size limit.
pub(crate) fn error_code(e: axum::Error) -> u16 {
    match e.into_inner().downcast::<tungstenite::Error>() {
        Ok(e) if matches!(*e, tungstenite::Error::Capacity(_)) => CLOSE_TOO_LARGE,
        _ => CLOSE_ABNORMAL,
    }
}

pub(crate) fn lost(reason: &str) -> Ended {
    Ended {
        code: CLOSE_ABNORMAL,
        reason: reason.to_owned(),
    }
}

/// Writes `messages` (fed, then one flush), giving up as soon as a close is requested: a
/// socket that does not drain never holds up a close.
///
/// Boxed: inline, its state would be paid by every idle connection's future.
pub(crate) fn write<'a, I>(
    socket: &'a mut WebSocket,
    conn: &'a WsConn,
    messages: I,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Ended>> + Send + 'a>>
where
    I: IntoIterator<Item = Message> + Send + 'a,
    I::IntoIter: Send,
{
    Box::pin(write_inner(socket, conn, messages))
}

async fn write_inner(
    socket: &mut WebSocket,
    conn: &WsConn,
    messages: impl IntoIterator<Item = Message>,
) -> Result<(), Ended> {
    let writing = async {
        for m in messages {
            socket.feed(m).await?;
        }
        socket.flush().await
    };
    let outcome = tokio::select! {
        biased;
        req = conn.outbox.closed() => Err(req),
        r = writing => Ok(r),
    };
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(lost("write failed")),
        Err(req) => Err(close(socket, req.code, &req.reason).await),
    }
}

/// Sends a close frame and waits (at most [`CLOSE_TIMEOUT`]) for the peer's; then the TCP
/// connection is dropped with the socket.
///
/// Boxed: it is rare, and inline it would grow every connection's idle future.
pub(crate) fn close<'a>(
    socket: &'a mut WebSocket,
    code: u16,
    reason: &'a str,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Ended> + Send + 'a>> {
    Box::pin(close_inner(socket, code, reason))
}

async fn close_inner(socket: &mut WebSocket, code: u16, reason: &str) -> Ended {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        socket.send(Message::Close(Some(frame))).await?;
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
        Ok::<(), axum::Error>(())
    })
    .await;
    Ended {
        code,
        reason: reason.to_owned(),
    }
}
