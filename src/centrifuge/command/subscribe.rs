//! `subscribe`: a stream subscription, recovering from `offset`/`epoch` when `recover` is set.
//! The reply comes through the queue (the translator gathers the replayed publications into
//! it); only refusals are answered here.

use std::sync::Arc;

use super::{code, Answer};
use crate::centrifuge::translate::Translator;
use crate::centrifuge::wire::SubscribeRequest;
use crate::core::native::Since;
use crate::core::topic;
use crate::core::topic_table::SubscribeRefused;
use crate::hub::{Hub, SubscribeError};
use crate::node::WsConn;

pub async fn run(
    hub: &Hub,
    conn: &Arc<WsConn>,
    t: &mut Translator,
    s: SubscribeRequest,
    a: &mut Answer<'_>,
) {
    let ch = s.channel;
    if s.kind != 0 {
        return a.not_available("only stream subscriptions are supported");
    }
    if let Err(e) = topic::validate_name("channel", &ch) {
        return a.bad_request(&e.to_string());
    }
    if t.has(&ch) {
        return a.fail(code::ALREADY_SUBSCRIBED, "already subscribed", false);
    }
    if !hub.may_subscribe(conn, &ch) {
        return a.fail(code::PERMISSION_DENIED, "permission denied", false);
    }
    let since = s.recover.then_some(Since {
        offset: s.offset,
        epoch: s.epoch,
    });
    t.expect(a.id, &ch, s.recover);
    let max = hub.config.topics.max_subscriptions;
    let reference = serde_json::Value::from(a.id);
    let r = hub
        .subscribe(
            conn,
            &ch,
            since.as_ref(),
            Some(&reference),
            max,
            s.join_leave,
        )
        .await;
    match r {
        Ok(()) | Err(SubscribeError::Refused(SubscribeRefused::Closing)) => {}
        Err(SubscribeError::Refused(SubscribeRefused::TooMany)) => {
            t.cancel(a.id);
            a.fail(
                code::LIMIT_EXCEEDED,
                &format!("limit exceeded: at most {max} subscriptions"),
                false,
            );
        }
        Err(SubscribeError::Unavailable(why)) => {
            t.cancel(a.id);
            a.fail(code::INTERNAL, &why, true);
        }
    }
}
