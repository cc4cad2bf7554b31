//! The Centrifugo commands a connected client may send, one function each (as mini-redis has
//! one file per command): [`subscribe`], [`unsubscribe`], [`presence`], [`history`],
//! [`refresh`], and the one-line answers (ping, and the commands this server refuses) here.
//! Each answers into an [`Answer`] (the reply or error the SDK waits for, by command id) or
//! asks the session to close with a Centrifugo code. They call the hub like the other doors;
//! what the core queues for a subscribe or unsubscribe comes back through the translator.

mod history;
mod presence;
mod refresh;
mod subscribe;

use std::sync::Arc;

use bytes::Bytes;

use super::codec::Codec;
use super::translate::Translator;
use super::wire::{Command, Error, Reply};
use crate::core::close::centrifuge_codes as cc;
use crate::core::{stream, topic, CoreError};
use crate::hub::Hub;
use crate::node::WsConn;

/// A close the session decides on: a Centrifugo code and reason.
pub type Closing = (u16, &'static str);

/// Centrifugo error codes (the SDKs act on them: 109 refreshes the token, 100 and any
/// `temporary` error retry, the rest are final for the command).
pub mod code {
    pub const INTERNAL: u32 = 100;
    pub const PERMISSION_DENIED: u32 = 103;
    pub const ALREADY_SUBSCRIBED: u32 = 105;
    pub const LIMIT_EXCEEDED: u32 = 106;
    pub const BAD_REQUEST: u32 = 107;
    pub const NOT_AVAILABLE: u32 = 108;
    pub const TOKEN_EXPIRED: u32 = 109;
    pub const UNRECOVERABLE_POSITION: u32 = 112;
}

/// Where one command's answer goes.
pub struct Answer<'a> {
    codec: Codec,
    id: u32,
    out: &'a mut Vec<Bytes>,
    /// Bad commands so far on this connection (`limits.max_bad_frames` closes it).
    bad: &'a mut u32,
}

impl Answer<'_> {
    /// The command's reply (its id is set here).
    fn reply(&mut self, mut reply: Reply) {
        reply.id = self.id;
        self.out.push(self.codec.encode(&reply));
    }

    fn fail(&mut self, code: u32, message: &str, temporary: bool) {
        self.out
            .push(error_reply(self.codec, self.id, code, message, temporary));
    }

    /// A malformed command: answered, and counted toward the bad-frame limit.
    fn bad_request(&mut self, message: &str) {
        *self.bad += 1;
        self.fail(code::BAD_REQUEST, message, false);
    }

    fn not_available(&mut self, what: &str) {
        self.fail(
            code::NOT_AVAILABLE,
            &format!("not available: {what}"),
            false,
        );
    }

    /// An error from the hub: bad input is final, anything else is worth retrying.
    fn core_error(&mut self, e: &CoreError) {
        match e {
            CoreError::InvalidArgument { .. } => {
                self.fail(code::BAD_REQUEST, &e.to_string(), false)
            }
            _ => self.fail(code::INTERNAL, &e.to_string(), true),
        }
    }
}

/// An error reply to command `id`.
pub fn error_reply(codec: Codec, id: u32, code: u32, message: &str, temporary: bool) -> Bytes {
    codec.encode(&Reply {
        id,
        error: Some(Error {
            code,
            message: message.to_owned(),
            temporary,
        }),
        ..Default::default()
    })
}

/// Runs one command of a connected client, answering into `out`.
pub async fn run(
    hub: &Hub,
    conn: &Arc<WsConn>,
    t: &mut Translator,
    cmd: Command,
    out: &mut Vec<Bytes>,
    bad: &mut u32,
) -> Result<(), Closing> {
    if cmd.id == 0 {
        // No reply is expected: a pong, or an asynchronous send (refused by closing).
        return match cmd {
            c if c == Command::default() => Ok(()),
            Command { send: Some(_), .. } => Err((3508, "not available")),
            _ => Err((cc::BAD_REQUEST, "bad request")),
        };
    }
    let mut a = Answer {
        codec: t.codec(),
        id: cmd.id,
        out,
        bad,
    };
    // The personal channel (`#<user>`) is the server's: no client command names it.
    let named = [
        cmd.subscribe.as_ref().map(|s| &s.channel),
        cmd.unsubscribe.as_ref().map(|u| &u.channel),
        cmd.presence.as_ref().map(|p| &p.channel),
        cmd.presence_stats.as_ref().map(|p| &p.channel),
        cmd.history.as_ref().map(|h| &h.channel),
    ];
    if named.into_iter().flatten().any(|c| !stream::is_topic(c)) {
        a.fail(
            code::PERMISSION_DENIED,
            "permission denied: a personal channel is subscribed by the server",
            false,
        );
        return Ok(());
    }
    // The first field set decides, in the order the protocol lists them.
    match cmd {
        Command {
            connect: Some(_), ..
        } => a.bad_request("already connected"),
        Command {
            subscribe: Some(s), ..
        } => subscribe::run(hub, conn, t, s, &mut a).await,
        Command {
            unsubscribe: Some(u),
            ..
        } => unsubscribe(hub, conn, &u.channel, &mut a),
        Command {
            publish: Some(_), ..
        } => a.fail(
            code::PERMISSION_DENIED,
            "permission denied: clients do not publish here; backends publish through the gRPC API",
            false,
        ),
        Command {
            presence: Some(p), ..
        } => presence::run(hub, t, &p.channel, false, &mut a).await,
        Command {
            presence_stats: Some(p),
            ..
        } => presence::run(hub, t, &p.channel, true, &mut a).await,
        Command {
            history: Some(h), ..
        } => history::run(hub, conn, t, &h, &mut a).await,
        Command { ping: Some(_), .. } => a.reply(Reply {
            ping: Some(Default::default()),
            ..Default::default()
        }),
        Command {
            refresh: Some(r), ..
        } => return refresh::run(hub, conn, &r, &mut a).await,
        Command { send: Some(_), .. } => a.not_available("send is not supported"),
        Command { rpc: Some(_), .. } => {
            a.not_available("rpc is not supported; call your backend directly")
        }
        Command {
            sub_refresh: Some(_),
            ..
        } => a.not_available("subscription tokens are not supported"),
        _ => a.bad_request("bad request: unknown command"),
    }
    Ok(())
}

/// `unsubscribe`: never fails (the SDKs reconnect when an unsubscribe is refused). The reply
/// comes through the queue, after anything of the channel already queued; a channel that
/// cannot exist is answered here.
fn unsubscribe(hub: &Hub, conn: &Arc<WsConn>, channel: &str, a: &mut Answer<'_>) {
    if topic::validate_name("channel", channel).is_ok() {
        hub.unsubscribe(conn, channel, Some(&a.id.into()));
    } else {
        a.reply(Reply {
            unsubscribe: Some(Default::default()),
            ..Default::default()
        });
    }
}
