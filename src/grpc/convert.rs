//! Protobuf views of the hub's connections and events.

use crate::clock::timestamp;
use crate::node::{Event, EventKind, WsConn};
use crate::proto;

pub fn connection(c: &WsConn, node_id: &str) -> proto::Connection {
    proto::Connection {
        connection_id: c.info.id.clone(),
        user_id: c.info.user_id.clone(),
        roles: c.info.roles.clone(),
        topics: c.topics(),
        connected_at: Some(timestamp(c.info.connected_at_ms)),
        expires_at: c.expires_at_ms().map(timestamp),
        node_id: node_id.to_owned(),
        remote_addr: c.info.remote_addr.clone(),
        user_agent: c.info.user_agent.clone(),
        metadata: c
            .info
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        messages_sent: c.messages_sent(),
        messages_dropped: c.messages_dropped(),
    }
}

pub fn kind(k: EventKind) -> proto::event::Kind {
    match k {
        EventKind::Connected => proto::event::Kind::Connected,
        EventKind::Disconnected => proto::event::Kind::Disconnected,
        EventKind::Subscribed => proto::event::Kind::Subscribed,
        EventKind::Unsubscribed => proto::event::Kind::Unsubscribed,
    }
}

pub fn event(e: &Event, node_id: &str) -> proto::Event {
    proto::Event {
        kind: kind(e.kind) as i32,
        connection: Some(connection(&e.conn, node_id)),
        topic: e.topic.clone().unwrap_or_default(),
        close_code: u32::from(e.close_code),
        close_reason: e.close_reason.clone(),
        at: Some(timestamp(e.at_ms)),
    }
}
